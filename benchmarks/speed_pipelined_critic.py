"""
The pipelined critic (#30) end to end: this TRPO fitting its critic in a worker process while the next rollout is
collected, the same TRPO fitting it in this process (``pipeline_critic = False``), and sb3-contrib's TRPO, alternating.

``learn()`` from scratch on rl-zoo3's tuned TRPO settings (CartPole-v1, Pendulum-v1 with gSDE, Hopper-v5,
HalfCheetah-v5; the VecEnv construction of :mod:`benchmarks.speed_end_to_end`), the three implementations alternating
round by round in one process, in an order rotated from round to round, each run with a fresh model on fresh envs,
after one discarded warm-up round of one update each. Every run starts its own critic worker inside ``learn()``, as a
user's does: fits run in this process until the worker is ready, and the last update of a ``learn()`` always does, so
each run records how many fits ran in the worker. The budgets are many updates long (rl-zoo3's full 1e5 steps on
CartPole, where the target is set), so that the worker's start-up is a small part of a run, as it is in training.

Memory: the bytes of each fit's job (the critic head's input features and the λ-returns that the job copies, the
generator state of the epochs' shuffles, and the head's weights and optimiser state) beside the rollout's observations
and returns, and the worker process's peak RSS (``VmHWM``) at the end of each pipelined run, beside a fresh worker's once
it is ready (the interpreter, torch and a warm-up fit). Torch runs on one thread in this process; the worker runs on one
thread too.

Usage (from the repository root; ``python -m benchmarks.speed_report`` then writes the docs' section)::

    python -m benchmarks.speed_pipelined_critic --rounds 5        # benchmarks/results/speed/pipelined_critic.json
    python -m benchmarks.speed_pipelined_critic --configs cartpole --rounds 1 --timesteps cartpole=4096 --results /tmp/x
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.logger import Logger

from benchmarks.learning_record import versions
from benchmarks.learning_setup import Preset, load_preset, make_model
from benchmarks.speed_end_to_end import E2E_CONFIGS, EndToEndConfig, learn_steps, parse_timesteps, training_env
from benchmarks.speed_timing import RESULTS, LearnTiming, command_line, rotated, timed_learn, write_result

MODULE = "benchmarks.speed_pipelined_critic"
#: The implementations, with their names in :mod:`benchmarks.learning_setup` (``sequential`` sets ``pipeline_critic = False``).
IMPLEMENTATIONS = {"pipelined": "trpo", "sequential": "trpo", "sb3-contrib": "sb3_contrib_trpo"}
#: Default budgets: rl-zoo3's full budget on CartPole-v1 and Pendulum-v1 (1e5), 1e5 steps (49 updates) on MuJoCo.
PIPELINE_CONFIGS: dict[str, EndToEndConfig] = {
    name: dataclasses.replace(E2E_CONFIGS[name], timesteps=100_000)
    for name in ("cartpole", "pendulum_gsde", "hopper", "halfcheetah")
}


@dataclass(frozen=True)
class PipelinedRun:
    """
    One timed ``learn()`` and what the critic's pipeline did in it.

    :param timing: the wall time, and the time inside ``collect_rollouts`` and ``train``
    :param fits_in_worker: critic fits run in the worker process
    :param fits_in_process: critic fits run in this process (the worker was starting, the last update of the
        ``learn()``, or the pipeline is off)
    :param job_bytes: the largest fit job's bytes by part (:func:`job_bytes`), ``None`` when no job was sent
    :param rollout_bytes: the rollout buffer's observations and returns, in bytes
    :param worker_peak_kib: the worker's peak RSS (``VmHWM``) after the run, ``None`` without a worker or ``/proc``
    """

    timing: LearnTiming
    fits_in_worker: int = 0
    fits_in_process: int = 0
    job_bytes: dict[str, int] | None = None
    rollout_bytes: int = 0
    worker_peak_kib: int | None = None


def array_bytes(value: Any) -> int:
    """
    The bytes of every NumPy array in ``value``, through dicts, lists and tuples (an optimiser's state, say).

    :param value: an array, a container of them, or anything else (0 bytes)
    """
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, Mapping):
        return sum(array_bytes(item) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(array_bytes(item) for item in value)
    return 0


def job_bytes(job: Any) -> dict[str, int]:
    """
    The bytes one fit job copies, by part: ``features`` (the head's inputs), ``returns``, ``shuffles`` (the state of
    torch's generator the worker draws the epochs' permutations from) and ``weights_and_optimizer``; ``total`` sums them.

    :param job: a :class:`~sb3_trpo_plugin.trpo.critic_job.CriticFitJob`
    """
    parts = {
        "features": array_bytes(job.inputs),
        "returns": array_bytes(job.returns),
        "shuffles": array_bytes(job.shuffles),
        "weights_and_optimizer": array_bytes(job.weights) + array_bytes(job.optimizer_state),
    }
    return {**parts, "total": sum(parts.values())}


def rollout_bytes(buffer: Any) -> int:
    """
    The bytes of a rollout buffer's observations (a dict of arrays for Dict observations) and returns.

    :param buffer: an SB3 rollout buffer
    """
    return array_bytes(buffer.observations) + array_bytes(buffer.returns)


def peak_rss_kib(pid: int) -> int | None:
    """
    A process's peak resident set size (``VmHWM`` of ``/proc/<pid>/status``), in KiB; ``None`` where it cannot be read.

    :param pid: the process
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def record_job_sizes(pipeline: Any) -> list[dict[str, int]]:
    """
    Shadow the pipeline instance's ``submit`` with one that also records each job's :func:`job_bytes` (sums of
    ``nbytes``: no copy, no pickling); the class stays untouched.

    :param pipeline: a model's ``critic_pipeline``
    :return: the list the sizes are appended to
    """
    sizes: list[dict[str, int]] = []
    submit: Callable[..., None] = pipeline.submit

    def recording_submit(job: Any, apply: Any) -> None:
        sizes.append(job_bytes(job))
        submit(job, apply)

    pipeline.submit = recording_submit
    return sizes


def worker_pid(model: Any) -> int | None:
    """The process id of the model's critic worker, ``None`` when it has none (read before the pipeline is closed)."""
    worker = model.critic_pipeline._worker
    return None if worker is None else int(worker.process.pid)


def ready_worker_peak_kib() -> int | None:
    """A fresh critic worker's peak RSS once it is ready (imports and warm-up fit), before any job; untimed."""
    from sb3_trpo_plugin.trpo.critic_pipeline import CriticPipeline

    pipeline = CriticPipeline()
    try:
        if not pipeline.wait_until_ready(120.0):
            return None
        worker = pipeline._worker
        return None if worker is None else peak_rss_kib(worker.process.pid)
    finally:
        pipeline.close()


def time_run(implementation: str, preset: Preset, env_id: str, seed: int, timesteps: int) -> PipelinedRun:
    """
    One ``learn()`` of a fresh model on fresh envs (built before the timing), then its pipeline's counters, job sizes
    and worker's peak RSS (read after the timing; the worker is closed then).

    :param implementation: a key of :data:`IMPLEMENTATIONS`
    :param preset: the TRPO preset
    :param env_id: the gymnasium id
    :param seed: seeds the model and the envs
    :param timesteps: the budget
    """
    model = make_model(IMPLEMENTATIONS[implementation], preset, training_env(preset, env_id, seed), seed, Logger(None, []))
    if implementation == "sb3-contrib":
        return PipelinedRun(timed_learn(model, timesteps))
    if implementation == "sequential":
        model.pipeline_critic = False
    sizes = record_job_sizes(model.critic_pipeline)
    timing = timed_learn(model, timesteps)
    pid = worker_pid(model)
    peak = None if pid is None else peak_rss_kib(pid)
    model.critic_pipeline.close()
    return PipelinedRun(
        timing,
        fits_in_worker=model.critic_pipeline.fits_in_worker,
        fits_in_process=model.critic_pipeline.fits_in_process,
        job_bytes=max(sizes, key=lambda size: size["total"]) if sizes else None,
        rollout_bytes=rollout_bytes(model.rollout_buffer),
        worker_peak_kib=peak,
    )


def steps_per_s(timing: LearnTiming) -> float:
    """The env steps per second of one ``learn()``."""
    return timing.timesteps / timing.wall_s


def _ratio_stats(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, float]:
    ratios = [n / d for n, d in zip(numerators, denominators, strict=True)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def summarize_pipelined(rounds: Sequence[Mapping[str, PipelinedRun]]) -> dict[str, Any]:
    """
    Aggregate the rounds of one configuration.

    :param rounds: per round, the run of each of :data:`IMPLEMENTATIONS`
    :return: ``{"implementations": {name: {"steps_per_s", "rollout_share", "update_share"}}`` (median steps/s over
        rounds; shares of the wall time summed over rounds), ``"ratios"``: ``{"pipelined/sequential",
        "pipelined/sb3-contrib", "sequential/sb3-contrib"}`` each ``{"median", "min", "max"}`` of the per-round ratios
        of steps/s, ``"fits"``: the pipelined runs' fits in the worker and in this process (summed over rounds),
        ``worker_share`` of them in the worker and its lowest value in a round, ``"memory"``: the largest job's bytes
        by part, the rollout's observations and returns, and the worker's largest peak RSS, ``"rounds"``}
    :raise ValueError: without rounds, or when the sequential runs used a worker
    """
    if not rounds:
        raise ValueError("no rounds")
    rates = {name: [steps_per_s(round_[name].timing) for round_ in rounds] for name in IMPLEMENTATIONS}
    implementations = {}
    for name in IMPLEMENTATIONS:
        timings = [round_[name].timing for round_ in rounds]
        wall = sum(timing.wall_s for timing in timings)
        implementations[name] = {
            "steps_per_s": statistics.median(rates[name]),
            "rollout_share": sum(timing.rollout_s for timing in timings) / wall,
            "update_share": sum(timing.update_s for timing in timings) / wall,
        }
    if any(round_["sequential"].fits_in_worker for round_ in rounds):
        raise ValueError("a sequential run fitted its critic in a worker: pipeline_critic = False was not honoured")
    pipelined = [round_["pipelined"] for round_ in rounds]
    in_worker = sum(run.fits_in_worker for run in pipelined)
    in_process = sum(run.fits_in_process for run in pipelined)
    shares = [run.fits_in_worker / max(run.fits_in_worker + run.fits_in_process, 1) for run in pipelined]
    jobs = [run.job_bytes for run in pipelined if run.job_bytes is not None]
    peaks = [run.worker_peak_kib for run in pipelined if run.worker_peak_kib is not None]
    return {
        "implementations": implementations,
        "ratios": {
            "pipelined/sequential": _ratio_stats(rates["pipelined"], rates["sequential"]),
            "pipelined/sb3-contrib": _ratio_stats(rates["pipelined"], rates["sb3-contrib"]),
            "sequential/sb3-contrib": _ratio_stats(rates["sequential"], rates["sb3-contrib"]),
        },
        "fits": {
            "in_worker": in_worker,
            "in_process": in_process,
            "worker_share": in_worker / max(in_worker + in_process, 1),
            "worker_share_min": min(shares),
        },
        "memory": {
            "job_bytes": max(jobs, key=lambda size: size["total"]) if jobs else None,
            "rollout_bytes": max(run.rollout_bytes for run in pipelined),
            "worker_peak_kib": max(peaks) if peaks else None,
        },
        "rounds": len(rounds),
    }


def time_pipelined(config: EndToEndConfig, timesteps: int, rounds: int) -> dict[str, Any]:
    """
    Time ``rounds`` rounds of one configuration, after one discarded warm-up round of one update each.

    :param config: the configuration
    :param timesteps: the ``learn()`` budget of each run
    :param rounds: timed rounds
    :return: :func:`summarize_pipelined`'s summary with the configuration's ``"title"``, its ``"setup"`` and the raw
        ``"runs"``
    """
    preset = load_preset("trpo", config.env_id)
    n_steps = int(preset.kwargs["n_steps"])
    per_update = n_steps * preset.n_envs
    measured: list[dict[str, PipelinedRun]] = []
    for round_index in range(-1, rounds):  # round -1 warms up (first calls, allocator, the worker's files) and is discarded
        seed = max(round_index, 0)
        budget = per_update if round_index < 0 else timesteps
        runs = {}
        for name in rotated(list(IMPLEMENTATIONS), seed):
            runs[name] = time_run(name, preset, config.env_id, seed, budget)
            if round_index >= 0:
                print(f"  {config.name} round {round_index}: {name} {steps_per_s(runs[name].timing):.0f} steps/s", flush=True)
        if round_index >= 0:
            measured.append({name: runs[name] for name in IMPLEMENTATIONS})
    summary = summarize_pipelined(measured)
    steps = learn_steps(timesteps, n_steps, preset.n_envs)
    summary["title"] = config.title
    summary["setup"] = {
        "n_envs": preset.n_envs,
        "n_steps": n_steps,
        "timesteps": steps,
        "updates": steps // per_update,
        "normalize": preset.normalize,
    }
    summary["runs"] = [{name: dataclasses.asdict(run) for name, run in round_.items()} for round_ in measured]
    return summary


def machine_facts() -> dict[str, Any]:
    """The cores this process may use, and the releases that ran (with this checkout's commit)."""
    import mujoco

    return {
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "releases": {**versions(), "mujoco": mujoco.__version__, "numpy": np.__version__},
    }


def load_average() -> str:
    """The load average over 1/5/15 min, e.g. ``"0.1/0.3/0.5"``."""
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=list(PIPELINE_CONFIGS), default=list(PIPELINE_CONFIGS))
    parser.add_argument("--rounds", type=int, default=5, help="rounds (each: every implementation once)")
    parser.add_argument(
        "--timesteps",
        nargs="+",
        default=[],
        metavar="NAME=STEPS",
        help="learn() steps per run, per configuration (defaults: "
        + ", ".join(f"{name}={config.timesteps}" for name, config in PIPELINE_CONFIGS.items())
        + ")",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the result file (pipelined_critic.json)")
    args = parser.parse_args()
    try:
        budgets = parse_timesteps(args.timesteps, {name: config.timesteps for name, config in PIPELINE_CONFIGS.items()})
    except ValueError as error:
        parser.error(str(error))
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    command = command_line(MODULE)
    torch.set_num_threads(1)
    load_before = load_average()
    facts = machine_facts()
    print(f"{facts['cpu_count']} cores ({facts['usable_cores']} usable), load {load_before}", flush=True)
    print("budgets:", ", ".join(f"{name}={budgets[name]}" for name in args.configs), flush=True)
    results: dict[str, Any] = {"ready_worker_peak_kib": ready_worker_peak_kib(), "configs": {}}
    for name in args.configs:
        summary = time_pipelined(PIPELINE_CONFIGS[name], budgets[name], args.rounds)
        results["configs"][name] = summary
        print("pipelined-critic", name, json.dumps({k: v for k, v in summary.items() if k != "runs"}), flush=True)
    write_result(
        args.results / "pipelined_critic.json",
        "pipelined_critic",
        command,
        {**results, **facts},
        load_average=load_before,
        load_average_after=load_average(),
    )


if __name__ == "__main__":
    main()
