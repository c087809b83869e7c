"""
One ``train()`` of this package's TRPO against one of sb3-contrib's, side by side in one process.

For each configuration one rollout buffer is collected; then ``train()`` of both implementations is timed alternately
from identical weights and the identical buffer (several repetitions; medians and the median of per-pair ratios). The
peak memory growth of one ``train()`` is measured (median of 3) in a fresh subprocess per implementation (Linux: the
peak RSS is reset through ``/proc/self/clear_refs``). Torch runs on one thread (set here, not in the library) so the
implementations compete on equal terms on a loaded 2-core machine.

Usage (from the repository root; ``python -m benchmarks.speed_report`` then writes the docs' section)::

    python -m benchmarks.speed_train --repeats 3           # benchmarks/results/speed/train.json
    python -m benchmarks.speed_train --configs cartpole --repeats 1 --no-memory --results /tmp/speed
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib import TRPO as ContribTRPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv

from benchmarks.launch import ROOT, child_environment, module_command
from benchmarks.speed_timing import RESULTS, command_line, write_result
from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.envs import RandomEnv

MODULE = "benchmarks.speed_train"


def synthetic(observation_space: spaces.Space, action_space: spaces.Space, n_envs: int = 1) -> Callable[[], DummyVecEnv]:
    """
    A factory of ``DummyVecEnv`` objects of random observations, zero-mean random rewards and 200-step episodes.

    :param observation_space: the observations' space
    :param action_space: the actions' space
    :param n_envs: environments per VecEnv
    """
    return lambda: DummyVecEnv(
        [lambda: RandomEnv(action_space, observation_space, episode_length=200, reward="normal")] * n_envs
    )


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
    assert ours.env is not None  # built with an env
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
                module_command(MODULE, "--memory-child", config_name, algorithm),
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
                env=child_environment(),
            ).stdout
            growth[algorithm].append(json.loads(output.strip().splitlines()[-1])["growth_bytes"] / 2**20)
    return {algorithm: statistics.median(values) for algorithm, values in growth.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS), help="configurations")
    parser.add_argument("--repeats", type=int, default=7, help="timed train() calls per algorithm and configuration")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the result file (train.json)")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _peak_rss_growth_child(*args.memory_child)
        return
    command = command_line(MODULE)
    torch.set_num_threads(1)
    results: dict[str, Any] = {"train": {}, "memory": {}, "descriptions": {}}
    for name in args.configs:
        results["descriptions"][name] = CONFIGS[name].description
        results["train"][name] = time_train(CONFIGS[name], args.repeats)
        if not args.no_memory:
            results["memory"][name] = peak_memory_growth(name)
        print(name, json.dumps({k: v[name] for k, v in results.items() if name in v}), flush=True)
    write_result(args.results / "train.json", "train", command, results)


if __name__ == "__main__":
    main()
