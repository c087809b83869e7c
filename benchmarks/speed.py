"""
Speed and memory of one TRPO update, this package against sb3-contrib, side by side in one process.

For each configuration one rollout buffer is collected; then ``train()`` of both implementations is
timed alternately from identical weights and the identical buffer (several repetitions; medians and
the median of per-pair ratios). The peak memory growth of one ``train()`` is measured (median of 3) in a fresh
subprocess per implementation (Linux: the peak RSS is reset through ``/proc/self/clear_refs``).
End-to-end ``learn()`` steps per second on rl-zoo3's CartPole config are timed alternately too.

Usage::

    python benchmarks/speed.py                        # all configurations, writes docs/benchmarks.md
    python benchmarks/speed.py --configs cartpole --repeats 3 --no-write

Torch runs on one thread (``torch.set_num_threads(1)``, set here, not in the library) so the two
implementations compete on equal terms on a loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import sections
import torch
from gymnasium import spaces
from sb3_contrib import TRPO as ContribTRPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_trpo_plugin import TRPO

ROOT = Path(__file__).resolve().parent.parent


class SyntheticEnv(gym.Env):
    """Random observations of a given space, zero-mean random rewards, 200-step episodes."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space):
        self.observation_space, self.action_space = observation_space, action_space
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self._steps = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self._steps += 1
        return self.observation_space.sample(), float(self.np_random.normal()), False, self._steps >= 200, {}


def synthetic(observation_space: spaces.Space, action_space: spaces.Space, n_envs: int = 1) -> Callable[[], DummyVecEnv]:
    return lambda: DummyVecEnv([lambda: SyntheticEnv(observation_space, action_space)] * n_envs)


