"""
Data-parallel throughput: ``learn()`` steps per second of TRPO on CartPole-v1 with 1 and 2 processes.

Every setting is one group of processes, started once (the 2-process groups with ``torch.distributed.run``,
gloo on 127.0.0.1; 1 process is the plain single-process path, since torch.distributed is then not
initialised), warmed up with one update, and then kept waiting. The benchmark then times short *bursts*
of ``learn()`` (``--updates`` updates each), one group at a time, with a 1-process burst between any two
others: ``1 process, A, 1 process, B, ...``. Each burst of a 2-process setting is compared with the mean of
the two 1-process bursts around it, a few seconds apart, so that the ratio sees the same machine (this
virtual machine's throughput moves by up to 1.5x within a minute, which made separate, longer runs of
each setting disagree by more than the effect measured). Reported: the median of these ratios, with
their quartiles. Per update, the all-reduces issued by the model's :class:`~sb3_trpo_plugin.parallel.Collectives` are
counted with their payload bytes.

Settings (rl-zoo3's CartPole-v1 config: ``n_envs=2``, ``n_steps=512``, ``batch_size=512``, 20 critic epochs):

* 1 process: 1024 steps per update;
* 2 independent processes, no communication: the ceiling of 2 processes on this machine's cores;
* 2 processes, same config per process: 2048 steps per update (each rank does the same work as 1 process),
  with the update split over the ranks (the default) and with every step averaged over them
  (``split_update = False``);
* 2 processes, same global batch: ``n_steps=256`` per rank, 1024 steps per update (the single-process update).

Usage::

    python -m benchmarks.distributed        # writes docs/benchmarks.md's section, benchmarks/results/distributed.json
    python -m benchmarks.distributed --repeats 2 --updates 2 --no-write

Each process runs torch on one thread (``OMP_NUM_THREADS=1``, as torchrun sets with several processes).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import sections
from benchmarks.launch import ROOT, child_environment, module_command

#: This module's name, which its worker processes run.
MODULE = "benchmarks.distributed"
ZOO_CARTPOLE = dict(
    n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98, gamma=0.99, learning_rate=1e-3, n_critic_updates=20
)
N_ENVS = 2
#: What each kind of all-reduce carries in TRPO's update.
KINDS = {
    "sum_ints": "rollout end: global step count and stop flag",
    "merge_running_mean_std": "VecNormalize statistics",
    "check_in_sync": "weights check (every 10 updates)",
    "mean_std": "advantage normalisation (count, mean and squared deviations of each rank)",
    "mean": "policy gradient; Fisher-vector products (one per CG step)",
    "mean_floats": "surrogate; line search: surrogate and KL (one per trial)",
    "gather_row_blocks": "split update: every rank's rollout, gathered once",
    "sum": "split update: the new weights and the step's statistics",
    "gather_rows": "critic inputs and returns, gathered once",
}
SINGLE = "1 process"
INDEPENDENT = "2 independent processes (no communication)"
#: The independent processes' steps over the sum, over updates, of the slower one's update time: what a schedule
#: that moves both in lock-step (each update waits for both) could reach without any communication.
LOCKSTEP = "2 independent processes, each update waiting for the slower one (estimated lock-step ceiling)"
#: name: (processes, n_steps per process, split update, launched together without torch.distributed)
SETTINGS = {
    SINGLE: (1, 512, True, False),
    INDEPENDENT: (2, 512, True, True),
    "2 processes, same config per process": (2, 512, True, False),
    "2 processes, same config per process, every step averaged": (2, 512, False, False),
    "2 processes, same global batch": (2, 256, True, False),
}
MAIN = "2 processes, same config per process"
#: How often a waiting process looks for its next burst (seconds): idle groups cost next to nothing.
POLL_S = 0.02


def _wait_for(*paths: Path) -> Path:
    """Sleep until one of ``paths`` exists; return it."""
    while True:
        for path in paths:
            if path.exists():
                return path
        time.sleep(POLL_S)


def _write_json(path: Path, value: object) -> None:
    """Write atomically, so that a polling reader never sees half a file."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(value))
    partial.replace(path)


