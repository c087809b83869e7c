"""``sb3-trpo export``: the policy of a run (or of a model file) as an ONNX graph, checked against ``predict()``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space

from sb3_trpo_plugin.cli.arguments import CommandError, positive_int
from sb3_trpo_plugin.cli.environments import make_env
from sb3_trpo_plugin.cli.run_folder import RunFolder
from sb3_trpo_plugin.export import ExportedPolicy, ExportError, export_onnx
from sb3_trpo_plugin.export.tracing import DEFAULT_OPSET
from sb3_trpo_plugin.loading import UnsafeModelFileError, UnsafeStatisticsFileError, safe_load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """
    :param parser: the ``export`` sub-command's parser
    """
    parser.add_argument(
        "source",
        type=Path,
        metavar="RUN_OR_MODEL",
        help="a run folder of sb3-trpo train (its VecNormalize statistics are folded in), or a model file (.zip) of "
        "TRPO, MaskableTRPO or RecurrentTRPO (also SB3's PPO and A2C, sb3-contrib's TRPO), read without unpickling",
    )
    parser.add_argument("--onnx", type=Path, required=True, metavar="OUT", help="the ONNX file to write")
    parser.add_argument("--best", action="store_true", help="a run's best model (best_model.zip), not its final one")
    parser.add_argument(
        "--vecnormalize",
        type=Path,
        default=None,
        metavar="FILE",
        help="VecNormalize statistics to fold in (.npz, or SB3's .pkl read without unpickling); default: the run's own",
    )
    parser.add_argument(
        "--no-vecnormalize",
        action="store_true",
        help="leave the run's VecNormalize statistics out: the graph then takes normalised observations",
    )
    parser.add_argument(
        "--stochastic", action="store_true", help="also output the action distribution's parameters, to sample outside"
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="image observations with their channels last (HxWxC); by default a run's images come as its environment "
        "returns them, a model file's channels first",
    )
    parser.add_argument(
        "--opset", type=positive_int, default=DEFAULT_OPSET, metavar="N", help=f"ONNX operator set (default: {DEFAULT_OPSET})"
    )
    parser.add_argument("--no-check", action="store_true", help="do not run the graph against predict() before writing it")


def _has_images(space: spaces.Space[Any]) -> bool:
    subspaces = space.spaces.values() if isinstance(space, spaces.Dict) else [space]
    return any(is_image_space(subspace) for subspace in subspaces)


def load_source(source: Path, best: bool, no_vecnormalize: bool, channels_last: bool) -> tuple[Any, Path | None]:
    """
    The model to export and the statistics to fold in.

    A run's model is loaded with its environment when it sees images, so that the graph takes them as the
    environment returns them (SB3 transposes channel-last images with ``VecTransposeImage``).

    :param source: a run folder or a model file
    :param best: a run's best model
    :param no_vecnormalize: leave a run's statistics out
    :param channels_last: images channels last, whatever the environment returns
    :return: the model, and the run's statistics file (``None`` when it has none or they are left out)
    :raises CommandError: for a missing source, a folder that holds no run, or a model file that is refused
    """
    if not source.exists():
        raise CommandError(f"{source} does not exist; give a run folder of sb3-trpo train or a model file")
    statistics = None
    try:
        if not source.is_dir():
            if best:
                raise CommandError("--best takes a run folder, not a model file")
            return safe_load(source, device="cpu"), None
        run = RunFolder(source)
        if not run.config.exists():
            raise CommandError(f"{source} holds no sb3-trpo run (no {run.config.name}); give a run folder or a model file")
        config = run.read_config()
        model_path = run.best_model if best else run.model
        if not model_path.exists():
            raise CommandError(f"{model_path} does not exist" + (" (no evaluation ran during training)" if best else ""))
        if config.get("normalize") and not no_vecnormalize:
            statistics = run.statistics_file(best)
        model = safe_load(model_path, device="cpu")
        if _has_images(model.observation_space) and not channels_last:
            env = make_env(config["env"], 1, config["seed"], env_kwargs=config.get("env_kwargs") or None)
            model = safe_load(model_path, env=env, device="cpu")
    except UnsafeModelFileError as error:
        raise CommandError(str(error)) from error
    return model, statistics


def export(args: argparse.Namespace) -> ExportedPolicy:
    """
    Run the parsed ``export`` command line and print what was written.

    :param args: the parsed command line
    :return: what was written
    :raises CommandError: for a source, statistics or policy that cannot be exported
    """
    if args.vecnormalize is not None and args.no_vecnormalize:
        raise CommandError("--vecnormalize and --no-vecnormalize contradict each other")
    model, statistics = load_source(args.source, args.best, args.no_vecnormalize, args.channels_last)
    vec_normalize: Path | bool = args.vecnormalize or statistics or False
    try:
        exported = export_onnx(
            model,
            args.onnx,
            vec_normalize=vec_normalize,
            stochastic=args.stochastic,
            channels_last=True if args.channels_last else None,
            opset=args.opset,
            check=not args.no_check,
        )
    except (ExportError, UnsafeStatisticsFileError, ImportError) as error:
        raise CommandError(str(error)) from error
    print(f"Exported the {type(model).__name__} policy of {args.source}:")
    print(exported.summary())
    names = ", ".join(f'"{tensor.name}": ...' for tensor in exported.inputs)
    print(f'Run it: onnxruntime.InferenceSession("{exported.path}").run(None, {{{names}}})')
    return exported
