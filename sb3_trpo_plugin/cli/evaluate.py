"""``sb3-trpo eval``: load a run made by ``sb3-trpo train`` and evaluate it."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_trpo_plugin.cli.arguments import CommandError, positive_int
from sb3_trpo_plugin.cli.environments import make_env
from sb3_trpo_plugin.cli.run_folder import RunFolder
from sb3_trpo_plugin.loading import safe_load, safe_load_vec_normalize

# Evaluation episodes use seeds apart from those of training (seed .. seed + n_envs) and of its evaluations (seed + 1000).
EVAL_SEED_OFFSET = 10_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """
    :param parser: the ``eval`` sub-command's parser
    """
    parser.add_argument(
        "--log-folder", type=Path, required=True, metavar="DIR", help="the run's folder, as given to sb3-trpo train"
    )
    parser.add_argument("--episodes", type=positive_int, default=10, metavar="K", help="number of episodes (default: 10)")
    parser.add_argument("--render", action="store_true", help="show the episodes in a window (render_mode='human')")
    parser.add_argument("--best", action="store_true", help="evaluate the best model of the evaluations, not the last one")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the most likely one")
    parser.add_argument("--seed", type=int, default=None, help="seed of the evaluation episodes (default: the run's + 10000)")
    parser.add_argument("--device", default="auto", help="PyTorch device: cpu, cuda, auto (default: auto)")


def evaluate_run(
    run: RunFolder,
    episodes: int = 10,
    render: bool = False,
    best: bool = False,
    deterministic: bool = True,
    seed: int | None = None,
    device: str = "auto",
) -> tuple[float, float]:
    """
    Evaluate a run's model on fresh episodes, with its normalisation statistics frozen and true rewards.

    :param run: the run's folder
    :param episodes: number of episodes
    :param render: show the episodes in a window
    :param best: take ``best_model.zip`` instead of ``model.zip``
    :param deterministic: take the most likely action instead of sampling
    :param seed: seed of the first episode (default: the run's seed + 10000)
    :param device: PyTorch device
    :return: mean and standard deviation of the episode returns
    :raises CommandError: when the folder holds no run or not the model asked for
    """
    if not run.config.exists():
        raise CommandError(f"{run.path} holds no sb3-trpo run (no {run.config.name}); give the --log-folder of sb3-trpo train")
    config = run.read_config()
    model_path = run.best_model if best else run.model
    if not model_path.exists():
        raise CommandError(f"{model_path} does not exist" + (" (no evaluation ran during training)" if best else ""))

    env_seed = config["seed"] + EVAL_SEED_OFFSET if seed is None else seed
    # Runs recorded before presets had environment keywords have none.
    env_kwargs = {**config.get("env_kwargs", {}), **({"render_mode": "human"} if render else {})}
    env = make_env(config["env"], 1, env_seed, env_kwargs=env_kwargs or None)
    if config["normalize"]:
        env = safe_load_vec_normalize(run.statistics_file(best), env)
        env.training = False
        env.norm_reward = False
    # Nothing from the run's files is unpickled: a run folder may come from someone else.
    model = safe_load(model_path, env=env, device=device)
    # render_mode="human" draws every step by itself, so evaluate_policy must not render again.
    returns, _ = evaluate_policy(
        model, env, n_eval_episodes=episodes, deterministic=deterministic, return_episode_rewards=True
    )
    env.close()
    return float(np.mean(returns)), float(np.std(returns))


def evaluate(args: argparse.Namespace) -> tuple[float, float]:
    """
    Run the parsed ``eval`` command line and print the result.

    :param args: the parsed command line
    :return: mean and standard deviation of the episode returns
    """
    run = RunFolder(args.log_folder)
    mean_return, std_return = evaluate_run(
        run, args.episodes, args.render, args.best, deterministic=not args.stochastic, seed=args.seed, device=args.device
    )
    config = run.read_config()
    which = "best" if args.best else "final"
    print(f"{config['algo']} on {config['env']} ({which} model of {run.path}):")
    print(f"mean return over {args.episodes} episodes: {mean_return:.2f} ± {std_return:.2f}")
    return mean_return, std_return
