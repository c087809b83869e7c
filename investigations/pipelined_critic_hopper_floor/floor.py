"""
How fast can this TRPO's ``learn()`` be on Hopper-v5 at rl-zoo3's settings, beside sb3-contrib's (issue #30's target)?

Both TRPOs step the same VecEnv stack (``DummyVecEnv`` of two ``Hopper-v5`` + ``VecNormalize``), whose cost is the
same for both and is no TRPO's to remove. This script times ``learn()`` of this TRPO (critic pipelined, the default)
and of sb3-contrib's TRPO, alternating, and inside each the time spent in the training VecEnv's ``step`` (an instance
attribute that shadows the method; the library is untouched). Per round it gives the ratio of wall times, and the
ceiling of that ratio: sb3-contrib's wall time over this TRPO's time in ``env.step`` alone, the ratio if everything
this TRPO does itself (inference, buffer writes, the policy step, returns and advantages) took no time at all. The
same TRPO with ``pipeline_critic = False`` runs beside them, so that the time in ``env.step`` can be compared with the
critic's worker busy on the other core and without it.

Usage, from the repository root (torch on one thread, as in ``benchmarks.speed_pipelined_critic``, unless ``--threads``
says otherwise; ``--threads 0`` keeps torch's default, one thread per core, which is what rl-zoo3's ``train`` runs with)::

    python investigations/pipelined_critic_hopper_floor/floor.py --rounds 3   # writes results.json beside this script
    python investigations/pipelined_critic_hopper_floor/floor.py --rounds 3 --threads 0 --out .../results_default_threads.json
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.logger import Logger

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.learning_setup import load_preset, make_model
from benchmarks.speed_end_to_end import training_env
from benchmarks.speed_timing import instrument, rotated, run_facts

IMPLEMENTATIONS = {"pipelined": "trpo", "sequential": "trpo", "sb3-contrib": "sb3_contrib_trpo"}
ENV_ID = "Hopper-v5"


def timed_env_step(env: Any) -> dict[str, float]:
    """Time the VecEnv's ``step`` (instance attribute); returns the running total, updated in place."""
    total = {"env": 0.0}
    step = env.step

    @functools.wraps(step)
    def timed(actions: Any) -> Any:
        start = time.perf_counter()
        try:
            return step(actions)
        finally:
            total["env"] += time.perf_counter() - start

    env.step = timed
    return total


def one_run(name: str, seed: int, timesteps: int) -> dict[str, float]:
    """One ``learn()`` of a fresh model on fresh envs: wall, rollout, update and ``env.step`` seconds."""
    preset = load_preset("trpo", ENV_ID)
    model = make_model(IMPLEMENTATIONS[name], preset, training_env(preset, ENV_ID, seed), seed, Logger(None, []))
    if name == "sequential":
        model.pipeline_critic = False
    env_time = timed_env_step(model.env)
    totals = instrument(model)
    start = time.perf_counter()
    model.learn(timesteps)
    wall = time.perf_counter() - start
    model.env.close()
    if name != "sb3-contrib":
        model.critic_pipeline.close()
    return {"wall_s": wall, "rollout_s": totals["rollout"], "update_s": totals["update"], "env_s": env_time["env"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results.json")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch's intra-op threads in this process; 0 leaves torch's default (rl-zoo3's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in IMPLEMENTATIONS:  # warm-up, discarded
        one_run(name, 0, 2048)
    rounds = []
    for index in range(args.rounds):
        runs = {name: one_run(name, index, args.timesteps) for name in rotated(list(IMPLEMENTATIONS), index)}
        ours, theirs = runs["pipelined"], runs["sb3-contrib"]
        runs["ratio"] = theirs["wall_s"] / ours["wall_s"]
        runs["sequential ratio"] = theirs["wall_s"] / runs["sequential"]["wall_s"]
        runs["ceiling"] = theirs["wall_s"] / ours["env_s"]
        runs["sequential ceiling"] = theirs["wall_s"] / runs["sequential"]["env_s"]
        rounds.append(runs)
        print(json.dumps(runs), flush=True)
    ratios = ("ratio", "sequential ratio", "ceiling", "sequential ceiling")
    summary = (
        {key: statistics.median(r[key] for r in rounds) for key in ratios}
        | {
            f"{name} {part} share": statistics.median(r[name][f"{part}_s"] / r[name]["wall_s"] for r in rounds)
            for name in IMPLEMENTATIONS
            for part in ("env", "update")
        }
        | {f"{name} env_s": statistics.median(r[name]["env_s"] for r in rounds) for name in IMPLEMENTATIONS}
    )
    record = {
        **run_facts(),
        "timesteps": args.timesteps,
        "torch_threads": torch.get_num_threads(),
        "summary": summary,
        "rounds": rounds,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
