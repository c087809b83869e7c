"""
Soak test: train TRPO on CartPole-v1 for a long run and report resident memory (RSS) over time.

Memory must stay flat once the first updates have allocated what they need: a steady climb means a
leak (e.g. autograd graphs kept alive across updates, buffers or logs that grow with time). The run
also saves the model periodically, so the save path (in-memory archive, JSON description, atomic
write) is soaked too.

Usage::

    nice python -m benchmarks.soak                              # 1M steps (the full soak)
    nice python -m benchmarks.soak --total-timesteps 50000      # a quick check
    python -m benchmarks.soak --output soak.csv --max-growth-mib 20

It prints one line per sample (step count, elapsed time, RSS, Python objects) and a summary: RSS after
the warm-up, at the end, the growth in between, and a least-squares slope in MiB per 100k steps. The
exit code is 1 when the growth after warm-up exceeds ``--max-growth-mib``.
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np
import psutil
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_trpo_plugin import TRPO

MIB = 1024 * 1024


@dataclass(frozen=True)
class MemorySample:
    """One measurement: step count, seconds since the start, resident set size, live Python objects."""

    timesteps: int
    elapsed_s: float
    rss_mib: float
    python_objects: int


class MemoryMonitor(BaseCallback):
    """
    Sample RSS after every ``sample_every`` timesteps (at the end of a rollout) and save the model every ``save_every``.

    :param sample_every: timesteps between samples
    :param save_every: timesteps between saves (0: never)
    :param save_path: where the periodic saves go (overwritten each time)
    """

    def __init__(self, sample_every: int, save_every: int, save_path: str) -> None:
        super().__init__()
        self.sample_every = sample_every
        self.save_every = save_every
        self.save_path = save_path
        self.samples: list[MemorySample] = []
        self.process = psutil.Process()
        self.start = time.perf_counter()
        self._next_sample = 0
        self._next_save = save_every

    def sample(self) -> None:
        sample = MemorySample(
            timesteps=self.model.num_timesteps,
            elapsed_s=time.perf_counter() - self.start,
            rss_mib=self.process.memory_info().rss / MIB,
            python_objects=len(gc.get_objects()),
        )
        self.samples.append(sample)
        print(
            f"{sample.timesteps:>10,d} steps  {sample.elapsed_s:8.1f} s  RSS {sample.rss_mib:8.1f} MiB  "
            f"{sample.python_objects:>9,d} objects",
            flush=True,
        )

    def _on_training_start(self) -> None:
        self.start = time.perf_counter()
        self.sample()
        self._next_sample = self.sample_every

    def _on_rollout_end(self) -> None:
        if self.model.num_timesteps >= self._next_sample:
            self.sample()
            self._next_sample += self.sample_every
        if self.save_every and self.model.num_timesteps >= self._next_save:
            self.model.save(self.save_path)
            self._next_save += self.save_every

    def _on_step(self) -> bool:
        return True


def summarize(samples: list[MemorySample], warmup_fraction: float) -> dict[str, float]:
    """
    RSS after the warm-up and at the end, growth between them, and the slope of a least-squares line.

    :param samples: the measurements, in order
    :param warmup_fraction: share of the run (in timesteps) treated as warm-up
    :return: the summary numbers
    """
    total = samples[-1].timesteps
    steady = [s for s in samples if s.timesteps >= warmup_fraction * total] or samples[-1:]
    steps = np.array([s.timesteps for s in steady], dtype=float)
    rss = np.array([s.rss_mib for s in steady])
    slope = float(np.polyfit(steps, rss, 1)[0]) * 100_000 if len(steady) >= 2 and np.ptp(steps) > 0 else 0.0
    return {
        "timesteps": float(total),
        "elapsed_s": samples[-1].elapsed_s,
        "rss_start_mib": samples[0].rss_mib,
        "rss_after_warmup_mib": steady[0].rss_mib,
        "rss_end_mib": samples[-1].rss_mib,
        "rss_max_mib": max(s.rss_mib for s in samples),
        "growth_after_warmup_mib": samples[-1].rss_mib - steady[0].rss_mib,
        "slope_mib_per_100k_steps": slope,
        "python_objects_after_warmup": float(steady[0].python_objects),
        "python_objects_end": float(samples[-1].python_objects),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total-timesteps", type=int, default=1_000_000)
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--n-steps", type=int, default=512, help="steps per env per update")
    parser.add_argument("--sample-every", type=int, default=None, help="timesteps between samples (default: 1/50 of the run)")
    parser.add_argument("--save-every", type=int, default=50_000, help="timesteps between model saves (0: never)")
    parser.add_argument("--warmup-fraction", type=float, default=0.1, help="share of the run excluded from the growth")
    parser.add_argument("--max-growth-mib", type=float, default=20.0, help="exit 1 when RSS grows more after warm-up")
    parser.add_argument("--output", type=str, default=None, help="CSV file for the samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 keeps a long run from crowding a shared machine; 0: torch's default)",
    )
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    sample_every = args.sample_every or max(args.total_timesteps // 50, args.n_envs * args.n_steps)
    env = make_vec_env("CartPole-v1", n_envs=args.n_envs, seed=args.seed)
    # rl-zoo3's tuned TRPO settings for CartPole-v1, with the batch scaled to the number of envs.
    model = TRPO(
        "MlpPolicy",
        env,
        n_steps=args.n_steps,
        batch_size=args.n_steps * args.n_envs // 4,
        cg_damping=1e-3,
        gae_lambda=0.98,
        gamma=0.99,
        learning_rate=1e-3,
        n_critic_updates=20,
        seed=args.seed,
        device="cpu",
    )
    with tempfile.TemporaryDirectory() as folder:
        monitor = MemoryMonitor(sample_every, args.save_every, os.path.join(folder, "soak_model.zip"))
        print(f"TRPO on CartPole-v1: {args.total_timesteps:,d} steps, {args.n_envs} envs, pid {os.getpid()}", flush=True)
        model.learn(args.total_timesteps, callback=monitor)
        monitor.sample()

    if args.output:
        with open(args.output, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(asdict(monitor.samples[0])))
            writer.writeheader()
            writer.writerows(asdict(s) for s in monitor.samples)

    summary = summarize(monitor.samples, args.warmup_fraction)
    mean_reward = np.mean([info["r"] for info in model.ep_info_buffer]) if model.ep_info_buffer else float("nan")
    print("\nsummary")
    for key, value in summary.items():
        print(f"  {key:<30} {value:12.2f}")
    print(f"  {'mean_episode_reward_last_100':<30} {mean_reward:12.2f}")
    flat = summary["growth_after_warmup_mib"] <= args.max_growth_mib
    print(
        f"\nRSS {'flat' if flat else 'GROWING'}: {summary['growth_after_warmup_mib']:+.1f} MiB after warm-up "
        f"(limit {args.max_growth_mib} MiB)"
    )
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
