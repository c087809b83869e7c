"""
MaskableRecurrentTRPO on a task that needs memory and action masks together.

A cue shown only at the first step names the action that pays at the fourth; at every step two of the four actions,
drawn anew, are forbidden (taking one ends the episode with -1), and the environment says which through
``action_masks()``, sb3-contrib's convention. A policy with masks but no memory guesses the last action between two
(0.5 on average); one with memory but no masks meets an unseen forbidden action half the time at each step.

The script trains with the conventions of sb3-contrib's ``MaskablePPO`` and ``RecurrentPPO`` together, saves and
loads the model, and evaluates it with the LSTM states carried from step to step::

    python examples/maskable_recurrent_trpo.py --timesteps 20000
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from stable_baselines3.common.env_util import make_vec_env

from sb3_trpo_plugin import MaskableRecurrentTRPO
from sb3_trpo_plugin.envs import CueWithForbiddenActionsEnv
from sb3_trpo_plugin.masked_recurrent import evaluate_policy


def main(argv: Sequence[str] | None = None) -> float:
    """
    :param argv: command line arguments (default: ``sys.argv[1:]``)
    :return: mean return of the loaded model over 200 deterministic episodes (1 is the best)
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=20_000, help="training budget in environment steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/maskable_recurrent"), help="folder for the model")
    args = parser.parse_args(argv)

    env = make_vec_env(CueWithForbiddenActionsEnv, n_envs=8, seed=args.seed)
    model = MaskableRecurrentTRPO(
        "MlpLstmPolicy",
        env,
        n_steps=32,
        batch_size=64,
        target_kl=0.05,
        policy_kwargs=dict(lstm_hidden_size=16, net_arch=[16]),
        seed=args.seed,
    )
    model.learn(args.timesteps, use_masking=True)
    model.save(args.output / "model")

    model = MaskableRecurrentTRPO.load(args.output / "model")
    eval_env = make_vec_env(CueWithForbiddenActionsEnv, n_envs=4, seed=args.seed + 1000)
    mean_return, std_return = evaluate_policy(model, eval_env, n_eval_episodes=200, deterministic=True)
    print(
        f"MaskableRecurrentTRPO seed {args.seed}: mean return {mean_return:.2f} ± {std_return:.2f} (best 1, masks alone 0.5)"
    )
    return mean_return


if __name__ == "__main__":
    main()
