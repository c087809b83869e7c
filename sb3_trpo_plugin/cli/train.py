"""``sb3-trpo train``: TRPO on a Gymnasium environment with its tuned preset, callbacks and TensorBoard."""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import stable_baselines3
import torch
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

import sb3_trpo_plugin
from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.cli.arguments import CommandError, positive_int
from sb3_trpo_plugin.cli.environments import check_env_id, make_env
from sb3_trpo_plugin.cli.hyperparams import parse_hyperparams
from sb3_trpo_plugin.cli.presets import DEFAULT_PRESET, PRESETS, Preset, get_preset
from sb3_trpo_plugin.cli.run_folder import RunFolder
from sb3_trpo_plugin.serialization.checkpoints import CheckpointCallback
from sb3_trpo_plugin.serialization.vec_normalize_statistics import statistics_path, write_vec_normalize_statistics

DEFAULT_EVAL_FREQ = 10_000
DEFAULT_SAVE_FREQ = 50_000


class SaveVecNormalizeOnBest(BaseCallback):
    """
    Saves the ``VecNormalize`` statistics next to ``best_model.zip`` whenever ``EvalCallback`` finds a new best model,
    so that the best model can be evaluated with the statistics it was trained with: SB3's pickle, and the same
    statistics without pickle next to it (``.npz``, read by ``safe_load_vec_normalize``).

    :param save_path: where to write SB3's statistics file (the ``.npz`` gets the same name)
    """

    #: Reads none of the rollout loop's locals (the lean loop may then compute values and log-probabilities batched).
    reads_step_outputs = False

    def __init__(self, save_path: Path):
        super().__init__()
        self.save_path = save_path

    def _on_step(self) -> bool:
        vec_normalize = self.model.get_vec_normalize_env()
        if vec_normalize is not None:
            save_vec_normalize(vec_normalize, self.save_path)
        return True


def save_vec_normalize(vec_normalize: VecNormalize, path: Path) -> None:
    """
    Write the statistics as SB3's ``VecNormalize.save`` does, and without pickle next to it (``.npz``).

    :param vec_normalize: the wrapper
    :param path: SB3's ``.pkl`` file
    """
    write_vec_normalize_statistics(vec_normalize, statistics_path(path))
    vec_normalize.save(str(path))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """
    :param parser: the ``train`` sub-command's parser
    """
    parser.add_argument(
        "--env", required=True, metavar="ENV", help="Gymnasium environment id, e.g. CartPole-v1, Pendulum-v1, Hopper-v5"
    )
    parser.add_argument(
        "--n-timesteps",
        type=positive_int,
        default=None,
        metavar="N",
        help="training budget in environment steps (default: the preset's)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of the environments and the networks (default: 0)"
    )
    parser.add_argument(
        "--n-envs",
        type=positive_int,
        default=None,
        metavar="K",
        help="number of environment copies stepped in parallel (default: the preset's)",
    )
    parser.add_argument(
        "--log-folder",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for the model, normalisation statistics, checkpoints, evaluations, monitor files and TensorBoard "
        "logs; it must not hold another run (default: runs/TRPO_<env>_seed<seed>)",
    )
    parser.add_argument(
        "--hyperparams",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override the preset, e.g. --hyperparams target_kl=0.02 n_steps=1024 normalize=True "
        '"policy_kwargs=dict(net_arch=[64, 64])"; keys: TRPO\'s keyword arguments, policy and normalize',
    )
    parser.add_argument(
        "--eval-freq",
        type=int,
        default=DEFAULT_EVAL_FREQ,
        metavar="F",
        help=f"evaluate on a separate environment every F steps, keeping the best model; 0 turns it off "
        f"(default: {DEFAULT_EVAL_FREQ})",
    )
    parser.add_argument(
        "--eval-episodes", type=positive_int, default=5, metavar="K", help="episodes per evaluation (default: 5)"
    )
    parser.add_argument(
        "--save-freq",
        type=int,
        default=DEFAULT_SAVE_FREQ,
        metavar="F",
        help=f"save a checkpoint every F steps; 0 turns it off (default: {DEFAULT_SAVE_FREQ})",
    )
    parser.add_argument("--device", default="auto", help="PyTorch device: cpu, cuda, auto (default: auto)")
    parser.add_argument("--verbose", type=int, default=0, choices=[0, 1, 2], help="SB3's verbosity (default: 0)")
    parser.add_argument("--no-progress-bar", action="store_true", help="hide the progress bar")
    parser.epilog = (
        f"Tuned presets: {', '.join(PRESETS)}. Any other registered environment gets rl-zoo3's defaults "
        "(MlpPolicy, 1e6 steps, TRPO's default hyperparameters)."
    )


def progress_bar_available() -> bool:
    """:return: whether SB3's progress bar can be shown (it needs tqdm and rich)"""
    return all(importlib.util.find_spec(name) is not None for name in ("tqdm", "rich"))


def run_config(args: argparse.Namespace, preset: Preset, settings: dict[str, Any]) -> dict[str, Any]:
    """
    What ``run.json`` records: enough to evaluate the run, label it in plots and reproduce it.

    :param args: the parsed command line
    :param preset: the environment's preset
    :param settings: ``n_envs``, ``n_timesteps``, ``policy``, ``normalize``, ``hyperparams`` and ``env_kwargs`` as used
    :return: the configuration
    """
    return {
        "algo": "TRPO",
        "env": args.env,
        "seed": args.seed,
        **settings,
        "preset_source": preset.source,
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {
            "sb3_trpo_plugin": sb3_trpo_plugin.__version__,
            "stable_baselines3": stable_baselines3.__version__,
            "torch": torch.__version__,
            "gymnasium": gym.__version__,
            "python": platform.python_version(),
        },
    }


