"""
Pendulum-v1 with generalized State-Dependent Exploration (gSDE).

gSDE replaces the independent Gaussian noise of each step by noise that is a function of the state, resampled
every ``sde_sample_freq`` steps: smoother exploration, which suits continuous control. The settings are rl-zoo3's
tuned ones for TRPO on Pendulum-v1. An untrained policy scores about -1200; 0 is the best possible return.

Shortened run: ``python examples/pendulum_gsde.py --timesteps 2048 --output /tmp/pendulum``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_trpo_plugin import TRPO

# rl-zoo3's hyperparams/trpo.yml, Pendulum-v1 (with n_envs: 2).
PENDULUM_GSDE = dict(n_steps=1024, gamma=0.9, n_critic_updates=15, use_sde=True, sde_sample_freq=4)


def main(argv: Sequence[str] | None = None) -> float:
    """
    :param argv: command line arguments (default: ``sys.argv[1:]``)
    :return: mean return of the trained policy over 10 deterministic episodes
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=100_000, help="training budget in environment steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/pendulum_gsde"), help="folder for the model and logs")
    parser.add_argument("--no-progress-bar", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    env = make_vec_env("Pendulum-v1", n_envs=2, seed=args.seed)
    model = TRPO("MlpPolicy", env, seed=args.seed, tensorboard_log=str(args.output / "tensorboard"), **PENDULUM_GSDE)
    model.learn(args.timesteps, progress_bar=not args.no_progress_bar)
    model.save(args.output / "trpo_pendulum_gsde")

    # Deterministic evaluation uses the mean action: no exploration noise, gSDE or not.
    eval_env = make_vec_env("Pendulum-v1", n_envs=1, seed=args.seed + 1000)
    mean_return, std_return = evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True)
    print(
        f"Pendulum-v1 with gSDE: mean return {mean_return:.1f} ± {std_return:.1f} (untrained: about -1200; best possible: 0)"
    )
    return float(mean_return)


if __name__ == "__main__":
    main()
