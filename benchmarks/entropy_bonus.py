"""
TRPO with and without an entropy bonus (``ent_coef``), on rl-zoo3's tuned TRPO settings for an environment.

Each run trains one seed with one ``ent_coef`` and then evaluates the final policy (deterministic, 20 episodes on
a separate env); it writes ``<results>/<env>/ent_coef<c>_seed<k>.json`` when it finishes (atomically), and finished
runs are skipped, so the command resumes. ``report`` prints the markdown table recorded in ``docs/benchmarks.md``.

Usage::

    python -m benchmarks.entropy_bonus run --env CartPole-v1 --seeds 0 1 2 --ent-coefs 0 0.01 --timesteps 50000
    python -m benchmarks.entropy_bonus report --env CartPole-v1

Torch runs on one thread (set here, not in the library).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "entropy_bonus"


class ZooSettings(TypedDict):
    """rl-zoo3's settings for one environment: the number of envs, and TRPO's constructor keywords."""

    n_envs: int
    hyperparams: dict[str, Any]


#: rl-zoo3's hyperparams/trpo.yml entries (n_timesteps aside) for the environments offered here (no VecNormalize).
ZOO_SETTINGS: dict[str, ZooSettings] = {
    "CartPole-v1": ZooSettings(
        n_envs=2,
        hyperparams=dict(
            n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98, gamma=0.99, learning_rate=1e-3, n_critic_updates=20
        ),
    ),
}


def result_path(env_id: str, ent_coef: float, seed: int) -> Path:
    """Where one run's result goes."""
    return RESULTS / env_id / f"ent_coef{ent_coef:g}_seed{seed}.json"


def run_one(env_id: str, ent_coef: float, seed: int, timesteps: int) -> None:
    """Train and evaluate one seed with one ``ent_coef``; write its result."""
    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    from sb3_trpo_plugin import TRPO

    torch.set_num_threads(1)
    settings = ZOO_SETTINGS[env_id]
    started = time.process_time()
    env = make_vec_env(env_id, n_envs=settings["n_envs"], seed=seed)
    model = TRPO("MlpPolicy", env, seed=seed, ent_coef=ent_coef, **settings["hyperparams"])
    model.learn(timesteps)
    train_cpu = time.process_time() - started
    returns, _ = evaluate_policy(
        model, make_vec_env(env_id, n_envs=1, seed=seed + 1000), n_eval_episodes=20, return_episode_rewards=True
    )
    result = dict(
        env=env_id,
        ent_coef=ent_coef,
        seed=seed,
        timesteps=timesteps,
        final_return_mean=float(np.mean(returns)),
        final_return_std=float(np.std(returns)),
        final_entropy=-float(model.logger.name_to_value["train/entropy_loss"]),
        train_cpu_s=train_cpu,
    )
    path = result_path(env_id, ent_coef, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(result, indent=2))
    os.replace(temporary, path)
    print(json.dumps(result), flush=True)


def report(env_id: str) -> str:
    """The markdown table of the finished runs for ``env_id``."""
    runs = [json.loads(path.read_text()) for path in sorted((RESULTS / env_id).glob("*.json"))]
    lines = [
        "| `ent_coef` | seeds | final return (20 episodes), mean ± std over seeds | per seed | final entropy | CPU per run |",
        "| ---: | ---: | --- | --- | ---: | ---: |",
    ]
    for ent_coef in sorted({run["ent_coef"] for run in runs}):
        chosen = sorted((run for run in runs if run["ent_coef"] == ent_coef), key=lambda run: run["seed"])
        finals = [run["final_return_mean"] for run in chosen]
        lines.append(
            f"| {ent_coef:g} | {len(chosen)} | {np.mean(finals):.1f} ± {np.std(finals):.1f} | "
            f"{' / '.join(f'{value:.1f}' for value in finals)} | {np.mean([run['final_entropy'] for run in chosen]):.3f} | "
            f"{np.mean([run['train_cpu_s'] for run in chosen]):.0f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "report"])
    parser.add_argument("--env", default="CartPole-v1", choices=sorted(ZOO_SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ent-coefs", type=float, nargs="+", default=[0.0, 0.01])
    parser.add_argument("--timesteps", type=int, default=50_000)
    args = parser.parse_args()
    if args.command == "report":
        print(report(args.env))
        return
    for seed in args.seeds:
        for ent_coef in args.ent_coefs:
            if result_path(args.env, ent_coef, seed).exists():
                continue  # finished earlier: the command resumes
            run_one(args.env, ent_coef, seed, args.timesteps)


if __name__ == "__main__":
    main()
