"""
Data-parallel throughput: ``learn()`` steps per second of TRPO on CartPole-v1 with 1 and 2 processes.

Each run is launched with ``torch.distributed.run`` (gloo on 127.0.0.1; 1 process is the plain single-process
path, since torch.distributed is then not initialised) and times ``learn()`` after one warm-up update. Runs
alternate between the settings, several repetitions; medians are reported. Per update, the all-reduces
issued by :mod:`sb3_trpo_plugin.common.distributed` are counted with their payload bytes.

Settings (rl-zoo3's CartPole-v1 config: ``n_envs=2``, ``n_steps=512``, ``batch_size=512``, 20 critic epochs):

* 1 process: 1024 steps per update;
* 2 independent processes, no communication: the ceiling of 2 processes on this machine's cores;
* 2 processes, same config per process: 2048 steps per update (each rank does the same work as 1 process),
  with the update split over the ranks (the default) and with every step averaged over them
  (``split_update = False``);
* 2 processes, same global batch: ``n_steps=256`` per rank, 1024 steps per update (the single-process update).

Usage::

    python benchmarks/distributed.py        # writes docs/benchmarks.md's section, benchmarks/results/distributed.json
    python benchmarks/distributed.py --repeats 1 --updates 4 --no-write

Each process runs torch on one thread (``OMP_NUM_THREADS=1``, as torchrun sets with several processes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sections

ROOT = Path(__file__).resolve().parent.parent
ZOO_CARTPOLE = dict(
    n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98, gamma=0.99, learning_rate=1e-3, n_critic_updates=20
)
N_ENVS = 2
#: What each kind of all-reduce carries in TRPO's update.
KINDS = {
    "integers": "rollout end: global step count and stop flag",
    "running statistics": "VecNormalize statistics",
    "checksum": "weights check (every 10 updates)",
    "mean and std": "advantage normalisation (count, mean and squared deviations of each rank)",
    "tensor and scalar": "policy gradient and surrogate",
    "tensor": "Fisher-vector products (one per CG step)",
    "scalars": "line search: surrogate and KL (one per trial)",
    "gathered rollout": "split update: every rank's rollout, gathered once",
    "split update: new actor, critic and statistics": "split update: the new weights and the step's statistics",
    "gradients": "critic gradients and loss (one per minibatch, when the critic's inputs are not gathered)",
    "gathered rows": "critic features and returns, gathered once",
}
#: name: (processes, n_steps per process, split update, launched together without torch.distributed)
SETTINGS = {
    "1 process": (1, 512, True, False),
    "2 independent processes (no communication)": (2, 512, True, True),
    "2 processes, same config per process": (2, 512, True, False),
    "2 processes, same config per process, every step averaged": (2, 512, False, False),
    "2 processes, same global batch": (2, 256, True, False),
}
MAIN = "2 processes, same config per process"


def worker(args: argparse.Namespace) -> None:
    """One rank: warm up one update, then time ``args.updates`` updates of ``learn()``."""
    import torch
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_trpo_plugin import TRPO
    from sb3_trpo_plugin.common import distributed

    torch.set_num_threads(1)
    env = make_vec_env("CartPole-v1", n_envs=N_ENVS)
    model = TRPO("MlpPolicy", env, seed=0, device="cpu", **(ZOO_CARTPOLE | {"n_steps": args.n_steps}))
    model.split_update = not args.averaged
    steps_per_update = args.n_steps * N_ENVS * distributed.world_size()
    model.learn(steps_per_update)  # warm-up
    distributed.COMMUNICATION.reset()
    if distributed.is_distributed():
        torch.distributed.barrier()
    start, cpu_start, steps, updates = time.perf_counter(), time.process_time(), model.num_timesteps, model._n_updates
    model.learn(args.updates * steps_per_update, reset_num_timesteps=False)
    elapsed = time.perf_counter() - start
    cpu_seconds = [seconds for (seconds,) in distributed.all_gather_objects([time.process_time() - cpu_start])]
    n_updates = model._n_updates - updates
    latency_us = float("nan")
    if distributed.is_distributed():  # the floor of one synchronisation here: 200 all-reduces of 2 floats
        probe = torch.zeros(2)
        torch.distributed.barrier()
        probe_start = time.perf_counter()
        for _ in range(200):
            torch.distributed.all_reduce(probe)
        latency_us = 1e6 * (time.perf_counter() - probe_start) / 200
    if distributed.is_main_process():
        communication = distributed.COMMUNICATION
        result = {
            "all_reduce_latency_us": latency_us,
            "steps_per_second": (model.num_timesteps - steps) / elapsed,
            "cpu_ms_per_step": 1e3 * sum(cpu_seconds) / (model.num_timesteps - steps),
            "updates": n_updates,
            "all_reduce_per_update": communication.all_reduce_calls / n_updates,
            "all_reduce_bytes_per_update": communication.all_reduce_bytes / n_updates,
            "by_kind": {
                kind: [calls / n_updates, size / n_updates, t] for kind, (calls, size, t) in communication.by_kind.items()
            },
            "all_reduce_fraction": sum(t for _, _, t in communication.by_kind.values()) / elapsed,
            "n_actor_params": sum(p.numel() for p in model._actor_params),
            "n_critic_params": sum(p.numel() for p in model._critic_params),
        }
        Path(args.result).write_text(json.dumps(result))
    if distributed.is_distributed():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def launch(n_processes: int, n_steps: int, updates: int, split: bool = True, independent: bool = False) -> dict:
    """
    Run the worker under ``torch.distributed.run`` and return rank 0's result; or, ``independent``, start
    ``n_processes`` single-process workers at once and return their summed throughput.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = os.environ | {
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONFAULTHANDLER": "1",  # a Python stack if a process aborts
    }
    with tempfile.TemporaryDirectory() as folder:
        results = [Path(folder) / f"result{i}.json" for i in range(n_processes if independent else 1)]
        worker_args = [__file__, "--worker", f"--n-steps={n_steps}", f"--updates={updates}"]
        worker_args += [] if split else ["--averaged"]
        if independent:
            commands = [[sys.executable, *worker_args, f"--result={result}"] for result in results]
        else:
            launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n_processes}",
                        "--master_addr=127.0.0.1", f"--master_port={port}"]  # fmt: skip
            commands = [[*launcher, *worker_args, f"--result={results[0]}"]]
        processes = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL) for command in commands]
        returncodes = [process.wait() for process in processes]
        if not all(result.exists() for result in results):
            raise RuntimeError(f"benchmark run failed (exit status {returncodes}): {' '.join(commands[0])}")
        if any(returncodes):  # measured and written, then a process failed while exiting
            print(f"warning: a process failed after the measurement (exit status {returncodes})", flush=True)
        measured = [json.loads(result.read_text()) for result in results]
    if independent:
        measured[0]["steps_per_second"] = sum(m["steps_per_second"] for m in measured)
        measured[0]["cpu_ms_per_step"] = statistics.mean(m["cpu_ms_per_step"] for m in measured)
    return measured[0]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model_lines = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = model_lines[0].split(":", 1)[1].strip() if model_lines else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores (KVM guest), Linux {platform.release()}, Python {platform.python_version()}"


