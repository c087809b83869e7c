"""
rl-zoo3 with this package's TRPO as its ``trpo`` algorithm, RecurrentTRPO as ``trpo_lstm``, MaskableTRPO as
``trpo_mask`` and MaskableRecurrentTRPO as ``trpo_lstm_mask``.

From a shell, ``python -m sb3_trpo_plugin.zoo train|enjoy ...`` takes rl-zoo3's own arguments and its tuned
``hyperparams/trpo.yml``, e.g.::

    python -m sb3_trpo_plugin.zoo train --algo trpo --env CartPole-v1 -f logs
    python -m sb3_trpo_plugin.zoo enjoy --algo trpo --env CartPole-v1 -f logs
    python -m sb3_trpo_plugin.zoo train --algo trpo --env Pendulum-v1 -optimize --n-trials 20
    python -m sb3_trpo_plugin.zoo train --algo trpo_lstm --env CartPoleNoVel-v1 -f logs

rl-zoo3 has no ``trpo_lstm.yml``: unless ``--conf-file`` is given, training ``trpo_lstm`` reads this package's
(:data:`RECURRENT_HYPERPARAMS`).

``trpo_mask`` (rl-zoo3 names sb3-contrib's masked PPO ``ppo_mask``) takes its hyperparameters from
:mod:`sb3_trpo_plugin.zoo.trpo_mask` (TRPO's defaults for any environment) unless ``-conf`` names a file;
rl-zoo3 registers no environment with action masks, so ``--gym-packages`` names the module that registers yours::

    python -m sb3_trpo_plugin.zoo train --algo trpo_mask --env MyMaskedEnv-v0 --gym-packages my_envs -f logs

``trpo_lstm_mask`` (masks and an LSTM policy; sb3-contrib has no such algorithm) likewise reads
:mod:`sb3_trpo_plugin.zoo.trpo_lstm_mask` unless ``-conf`` names a file. rl-zoo3's ``enjoy`` passes no masks to
``predict``: it shows the policy acting without them.

From Python, call :func:`register` before running rl-zoo3's code.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from stable_baselines3.common.base_class import BaseAlgorithm

from sb3_trpo_plugin import TRPO

#: rl-zoo3's ``--algo`` for this package's TRPO (it replaces sb3-contrib's there).
ALGO_NAME = "trpo"
#: rl-zoo3 calls sb3-contrib's RecurrentPPO ``ppo_lstm``.
RECURRENT_ALGO_NAME = "trpo_lstm"
#: The hyperparameters ``trpo_lstm`` reads unless ``--conf-file`` names others.
RECURRENT_HYPERPARAMS = Path(__file__).resolve().parent / "trpo_lstm.yml"
#: rl-zoo3's ``--algo`` for MaskableTRPO (rl-zoo3 calls sb3-contrib's MaskablePPO ``ppo_mask``).
MASKED_ALGO_NAME = "trpo_mask"
#: rl-zoo3's ``--conf-file`` for ``trpo_mask`` when none is given (a module with a ``hyperparams`` dictionary).
MASKED_HYPERPARAMS = "sb3_trpo_plugin.zoo.trpo_mask"
#: rl-zoo3's ``--algo`` for MaskableRecurrentTRPO.
MASKED_RECURRENT_ALGO_NAME = "trpo_lstm_mask"
#: rl-zoo3's ``--conf-file`` for ``trpo_lstm_mask`` when none is given.
MASKED_RECURRENT_HYPERPARAMS = "sb3_trpo_plugin.zoo.trpo_lstm_mask"

#: ``train``'s option naming one of :data:`sb3_trpo_plugin.zoo.samplers.SAMPLERS` for ``-optimize`` (rl-zoo3's own
#: TRPO sampler when absent).
SAMPLER_OPTION = "--trpo-sampler"

#: rl-zoo3's scripts that take ``--algo``: ``"module:function"``. Each is imported only when asked for (the plots need
#: seaborn).
SCRIPTS: dict[str, str] = {
    "train": "rl_zoo3.train:train",
    "enjoy": "rl_zoo3.enjoy:enjoy",
}

__all__ = [
    "ALGO_NAME",
    "MASKED_ALGO_NAME",
    "MASKED_HYPERPARAMS",
    "MASKED_RECURRENT_ALGO_NAME",
    "MASKED_RECURRENT_HYPERPARAMS",
    "RECURRENT_ALGO_NAME",
    "RECURRENT_HYPERPARAMS",
    "SAMPLER_OPTION",
    "SCRIPTS",
    "main",
    "register",
]


def register() -> type[BaseAlgorithm] | None:
    """
    Make rl-zoo3 use ``sb3_trpo_plugin.TRPO`` wherever it uses ``trpo`` (train, enjoy, hyperparameter search), and
    ``sb3_trpo_plugin.RecurrentTRPO`` as ``trpo_lstm``, ``sb3_trpo_plugin.MaskableTRPO`` as ``trpo_mask`` and
    ``sb3_trpo_plugin.MaskableRecurrentTRPO`` as ``trpo_lstm_mask``.

    Every rl-zoo3 module imports the one dictionary ``rl_zoo3.utils.ALGOS`` and reads it when it runs (argparse
    takes its keys as ``--algo`` choices at parse time, models are built and loaded through it), so replacing its
    ``trpo`` entry in place, before rl-zoo3 parses its arguments, is all it takes. Its hyperparameter file
    ``trpo.yml`` and Optuna sampler for ``trpo`` are then used unchanged, since the constructor takes the same keywords.

    :return: the class that was registered as ``trpo`` before (sb3-contrib's ``TRPO``), to put it back if wanted
    :raises ImportError: when rl-zoo3 is not installed
    """
    try:
        from rl_zoo3.utils import ALGOS
    except ImportError as error:
        raise ImportError("rl-zoo3 is not installed: pip install 'sb3-trpo-plugin[zoo]'") from error
    # rl-zoo3 depends on sb3-contrib, which they need
    from sb3_trpo_plugin import MaskableRecurrentTRPO, MaskableTRPO, RecurrentTRPO

    previous = ALGOS.get(ALGO_NAME)
    ALGOS[ALGO_NAME] = TRPO
    ALGOS[RECURRENT_ALGO_NAME] = RecurrentTRPO
    ALGOS[MASKED_ALGO_NAME] = MaskableTRPO
    ALGOS[MASKED_RECURRENT_ALGO_NAME] = MaskableRecurrentTRPO
    return previous


def with_default_hyperparams(arguments: Sequence[str]) -> list[str]:
    """
    rl-zoo3's ``train`` arguments, with ``--conf-file`` added for the algorithms rl-zoo3 ships no hyperparameters for
    (``trpo_lstm``: :data:`RECURRENT_HYPERPARAMS`; ``trpo_mask``: :data:`MASKED_HYPERPARAMS`; ``trpo_lstm_mask``:
    :data:`MASKED_RECURRENT_HYPERPARAMS`) when none is given.

    :param arguments: the script's arguments
    :return: the arguments to pass on
    """
    arguments = list(arguments)
    defaults = {
        RECURRENT_ALGO_NAME: str(RECURRENT_HYPERPARAMS),
        MASKED_ALGO_NAME: MASKED_HYPERPARAMS,
        MASKED_RECURRENT_ALGO_NAME: MASKED_RECURRENT_HYPERPARAMS,
    }
    configured = any(argument.split("=", 1)[0] in ("-conf", "--conf-file") for argument in arguments)
    algo = _algo_of(arguments)
    if algo in defaults and not configured:
        arguments += ["--conf-file", defaults[algo]]
    return arguments


def take_sampler_option(arguments: Sequence[str]) -> tuple[str | None, list[str]]:
    """
    Take this package's ``--trpo-sampler NAME`` out of rl-zoo3's ``train`` arguments (rl-zoo3 would reject it).

    :param arguments: the script's arguments
    :return: the sampler's name (``None`` when not given) and the other arguments, in order
    """
    rest: list[str] = []
    name: str | None = None
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        if argument == SAMPLER_OPTION and index + 1 < len(arguments):
            name = arguments[index + 1]
            index += 2
            continue
        if argument.startswith(f"{SAMPLER_OPTION}="):
            name = argument.split("=", 1)[1]
        else:
            rest.append(argument)
        index += 1
    return name, rest


def _load_script(name: str) -> Callable[[], None]:
    """:return: the function of rl-zoo3's script ``name`` (see :data:`SCRIPTS`)"""
    module_name, function_name = SCRIPTS[name].split(":")
    return getattr(importlib.import_module(module_name), function_name)


def _algo_of(arguments: Sequence[str]) -> str | None:
    """:return: the value of ``--algo`` in rl-zoo3's arguments, if given"""
    for index, argument in enumerate(arguments):
        if argument == "--algo" and index + 1 < len(arguments):
            return arguments[index + 1]
        if argument.startswith("--algo="):
            return argument.split("=", 1)[1]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """
    Entry point of ``python -m sb3_trpo_plugin.zoo SCRIPT [rl-zoo3's arguments]``.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    :return: the exit status
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    usage = f"usage: python -m sb3_trpo_plugin.zoo {{{','.join(SCRIPTS)}}} [rl-zoo3's arguments; SCRIPT --help lists them]"
    if arguments[:1] in (["-h"], ["--help"]):
        algorithms = (
            "TRPO as --algo trpo (RecurrentTRPO: trpo_lstm, MaskableTRPO: trpo_mask, MaskableRecurrentTRPO: trpo_lstm_mask)"
        )
        print(f"{usage}\n\nrl-zoo3's train and enjoy, with sb3-trpo-plugin's {algorithms}.")
        return 0
    if not arguments or arguments[0] not in SCRIPTS:
        problem = f"unknown script {arguments[0]!r}" if arguments else "no script given"
        print(f"{usage}\nerror: {problem}", file=sys.stderr)
        return 2
    try:
        register()
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    script_arguments = arguments[1:]
    if arguments[0] == "train":
        sampler, script_arguments = take_sampler_option(script_arguments)
        if sampler is not None:
            from sb3_trpo_plugin.zoo.samplers import SAMPLERS, install_sampler

            if sampler not in SAMPLERS:
                print(f"{usage}\nerror: unknown {SAMPLER_OPTION} {sampler!r}; choose from {sorted(SAMPLERS)}", file=sys.stderr)
                return 2
            install_sampler(sampler, _algo_of(script_arguments) or ALGO_NAME)
        script_arguments = with_default_hyperparams(script_arguments)
    script = _load_script(arguments[0])
    # rl-zoo3's scripts parse sys.argv themselves; it is put back for callers that go on in this process.
    saved_argv = sys.argv
    sys.argv = [f"python -m sb3_trpo_plugin.zoo {arguments[0]}", *script_arguments]
    try:
        script()
    finally:
        sys.argv = saved_argv
    return 0