def make_callbacks(args: argparse.Namespace, run: RunFolder, eval_env: VecEnv | None, n_envs: int) -> list[BaseCallback]:
    """
    The checkpoint and evaluation callbacks, as ``--save-freq`` and ``--eval-freq`` ask.

    Checkpoints are written by the package's crash-safe ``CheckpointCallback`` (SB3's arguments and file names): a
    crash during a save leaves no truncated file under a checkpoint name, and no model without its statistics.

    :param args: the parsed command line
    :param run: the run's folder
    :param eval_env: the evaluation environment (``None`` when evaluation is off)
    :param n_envs: number of training environments
    :return: the callbacks
    """
    callbacks: list[BaseCallback] = []
    # The callbacks count calls to env.step(), each of which is n_envs environment steps.
    if args.save_freq > 0:
        # save_vecnormalize saves the statistics next to each checkpoint when the environment has them.
        checkpoint_freq = max(args.save_freq // n_envs, 1)
        callbacks.append(
            CheckpointCallback(checkpoint_freq, str(run.checkpoints), name_prefix="model", save_vecnormalize=True)
        )
    if eval_env is not None:
        normalized = isinstance(eval_env, VecNormalize)
        callbacks.append(
            EvalCallback(
                eval_env,
                callback_on_new_best=SaveVecNormalizeOnBest(run.best_vecnormalize) if normalized else None,
                n_eval_episodes=args.eval_episodes,
                eval_freq=max(args.eval_freq // n_envs, 1),
                log_path=str(run.path),
                best_model_save_path=str(run.path),
                deterministic=True,
                verbose=args.verbose,
            )
        )
    return callbacks


def train(args: argparse.Namespace) -> RunFolder:
    """
    Train TRPO as the parsed ``train`` command line says.

    :param args: the parsed command line
    :return: the run's folder
    :raises CommandError: for an unknown environment or hyperparameter, a taken log folder or an invalid value
    """
    check_env_id(args.env)
    try:
        overrides = parse_hyperparams(args.hyperparams)
    except ValueError as error:
        raise CommandError(str(error)) from error
    preset = get_preset(args.env)
    if preset is DEFAULT_PRESET:
        print(f"No tuned preset for {args.env}: using rl-zoo3's defaults (MlpPolicy, 1e6 steps) and TRPO's own")
    hyperparams = {**preset.hyperparams, **overrides}
    policy = hyperparams.pop("policy", preset.policy)
    normalize = hyperparams.pop("normalize", preset.normalize)
    n_envs = args.n_envs or preset.n_envs
    n_timesteps = args.n_timesteps or preset.n_timesteps

    run = RunFolder(args.log_folder or Path("runs") / f"TRPO_{args.env}_seed{args.seed}")
    if run.config.exists():
        raise CommandError(f"{run.path} already holds a run ({run.config.name}); choose another --log-folder")
    run.path.mkdir(parents=True, exist_ok=True)
    # Monitor files of an attempt that stopped before writing run.json would be mistaken for this run's episodes.
    for stale in run.monitor.glob("*.monitor.csv"):
        stale.unlink()

    env_kwargs = dict(preset.env_kwargs)
    env = make_env(args.env, n_envs, args.seed, monitor_dir=run.monitor, env_kwargs=env_kwargs)
    eval_env = make_env(args.env, 1, args.seed + 1000, env_kwargs=env_kwargs) if args.eval_freq > 0 else None
    if normalize:
        # Like rl-zoo3: rewards are normalised with the algorithm's discount (0.99 is TRPO's default), and the
        # evaluation environment sees true rewards through statistics that EvalCallback copies from training.
        normalize_kwargs = {"gamma": hyperparams.get("gamma", 0.99), **(normalize if isinstance(normalize, dict) else {})}
        env = VecNormalize(env, **normalize_kwargs)
        if eval_env is not None:
            eval_env = VecNormalize(eval_env, **{**normalize_kwargs, "training": False, "norm_reward": False})

    try:
        model = TRPO(
            policy,
            env,
            seed=args.seed,
            verbose=args.verbose,
            tensorboard_log=str(run.tensorboard),
            device=args.device,
            **hyperparams,
        )
    except (ValueError, TypeError) as error:
        env.close()
        raise CommandError(f"invalid hyperparameters for {args.env}: {error}") from error

    settings = dict(n_envs=n_envs, n_timesteps=n_timesteps, policy=policy, normalize=normalize, hyperparams=hyperparams)
    settings["env_kwargs"] = env_kwargs
    run.write_config(run_config(args, preset, settings))
    show_progress = not args.no_progress_bar and progress_bar_available()
    if not args.no_progress_bar and not show_progress:
        print("(no progress bar: it needs tqdm and rich, e.g. pip install 'sb3-trpo-plugin[extra]')")

    print(f"Training TRPO on {args.env} for {n_timesteps} steps ({n_envs} envs, seed {args.seed}) into {run.path}")
    callbacks = make_callbacks(args, run, eval_env, n_envs)
    try:
        model.learn(n_timesteps, callback=callbacks, progress_bar=show_progress, tb_log_name="TRPO")
    except KeyboardInterrupt:
        print("Interrupted: saving the model as it is")
    model.save(run.model)
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        save_vec_normalize(vec_normalize, run.vecnormalize)
    env.close()
    if eval_env is not None:
        eval_env.close()

    print(f"Model saved to {run.model}" + (f" with normalisation statistics {run.vecnormalize}" if normalize else ""))
    print(f"Evaluate: sb3-trpo eval --log-folder {run.path}")
    print(f"TensorBoard: tensorboard --logdir {run.tensorboard}")
    return run
