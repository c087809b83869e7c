"""``--hyperparams key=value`` overrides: parsing and checking the keys against TRPO's constructor."""

from __future__ import annotations

import ast
import difflib
import inspect
from typing import Any

from torch import nn

from sb3_trpo_plugin import TRPO

# Set by the command line itself (their own options, or fixed by the run folder's layout).
_SET_BY_COMMAND = frozenset({"self", "env", "seed", "verbose", "tensorboard_log", "device", "_init_setup_model"})
# Keys of a preset that are not constructor arguments.
_PRESET_KEYS = frozenset({"policy", "normalize"})
# Keys that rl-zoo3 users may pass as hyperparameters but that sb3-trpo train takes as options.
_OWN_OPTIONS = {
    "n_envs": "--n-envs",
    "n_timesteps": "--n-timesteps",
    "seed": "--seed",
    "device": "--device",
    "verbose": "--verbose",
}


def known_keys() -> list[str]:
    """
    :return: the keys ``--hyperparams`` accepts: TRPO's keyword arguments, ``policy`` and ``normalize``
    """
    constructor = set(inspect.signature(TRPO.__init__).parameters) - _SET_BY_COMMAND
    return sorted(constructor | _PRESET_KEYS)


def parse_value(text: str) -> Any:
    """
    A Python literal (``0.01``, ``True``, ``[64, 64]``, ``{'net_arch': [64, 64]}``), else the text itself.

    Like rl-zoo3's files, ``policy_kwargs`` may also be written ``dict(net_arch=[64, 64], activation_fn=nn.ReLU)``:
    such an expression is evaluated with only ``dict`` and ``torch.nn`` in scope.

    :param text: the value as typed
    :return: the value
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    if text.startswith("dict("):
        return eval(text, {"__builtins__": {}}, {"dict": dict, "nn": nn})
    return text


def parse_hyperparams(pairs: list[str]) -> dict[str, Any]:
    """
    Parse ``key=value`` pairs.

    :param pairs: the pairs as typed
    :return: the values by key
    :raises ValueError: with a one-line message, for a malformed pair or an unknown key
    """
    keys = known_keys()
    values: dict[str, Any] = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator or not key:
            raise ValueError(f"hyperparameter {pair!r} is not of the form key=value")
        if key in _OWN_OPTIONS:
            raise ValueError(f"{key} is not a hyperparameter here: use the option {_OWN_OPTIONS[key]}")
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown hyperparameter {key!r}; {hint}known keys: {', '.join(keys)}")
        try:
            values[key] = parse_value(text)
        except Exception as error:
            raise ValueError(f"cannot read the value of {key}: {text!r} ({error})") from error
    return values
