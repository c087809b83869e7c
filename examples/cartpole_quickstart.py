"""
Quickstart: train TRPO on CartPole-v1 with rl-zoo3's tuned settings, then evaluate and save it.

Run with ``make demo`` (or ``python examples/cartpole_quickstart.py``). Shortened runs:
``python examples/cartpole_quickstart.py --timesteps 5000 --output /tmp/demo``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_trpo_plugin import TRPO

# rl-zoo3's tuned TRPO hyperparameters for CartPole-v1 (hyperparams/trpo.yml).
ZOO_CARTPOLE = dict(
    n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98, gamma=0.99, learning_rate=1e-3, n_critic_updates=20
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=100_000, help="training budget in environment steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("demo_output"), help="folder for the model and logs")
    parser.add_argument("--no-progress-bar", action="store_true", help="hide the progress bar")
    args = parser.parse_args()

    # A 64x64 MLP on a CPU: one thread beats several, which mostly wait on each other (the library leaves this to you).
    torch.set_num_threads(1)
    env = make_vec_env("CartPole-v1", n_envs=2, seed=args.seed)
    model = TRPO("MlpPolicy", env, seed=args.seed, verbose=0, tensorboard_log=str(args.output / "tensorboard"), **ZOO_CARTPOLE)
    model.learn(args.timesteps, progress_bar=not args.no_progress_bar, tb_log_name="TRPO_CartPole")

    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=args.seed + 1000)
    mean_return, std_return = evaluate_policy(model, eval_env, n_eval_episodes=20, deterministic=True)
    model_path = args.output / "trpo_cartpole.zip"
    model.save(model_path)

    print(f"Mean return over 20 deterministic episodes: {mean_return:.1f} ± {std_return:.1f} (500 is the maximum)")
    print(f"Model saved to:       {model_path}  (load with TRPO.load('{model_path}'))")
    print(f"TensorBoard logs in:  {model.logger.get_dir()}  (view with: tensorboard --logdir {args.output / 'tensorboard'})")


if __name__ == "__main__":
    main()