@dataclass(frozen=True)
class Config:
    """One benchmark configuration: an env factory and the constructor keywords shared by both algorithms."""

    name: str
    description: str
    make_env: Callable[[], Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    policy: str = "MlpPolicy"


GAUSSIAN_17_6 = (spaces.Box(-1, 1, (17,), np.float32), spaces.Box(-1, 1, (6,), np.float32))
CONFIGS = {
    "cartpole": Config(
        "cartpole",
        "rl-zoo3 CartPole-v1 (1024 samples, 20 critic epochs × 2 minibatches)",
        lambda: make_vec_env("CartPole-v1", n_envs=2, seed=0),
        dict(n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98, n_critic_updates=20),
    ),
    "pendulum_gsde": Config(
        "pendulum_gsde",
        "rl-zoo3 Pendulum-v1, gSDE (2048 samples, 15 critic epochs × 16 minibatches)",
        lambda: make_vec_env("Pendulum-v1", n_envs=2, seed=0),
        dict(n_steps=1024, gamma=0.9, n_critic_updates=15, use_sde=True, sde_sample_freq=4),
    ),
    "halfcheetah_size": Config(
        "halfcheetah_size",
        "Gaussian, obs 17, act 6, 64×64, batch 2048 (defaults otherwise)",
        synthetic(*GAUSSIAN_17_6),
        dict(n_steps=2048),
    ),
    "wide_gaussian": Config(
        "wide_gaussian",
        "Gaussian, obs 17, act 6, 256×256, batch 8192",
        synthetic(*GAUSSIAN_17_6, n_envs=4),
        dict(n_steps=2048, batch_size=512, policy_kwargs=dict(net_arch=[256, 256])),
    ),
    "cnn": Config(
        "cnn",
        "CnnPolicy, 84×84×4 uint8 images, 6 actions, batch 512",
        synthetic(spaces.Box(0, 255, (84, 84, 4), np.uint8), spaces.Discrete(6)),
        dict(n_steps=512, batch_size=128, n_critic_updates=5),
        policy="CnnPolicy",
    ),
}
ALGORITHMS: dict[str, type[OnPolicyAlgorithm]] = {"ours": TRPO, "sb3-contrib": ContribTRPO}


def filled_models(config: Config) -> dict[str, OnPolicyAlgorithm]:
    """Both algorithms with identical weights, sharing one rollout buffer collected by ours."""
    models = {name: cls(config.policy, config.make_env(), seed=0, **config.kwargs) for name, cls in ALGORITHMS.items()}
    ours = models["ours"]
    _, callback = ours._setup_learn(ours.n_steps * ours.n_envs, callback=None)
    callback.on_training_start(locals(), globals())
    ours.collect_rollouts(ours.env, callback, ours.rollout_buffer, n_rollout_steps=ours.n_steps)
    for name, model in models.items():
        model.set_logger(Logger(folder=None, output_formats=[]))
        if name != "ours":
            model.policy.load_state_dict(ours.policy.state_dict())
            model.rollout_buffer = ours.rollout_buffer
    return models


def time_train(config: Config, repeats: int) -> dict[str, Any]:
    """Median ``train()`` seconds of each algorithm and the median per-pair ratio (contrib / ours)."""
    models = filled_models(config)
    initial = {
        name: (copy.deepcopy(m.policy.state_dict()), copy.deepcopy(m.policy.optimizer.state_dict()))
        for name, m in models.items()
    }
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for repeat in range(repeats + 1):  # the first round warms up and is discarded
        for name, model in models.items():
            policy_state, optimizer_state = initial[name]
            model.policy.load_state_dict(policy_state)
            model.policy.optimizer.load_state_dict(optimizer_state)
            start = time.perf_counter()
            model.train()
            if repeat:
                seconds[name].append(time.perf_counter() - start)
    ratios = [c / o for c, o in zip(seconds["sb3-contrib"], seconds["ours"], strict=True)]
    return {
        "ours_s": statistics.median(seconds["ours"]),
        "contrib_s": statistics.median(seconds["sb3-contrib"]),
        "ratio": statistics.median(ratios),
    }


def _peak_rss_growth_child(config_name: str, algorithm: str) -> None:
    """In a fresh process: peak RSS during one train() minus RSS just before it, printed as JSON (bytes)."""
    torch.set_num_threads(1)
    model = filled_models(CONFIGS[config_name])[algorithm]
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
    rss_before = _status_kib("VmRSS")
    model.train()
    print(json.dumps({"growth_bytes": (_status_kib("VmHWM") - rss_before) * 1024}))


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def peak_memory_growth(config_name: str, samples: int = 3) -> dict[str, float]:
    """
    Peak RSS growth of one ``train()`` per algorithm, each in its own subprocess (MiB): the median of
    ``samples`` subprocesses per algorithm, alternating (one sample varies by a few MiB with the allocator).
    """
    growth: dict[str, list[float]] = {algorithm: [] for algorithm in ALGORITHMS}
    for _ in range(samples):
        for algorithm in ALGORITHMS:
            output = subprocess.run(
                [sys.executable, __file__, "--memory-child", config_name, algorithm],
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
            ).stdout
            growth[algorithm].append(json.loads(output.strip().splitlines()[-1])["growth_bytes"] / 2**20)
    return {algorithm: statistics.median(values) for algorithm, values in growth.items()}


def learn_steps_per_second(total_timesteps: int, repeats: int) -> dict[str, float]:
    """End-to-end ``learn()`` on rl-zoo3's CartPole config, alternating the algorithms."""
    config = CONFIGS["cartpole"]
    rates: dict[str, list[float]] = {name: [] for name in ALGORITHMS}
    for repeat in range(repeats):
        for name, cls in ALGORITHMS.items():
            model = cls(config.policy, config.make_env(), seed=repeat, **config.kwargs)
            start = time.perf_counter()
            model.learn(total_timesteps)
            rates[name].append(model.num_timesteps / (time.perf_counter() - start))
    ours, theirs = statistics.median(rates["ours"]), statistics.median(rates["sb3-contrib"])
    return {"ours_steps_per_s": ours, "contrib_steps_per_s": theirs, "ratio": ours / theirs}


def markdown(results: dict[str, Any], command: str) -> str:
    lines = [
        "## Speed: one `train()` against sb3-contrib's TRPO",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} thread, set by the benchmark), sb3-contrib "
        f"{__import__('sb3_contrib').__version__}, Python {platform.python_version()}  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| configuration | ours (s) | sb3-contrib (s) | speed-up | peak memory growth ours / contrib (MiB) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in results["train"].items():
        memory = results["memory"].get(name)
        memory_text = f"{memory['ours']:.1f} / {memory['sb3-contrib']:.1f}" if memory else "—"
        times = f"{row['ours_s']:.4f} | {row['contrib_s']:.4f} | **{row['ratio']:.2f}×**"
        lines.append(f"| {CONFIGS[name].description} | {times} | {memory_text} |")
    ratios = [row["ratio"] for row in results["train"].values()]
    lines += ["", f"Median speed-up over the configurations: **{statistics.median(ratios):.2f}×**."]
    if "learn" in results:
        learn = results["learn"]
        lines += [
            "",
            f"End-to-end `learn()` on the rl-zoo3 CartPole config: {learn['ours_steps_per_s']:.0f} steps/s against "
            f"{learn['contrib_steps_per_s']:.0f} (**{learn['ratio']:.2f}×**).",
        ]
    lines += [
        "",
        "Times are medians over repetitions from identical weights and an identical rollout buffer, alternating the two",
        "implementations in one process; the speed-up is the median of per-pair ratios. Memory: peak RSS during one",
        "`train()` minus RSS before it, in a fresh process per implementation (first update after the rollout), median",
        "of 3 such processes each.",
        "",
        "Where the time goes: the policy step is 2-3× faster than sb3-contrib's (one autograd call for the gradient",
        "instead of two per parameter tensor, closed-form Fisher products, no copies in the line search). The critic's",
        "regression, many small minibatch steps bound by per-operation overhead, is about 2× faster: for SB3's plain MLP",
        "critic its gradient is derived by hand (a dozen tensor operations, no autograd graph), `tanh` runs in NumPy",
        "(PyTorch's CPU `tanh` takes about 85 µs per 512×64 tensor here, NumPy's about 13 µs), the features are computed",
        "once per update when the critic's extractor is constant, and one fused Adam kernel steps the critic's parameters",
        "only. What remains per critic step is the Adam step (about 50 µs, a third of it Python) and the matrix products.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--repeats", type=int, default=7, help="timed train() calls per algorithm and configuration")
    parser.add_argument("--learn-timesteps", type=int, default=30_720, help="steps per end-to-end learn() run (0: skip)")
    parser.add_argument("--learn-repeats", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update docs/benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write raw results to this file")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _peak_rss_growth_child(*args.memory_child)
        return

    torch.set_num_threads(1)
    results: dict[str, Any] = {"train": {}, "memory": {}}
    for name in args.configs:
        results["train"][name] = time_train(CONFIGS[name], args.repeats)
        if not args.no_memory:
            results["memory"][name] = peak_memory_growth(name)
        print(name, json.dumps({k: v[name] for k, v in results.items() if name in v}), flush=True)
    if args.learn_timesteps:
        results["learn"] = learn_steps_per_second(args.learn_timesteps, args.learn_repeats)
        print("learn", json.dumps(results["learn"]), flush=True)
    command = "python benchmarks/speed.py " + " ".join(sys.argv[1:])
    section = markdown(results, command.strip())
    print(section)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not args.no_write:
        sections.write_section("speed", section)


if __name__ == "__main__":
    main()
