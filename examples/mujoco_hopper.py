"""
MuJoCo Hopper with rl-zoo3's tuned TRPO settings, observation and reward normalisation included.

Needs MuJoCo: ``pip install 'sb3-trpo-plugin[mujoco]'``. With VecNormalize the policy sees normalised
observations, so the statistics are saved next to the model and must be loaded, frozen, to evaluate or deploy it.
rl-zoo3 trains for 1e6 steps (a few hours on a laptop's CPU).

Shortened run: ``python examples/mujoco_hopper.py --timesteps 2048 --output /tmp/hopper``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.cli.presets import PRESETS

# rl-zoo3's tuned settings (hyperparams/trpo.yml, Hopper-v4), as `sb3-trpo train --env Hopper-v5` uses them: 2 envs,
# VecNormalize, 1e6 steps, and TRPO's keyword arguments in HOPPER.hyperparams (n_steps=1024, batch_size=128, ...).
HOPPER = PRESETS["Hopper-v5"]


def main(argv: Sequence[str] | None = None) -> float:
    """
    :param argv: command line arguments (default: ``sys.argv[1:]``)
    :return: mean return of the trained policy over 5 deterministic episodes
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=HOPPER.n_timesteps, help="training budget in environment steps")
    parser.add_argument("--env", default="Hopper-v5", help="a MuJoCo task (Hopper-v5, Walker2d-v5, ...)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/hopper"), help="folder for the model and logs")
    parser.add_argument("--no-progress-bar", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    # Rewards are normalised with the algorithm's own discount factor, as rl-zoo3 does.
    env = VecNormalize(make_vec_env(args.env, n_envs=HOPPER.n_envs, seed=args.seed), gamma=HOPPER.hyperparams["gamma"])
    model = TRPO(HOPPER.policy, env, seed=args.seed, tensorboard_log=str(args.output / "tensorboard"), **HOPPER.hyperparams)
    model.learn(args.timesteps, progress_bar=not args.no_progress_bar)
    model.save(args.output / "trpo_hopper")
    env.save(str(args.output / "vecnormalize.pkl"))

    # Evaluation: the saved statistics, frozen (training=False), and the true rewards (norm_reward=False).
    eval_env = VecNormalize.load(
        str(args.output / "vecnormalize.pkl"), make_vec_env(args.env, n_envs=1, seed=args.seed + 1000)
    )
    eval_env.training = False
    eval_env.norm_reward = False
    model = TRPO.load(args.output / "trpo_hopper", env=eval_env)
    mean_return, std_return = evaluate_policy(model, eval_env, n_eval_episodes=5, deterministic=True)
    print(f"{args.env}: mean return {mean_return:.1f} ± {std_return:.1f}")
    return float(mean_return)


if __name__ == "__main__":
    main()