class AllReduceCounter:
    """Counts the all-reduces a model's collectives report (installed as their ``observer``), in total and by operation."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Set all counters to zero."""
        self.all_reduce_calls = self.all_reduce_bytes = 0
        #: ``operation -> [calls, bytes, seconds]`` (seconds include waiting for the other ranks).
        self.by_kind: dict[str, list[float]] = {}

    def record(self, operation: str, n_bytes: int, seconds: float) -> None:
        """The observer: one all-reduce of ``n_bytes`` that took ``seconds``."""
        self.all_reduce_calls += 1
        self.all_reduce_bytes += n_bytes
        totals = self.by_kind.setdefault(operation, [0, 0, 0.0])
        totals[0] += 1
        totals[1] += n_bytes
        totals[2] += seconds


def worker(args: argparse.Namespace) -> None:
    """
    One process of a group: warm up one update, say ``ready``, then for each ``go<k>`` file in the control
    folder time ``args.updates`` updates of ``learn()`` and write ``result<k>`` (rank 0, or every process of
    an independent group, each to its own file), until a ``stop`` file appears.
    """
    import torch
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_trpo_plugin import TRPO, parallel

    torch.set_num_threads(1)
    control = Path(args.control)
    env = make_vec_env("CartPole-v1", n_envs=N_ENVS)
    model = TRPO("MlpPolicy", env, seed=0, device="cpu", **(ZOO_CARTPOLE | {"n_steps": args.n_steps}))
    model.split_update = not args.averaged
    steps_per_update = args.n_steps * N_ENVS * parallel.world_size()
    communication = AllReduceCounter()
    if model.collectives is not None:  # the benchmark's instrumentation: every all-reduce of the library passes here
        model.collectives.observer = communication.record
    phases, update_ends = _time_phases(model)
    model.learn(steps_per_update)  # warm-up
    latency_us = float("nan")
    if parallel.is_distributed():  # the floor of one synchronisation here: 200 all-reduces of 2 floats
        probe = torch.zeros(2)
        torch.distributed.barrier()
        probe_start = time.perf_counter()
        for _ in range(200):
            torch.distributed.all_reduce(probe)
        latency_us = 1e6 * (time.perf_counter() - probe_start) / 200
    me = f"{args.index}" if parallel.is_main_process() else ""
    if me:
        (control / f"ready{me}").touch()
    for burst in itertools.count():
        if _wait_for(control / f"go{burst}", control / "stop").name == "stop":
            break
        communication.reset()
        phases.clear()
        update_ends.clear()
        if parallel.is_distributed():
            torch.distributed.barrier()
        start, cpu_start, steps, updates = time.perf_counter(), time.process_time(), model.num_timesteps, model._n_updates
        model.learn(args.updates * steps_per_update, reset_num_timesteps=False)
        elapsed = time.perf_counter() - start
        mine: list[Any] = [time.process_time() - cpu_start, dict(phases)]  # this rank's CPU seconds and phase times
        gathered = [mine] if model.collectives is None else model.collectives.all_gather_objects(mine)
        cpu_seconds = [seconds for seconds, _ in gathered]
        if me:
            result = {
                "all_reduce_latency_us": latency_us,
                "steps": model.num_timesteps - steps,
                "seconds": elapsed,
                "steps_per_second": (model.num_timesteps - steps) / elapsed,
                "cpu_ms_per_step": 1e3 * sum(cpu_seconds) / (model.num_timesteps - steps),
                "updates": model._n_updates - updates,
                "all_reduce_calls": communication.all_reduce_calls,
                "all_reduce_bytes": communication.all_reduce_bytes,
                "by_kind": communication.by_kind,
                "all_reduce_seconds": sum(t for _, _, t in communication.by_kind.values()),
                "n_actor_params": sum(p.numel() for p in model._actor_params),
                "n_critic_params": sum(p.numel() for p in model._critic_params),
                "phase_seconds_by_rank": [rank_phases for _, rank_phases in gathered],
                "update_seconds": [end - begin for begin, end in itertools.pairwise([start, *update_ends])],
            }
            _write_json(control / f"result{burst}-{me}.json", result)
    if parallel.is_distributed():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _time_phases(model: object) -> tuple[dict[str, float], list[float]]:
    """
    Wrap the model's rollout and update: their wall time adds up in the returned dict, and the list gets the
    ``time.perf_counter()`` at the end of each update.
    """
    totals: dict[str, float] = {}
    update_ends: list[float] = []
    for name, method in (("rollout", "collect_rollouts"), ("update", "train")):
        original = getattr(model, method)

        def timed(*args: object, _original=original, _name=name, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                end = time.perf_counter()
                totals[_name] = totals.get(_name, 0.0) + end - start
                if _name == "update":
                    update_ends.append(end)

        setattr(model, method, timed)
    return totals, update_ends


@dataclass
class Group:
    """The processes of one setting, waiting for bursts in their control folder."""

    name: str
    control: Path
    processes: list[subprocess.Popen]
    n_results: int  # result files per burst: 1, or one per process of an independent group
    bursts: int = 0

    def check_alive(self) -> None:
        failed = [process.returncode for process in self.processes if process.poll() not in (None, 0)]
        if failed:
            raise RuntimeError(f"benchmark group {self.name!r} failed (exit status {failed})")

    def wait_for(self, names: list[str]) -> list[Path]:
        """Sleep until every file of ``names`` exists in the control folder, raising if a process fails meanwhile."""
        paths = [self.control / name for name in names]
        while not all(path.exists() for path in paths):
            self.check_alive()
            time.sleep(POLL_S)
        return paths

    def wait_ready(self) -> None:
        self.wait_for([f"ready{index}" for index in range(self.n_results)])

    def burst(self) -> dict:
        """Run one burst and return its result (throughputs summed over an independent group's processes)."""
        k = self.bursts
        self.bursts += 1
        (self.control / f"go{k}").touch()
        paths = self.wait_for([f"result{k}-{index}.json" for index in range(self.n_results)])
        measured = [json.loads(path.read_text()) for path in paths]
        result = measured[0]
        result["steps_per_second"] = sum(m["steps_per_second"] for m in measured)
        # Update k of each independent process, side by side (they start together): a lock-step schedule would
        # wait for the slower one at every update.
        lockstep_seconds = sum(max(durations) for durations in zip(*(m["update_seconds"] for m in measured), strict=True))
        result["lockstep_steps_per_second"] = sum(m["steps"] for m in measured) / lockstep_seconds
        result["cpu_ms_per_step"] = statistics.mean(m["cpu_ms_per_step"] for m in measured)
        return result

    def stop(self) -> None:
        (self.control / "stop").touch()
        returncodes = [process.wait(timeout=120) for process in self.processes]
        if any(returncodes):  # measured and written, then a process failed while exiting
            print(f"warning: a process of {self.name!r} failed after the measurement (exit status {returncodes})")


def start_group(name: str, folder: Path, updates: int) -> Group:
    """Start the processes of setting ``name``; they warm up, then wait for bursts."""
    n_processes, n_steps, split, independent = SETTINGS[name]
    control = folder / f"group{list(SETTINGS).index(name)}"
    control.mkdir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = child_environment({"OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"})  # a Python stack if a process aborts
    worker_args = ["--worker", f"--n-steps={n_steps}", f"--updates={updates}", f"--control={control}"]
    worker_args += [] if split else ["--averaged"]
    if independent or n_processes == 1:
        commands = [module_command(MODULE, *worker_args, f"--index={index}") for index in range(n_processes)]
    else:
        # torchrun's -m: each rank runs this module by name, as python -m does.
        launcher = module_command("torch.distributed.run", f"--nproc_per_node={n_processes}", "--master_addr=127.0.0.1",
                                  f"--master_port={port}", "-m", MODULE)  # fmt: skip
        commands = [[*launcher, *worker_args, "--index=0"]]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL) for command in commands]
    return Group(name, control, processes, n_results=len(commands))


