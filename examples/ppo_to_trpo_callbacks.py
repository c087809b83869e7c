"""
An ordinary SB3 PPO training script with callbacks, switched to TRPO by changing one line.

Everything around the algorithm (vectorised envs with monitor files, evaluation with early stopping, checkpoints,
the progress bar, TensorBoard) is SB3's and stays as it was. The swap::

    - from stable_baselines3 import PPO
    + from sb3_trpo_plugin import TRPO
    - model = PPO("MlpPolicy", env, **PPO_HYPERPARAMS, ...)
    + model = TRPO("MlpPolicy", env, **TRPO_HYPERPARAMS, ...)

Run ``--algo ppo`` for the original script, ``--algo trpo`` (the default) for the swapped one, then compare both::

    python examples/ppo_to_trpo_callbacks.py --algo ppo --seed 0
    python examples/ppo_to_trpo_callbacks.py --algo trpo --seed 0
    sb3-trpo plot runs/callbacks -o curves.png
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback, EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.utils import LinearSchedule

from sb3_trpo_plugin import TRPO

# rl-zoo3's tuned values for CartPole-v1 (hyperparams/ppo.yml and hyperparams/trpo.yml), and their numbers of envs.
# PPO's clip_range and n_epochs have no meaning for TRPO, whose step size is set by the trust region target_kl
# (TRPO's constructor refuses them with a TypeError saying so); ent_coef=0.0 is TRPO's default too.
PPO_HYPERPARAMS = dict(
    n_steps=32,
    batch_size=256,
    gae_lambda=0.8,
    gamma=0.98,
    n_epochs=20,
    ent_coef=0.0,
    learning_rate=LinearSchedule(1e-3, 0.0, 1.0),
    clip_range=LinearSchedule(0.2, 0.0, 1.0),
)
TRPO_HYPERPARAMS = dict(
    n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98, gamma=0.99, learning_rate=1e-3, n_critic_updates=20
)
ALGORITHMS = {"ppo": (PPO, PPO_HYPERPARAMS, 8), "trpo": (TRPO, TRPO_HYPERPARAMS, 2)}


def main(argv: Sequence[str] | None = None) -> float:
    """
    :param argv: command line arguments (default: ``sys.argv[1:]``)
    :return: mean return of the final model over 10 evaluation episodes
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=sorted(ALGORITHMS), default="trpo", help="the original (ppo) or the swap (trpo)")
    parser.add_argument("--timesteps", type=int, default=100_000, help="training budget in environment steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/callbacks"), help="parent folder of the run's folder")
    parser.add_argument("--eval-freq", type=int, default=5_000, help="evaluate every this many environment steps")
    parser.add_argument("--no-progress-bar", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    algorithm, hyperparams, n_envs = ALGORITHMS[args.algo]
    # <output>/TRPO_seed0: `sb3-trpo plot` reads the algorithm from the folder's name and the episodes from monitor files.
    run_folder = args.output / f"{args.algo.upper()}_seed{args.seed}"
    env = make_vec_env("CartPole-v1", n_envs=n_envs, seed=args.seed, monitor_dir=str(run_folder))
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=args.seed + 1000)

    # Stop once the evaluation return reaches CartPole's maximum; keep the best model; checkpoint regularly.
    # Callback frequencies count env.step() calls, each of which steps all n_envs environments.
    stop_at_max = StopTrainingOnRewardThreshold(reward_threshold=500, verbose=1)
    evaluation = EvalCallback(
        eval_env,
        callback_on_new_best=stop_at_max,
        eval_freq=max(args.eval_freq // n_envs, 1),
        n_eval_episodes=5,
        best_model_save_path=str(run_folder),
        log_path=str(run_folder),
    )
    checkpoints = CheckpointCallback(save_freq=max(25_000 // n_envs, 1), save_path=str(run_folder / "checkpoints"))

    model = algorithm("MlpPolicy", env, seed=args.seed, tensorboard_log=str(run_folder / "tensorboard"), **hyperparams)
    model.learn(args.timesteps, callback=CallbackList([evaluation, checkpoints]), progress_bar=not args.no_progress_bar)
    model.save(run_folder / "model")

    mean_return, std_return = evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True)
    print(f"{args.algo.upper()} seed {args.seed}: mean return {mean_return:.1f} ± {std_return:.1f}; files in {run_folder}")
    return float(mean_return)


if __name__ == "__main__":
    main()
