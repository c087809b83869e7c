"""
Is MaskableTRPO's ``learn()`` faster with its critic pipelined, and with the critic's gradient derived by hand?

Three implementations of MaskableTRPO, alternating round by round (order rotated), fresh models on fresh envs:
``pipelined`` (the default since the critic's values were proved to be its head on its features), ``sequential``
(``pipeline_critic = False``), and ``autograd critic`` (sequential, with the critic regressed through autograd on every
minibatch, as MaskableTRPO did before: ``critic_fit.values_from_features`` answering ``False``). The environment is
``benchmarks.speed_variants``' masked one (sb3-contrib's ``InvalidActionEnvDiscrete``, 70 cells, 55 invalid at each
step, 2 envs × 512 steps, the critic's minibatches of ``--batch-size``: 1024 there, one per epoch; TRPO's default
128 gives eight) with 40 updates per ``learn()``, so that the worker's start-up is a small part of a run.
Torch runs on one thread.

Usage, from the repository root::

    python investigations/maskable_pipelined_critic/speed.py --rounds 3 --batch-size 1024  # -> results_batch1024.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger

from benchmarks.speed_timing import rotated, run_facts, timed_learn
from sb3_trpo_plugin.trpo import critic_fit

IMPLEMENTATIONS = ("pipelined", "sequential", "autograd critic")


def one_run(name: str, seed: int, timesteps: int, batch_size: int) -> dict[str, Any]:
    """One timed ``learn()``: wall, rollout and update seconds, and where the critic's fits ran."""
    from sb3_contrib.common.envs import InvalidActionEnvDiscrete

    from sb3_trpo_plugin import MaskableTRPO

    env = make_vec_env(lambda: InvalidActionEnvDiscrete(dim=70, n_invalid_actions=55), n_envs=2, seed=seed)
    model = MaskableTRPO("MlpPolicy", env, n_steps=512, batch_size=batch_size, seed=seed)
    model.set_logger(Logger(folder=None, output_formats=[]))
    model.pipeline_critic = name == "pipelined"
    original = critic_fit.values_from_features
    if name == "autograd critic":
        critic_fit.values_from_features = lambda policy, observations: False  # type: ignore[assignment]
    try:
        timing = timed_learn(model, timesteps)
    finally:
        critic_fit.values_from_features = original  # type: ignore[assignment]
    pipeline = model.critic_pipeline
    pipeline.close()
    return {
        "wall_s": timing.wall_s,
        "rollout_s": timing.rollout_s,
        "update_s": timing.update_s,
        "fits_in_worker": pipeline.fits_in_worker,
        "fits_in_process": pipeline.fits_in_process,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timesteps", type=int, default=40 * 1024)
    parser.add_argument("--batch-size", type=int, default=1024, help="the critic's minibatch (1024: one per epoch)")
    parser.add_argument("--out", type=Path, help="default: results_batch<SIZE>.json beside this script")
    args = parser.parse_args()
    out = args.out or Path(__file__).resolve().parent / f"results_batch{args.batch_size}.json"
    torch.set_num_threads(1)
    for name in IMPLEMENTATIONS:  # warm-up, discarded
        one_run(name, 0, 1024, args.batch_size)
    rounds = []
    for index in range(args.rounds):
        runs = {name: one_run(name, index, args.timesteps, args.batch_size) for name in rotated(list(IMPLEMENTATIONS), index)}
        rounds.append(runs)
        print(json.dumps(runs), flush=True)
    summary = {
        f"{a} / {b}": statistics.median(r[b]["wall_s"] / r[a]["wall_s"] for r in rounds)
        for a, b in (("pipelined", "sequential"), ("sequential", "autograd critic"), ("pipelined", "autograd critic"))
    }
    record = {
        **run_facts(),
        "timesteps": args.timesteps,
        "batch_size": args.batch_size,
        "speed_ups": summary,
        "rounds": rounds,
    }
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
