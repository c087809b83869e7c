"""
``sb3-trpo``: train, evaluate, plot and export TRPO runs without rl-zoo3.

Sub-commands::

    sb3-trpo train --env CartPole-v1 --seed 0 --log-folder runs/trpo_cartpole_s0
    sb3-trpo eval --log-folder runs/trpo_cartpole_s0 --episodes 10
    sb3-trpo plot runs/ -o curves.png
    sb3-trpo export runs/trpo_cartpole_s0 --onnx cartpole.onnx
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sb3_trpo_plugin.cli import evaluate, export, plot, train
from sb3_trpo_plugin.cli.arguments import CommandError
from sb3_trpo_plugin.version import __version__

__all__ = ["CommandError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """
    :return: the parser of ``sb3-trpo`` and its sub-commands
    """
    parser = argparse.ArgumentParser(
        prog="sb3-trpo",
        description="Train, evaluate, plot and export TRPO (sb3-trpo-plugin) on Gymnasium environments. "
        "For rl-zoo3's command line, use python -m sb3_trpo_plugin.zoo instead.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train.add_arguments(
        commands.add_parser(
            "train",
            help="train TRPO with the environment's tuned preset",
            description="Train TRPO on a Gymnasium environment with its tuned preset (rl-zoo3's values where it has them), "
            "VecNormalize where the preset says so, a progress bar, TensorBoard logs, evaluation and checkpoint callbacks. "
            "The model and normalisation statistics are saved in the log folder.",
        )
    )
    evaluate.add_arguments(
        commands.add_parser(
            "eval",
            help="load a run and evaluate it",
            description="Load a run made by sb3-trpo train and report its mean episode return.",
        )
    )
    plot.add_arguments(
        commands.add_parser(
            "plot",
            help="draw learning curves of one or several runs",
            description=plot.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    export.add_arguments(
        commands.add_parser(
            "export",
            help="write a run's policy as an ONNX graph",
            description="Write the deterministic policy of a run (or of a model file) as an ONNX graph that takes raw "
            "observations (VecNormalize statistics folded in) and returns predict(deterministic=True)'s actions, "
            "checked against predict() with onnxruntime before it is written. Needs the export extra: "
            "pip install 'sb3-trpo-plugin[export]'. See docs/export.md.",
        )
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    Entry point of ``sb3-trpo`` and ``python -m sb3_trpo_plugin``.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    :return: the exit status (a mistake in the command line exits with status 2 and one line on stderr)
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    run_command = {"train": train.train, "eval": evaluate.evaluate, "plot": plot.plot, "export": export.export}[args.command]
    try:
        run_command(args)
    except CommandError as error:
        # One line saying what is wrong, as argparse does for its own errors, and no traceback.
        parser.exit(2, f"sb3-trpo {args.command}: error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