def _communication_table(run: dict) -> list[str]:
    """The all-reduces of one run, per kind: calls, bytes and time per update."""
    lines = [
        "| what | calls per update | bytes per update | ms per update, waiting for the other process included |",
        "|---|---:|---:|---:|",
    ]
    for kind, (calls, size, seconds) in sorted(run["by_kind"].items(), key=lambda item: -item[1][1]):
        lines.append(f"| {KINDS.get(kind, kind)} | {calls:.1f} | {size:,.0f} | {1e3 * seconds / run['updates']:.1f} |")
    total_ms = 1e3 * sum(seconds for _, _, seconds in run["by_kind"].values()) / run["updates"]
    lines.append(
        f"| **total** | **{run['all_reduce_per_update']:.1f}** | **{run['all_reduce_bytes_per_update']:,.0f}** "
        f"| **{total_ms:.1f}** |"
    )
    return lines


def report(results: dict[str, list[dict]], args: argparse.Namespace, load: tuple[str, str]) -> str:
    import torch

    singles = [r["steps_per_second"] for r in results["1 process"]]

    def speedup(name: str) -> float:
        """Median over repeats of the ratio to the 1-process run of the same repeat (runs alternate, so neighbours meet
        similar load; this machine's single-process throughput varied by up to 1.5x between runs)."""
        return statistics.median(r["steps_per_second"] / single for r, single in zip(results[name], singles, strict=True))

    lines = [
        "## Data-parallel training (torch.distributed)",
        "",
        f"`learn()` steps per second on CartPole-v1 (rl-zoo3 config, `n_envs={N_ENVS}` per process, one torch thread",
        f"per process, gloo on 127.0.0.1), median of {args.repeats} alternating runs of {args.updates} updates each, "
        "after one warm-up update.",
        "`time in all-reduce`: rank 0's share of wall time inside all-reduces (transfer plus waiting for the other rank).",
        "`CPU ms/step`: CPU time of all processes together per environment step (equal values would mean that",
        "data-parallelism adds no work, so that the speed-up is limited only by the cores the processes get).",
        "",
        "`speed-up`: median over repeats of the ratio to the 1-process run of the same repeat.",
        "",
        "| setting | steps per update | steps/s (median) | runs | speed-up vs 1 process | time in all-reduce | CPU ms/step |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for name, (n_processes, n_steps, _, independent) in SETTINGS.items():
        values = [r["steps_per_second"] for r in results[name]]
        median = statistics.median(values)
        runs = ", ".join(f"{v:.0f}" for v in values)
        waiting = statistics.median(r["all_reduce_fraction"] for r in results[name])
        cpu = statistics.median(r["cpu_ms_per_step"] for r in results[name])
        steps = f"{n_steps * N_ENVS} each" if independent else str(n_steps * N_ENVS * n_processes)
        lines.append(f"| {name} | {steps} | {median:.0f} | {runs} | {speedup(name):.2f}× | {waiting:.0%} | {cpu:.3f} |")
    main, ceiling = speedup(MAIN), speedup("2 independent processes (no communication)")
    verdict = "reached" if main >= 1.8 else "**not reached** here"
    lines += [
        "",
        f"Target of issue 7: 2 processes at ≥ 1.8× the steps per second of 1 process: {main:.2f}×, {verdict} "
        f"(two independent processes without any communication: {ceiling:.2f}×).",
    ]
    split, averaged = results[MAIN][0], results[MAIN + ", every step averaged"][0]
    lines += [
        "",
        f"All-reduces per update, 2 processes with the same config per process ({split['n_actor_params']} actor and "
        f"{split['n_critic_params']} critic parameters), first run of each; the update split over the ranks (default):",
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
        f"the two processes takes {split.get('all_reduce_latency_us', float('nan')):.0f} µs here.",
        f"Command: `python benchmarks/distributed.py --repeats {args.repeats} --updates {args.updates}`.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting, alternating")
    parser.add_argument("--updates", type=int, default=8, help="timed updates per run")
    parser.add_argument("--no-write", action="store_true", help="print, do not write docs/benchmarks.md")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n-steps", type=int, default=512, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=str, default="", help=argparse.SUPPRESS)
    parser.add_argument("--averaged", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    load_before = "/".join(f"{value:.1f}" for value in os.getloadavg())
    results: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for repeat in range(args.repeats):
        for name, (n_processes, n_steps, split, independent) in SETTINGS.items():
            results[name].append(launch(n_processes, n_steps, args.updates, split, independent))
            print(f"run {repeat + 1}, {name}: {results[name][-1]['steps_per_second']:.0f} steps/s", flush=True)
    section = report(results, args, (load_before, "/".join(f"{value:.1f}" for value in os.getloadavg())))
    print(section)
    if not args.no_write:
        sections.write_section("distributed", section)
        raw = ROOT / "benchmarks" / "results" / "distributed.json"
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