@contextlib.contextmanager
def groups(updates: int) -> Iterator[dict[str, Group]]:
    """All settings' groups, started one after the other (each warms up alone) and stopped at the end."""
    with tempfile.TemporaryDirectory() as folder:
        started: dict[str, Group] = {}
        try:
            for name in SETTINGS:
                started[name] = start_group(name, Path(folder), updates)
                started[name].wait_ready()
            yield started
        finally:
            for group in started.values():
                if all(process.poll() is None for process in group.processes):
                    group.stop()
                else:
                    for process in group.processes:
                        process.kill()


def paired_ratios(sequence: list[tuple[str, float]], reference: str = SINGLE) -> dict[str, list[float]]:
    """
    Each burst's throughput over the mean of the ``reference`` bursts just before and just after it (the one
    that exists, at the ends).

    :param sequence: ``(setting, steps per second)`` of every burst, in the order they ran
    :param reference: the setting all others are compared with
    :return: ``setting -> ratios``, in the order of the bursts (the reference's own ratios are 1)
    """
    ratios: dict[str, list[float]] = {}
    positions = [i for i, (name, _) in enumerate(sequence) if name == reference]
    if not positions:
        raise ValueError(f"no {reference!r} burst to compare with")
    for i, (name, value) in enumerate(sequence):
        if name == reference:
            ratios.setdefault(name, []).append(1.0)
            continue
        before = [sequence[p][1] for p in positions if p < i][-1:]
        after = [sequence[p][1] for p in positions if p > i][:1]
        ratios.setdefault(name, []).append(value / statistics.mean(before + after))
    return ratios


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """Lower quartile, median and upper quartile (the median three times for fewer than 2 values)."""
    if len(values) < 2:
        median = statistics.median(values)
        return median, median, median
    lower, median, upper = statistics.quantiles(values, n=4, method="inclusive")
    return lower, median, upper


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model_lines = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = model_lines[0].split(":", 1)[1].strip() if model_lines else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores (KVM guest), Linux {platform.release()}, Python {platform.python_version()}"


