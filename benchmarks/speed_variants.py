"""
MaskableTRPO's and RecurrentTRPO's ``learn()`` with the lean rollout, with their peer's rollout loop, and the peer.

Each comparison runs its three implementations (the variant with ``lean_rollout``, the variant with
``lean_rollout = False``, and the sb3-contrib algorithm it stands in for) once per round, in an order rotated from
round to round, after a discarded warm-up round of one update each; each run is a fresh model on fresh envs, with its
rollout and update timed apart. Torch runs on one thread.

Usage (from the repository root; ``python -m benchmarks.speed_report`` then writes the docs' sections)::

    python -m benchmarks.speed_variants --rounds 5                  # benchmarks/results/speed/{masked,recurrent_learn}.json
    python -m benchmarks.speed_variants masked --rounds 1 --timesteps 1024 --results /tmp/speed
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

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

MODULE = "benchmarks.speed_variants"


@dataclass(frozen=True)
class VariantComparison:
    """
    ``learn()`` of a variant with its lean rollout, with ``lean_rollout = False`` (its peer's rollout loop: what the
    variant's rollouts cost before the lean one), and the sb3-contrib algorithm it stands in for.

    :param name: the command-line key, the result file's name and the section's suffix (``speed_<name>``)
    :param title: the section's title
    :param labels: the three implementations' names in the report (lean, peer's loop, peer)
    :param description: the environment and settings, in words
    :param make: a fresh model of an implementation (``"lean"``, ``"peer_loop"``, ``"peer"``) for a seed
    """

    name: str
    title: str
    labels: tuple[str, str, str]
    description: str
    make: Callable[[str, int], OnPolicyAlgorithm]


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
    model = RecurrentTRPO("MlpLstmPolicy", env, **shared)
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
    ),
    "recurrent_learn": VariantComparison(
        "recurrent_learn",
        "RecurrentTRPO's `learn()`, lean rollout against sb3-contrib's RecurrentPPO loop and RecurrentPPO",
        ("RecurrentTRPO", "RecurrentTRPO, sb3-contrib's RecurrentPPO loop (lean_rollout=False)", "RecurrentPPO (sb3-contrib)"),
        "CartPole-v1 without velocities (rl-zoo3's `MaskVelocityWrapper` and its RecurrentPPO settings: 8 envs × 128 "
        "steps, LSTM 64 for the actor and the critic, minibatches of 256 steps); RecurrentTRPO with its defaults "
        "otherwise (10 critic epochs), RecurrentPPO with rl-zoo3's 20 epochs",
        _recurrent_model,
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

    :param comparison: the comparison
    :param rounds: timed rounds
    :param timesteps: the budget of each run
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


def described(comparison: VariantComparison, result: dict[str, Any]) -> dict[str, Any]:
    """
    A comparison's result with what it compares, as its result file holds it.

    :param comparison: the comparison
    :param result: from :func:`time_variant`
    """
    labels = dict(zip(VARIANT_IMPLEMENTATIONS, comparison.labels, strict=True))
    return {
        "name": comparison.name,
        "title": comparison.title,
        "labels": labels,
        "description": comparison.description,
    } | result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", metavar="VARIANT", help=f"any of {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each comparison")
    parser.add_argument("--timesteps", type=int, default=4 * 1024, help="learn() steps per run")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the result files (<variant>.json)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if unknown := set(args.variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    command = command_line(MODULE)
    torch.set_num_threads(1)
    for name in args.variants or VARIANTS:
        result = time_variant(VARIANTS[name], args.rounds, args.timesteps)
        print(name, json.dumps({k: v for k, v in result.items() if k != "runs"}), flush=True)
        write_result(args.results / f"{name}.json", "variant", command, described(VARIANTS[name], result))


if __name__ == "__main__":
    main()
