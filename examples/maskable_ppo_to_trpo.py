"""
A MaskablePPO script (sb3-contrib's invalid-action masking) switched to MaskableTRPO by its import alone.

The environment announces its valid actions through ``action_masks()`` (here a board of 20 cells where 10 are
occupied at each step, sb3-contrib's ``InvalidActionEnvDiscrete``; your own env can instead be wrapped in
``ActionMasker(env, mask_function)``). Everything else is sb3-contrib's API and stays as it was: the maskable
evaluation callback, the maskable ``evaluate_policy``, ``learn(..., use_masking=True)``, ``predict(...,
action_masks=...)``, save and load. The swap::

    - from sb3_contrib import MaskablePPO as Algorithm
    + from sb3_trpo_plugin import MaskableTRPO as Algorithm

The constructor keywords below mean the same for both (``batch_size``: PPO's minibatch, TRPO's critic minibatch).
``--algo maskable_ppo`` runs the original script, ``--algo maskable_trpo`` (the default) the swapped one::

    python examples/maskable_ppo_to_trpo.py --algo maskable_ppo
    python examples/maskable_ppo_to_trpo.py --algo maskable_trpo
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from sb3_contrib import MaskablePPO
from sb3_contrib.common.envs import InvalidActionEnvDiscrete
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from sb3_contrib.common.maskable.evaluation import evaluate_policy
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3.common.env_util import make_vec_env

from sb3_trpo_plugin import MaskableTRPO

ALGORITHMS = {"maskable_ppo": MaskablePPO, "maskable_trpo": MaskableTRPO}
HYPERPARAMS = dict(n_steps=512, batch_size=128, gamma=0.4, learning_rate=1e-3)


def make_env() -> InvalidActionEnvDiscrete:
    """20 cells, 10 of them invalid at each step; the reward is 1 for the cell given as the observation."""
    return InvalidActionEnvDiscrete(dim=20, n_invalid_actions=10)


def main(argv: Sequence[str] | None = None) -> float:
    """
    :param argv: command line arguments (default: ``sys.argv[1:]``)
    :return: mean return of the reloaded model over 20 masked evaluation episodes (100 at most: one per step)
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=sorted(ALGORITHMS), default="maskable_trpo")
    parser.add_argument("--timesteps", type=int, default=20_000, help="training budget in environment steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/maskable"), help="parent folder of the run's folder")
    parser.add_argument("--eval-freq", type=int, default=2_000, help="evaluate every this many environment steps")
    parser.add_argument("--no-progress-bar", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    Algorithm = ALGORITHMS[args.algo]  # the one line that changes: `from sb3_contrib import MaskablePPO as Algorithm`
    run_folder = args.output / f"{args.algo}_seed{args.seed}"
    env = make_vec_env(make_env, n_envs=2, seed=args.seed)
    eval_env = make_vec_env(make_env, n_envs=1, seed=args.seed + 1000)

    # Evaluations with masks, the best model kept.
    evaluation = MaskableEvalCallback(
        eval_env,
        eval_freq=max(args.eval_freq // 2, 1),
        n_eval_episodes=5,
        best_model_save_path=str(run_folder),
        log_path=str(run_folder),
    )
    model = Algorithm("MlpPolicy", env, seed=args.seed, verbose=0, **HYPERPARAMS)
    model.learn(args.timesteps, callback=evaluation, use_masking=True, progress_bar=not args.no_progress_bar)
    model.save(run_folder / "model")

    model = Algorithm.load(run_folder / "model", env=eval_env)
    observations = eval_env.reset()
    actions, _ = model.predict(observations, deterministic=True, action_masks=get_action_masks(eval_env))
    print(f"valid actions now: {get_action_masks(eval_env)[0].nonzero()[0].tolist()}; the model picks {actions[0]}")
    mean_return, std_return = evaluate_policy(model, eval_env, n_eval_episodes=20, deterministic=True)
    print(f"{args.algo} seed {args.seed}: mean return {mean_return:.1f} ± {std_return:.1f}; files in {run_folder}")
    return float(mean_return)


if __name__ == "__main__":
    main()
