"""
Speed of this package's TRPO against sb3-contrib's, side by side in one process: one ``train()``, and ``learn()`` end to end.

``train()``: for each configuration one rollout buffer is collected; then ``train()`` of both implementations
is timed alternately from identical weights and the identical buffer (several repetitions; medians and
the median of per-pair ratios). The peak memory growth of one ``train()`` is measured (median of 3) in a fresh
subprocess per implementation (Linux: the peak RSS is reset through ``/proc/self/clear_refs``).

End to end: ``learn()`` steps per second on rl-zoo3's tuned TRPO settings (CartPole-v1, Pendulum-v1 with gSDE,
Hopper-v5, HalfCheetah-v5), this TRPO, sb3-contrib's and SB3's PPO (as a reference) alternating round by round,
each round from fresh models and fresh envs. The time inside ``collect_rollouts`` and ``train`` is measured by
timers that this script wraps around the model instance's methods (the library has no instrumentation), and
in every round the same VecEnv, wrappers included, is also stepped bare with actions sampled beforehand, right
before and right after our run: the rollout's cost above stepping the environments is what the algorithm adds to it.

RecurrentTRPO: one ``train()`` against one of sb3-contrib's ``RecurrentPPO`` (rl-zoo3's ``ppo_lstm.yml`` settings for
``CartPoleNoVel-v1``, its 20 epochs), from identical weights on one rollout buffer of 8 × 128 steps: the cost of an
update of each, not a like-for-like race (the two updates do different work).

Usage::

    python benchmarks/speed.py                        # all parts, all configurations, writes docs/benchmarks.md
    python benchmarks/speed.py --only recurrent --repeats 3 --no-write
    python benchmarks/speed.py --configs cartpole --repeats 3 --only train --no-write
    python benchmarks/speed.py --only end-to-end --e2e-configs cartpole hopper --e2e-rounds 2 --no-write
    python benchmarks/speed.py --only end-to-end --e2e-timesteps cartpole=2048 hopper=4096 --no-write

Torch runs on one thread (``torch.set_num_threads(1)``, set here, not in the library) so the implementations
compete on equal terms on a loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import sections
import stable_baselines3
import torch
from gymnasium import spaces
from learning import Preset, load_preset, make_model
from sb3_contrib import TRPO as ContribTRPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.envs import RandomEnv

ROOT = Path(__file__).resolve().parent.parent


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


def machine() -> str:
    """The machine and the versions, one Markdown line (torch's thread count is the benchmark's own setting)."""
    return (
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} thread, set by the benchmark), sb3-contrib {__import__('sb3_contrib').__version__}, "
        f"SB3 {stable_baselines3.__version__}, Python {platform.python_version()}  "
    )


def markdown(results: dict[str, Any], command: str) -> str:
    """
    The ``train()`` section of ``docs/benchmarks.md``.

    :param results: ``{"train": {config: row}, "memory": {config: growth}}`` from :func:`time_train` and
        :func:`peak_memory_growth`
    :param command: the command line, as run
    """
    lines = [
        "## Speed: one `train()` against sb3-contrib's TRPO",
        "",
        f"Command: `{command}`  ",
        machine(),
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
    lines += [
        "",
        f"Median speed-up over the configurations: **{statistics.median(ratios):.2f}×**.",
        "",
        "Times are medians over repetitions from identical weights and an identical rollout buffer, alternating the two",
        "implementations in one process; the speed-up is the median of per-pair ratios. Memory: peak RSS during one",
        "`train()` minus RSS before it, in a fresh process per implementation (first update after the rollout), median",
        "of 3 such processes each. End-to-end `learn()`: the section below.",
        "",
        "Where the time goes: the policy step is 2-3× faster than sb3-contrib's (one autograd call for the gradient",
        "instead of two per parameter tensor, closed-form Fisher products, no copies in the line search); for plain MLP",
        "actors the Jacobian products inside the Fisher products are derived by hand (about 1.6× faster each than",
        "autograd's double backpropagation). The critic's regression, many small minibatch steps bound by per-operation",
        "overhead, is 2-2.5× faster: for SB3's plain MLP critic its gradient is derived by hand (a dozen tensor",
        "operations, no autograd graph), `tanh` runs in NumPy, the features are computed once per update when the",
        "critic's extractor is constant, and torch's fused Adam kernel steps the critic's parameters only, called as",
        "`Adam.step` calls it without its per-call bookkeeping (the same update bit for bit). The CNN configuration",
        "keeps autograd for the actor (its features extractor is the actor's), hence the smaller speed-up there.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# RecurrentTRPO: one train() against sb3-contrib's RecurrentPPO on one rollout buffer

RECURRENT_DESCRIPTION = "CartPole-v1 without velocities, LSTM 64 (actor) + 64 (critic), 8 envs × 128 steps"


def time_recurrent_train(repeats: int) -> dict[str, Any]:
    """
    Median ``train()`` seconds of RecurrentTRPO and of RecurrentPPO (rl-zoo3's CartPoleNoVel-v1 settings: 20 epochs of
    minibatches of 256 steps) from identical weights on one rollout buffer collected by RecurrentTRPO.
    """
    from rl_zoo3.wrappers import MaskVelocityWrapper
    from sb3_contrib import RecurrentPPO
    from torch import nn

    from sb3_trpo_plugin import RecurrentTRPO

    policy_kwargs = dict(
        ortho_init=False, activation_fn=nn.ReLU, lstm_hidden_size=64, enable_critic_lstm=True, net_arch=dict(pi=[64], vf=[64])
    )
    shared = dict(n_steps=128, batch_size=256, gamma=0.98, gae_lambda=0.8, seed=0, policy_kwargs=policy_kwargs)
    models: dict[str, OnPolicyAlgorithm] = {}
    for name, cls, own in (("RecurrentTRPO", RecurrentTRPO, {}), ("RecurrentPPO", RecurrentPPO, dict(n_epochs=20))):
        env = make_vec_env("CartPole-v1", n_envs=8, seed=0, wrapper_class=MaskVelocityWrapper)
        models[name] = cls("MlpLstmPolicy", env, **shared, **own)  # type: ignore[arg-type]
        models[name].set_logger(Logger(folder=None, output_formats=[]))
    ours = models["RecurrentTRPO"]
    _, callback = ours._setup_learn(ours.n_steps * ours.n_envs, callback=None)
    callback.on_training_start(locals(), globals())
    ours.collect_rollouts(ours.env, callback, ours.rollout_buffer, n_rollout_steps=ours.n_steps)
    models["RecurrentPPO"].policy.load_state_dict(ours.policy.state_dict())
    models["RecurrentPPO"].rollout_buffer = ours.rollout_buffer
    initial = {
        name: (copy.deepcopy(m.policy.state_dict()), copy.deepcopy(m.policy.optimizer.state_dict()))
        for name, m in models.items()
    }
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for repeat in range(repeats + 1):  # the first round warms up and is discarded
        for name, model in models.items():
            model.policy.load_state_dict(initial[name][0])
            model.policy.optimizer.load_state_dict(initial[name][1])
            start = time.perf_counter()
            model.train()
            if repeat:
                seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def recurrent_markdown(result: Mapping[str, float], command: str) -> str:
    """The RecurrentTRPO ``train()`` section of ``docs/benchmarks.md``."""
    return "\n".join(
        [
            "## Speed: one `train()` of RecurrentTRPO (and of sb3-contrib's RecurrentPPO, for scale)",
            "",
            f"Command: `{command}`  ",
            machine(),
            f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            "",
            "| configuration | RecurrentTRPO `train()` (s) | RecurrentPPO `train()` (s) |",
            "| --- | ---: | ---: |",
            f"| {RECURRENT_DESCRIPTION} | {result['RecurrentTRPO']:.3f} | {result['RecurrentPPO']:.3f} |",
            "",
            "Medians over repetitions from identical weights on one rollout buffer. RecurrentTRPO's update is one",
            "trust-region step (the actor's LSTM re-run over the batch's sequences in one LSTM call per evaluation) and 10",
            "epochs of the critic LSTM's regression over minibatches of 256 steps; RecurrentPPO's is 20 epochs of",
            "minibatches of 256 steps (rl-zoo3's settings for this task). Different work: the cost of one update of each.",
        ]
    )


# ---------------------------------------------------------------------------------------------------------------
# End to end: learn() on rl-zoo3's tuned settings, with the rollout and the update timed apart and the envs stepped bare


@dataclass(frozen=True)
class EndToEndConfig:
    """
    One end-to-end configuration: an env with a tuned entry in rl-zoo3's ``trpo.yml``, and the default budget.

    :param name: the command-line key
    :param env_id: the gymnasium id; its rl-zoo3 entry is found by ``benchmarks/learning.py``
        (``Hopper-v4`` for ``Hopper-v5``, ...)
    :param timesteps: default ``learn()`` steps per implementation and round (a few updates)
    :param note: shown after the env id, e.g. ``"gSDE"``
    """

    name: str
    env_id: str
    timesteps: int
    note: str = ""

    @property
    def title(self) -> str:
        """The env id, with the note in parentheses when there is one."""
        return f"{self.env_id} ({self.note})" if self.note else self.env_id


E2E_CONFIGS = {
    "cartpole": EndToEndConfig("cartpole", "CartPole-v1", 4 * 1024),  # 4 updates of 2 envs × 512 steps
    "pendulum_gsde": EndToEndConfig("pendulum_gsde", "Pendulum-v1", 3 * 2048, "gSDE"),  # 3 updates of 2 × 1024
    "hopper": EndToEndConfig("hopper", "Hopper-v5", 3 * 2048),
    "halfcheetah": EndToEndConfig("halfcheetah", "HalfCheetah-v5", 3 * 2048),
}
#: The implementations timed end to end, with their names in ``benchmarks/learning.py`` and in the report.
E2E_IMPLEMENTATIONS = {"ours": "trpo", "sb3-contrib": "sb3_contrib_trpo", "ppo": "ppo"}
E2E_LABELS = {"ours": "ours", "sb3-contrib": "sb3-contrib", "ppo": "PPO", "bare": "bare env stepping"}
BARE = "bare"
#: Issue #17's targets: ``learn()`` speed-up over sb3-contrib at least this (1.5× where not listed) ...
SPEED_UP_TARGETS = {"cartpole": 2.5, "hopper": 1.8}
DEFAULT_SPEED_UP_TARGET = 1.5
#: ... and the rollout's cost above bare env stepping at most this many times the stepping's cost.
OVERHEAD_TARGETS = {"cartpole": 3.0, "hopper": 0.5}
#: PPO's settings taken from the TRPO preset; everything else is SB3's default (see :func:`ppo_kwargs`).
PPO_SHARED_KEYS = ("n_steps", "use_sde", "sde_sample_freq")


@dataclass(frozen=True)
class LearnTiming:
    """
    One timed ``learn()``.

    :param wall_s: wall time of the whole call
    :param rollout_s: time inside ``collect_rollouts``
    :param update_s: time inside ``train``
    :param timesteps: env steps done (all envs together)
    """

    wall_s: float
    rollout_s: float
    update_s: float
    timesteps: int


@dataclass(frozen=True)
class SteppingTiming:
    """
    One timed bare stepping of a VecEnv.

    :param seconds: wall time of all the ``step`` calls
    :param timesteps: env steps done (``step`` calls × number of envs)
    """

    seconds: float
    timesteps: int


T = TypeVar("T")


def rotated(items: Sequence[T], round_index: int) -> list[T]:
    """
    ``items`` starting at position ``round_index`` (cyclically): the order of one round, so that no implementation
    always runs first or right after the same other one.

    :param items: the order of round 0
    :param round_index: the round
    """
    shift = round_index % len(items)
    return [*items[shift:], *items[:shift]]


def learn_steps(timesteps: int, n_steps: int, n_envs: int) -> int:
    """
    The env steps that ``learn(timesteps)`` does: whole rollouts of ``n_steps × n_envs`` until ``timesteps`` is reached.

    :param timesteps: the budget given to ``learn()``
    :param n_steps: steps per env and rollout
    :param n_envs: envs
    """
    per_rollout = n_steps * n_envs
    return math.ceil(timesteps / per_rollout) * per_rollout


def microseconds_per_step(seconds: float, timesteps: int) -> float:
    """
    Microseconds per env step.

    :param seconds: total time
    :param timesteps: env steps done in it (all envs together)
    """
    if timesteps <= 0:
        raise ValueError(f"no steps to divide by ({timesteps})")
    return seconds / timesteps * 1e6


def overhead_above_stepping(rollout_us: float, bare_us: float) -> float:
    """
    The rollout's cost above bare env stepping, in units of the stepping's cost: ``(rollout − bare) / bare``.

    :param rollout_us: µs per env step inside ``collect_rollouts``
    :param bare_us: µs per env step of the same VecEnv stepped with precomputed actions
    :return: 0 when the rollout costs no more than stepping, 1 when it costs twice as much, ...
    """
    if bare_us <= 0:
        raise ValueError(f"bare stepping must take some time ({bare_us} µs per step)")
    return (rollout_us - bare_us) / bare_us


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """
    The median over rounds of the per-round ratios (values of one round were measured seconds apart, on one machine state).

    :param numerators: one value per round
    :param denominators: one value per round, in the same order
    """
    if not numerators:
        raise ValueError("no rounds")
    return statistics.median(n / d for n, d in zip(numerators, denominators, strict=True))


def summarize_end_to_end(rounds: Sequence[Mapping[str, LearnTiming]], stepping: Sequence[SteppingTiming]) -> dict[str, Any]:
    """
    Aggregate the rounds of one configuration.

    Rates, µs per step and overheads are medians over rounds (overheads and the speed-up of per-round values,
    each round's rollout against the same round's bare stepping); the shares of the wall time are of the times
    summed over rounds, so that rollout, update and the rest add up to 1.

    :param rounds: per round, the ``learn()`` timing of each implementation (``"ours"`` and ``"sb3-contrib"`` at least)
    :param stepping: per round, the bare stepping
    :return: ``{"implementations": {name: {"steps_per_s", "rollout_share", "update_share", "rest_share",
        "rollout_us_per_step", "overhead"}}, "bare_us_per_step", "speed_up", "speed_up_min", "speed_up_max", "rounds"}``
    """
    if not rounds or len(rounds) != len(stepping):
        raise ValueError(
            f"need one bare stepping per round and at least one round ({len(rounds)} rounds, {len(stepping)} steppings)"
        )
    bare_us = [microseconds_per_step(s.seconds, s.timesteps) for s in stepping]
    implementations: dict[str, dict[str, float]] = {}
    for name in rounds[0]:
        runs = [round_[name] for round_ in rounds]
        wall = sum(run.wall_s for run in runs)
        rollout_us = [microseconds_per_step(run.rollout_s, run.timesteps) for run in runs]
        implementations[name] = {
            "steps_per_s": statistics.median(run.timesteps / run.wall_s for run in runs),
            "rollout_share": sum(run.rollout_s for run in runs) / wall,
            "update_share": sum(run.update_s for run in runs) / wall,
            "rest_share": sum(run.wall_s - run.rollout_s - run.update_s for run in runs) / wall,
            "rollout_us_per_step": statistics.median(rollout_us),
            "overhead": statistics.median(overhead_above_stepping(r, b) for r, b in zip(rollout_us, bare_us, strict=True)),
        }
    rates = {name: [round_[name].timesteps / round_[name].wall_s for round_ in rounds] for name in ("ours", "sb3-contrib")}
    ratios = [ours / contrib for ours, contrib in zip(rates["ours"], rates["sb3-contrib"], strict=True)]
    return {
        "implementations": implementations,
        "bare_us_per_step": statistics.median(bare_us),
        "speed_up": median_ratio(rates["ours"], rates["sb3-contrib"]),
        "speed_up_min": min(ratios),
        "speed_up_max": max(ratios),
        "rounds": len(rounds),
    }


@dataclass(frozen=True)
class TargetCheck:
    """
    One of issue #17's targets, against the measured value.

    :param description: what is required, e.g. ``"learn() ≥ 2.5× sb3-contrib on CartPole-v1"``
    :param value: the measured value
    :param bound: the target's bound
    :param holds: whether the value is on the right side of the bound
    """

    description: str
    value: float
    bound: float
    holds: bool


def target_checks(results: Mapping[str, Mapping[str, Any]]) -> list[TargetCheck]:
    """
    The targets of the configurations that were run: the ``learn()`` speed-up of each, the rollout overhead where there is one.

    :param results: per configuration name, the summary of :func:`summarize_end_to_end`
    """
    checks = []
    for name, summary in results.items():
        title = E2E_CONFIGS[name].title
        bound = SPEED_UP_TARGETS.get(name, DEFAULT_SPEED_UP_TARGET)
        speed_up = summary["speed_up"]
        checks.append(TargetCheck(f"`learn()` ≥ {bound:g}× sb3-contrib on {title}", speed_up, bound, speed_up >= bound))
    for name, summary in results.items():
        if name in OVERHEAD_TARGETS:
            bound = OVERHEAD_TARGETS[name]
            overhead = summary["implementations"]["ours"]["overhead"]
            text = f"our rollout's overhead ≤ {bound:g}× bare env stepping on {E2E_CONFIGS[name].title}"
            checks.append(TargetCheck(text, overhead, bound, overhead <= bound))
    return checks


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%"


def end_to_end_markdown(results: Mapping[str, Mapping[str, Any]], command: str, machine_line: str, date: str) -> str:
    """
    The end-to-end section of ``docs/benchmarks.md``.

    :param results: per configuration name (a key of :data:`E2E_CONFIGS`), the summary of :func:`summarize_end_to_end`
        with a ``"setup"`` entry (``n_envs``, ``n_steps``, ``timesteps``, ``normalize``)
    :param command: the command line, as run
    :param machine_line: the machine and versions (:func:`machine`), the load average
    :param date: when it ran
    """
    rounds = sorted({summary["rounds"] for summary in results.values()})
    lines = [
        "## Speed: end-to-end `learn()` against sb3-contrib's TRPO",
        "",
        f"Command: `{command}`  ",
        machine_line,
        f"Date: {date}",
        "",
        "`learn()` from scratch with rl-zoo3's tuned TRPO settings (`hyperparams/trpo.yml`; its Hopper-v4 and",
        "HalfCheetah-v4 entries for the v5 envs, `normalize: true` there: `VecNormalize`), this TRPO against",
        "sb3-contrib's, and SB3's PPO for reference: SB3's defaults (64×64 networks, 10 epochs of minibatches of 64)",
        "at the TRPO preset's `n_envs` and `n_steps`, with its gSDE settings where it has them. All three train on",
        "the same VecEnv construction (`make_vec_env`, `VecNormalize` where the preset normalises), fresh for each",
        "run. Each round runs every implementation once, in an order that rotates from round to round, and steps the",
        "bare VecEnv right before and right after our run (the overhead divides by the mean of the two, so that the",
        "machine's drift between them mostly cancels), after one discarded warm-up round of one update each;",
        f"{'/'.join(map(str, rounds))} rounds.",
        "Steps/s: median over rounds; speed-up: median (and range) of the per-round ratios ours / sb3-contrib.",
        "",
        "| configuration | steps per update | steps per run | ours (steps/s) | sb3-contrib (steps/s) | PPO (steps/s) "
        "| speed-up ours / contrib (range) | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, summary in results.items():
        setup, rates = summary["setup"], summary["implementations"]
        ppo = f"{rates['ppo']['steps_per_s']:.0f}" if "ppo" in rates else "—"
        bound = SPEED_UP_TARGETS.get(name, DEFAULT_SPEED_UP_TARGET)
        verdict = "holds" if summary["speed_up"] >= bound else "**not reached**"
        lines.append(
            f"| {E2E_CONFIGS[name].title} | {setup['n_envs']} × {setup['n_steps']} | {setup['timesteps']} "
            f"| {rates['ours']['steps_per_s']:.0f} | {rates['sb3-contrib']['steps_per_s']:.0f} | {ppo} "
            f"| **{summary['speed_up']:.2f}×** ({summary['speed_up_min']:.2f}–{summary['speed_up_max']:.2f}) "
            f"| ≥ {bound:g}×: {verdict} |"
        )
    lines += [
        "",
        "Where the time goes: shares of `learn()`'s wall time (summed over rounds) inside `collect_rollouts` and",
        "`train` (timers the benchmark wraps around the model instance's methods), µs per env step inside",
        "`collect_rollouts` (medians over rounds), and the rollout's overhead above bare env stepping, (rollout −",
        "bare) / bare, per round, median over rounds. Bare env stepping: the same VecEnv and wrappers (`Monitor`,",
        "`VecNormalize` where used) stepped with uniformly random actions sampled before the timing, nothing else.",
        "",
        "| configuration | implementation | rollout | update | rest | rollout µs per env step | overhead above stepping |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, summary in results.items():
        title = E2E_CONFIGS[name].title
        for implementation, row in summary["implementations"].items():
            lines.append(
                f"| {title} | {E2E_LABELS.get(implementation, implementation)} | {_percent(row['rollout_share'])} "
                f"| {_percent(row['update_share'])} | {_percent(row['rest_share'])} | {row['rollout_us_per_step']:.1f} "
                f"| {row['overhead']:.2f}× |"
            )
        lines.append(f"| {title} | {E2E_LABELS[BARE]} | — | — | — | {summary['bare_us_per_step']:.1f} | — |")
    lines += ["", "Targets (issue #17):", ""]
    for check in target_checks(results):
        verdict = "holds" if check.holds else "**not reached**"
        lines.append(f"- {check.description}: {check.value:.2f}×, {verdict}")
    return "\n".join(lines)


def parse_timesteps(items: Sequence[str], defaults: Mapping[str, int]) -> dict[str, int]:
    """
    ``learn()`` budgets per configuration from ``NAME=STEPS`` items, the defaults for the others.

    :param items: e.g. ``["cartpole=2048", "hopper=4096"]``
    :param defaults: every configuration's default budget
    :raise ValueError: for an unknown name, a malformed item or a budget below 1
    """
    budgets = dict(defaults)
    for item in items:
        name, separator, steps = item.partition("=")
        if not separator or name not in defaults:
            raise ValueError(f"expected NAME=STEPS with NAME one of {sorted(defaults)}, got {item!r}")
        if not steps.strip().isdigit() or int(steps) < 1:
            raise ValueError(f"the budget of {name} must be a positive integer, got {steps!r}")
        budgets[name] = int(steps)
    return budgets


def ppo_kwargs(trpo_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """
    PPO's keywords for the reference row: the TRPO preset's rollout length and gSDE settings, SB3's defaults otherwise.

    :param trpo_kwargs: the TRPO preset's keywords
    """
    return {key: trpo_kwargs[key] for key in PPO_SHARED_KEYS if key in trpo_kwargs}


def training_env(preset: Preset, env_id: str, seed: int) -> VecEnv:
    """
    The VecEnv every implementation trains on, and the bare stepping steps: ``make_vec_env`` (``Monitor`` on each env),
    then ``VecNormalize`` where the preset says so.

    :param preset: the TRPO preset
    :param env_id: the gymnasium id
    :param seed: seeds the envs
    """
    env: VecEnv = make_vec_env(env_id, n_envs=preset.n_envs, seed=seed)
    return VecNormalize(env, **preset.normalize_kwargs) if preset.normalize else env


def instrument(model: OnPolicyAlgorithm) -> dict[str, float]:
    """
    Wrap the instance's ``collect_rollouts`` and ``train`` with timers (instance attributes shadow the methods;
    the class and the library stay untouched).

    :param model: the model to time
    :return: the seconds spent in each so far, ``{"rollout": ..., "update": ...}``, updated in place
    """
    totals = {"rollout": 0.0, "update": 0.0}

    def timed(method: Callable[..., Any], key: str) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                totals[key] += time.perf_counter() - start

        return wrapper

    model.collect_rollouts = timed(model.collect_rollouts, "rollout")  # type: ignore[method-assign]
    model.train = timed(model.train, "update")  # type: ignore[method-assign]
    return totals


def time_learn(implementation: str, presets: Mapping[str, Preset], env_id: str, seed: int, timesteps: int) -> LearnTiming:
    """
    One ``learn()`` of a fresh model on fresh envs (built before the timing), with its rollout and update timed apart.

    :param implementation: a key of :data:`E2E_IMPLEMENTATIONS`
    :param presets: the preset of each implementation
    :param env_id: the gymnasium id
    :param seed: seeds the model and the envs
    :param timesteps: the budget
    """
    preset = presets[implementation]
    env = training_env(preset, env_id, seed)
    return timed_learn(make_model(E2E_IMPLEMENTATIONS[implementation], preset, env, seed, Logger(None, [])), timesteps)


def timed_learn(model: OnPolicyAlgorithm, timesteps: int) -> LearnTiming:
    """
    ``model.learn(timesteps)`` with its rollout and update timed apart (:func:`instrument`); its env is closed after.

    :param model: a fresh model on fresh envs
    :param timesteps: the budget
    """
    totals = instrument(model)
    gc.collect()  # the previous run's garbage is not this run's time
    start = time.perf_counter()
    model.learn(timesteps)
    wall = time.perf_counter() - start
    assert model.env is not None
    model.env.close()
    return LearnTiming(wall, totals["rollout"], totals["update"], model.num_timesteps)


def time_stepping(preset: Preset, env_id: str, seed: int, timesteps: int) -> SteppingTiming:
    """
    Step the training VecEnv, wrappers included, with uniformly random actions sampled before the timing.

    :param preset: the TRPO preset (its env construction)
    :param env_id: the gymnasium id
    :param seed: seeds the envs and the actions
    :param timesteps: env steps, all envs together (rounded up to whole ``step`` calls)
    """
    env = training_env(preset, env_id, seed)
    env.action_space.seed(seed)
    actions = [
        np.stack([env.action_space.sample() for _ in range(env.num_envs)]) for _ in range(math.ceil(timesteps / env.num_envs))
    ]
    env.reset()
    gc.collect()
    start = time.perf_counter()
    for action in actions:
        env.step(action)
    seconds = time.perf_counter() - start
    env.close()
    return SteppingTiming(seconds, len(actions) * env.num_envs)


def time_end_to_end(config: EndToEndConfig, timesteps: int, rounds: int) -> dict[str, Any]:
    """
    Time ``rounds`` rounds of one configuration, after one discarded warm-up round of one update each.

    :param config: the configuration
    :param timesteps: the ``learn()`` budget of each run
    :param rounds: timed rounds
    :return: the summary of :func:`summarize_end_to_end`, with ``"setup"`` and the raw ``"runs"``
    """
    trpo = load_preset("trpo", config.env_id)
    presets = {
        "ours": trpo,
        "sb3-contrib": trpo,
        "ppo": dataclasses.replace(trpo, kwargs=ppo_kwargs(trpo.kwargs)),
    }
    n_steps = int(trpo.kwargs["n_steps"])
    steps = learn_steps(timesteps, n_steps, trpo.n_envs)
    order = list(E2E_IMPLEMENTATIONS)
    learn_rounds: list[dict[str, LearnTiming]] = []
    stepping: list[SteppingTiming] = []
    for round_index in range(-1, rounds):  # round -1 warms up (first calls, allocator) and is discarded
        seed = max(round_index, 0)
        budget = n_steps * trpo.n_envs if round_index < 0 else timesteps
        bare_steps = learn_steps(budget, n_steps, trpo.n_envs)
        timings: dict[str, LearnTiming] = {}
        bare: list[SteppingTiming] = []
        for name in rotated(order, max(round_index, 0)):
            if name == "ours":
                # The bare stepping right before and right after our learn(): the overhead divides our rollout's time
                # by their mean, so that the machine's drift between the two measurements mostly cancels.
                before = time_stepping(trpo, config.env_id, seed, bare_steps)
                timings[name] = time_learn(name, presets, config.env_id, seed, budget)
                after = time_stepping(trpo, config.env_id, seed, bare_steps)
                bare.append(SteppingTiming(before.seconds + after.seconds, before.timesteps + after.timesteps))
            else:
                timings[name] = time_learn(name, presets, config.env_id, seed, budget)
        if round_index >= 0:
            learn_rounds.append({name: timings[name] for name in E2E_IMPLEMENTATIONS})
            stepping += bare
    summary = summarize_end_to_end(learn_rounds, stepping)
    summary["setup"] = {"n_envs": trpo.n_envs, "n_steps": n_steps, "timesteps": steps, "normalize": trpo.normalize}
    summary["runs"] = {
        "learn": [{name: dataclasses.asdict(timing) for name, timing in round_.items()} for round_ in learn_rounds],
        "bare": [dataclasses.asdict(timing) for timing in stepping],
    }
    return summary


# ---------------------------------------------------------------------------------------------------------------
# Variants: MaskableTRPO's and RecurrentTRPO's learn() with the lean rollout, with their peer's loop, and the peer


@dataclass(frozen=True)
class VariantComparison:
    """
    ``learn()`` of a variant with its lean rollout, with ``lean_rollout = False`` (its peer's rollout loop: what the
    variant's rollouts cost before the lean one), and the sb3-contrib algorithm it stands in for.

    :param name: the command-line key and the section's suffix (``speed_<name>``)
    :param title: the section's title
    :param labels: the three implementations' names in the report (lean, peer's loop, peer)
    :param description: the environment and settings, in words
    :param make: a fresh model of an implementation (``"lean"``, ``"peer_loop"``, ``"peer"``) for a seed
    :param note: the paragraph under the table
    """

    name: str
    title: str
    labels: tuple[str, str, str]
    description: str
    make: Callable[[str, int], OnPolicyAlgorithm]
    note: str


#: The implementations of a variant comparison, in the order of :attr:`VariantComparison.labels`.
VARIANT_IMPLEMENTATIONS = ("lean", "peer_loop", "peer")


def _masked_model(implementation: str, seed: int) -> OnPolicyAlgorithm:
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.envs import InvalidActionEnvDiscrete

    from sb3_trpo_plugin import MaskableTRPO

    env = make_vec_env(lambda: InvalidActionEnvDiscrete(dim=70, n_invalid_actions=55), n_envs=2, seed=seed)
    if implementation == "peer":
        return MaskablePPO("MlpPolicy", env, n_steps=512, seed=seed)
    model = MaskableTRPO("MlpPolicy", env, n_steps=512, batch_size=1024, seed=seed)
    model.lean_rollout = implementation == "lean"
    return model


def _recurrent_model(implementation: str, seed: int) -> OnPolicyAlgorithm:
    from rl_zoo3.wrappers import MaskVelocityWrapper
    from sb3_contrib import RecurrentPPO
    from torch import nn

    from sb3_trpo_plugin import RecurrentTRPO

    policy_kwargs = dict(
        ortho_init=False, activation_fn=nn.ReLU, lstm_hidden_size=64, enable_critic_lstm=True, net_arch=dict(pi=[64], vf=[64])
    )
    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed, wrapper_class=MaskVelocityWrapper)
    shared = dict(n_steps=128, batch_size=256, gamma=0.98, gae_lambda=0.8, seed=seed, policy_kwargs=policy_kwargs)
    if implementation == "peer":
        return RecurrentPPO("MlpLstmPolicy", env, n_epochs=20, **shared)  # type: ignore[arg-type]
    model = RecurrentTRPO("MlpLstmPolicy", env, **shared)  # type: ignore[arg-type]
    model.lean_rollout = implementation == "lean"
    return model


VARIANTS = {
    "masked": VariantComparison(
        "masked",
        "MaskableTRPO's `learn()`, lean rollout against sb3-contrib's loop and MaskablePPO",
        ("MaskableTRPO", "MaskableTRPO, sb3-contrib's rollout loop", "MaskablePPO (sb3-contrib)"),
        "sb3-contrib's `InvalidActionEnvDiscrete` (70 cells, 55 invalid at each step), 2 envs × 512 steps per update; "
        "MaskableTRPO with a batch of 1024 and its defaults otherwise (64×64 networks, 10 critic epochs), MaskablePPO "
        "with its defaults (10 epochs of minibatches of 64)",
        _masked_model,
        "The lean rollout samples the same actions as sb3-contrib's loop for a seed (bit for bit; "
        "`tests/test_masked_rollout.py`), so the two MaskableTRPO rows train the same policy; MaskablePPO's update "
        "is different work (10 epochs of minibatches), shown for scale.",
    ),
    "recurrent_learn": VariantComparison(
        "recurrent_learn",
        "RecurrentTRPO's `learn()`, lean rollout against the policy's forward and RecurrentPPO",
        ("RecurrentTRPO", "RecurrentTRPO, the policy's own forward", "RecurrentPPO (sb3-contrib)"),
        "CartPole-v1 without velocities (rl-zoo3's `MaskVelocityWrapper` and its RecurrentPPO settings: 8 envs × 128 "
        "steps, LSTM 64 for the actor and the critic, minibatches of 256 steps); RecurrentTRPO with its defaults "
        "otherwise (10 critic epochs), RecurrentPPO with rl-zoo3's 20 epochs",
        _recurrent_model,
        "The lean inference computes the policy's forward bit for bit (`tests/test_recurrent_rollout.py`), so the two "
        "RecurrentTRPO rows train the same policy; RecurrentPPO's update is different work (20 epochs of "
        "minibatches), shown for scale.",
    ),
}


def time_variant_learn(comparison: VariantComparison, implementation: str, seed: int, timesteps: int) -> LearnTiming:
    """
    One ``learn()`` of a fresh model of a variant comparison on fresh envs, with its rollout and update timed apart.

    :param comparison: the comparison
    :param implementation: one of :data:`VARIANT_IMPLEMENTATIONS`
    :param seed: seeds the model and the envs
    :param timesteps: the budget
    """
    model = comparison.make(implementation, seed)
    model.set_logger(Logger(folder=None, output_formats=[]))
    return timed_learn(model, timesteps)


def time_variant(comparison: VariantComparison, rounds: int, timesteps: int) -> dict[str, Any]:
    """
    ``rounds`` alternating rounds of a comparison's implementations (order rotated each round), after a warm-up round
    of one update each.

    :return: per implementation the median steps per second and rollout µs per env step, and the medians of the
        per-round ratios of the lean variant's steps per second to each other implementation's
    """
    for implementation in VARIANT_IMPLEMENTATIONS:
        time_variant_learn(comparison, implementation, 0, 1)
    runs: list[dict[str, LearnTiming]] = []
    for round_index in range(rounds):
        order = rotated(VARIANT_IMPLEMENTATIONS, round_index)
        runs.append({name: time_variant_learn(comparison, name, round_index, timesteps) for name in order})
    result: dict[str, Any] = {"rounds": rounds, "timesteps": timesteps, "implementations": {}, "runs": []}
    for name in VARIANT_IMPLEMENTATIONS:
        timings = [run[name] for run in runs]
        result["implementations"][name] = {
            "steps_per_s": statistics.median(t.timesteps / t.wall_s for t in timings),
            "rollout_us_per_step": statistics.median(microseconds_per_step(t.rollout_s, t.timesteps) for t in timings),
            "rollout_share": sum(t.rollout_s for t in timings) / sum(t.wall_s for t in timings),
        }
        if name != "lean":
            result["implementations"][name]["lean_speed_up"] = median_ratio(
                [run[name].wall_s for run in runs], [run["lean"].wall_s for run in runs]
            )
    result["runs"] = [{name: dataclasses.asdict(timing) for name, timing in run.items()} for run in runs]
    return result


def variant_markdown(comparison: VariantComparison, result: Mapping[str, Any], command: str) -> str:
    """A variant comparison's section of ``docs/benchmarks.md``."""
    lean_label = comparison.labels[0]
    lines = [
        f"## Speed: {comparison.title}",
        "",
        f"Command: `{command}`  ",
        machine(),
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"{comparison.description}; {result['timesteps']} steps per run, {result['rounds']} rounds, each running every",
        "implementation once in an order rotated from round to round (after a discarded warm-up round). Steps/s and",
        f"rollout µs per env step: medians over rounds; speed-up of the lean {lean_label}: median of per-round ratios.",
        "",
        "| implementation | steps/s | share of time in the rollout | rollout µs per env step "
        f"| lean {lean_label}'s speed-up |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, label in zip(VARIANT_IMPLEMENTATIONS, comparison.labels, strict=True):
        row = result["implementations"][name]
        speed_up = f"**{row['lean_speed_up']:.2f}×**" if "lean_speed_up" in row else "—"
        lines.append(
            f"| {label} | {row['steps_per_s']:.0f} | {_percent(row['rollout_share'])} | "
            f"{row['rollout_us_per_step']:.1f} | {speed_up} |"
        )
    lines += ["", comparison.note]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--only",
        choices=("train", "end-to-end", "recurrent", *VARIANTS),
        help="run only this part (default: all)",
    )
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS), help="train() configurations")
    parser.add_argument("--repeats", type=int, default=7, help="timed train() calls per algorithm and configuration")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument(
        "--e2e-configs", nargs="+", choices=sorted(E2E_CONFIGS), default=list(E2E_CONFIGS), help="end-to-end configurations"
    )
    parser.add_argument("--e2e-rounds", type=int, default=3, help="end-to-end rounds (each: every implementation once)")
    parser.add_argument(
        "--e2e-timesteps",
        nargs="+",
        default=[],
        metavar="NAME=STEPS",
        help="learn() steps per run, per configuration (defaults: "
        + ", ".join(f"{name}={config.timesteps}" for name, config in E2E_CONFIGS.items())
        + ")",
    )
    parser.add_argument("--variant-rounds", type=int, default=5, help="rounds of each variant's learn() comparison")
    parser.add_argument("--variant-timesteps", type=int, default=4 * 1024, help="learn() steps per variant run")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update docs/benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write raw results to this file")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _peak_rss_growth_child(*args.memory_child)
        return
    try:
        budgets = parse_timesteps(args.e2e_timesteps, {name: config.timesteps for name, config in E2E_CONFIGS.items()})
    except ValueError as error:
        parser.error(str(error))
    if args.e2e_rounds < 1:
        parser.error("--e2e-rounds must be at least 1")

    torch.set_num_threads(1)
    command = ("python benchmarks/speed.py " + " ".join(sys.argv[1:])).strip()
    results: dict[str, Any] = {}
    section_texts: dict[str, str] = {}
    if args.only in (None, "train"):
        results.update(train={}, memory={})
        for name in args.configs:
            results["train"][name] = time_train(CONFIGS[name], args.repeats)
            if not args.no_memory:
                results["memory"][name] = peak_memory_growth(name)
            print(name, json.dumps({k: v[name] for k, v in results.items() if name in v}), flush=True)
        section_texts["speed"] = markdown(results, command)
    if args.only in (None, "recurrent"):
        results["recurrent"] = time_recurrent_train(args.repeats)
        print("recurrent", json.dumps(results["recurrent"]), flush=True)
        section_texts["speed_recurrent"] = recurrent_markdown(results["recurrent"], command)
    for name, comparison in VARIANTS.items():
        if args.only in (None, name):
            results[name] = time_variant(comparison, args.variant_rounds, args.variant_timesteps)
            print(name, json.dumps({k: v for k, v in results[name].items() if k != "runs"}), flush=True)
            section_texts[f"speed_{name}"] = variant_markdown(comparison, results[name], command)
    if args.only in (None, "end-to-end"):
        load = "/".join(f"{value:.1f}" for value in os.getloadavg())
        date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        results["end_to_end"] = {}
        for name in args.e2e_configs:
            results["end_to_end"][name] = time_end_to_end(E2E_CONFIGS[name], budgets[name], args.e2e_rounds)
            summary = {k: v for k, v in results["end_to_end"][name].items() if k != "runs"}
            print("end-to-end", name, json.dumps(summary), flush=True)
        machine_line = f"{machine()}\nLoad average at the start: {load} (1/5/15 min)  "
        section_texts["speed_end_to_end"] = end_to_end_markdown(results["end_to_end"], command, machine_line, date)
    for text in section_texts.values():
        print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not args.no_write:
        for name, text in section_texts.items():
            sections.write_section(name, text)


if __name__ == "__main__":
    main()
