"""
rl-zoo3 with this package's TRPO as its ``trpo`` algorithm, RecurrentTRPO as ``trpo_lstm``, MaskableTRPO as
``trpo_mask`` and MaskableRecurrentTRPO as ``trpo_lstm_mask``.

From a shell, ``python -m sb3_trpo_plugin.zoo train|enjoy ...`` takes rl-zoo3's own arguments and its tuned
``hyperparams/trpo.yml``, e.g.::

    python -m sb3_trpo_plugin.zoo train --algo trpo --env CartPole-v1 -f logs
    python -m sb3_trpo_plugin.zoo enjoy --algo trpo --env CartPole-v1 -f logs
    python -m sb3_trpo_plugin.zoo train --algo trpo --env Pendulum-v1 -optimize --n-trials 20
    python -m sb3_trpo_plugin.zoo train --algo trpo_lstm --env CartPoleNoVel-v1 -f logs

rl-zoo3's ``trpo.yml`` has no entries for Gymnasium's ``-v5`` MuJoCo tasks, and would train them with its untuned
``default`` entry (one environment, no normalisation). Unless ``--conf-file`` is given, ``train --algo trpo`` on a
``-v5`` id gives rl-zoo3 the entries of :func:`v5_hyperparams` (as :data:`V5_HYPERPARAMS_MODULE`): rl-zoo3's own entry
of the task's ``-v4`` (the values ``sb3-trpo train`` and the benchmarks use there too), or this package's where it has
one (:data:`V5_HYPERPARAMS`; ``Ant-v5``: rl-zoo3's Ant-v4 values, which a search through rl-zoo3's Optuna route did not
better, with Ant-v4's observation; ``Swimmer-v5``: rl-zoo3's Swimmer-v4 values with ``gae_lambda`` 0.99). It passes an
entry's ``env_kwargs`` as ``--env-kwargs``: rl-zoo3 2.9 gives a file's ``env_kwargs`` to its training environments
only, not to its evaluation environments nor to ``enjoy``, which need the same observation, and rl-zoo3 before 2.8
would hand them to the algorithm.

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
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm

from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.zoo.samplers import SAMPLERS, install_sampler

#: rl-zoo3's ``--algo`` for this package's TRPO (it replaces sb3-contrib's there).
ALGO_NAME = "trpo"
#: rl-zoo3 calls sb3-contrib's RecurrentPPO ``ppo_lstm``.
RECURRENT_ALGO_NAME = "trpo_lstm"
#: The hyperparameters ``trpo_lstm`` reads unless ``--conf-file`` names others.
RECURRENT_HYPERPARAMS = Path(__file__).resolve().parent / "trpo_lstm.yml"
#: This package's ``trpo`` hyperparameters for Gymnasium's ``-v5`` tasks where rl-zoo3's fall short (docs/benchmarks.md):
#: ``train --algo trpo`` reads it for the environments it lists unless ``--conf-file`` is given (see :func:`v5_hyperparams`).
V5_HYPERPARAMS = Path(__file__).resolve().parent / "trpo_v5.yml"
#: The ``--conf-file`` the route passes for ``-v5`` ids: :func:`v5_hyperparams` without the ``env_kwargs``, which it
#: passes as ``--env-kwargs`` (rl-zoo3 before 2.8 would hand a file's ``env_kwargs`` to the algorithm).
V5_HYPERPARAMS_MODULE = "sb3_trpo_plugin.zoo.trpo_v5"
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
    "V5_HYPERPARAMS",
    "V5_HYPERPARAMS_MODULE",
    "main",
    "register",
    "v5_hyperparams",
    "zoo_hyperparameter_file",
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
    :data:`MASKED_RECURRENT_HYPERPARAMS`) when none is given, and :func:`v5_hyperparams` for ``trpo`` on the
    environments it lists (with their ``env_kwargs`` as ``--env-kwargs`` unless that is given).

    :param arguments: the script's arguments
    :return: the arguments to pass on
    """
    arguments = list(arguments)
    configured = any(argument.split("=", 1)[0] in ("-conf", "--conf-file") for argument in arguments)
    algo = _option_value(arguments, "--algo")
    if algo == ALGO_NAME and not configured:
        return _with_v5_hyperparams(arguments)
    defaults = {
        RECURRENT_ALGO_NAME: str(RECURRENT_HYPERPARAMS),
        MASKED_ALGO_NAME: MASKED_HYPERPARAMS,
        MASKED_RECURRENT_ALGO_NAME: MASKED_RECURRENT_HYPERPARAMS,
    }
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