def _communication(bursts: list[dict]) -> dict:
    """The all-reduces of a setting's bursts together: totals per update, by kind."""
    n_updates = sum(b["updates"] for b in bursts)
    by_kind: dict[str, list[float]] = {}
    for burst in bursts:
        for kind, values in burst["by_kind"].items():
            totals = by_kind.setdefault(kind, [0, 0, 0.0])
            for i, value in enumerate(values):
                totals[i] += value
    return {
        "calls": sum(b["all_reduce_calls"] for b in bursts) / n_updates,
        "bytes": sum(b["all_reduce_bytes"] for b in bursts) / n_updates,
        "by_kind": {
            kind: [calls / n_updates, size / n_updates, seconds / n_updates]
            for kind, (calls, size, seconds) in by_kind.items()
        },
    }


def _communication_table(bursts: list[dict]) -> list[str]:
    """The all-reduces of a setting per update, per kind: calls, bytes and time."""
    communication = _communication(bursts)
    lines = [
        "| what | calls per update | bytes per update | ms per update, waiting for the other process included |",
        "|---|---:|---:|---:|",
    ]
    for kind, (calls, size, seconds) in sorted(communication["by_kind"].items(), key=lambda item: -item[1][1]):
        lines.append(f"| {KINDS.get(kind, kind)} | {calls:.1f} | {size:,.0f} | {1e3 * seconds:.1f} |")
    total_ms = 1e3 * sum(seconds for _, _, seconds in communication["by_kind"].values())
    lines.append(f"| **total** | **{communication['calls']:.1f}** | **{communication['bytes']:,.0f}** | **{total_ms:.1f}** |")
    return lines


