"""
``learn()`` end to end: this package's TRPO against sb3-contrib's, and SB3's PPO as a reference, alternating in one process.

Steps per second on rl-zoo3's tuned TRPO settings (CartPole-v1, Pendulum-v1 with gSDE, Hopper-v5, HalfCheetah-v5), the
three implementations alternating round by round, each round from fresh models and fresh envs. The time inside
``collect_rollouts`` and ``train`` is measured by timers that this script wraps around the model instance's methods
(the library has no instrumentation), and in every round the same VecEnv, wrappers included, is also stepped bare with
actions sampled beforehand, right before and right after our run: the rollout's cost above stepping the environments
is what the algorithm adds to it. Torch runs on one thread.

Usage (from the repository root; ``python -m benchmarks.speed_report`` then writes the docs' section)::

    python -m benchmarks.speed_end_to_end --rounds 6                   # benchmarks/results/speed/end_to_end.json
    python -m benchmarks.speed_end_to_end --configs cartpole hopper --rounds 2 --results /tmp/speed
    python -m benchmarks.speed_end_to_end --timesteps cartpole=2048 hopper=4096 --results /tmp/speed
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from benchmarks.learning_setup import Preset, load_preset, make_model
from benchmarks.speed_timing import (
    RESULTS,
    LearnTiming,
    command_line,
    median_ratio,
    microseconds_per_step,
    rotated,
    timed_learn,
    write_result,
)

MODULE = "benchmarks.speed_end_to_end"


@dataclass(frozen=True)
class EndToEndConfig:
    """
    One end-to-end configuration: an env with a tuned entry in rl-zoo3's ``trpo.yml``, and the default budget.

    :param name: the command-line key
    :param env_id: the gymnasium id; its rl-zoo3 entry is found by :func:`benchmarks.learning_setup.load_preset`
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
#: The implementations timed end to end, with their names in :mod:`benchmarks.learning_setup`.
E2E_IMPLEMENTATIONS = {"ours": "trpo", "sb3-contrib": "sb3_contrib_trpo", "ppo": "ppo"}
#: PPO's settings taken from the TRPO preset; everything else is SB3's default (see :func:`ppo_kwargs`).
PPO_SHARED_KEYS = ("n_steps", "use_sde", "sde_sample_freq")


@dataclass(frozen=True)
class SteppingTiming:
    """
    One timed bare stepping of a VecEnv.

    :param seconds: wall time of all the ``step`` calls
    :param timesteps: env steps done (``step`` calls × number of envs)
    """

    seconds: float
    timesteps: int


def learn_steps(timesteps: int, n_steps: int, n_envs: int) -> int:
    """
    The env steps that ``learn(timesteps)`` does: whole rollouts of ``n_steps × n_envs`` until ``timesteps`` is reached.

    :param timesteps: the budget given to ``learn()``
    :param n_steps: steps per env and rollout
    :param n_envs: envs
    """
    per_rollout = n_steps * n_envs
    return math.ceil(timesteps / per_rollout) * per_rollout


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
    :return: the summary of :func:`summarize_end_to_end`, with the configuration's ``"title"``, the ``"setup"`` and
        the raw ``"runs"``
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
    summary["title"] = config.title
    summary["setup"] = {"n_envs": trpo.n_envs, "n_steps": n_steps, "timesteps": steps, "normalize": trpo.normalize}
    summary["runs"] = {
        "learn": [{name: dataclasses.asdict(timing) for name, timing in round_.items()} for round_ in learn_rounds],
        "bare": [dataclasses.asdict(timing) for timing in stepping],
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=sorted(E2E_CONFIGS), default=list(E2E_CONFIGS), help="configurations")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (each: every implementation once)")
    parser.add_argument(
        "--timesteps",
        nargs="+",
        default=[],
        metavar="NAME=STEPS",
        help="learn() steps per run, per configuration (defaults: "
        + ", ".join(f"{name}={config.timesteps}" for name, config in E2E_CONFIGS.items())
        + ")",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the result file (end_to_end.json)")
    args = parser.parse_args()
    try:
        budgets = parse_timesteps(args.timesteps, {name: config.timesteps for name, config in E2E_CONFIGS.items()})
    except ValueError as error:
        parser.error(str(error))
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    command = command_line(MODULE)
    torch.set_num_threads(1)
    load = "/".join(f"{value:.1f}" for value in os.getloadavg())
    results: dict[str, Any] = {}
    for name in args.configs:
        results[name] = time_end_to_end(E2E_CONFIGS[name], budgets[name], args.rounds)
        print("end-to-end", name, json.dumps({k: v for k, v in results[name].items() if k != "runs"}), flush=True)
    write_result(args.results / "end_to_end.json", "end_to_end", command, results, load_average=load)


if __name__ == "__main__":
    main()