def _option_value(arguments: Sequence[str], option: str) -> str | None:
    """:return: the value of ``option`` (e.g. ``--algo``) in rl-zoo3's arguments, if given"""
    for index, argument in enumerate(arguments):
        if argument == option and index + 1 < len(arguments):
            return arguments[index + 1]
        if argument.startswith(f"{option}="):
            return argument.split("=", 1)[1]
    return None


def v5_entries() -> dict[str, dict[str, Any]]:
    """:return: the entries of :data:`V5_HYPERPARAMS`, by environment id, as rl-zoo3 reads them"""
    import yaml

    return yaml.safe_load(V5_HYPERPARAMS.read_text())


def zoo_hyperparameter_file(algo: str = ALGO_NAME) -> Path:
    """
    rl-zoo3's own hyperparameter file for ``algo``: where its ``ExperimentManager`` looks when no ``--conf-file`` is
    given (``hyperparams`` inside the installed package, or beside it in a source checkout).

    :param algo: rl-zoo3's ``--algo``
    :return: the file's path
    :raises ImportError: when rl-zoo3 is not installed
    """
    import rl_zoo3

    package = Path(rl_zoo3.__file__).resolve().parent
    folder = package / "hyperparams" if (package / "hyperparams").is_dir() else package.parent / "hyperparams"
    return folder / f"{algo}.yml"


def v5_hyperparams() -> dict[str, dict[str, Any]]:
    """
    The ``trpo`` entries the zoo route gives rl-zoo3 for Gymnasium's ``-v5`` ids its file lacks: rl-zoo3's entry of the
    same task's ``-v4`` (same dynamics and rewards up to small fixes; rl-zoo3 lists only ``-v4`` MuJoCo tasks), replaced
    by :data:`V5_HYPERPARAMS`'s entry where this package has one.

    :return: the entries, by environment id, as rl-zoo3 reads them (``env_kwargs`` included)
    """
    import yaml

    zoo = yaml.safe_load(zoo_hyperparameter_file().read_text())
    v4_ids = [env_id for env_id in zoo if env_id.endswith("-v4")]
    from_v4 = {env_id.removesuffix("-v4") + "-v5": zoo[env_id] for env_id in v4_ids}
    return {v5_id: entry for v5_id, entry in from_v4.items() if v5_id not in zoo} | v5_entries()


def _with_v5_hyperparams(arguments: list[str]) -> list[str]:
    """
    ``train --algo trpo`` arguments without ``--conf-file``: :func:`v5_hyperparams` for the environments it lists, as
    :data:`V5_HYPERPARAMS_MODULE` and ``--env-kwargs``.
    """
    entry = v5_hyperparams().get(_option_value(arguments, "--env") or "")
    if entry is None:
        return arguments
    arguments = [*arguments, "--conf-file", V5_HYPERPARAMS_MODULE]
    if entry.get("env_kwargs") and _option_value(arguments, "--env-kwargs") is None:
        # Last: --env-kwargs takes every argument after it. rl-zoo3 evaluates each value as Python.
        arguments += ["--env-kwargs", *(f"{key}:{value!r}" for key, value in entry["env_kwargs"].items())]
    return arguments


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
    sampler, script_arguments = take_sampler_option(arguments[1:]) if arguments[0] == "train" else (None, arguments[1:])
    if sampler is not None and sampler not in SAMPLERS:
        print(f"{usage}\nerror: unknown {SAMPLER_OPTION} {sampler!r}; choose from {sorted(SAMPLERS)}", file=sys.stderr)
        return 2
    try:
        register()
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if sampler is not None:
        install_sampler(sampler, _option_value(script_arguments, "--algo") or ALGO_NAME)
    if arguments[0] == "train":
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