def report(
    results: dict[str, list[dict]], ratios: dict[str, list[float]], args: argparse.Namespace, load: tuple[str, str]
) -> str:
    import torch

    lines = [
        "## Data-parallel training (torch.distributed)",
        "",
        f"`learn()` steps per second on CartPole-v1 (rl-zoo3 config, `n_envs={N_ENVS}` per process, one torch thread",
        f"per process, gloo on 127.0.0.1). Every setting's processes are started once and warmed up; then {args.repeats}",
        f"rounds of bursts of {args.updates} updates run one setting at a time, with a 1-process burst between any two",
        "others. `speed-up`: each burst over the mean of the 1-process bursts just before and after it (seconds",
        "apart, so both see the same machine), median and quartiles over the rounds.",
        "`time in all-reduce`: rank 0's share of wall time inside all-reduces (transfer plus waiting for the other rank).",
        "`CPU ms/step`: CPU time of all processes together per environment step (equal values would mean that",
        "data-parallelism adds no work, so that the speed-up is limited only by the cores the processes get).",
        "",
        "| setting | steps per update | steps/s (median, quartiles) | speed-up vs 1 process (median, quartiles) "
        "| time in all-reduce | CPU ms/step |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, (n_processes, n_steps, _, independent) in SETTINGS.items():
        low, median, high = quartiles([r["steps_per_second"] for r in results[name]])
        ratio_low, ratio, ratio_high = quartiles(ratios[name])
        waiting = sum(r["all_reduce_seconds"] for r in results[name]) / sum(r["seconds"] for r in results[name])
        cpu = statistics.median(r["cpu_ms_per_step"] for r in results[name])
        steps = f"{n_steps * N_ENVS} each" if independent else str(n_steps * N_ENVS * n_processes)
        speedup = "1.00×" if name == SINGLE else f"**{ratio:.2f}×** ({ratio_low:.2f}–{ratio_high:.2f})"
        lines.append(f"| {name} | {steps} | {median:.0f} ({low:.0f}–{high:.0f}) | {speedup} | {waiting:.0%} | {cpu:.3f} |")
        if name == INDEPENDENT:
            low, median, high = quartiles([r["lockstep_steps_per_second"] for r in results[name]])
            ratio_low, ratio, ratio_high = quartiles(ratios[LOCKSTEP])
            lines.append(
                f"| {LOCKSTEP} | {steps} | {median:.0f} ({low:.0f}–{high:.0f}) "
                f"| **{ratio:.2f}×** ({ratio_low:.2f}–{ratio_high:.2f}) | – | – |"
            )
    lines += [
        "",
        "Where the wall time of an update goes, per process (ms, median over bursts): the rollout (ending with the",
        "synchronisations after it: global step count, episode statistics), the update (`train()`), and the rest",
        "of `learn()` (logging, callbacks):",
        "",
        "| setting | process | rollout | update | rest | total |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, (n_processes, _, _, independent) in SETTINGS.items():
        for index in range(1 if independent else n_processes):
            per_update = [
                {key: 1e3 * value / r["updates"] for key, value in r["phase_seconds_by_rank"][index].items()}
                | {"total": 1e3 * r["seconds"] / r["updates"]}
                for r in results[name]
            ]
            rollout, update, total = (statistics.median(p[key] for p in per_update) for key in ("rollout", "update", "total"))
            rest = statistics.median(p["total"] - p["rollout"] - p["update"] for p in per_update)
            process = "first" if independent else ("the one" if n_processes == 1 else f"rank {index}")
            lines.append(f"| {name} | {process} | {rollout:.0f} | {update:.0f} | {rest:.0f} | {total:.0f} |")
    main, ceiling, lockstep = (statistics.median(ratios[name]) for name in (MAIN, INDEPENDENT, LOCKSTEP))
    share = sum(r >= 1.8 for r in ratios[MAIN]) / len(ratios[MAIN])
    verdict = "reached" if main >= 1.8 else "**not reached** here"
    lines += [
        "",
        f"Target of issue 7: 2 processes at ≥ 1.8× the steps per second of 1 process: {main:.2f}×, {verdict} "
        f"({share:.0%} of the bursts at 1.8× or more; two independent processes without any communication: {ceiling:.2f}×,",
        f"the same waiting at every update for the slower of them: {lockstep:.2f}×). A synchronous update waits for the",
        "slower rank's rollout, so its ceiling is set by the slower process at each update, not by the sum of both: the",
        "two cores of this virtual machine often run at different speeds (the same rollout took 270 ms in one process",
        "and 430 ms in the other).",
    ]
    split, averaged = results[MAIN], results[MAIN + ", every step averaged"]
    lines += [
        "",
        f"All-reduces per update, 2 processes with the same config per process ({split[0]['n_actor_params']} actor and "
        f"{split[0]['n_critic_params']} critic parameters), over all bursts; the update split over the ranks (default):",
        "",
        *_communication_table(split),
        "",
        "and with every step averaged over the ranks (`split_update = False`; float32 payloads, float64 for the",
        "line-search scalars):",
        "",
        *_communication_table(averaged),
        "",
        "The rollout-end all-reduce is the first synchronisation after each process's rollout: its time is mostly the",
        "difference between the two processes' rollout durations, which the faster one spends waiting. Besides the",
        "all-reduces, each rollout gathers the episode statistics (`all_gather_object`); the weights are broadcast once",
        "at setup.",
        "",
        f"Machine: {machine()}; torch {torch.__version__}.",
        f"Load average {load[0]} before the runs and {load[1]} after, on 2 cores. One all-reduce of 2 floats between",
        f"the two processes takes {split[0].get('all_reduce_latency_us', float('nan')):.0f} µs here.",
        f"Command: `python -m benchmarks.distributed --repeats {args.repeats} --updates {args.updates}`.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="rounds of bursts (one burst per setting and round)")
    parser.add_argument("--updates", type=int, default=5, help="timed updates per burst")
    parser.add_argument("--no-write", action="store_true", help="print, do not write docs/benchmarks.md")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n-steps", type=int, default=512, help=argparse.SUPPRESS)
    parser.add_argument("--control", type=str, default="", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--averaged", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    load_before = "/".join(f"{value:.1f}" for value in os.getloadavg())
    results: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    sequence: list[tuple[str, float]] = []
    others = [name for name in SETTINGS if name != SINGLE]
    with groups(args.updates) as started:
        for repeat in range(args.repeats):
            # 1 process before each other setting; the order of the others turns every round.
            order = others[repeat % len(others) :] + others[: repeat % len(others)]
            round_values = []
            for name in itertools.chain.from_iterable((SINGLE, other) for other in order):
                results[name].append(started[name].burst())
                sequence.append((name, results[name][-1]["steps_per_second"]))
                round_values.append(results[name][-1]["steps_per_second"])
                if name == INDEPENDENT:
                    sequence.append((LOCKSTEP, results[name][-1]["lockstep_steps_per_second"]))
            print(f"round {repeat + 1}: " + ", ".join(f"{v:.0f}" for v in round_values), flush=True)
        results[SINGLE].append(started[SINGLE].burst())  # closes the last pair
        sequence.append((SINGLE, results[SINGLE][-1]["steps_per_second"]))
    ratios = paired_ratios(sequence)
    section = report(results, ratios, args, (load_before, "/".join(f"{value:.1f}" for value in os.getloadavg())))
    print(section)
    if not args.no_write:
        sections.write_section("distributed", section)
        raw = ROOT / "benchmarks" / "results" / "distributed.json"
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps({"sequence": sequence, "ratios": ratios, "bursts": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
