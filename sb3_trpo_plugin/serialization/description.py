"""
A JSON description of a TRPO model, written into each saved zip so it can be restored without unpickling.

SB3's ``data`` entry stores anything that is not plain JSON (spaces, the policy class, schedules,
``policy_kwargs`` with classes in them) as base64 cloudpickle, which runs code when loaded. The
description written here holds the same information in plain JSON:

* spaces as their parameters (:func:`encode_space` / :func:`decode_space`);
* classes as ``"module:QualifiedName"`` references, resolved on loading only from a fixed list of
  modules and only to subclasses of the expected base (:func:`decode_class`);
* tuples, dicts and scalars of ``policy_kwargs`` tagged so they come back with their types;
* the learning rate and a scheduled ``target_kl`` as a number or one of SB3's schedule classes, by their parameters.

What cannot be described (a lambda, a custom class) is recorded as ``{"unsupported": reason}``; the
save still succeeds (``TRPO.load`` can read it), and :func:`~sb3_trpo_plugin.safe_load` refuses it
with that reason unless the caller supplies the value.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from sb3_trpo_plugin.compat.schedules import constant_schedule, linear_schedule, schedule_parameters, unwrap_float_schedule
from sb3_trpo_plugin.version import __version__

#: Name of the zip entry that holds the description.
DESCRIPTION_ENTRY = "sb3_trpo_plugin.json"
#: Identifies the description format; bumped on incompatible changes.
DESCRIPTION_FORMAT = "sb3_trpo_plugin.model/1"

#: Constructor keywords that are not plain settings: described separately, or not saved at all.
NON_HYPERPARAMETER_KEYWORDS = frozenset(
    {"self", "policy", "env", "learning_rate", "policy_kwargs", "rollout_buffer_class", "rollout_buffer_kwargs", "device"}
)


def hyperparameter_names(algorithm: type) -> tuple[str, ...]:
    """
    The constructor keywords of ``algorithm`` stored as plain values (``n_steps``, ``target_kl``, ...).

    Read from the signature, so a keyword added to ``TRPO.__init__`` is saved and restored without
    touching this module (its value must be JSON-like, and the instance must keep it under the same
    name or one listed in :data:`HYPERPARAMETER_ATTRIBUTES`).

    :param algorithm: the algorithm class
    :return: keyword names, in signature order
    """
    return tuple(
        name
        for name, parameter in inspect.signature(algorithm.__init__).parameters.items()  # type: ignore[misc]
        if name not in NON_HYPERPARAMETER_KEYWORDS
        and not name.startswith("_")
        and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    )


#: Attributes that hold a constructor keyword under another name.
HYPERPARAMETER_ATTRIBUTES = {"stats_window_size": "_stats_window_size"}
#: Counters restored on loading, so training resumes where it stopped (all integers or floats).
STATE = ("num_timesteps", "_n_updates", "_episode_num", "_total_timesteps", "_num_timesteps_at_start")

#: Which modules a class reference may come from, and which base class it must have, per role. The policies of
#: MaskableTRPO and RecurrentTRPO are sb3-contrib's (an optional extra, imported only when a file names them; the
#: loader then checks the algorithm's own policy base), and so are their rollout buffers; MaskableRecurrentTRPO's are
#: this package's (on sb3-contrib's).
ALLOWED_CLASS_MODULES: dict[str, tuple[tuple[str, ...], type]] = {
    "policy_class": (("stable_baselines3.common.policies", "sb3_trpo_plugin.trpo.policies"), ActorCriticPolicy),
    "maskable_policy_class": (("sb3_contrib.common.maskable.policies", "sb3_contrib.ppo_mask.policies"), BasePolicy),
    "recurrent_policy_class": (("sb3_contrib.common.recurrent.policies", "sb3_contrib.ppo_recurrent.policies"), BasePolicy),
    "masked_recurrent_policy_class": (("sb3_trpo_plugin.masked_recurrent.policies",), BasePolicy),
    "activation_fn": (("torch.nn.modules.activation", "torch.nn"), torch.nn.Module),
    "optimizer_class": (
        (
            "torch.optim",
            "torch.optim.adam",
            "torch.optim.adamw",
            "torch.optim.sgd",
            "torch.optim.rmsprop",
            "torch.optim.adagrad",
            "torch.optim.adamax",
            "torch.optim.adadelta",
            "torch.optim.nadam",
            "torch.optim.radam",
        ),
        torch.optim.Optimizer,
    ),
    "features_extractor_class": (("stable_baselines3.common.torch_layers",), BaseFeaturesExtractor),
    "rollout_buffer_class": (
        (
            "stable_baselines3.common.buffers",
            "sb3_contrib.common.maskable.buffers",
            "sb3_contrib.common.recurrent.buffers",
            "sb3_trpo_plugin.masked_recurrent.buffers",
        ),
        RolloutBuffer,
    ),
}


class UnsupportedValueError(ValueError):
    """A value that the JSON description cannot hold, or that safe loading will not rebuild."""


def class_reference(cls: type) -> str:
    """
    ``"module:QualifiedName"`` of a class.

    :param cls: a class
    :return: the reference
    """
    return f"{cls.__module__}:{cls.__qualname__}"


def decode_class(reference: str, role: str) -> type:
    """
    Resolve a class reference, only from the modules allowed for ``role`` and only to a subclass of its base.

    :param reference: ``"module:QualifiedName"``
    :param role: a key of :data:`ALLOWED_CLASS_MODULES` (``"policy_class"``, ``"activation_fn"``, ...)
    :return: the class
    :raises UnsupportedValueError: for any other module, a name that is not a plain class name, or a wrong base
    """
    if role not in ALLOWED_CLASS_MODULES:
        raise UnsupportedValueError(f"{role} = {reference!r}: safe loading restores no class in this role")
    modules, base = ALLOWED_CLASS_MODULES[role]
    module_name, _, name = str(reference).partition(":")
    if module_name not in modules or not name.isidentifier():
        raise UnsupportedValueError(
            f"{role} = {reference!r}: safe loading only restores classes from {', '.join(modules)}; "
            f"pass the value in custom_objects if you trust it"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UnsupportedValueError(
            f"{role} = {reference!r} needs {module_name}, which cannot be imported ({error})"
        ) from error
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise UnsupportedValueError(f"{role} = {reference!r} is not a subclass of {base.__name__}")
    return cls


def encode_value(value: Any, where: str) -> Any:
    """
    Encode a keyword-argument value as tagged JSON.

    Plain scalars, strings, lists and string-keyed dicts stay as they are (a dict is wrapped as
    ``{"dict": ...}`` so no key can pass for a tag); tuples become ``{"tuple": [...]}``, classes
    ``{"class": "module:QualifiedName"}`` and SB3's schedule classes (a scheduled ``target_kl``)
    ``{"schedule": ...}`` by their parameters (:func:`encode_schedule`).

    :param value: the value
    :param where: its name, for error messages
    :return: the JSON-safe encoding
    :raises UnsupportedValueError: for functions, instances and anything else
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [encode_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, tuple):
        return {"tuple": [encode_value(item, f"{where}[{i}]") for i, item in enumerate(value)]}
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return {"dict": {key: encode_value(item, f"{where}[{key!r}]") for key, item in value.items()}}
    if isinstance(value, type):
        return {"class": class_reference(value)}
    if schedule_parameters(unwrap_float_schedule(value)) is not None:
        return {"schedule": encode_schedule(value, where)}
    raise UnsupportedValueError(f"{where} is a {type(value).__name__}, which has no JSON description")


def decode_value(encoded: Any, where: str) -> Any:
    """
    Inverse of :func:`encode_value`; classes are resolved by :func:`decode_class` with the role named by ``where``.

    :param encoded: the JSON value
    :param where: the keyword it belongs to (its last part names the class role, e.g. ``activation_fn``)
    :return: the value
    """
    if encoded is None or isinstance(encoded, (bool, int, float, str)):
        return encoded
    if isinstance(encoded, list):
        return [decode_value(item, where) for item in encoded]
    if isinstance(encoded, dict) and len(encoded) == 1:
        ((tag, content),) = encoded.items()
        if tag == "tuple" and isinstance(content, list):
            return tuple(decode_value(item, where) for item in content)
        if tag == "dict" and isinstance(content, dict):
            return {key: decode_value(item, key) for key, item in content.items()}
        if tag == "class" and isinstance(content, str):
            return decode_class(content, where)
        if tag == "schedule" and isinstance(content, dict):
            return decode_schedule(content, where)
    raise UnsupportedValueError(f"{where}: malformed description entry {encoded!r}")


def encode_space(space: spaces.Space) -> dict[str, Any]:
    """
    Describe a Gymnasium space by its parameters.

    :param space: ``Box``, ``Discrete``, ``MultiDiscrete``, ``MultiBinary`` or a ``Dict`` of them
    :return: JSON-safe description
    :raises UnsupportedValueError: for other spaces
    """

    def array(values: np.ndarray) -> Any:
        # Bounds are usually uniform (images: 0..255 everywhere): store one number then.
        flat = values.reshape(-1)
        if flat.size and np.all(flat == flat[0]):
            return {"fill": flat[0].item()}
        return {"values": values.tolist()}

    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": np.dtype(space.dtype).name,
            "low": array(space.low),
            "high": array(space.high),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "nvec": space.nvec.tolist(),
            "start": space.start.tolist(),
            "dtype": np.dtype(space.dtype).name,
        }
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": [[key, encode_space(subspace)] for key, subspace in space.spaces.items()]}
    raise UnsupportedValueError(f"{type(space).__name__} spaces have no JSON description")


#: NumPy dtypes a described space may have.
SPACE_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def decode_space(description: Mapping[str, Any]) -> spaces.Space:
    """
    Rebuild a space from :func:`encode_space`'s description.

    :param description: the description
    :return: the space
    :raises UnsupportedValueError: for unknown types or dtypes
    """
    kind = description.get("type")
    if kind == "Box":
        dtype = description["dtype"]
        if dtype not in SPACE_DTYPES:
            raise UnsupportedValueError(f"Box dtype {dtype!r} is not allowed")
        shape = tuple(int(n) for n in description["shape"])

        def array(encoded: Mapping[str, Any]) -> np.ndarray:
            if "fill" in encoded:
                return np.full(shape, encoded["fill"], dtype=dtype)
            return np.asarray(encoded["values"], dtype=dtype).reshape(shape)

        return spaces.Box(array(description["low"]), array(description["high"]), shape, np.dtype(dtype))
    if kind == "Discrete":
        return spaces.Discrete(int(description["n"]), start=int(description["start"]))
    if kind == "MultiDiscrete":
        dtype = description["dtype"]
        if dtype not in SPACE_DTYPES:
            raise UnsupportedValueError(f"MultiDiscrete dtype {dtype!r} is not allowed")
        return spaces.MultiDiscrete(
            np.asarray(description["nvec"]), dtype=np.dtype(dtype), start=np.asarray(description["start"])
        )
    if kind == "MultiBinary":
        n = description["n"]
        return spaces.MultiBinary([int(k) for k in n] if isinstance(n, list) else int(n))
    if kind == "Dict":
        return spaces.Dict({str(key): decode_space(subspace) for key, subspace in description["spaces"]})
    raise UnsupportedValueError(f"space type {kind!r} is not supported by safe loading")


def encode_schedule(value: Any, where: str = "learning_rate") -> Any:
    """
    A number, or one of SB3's schedule classes by its parameters.

    :param value: ``model.learning_rate``, or another keyword that takes a schedule (a scheduled ``target_kl``)
    :param where: its name, for error messages
    :return: ``float`` or ``{"schedule": "constant" | "linear", ...}``
    :raises UnsupportedValueError: for other callables
    """
    value = unwrap_float_schedule(value)
    if isinstance(value, (int, float, np.floating)) and not isinstance(value, bool):
        return float(value)
    described = schedule_parameters(value)
    if described is not None and described[0] == "constant":
        return {"schedule": "constant", "value": described[1][0]}
    if described is not None:
        start, end, end_fraction = described[1]
        return {"schedule": "linear", "start": start, "end": end, "end_fraction": end_fraction}
    raise UnsupportedValueError(
        f"{where} is a {type(value).__name__}; only numbers and SB3's ConstantSchedule and "
        "LinearSchedule (SB3 ≥ 2.7; older SB3's schedules are closures) have a JSON description"
    )


def decode_schedule(encoded: Any, where: str = "learning_rate") -> float | Callable[[float], float]:
    """
    Inverse of :func:`encode_schedule`.

    :param encoded: the JSON value
    :param where: the keyword it belongs to, for error messages
    :return: a float or a schedule
    """
    if isinstance(encoded, (int, float)) and not isinstance(encoded, bool):
        return float(encoded)
    if isinstance(encoded, dict) and encoded.get("schedule") == "constant":
        return constant_schedule(float(encoded["value"]))
    if isinstance(encoded, dict) and encoded.get("schedule") == "linear":
        return linear_schedule(float(encoded["start"]), float(encoded["end"]), float(encoded["end_fraction"]))
    raise UnsupportedValueError(f"{where}: malformed description entry {encoded!r}")


def _describe(encoder: Callable[..., Any], *arguments: Any) -> Any:
    """``encoder(*arguments)``; what it cannot encode becomes ``{"unsupported": reason}``."""
    try:
        return encoder(*arguments)
    except UnsupportedValueError as error:
        return {"unsupported": str(error)}


def _encode_hyperparameter(model: Any, name: str) -> Any:
    """The value of constructor keyword ``name`` on ``model``, encoded."""
    attribute = HYPERPARAMETER_ATTRIBUTES.get(name, name)
    if not hasattr(model, attribute):
        raise UnsupportedValueError(f"{name} is not kept as an attribute of the model")
    return encode_value(getattr(model, attribute), name)


def describe_model(model: Any) -> dict[str, Any]:
    """
    The JSON description of a TRPO model (what :func:`~sb3_trpo_plugin.safe_load` needs to rebuild it).

    :param model: a ``TRPO`` instance
    :return: a JSON-safe dict
    """
    policy_kwargs = {key: value for key, value in model.policy_kwargs.items() if key != "device"}
    return {
        "format": DESCRIPTION_FORMAT,
        "algorithm": type(model).__name__,
        "package_version": __version__,
        "policy_class": _describe(lambda cls: {"class": class_reference(cls)}, model.policy_class),
        "policy_kwargs": {
            key: _describe(encode_value, value, f"policy_kwargs[{key!r}]") for key, value in policy_kwargs.items()
        },
        "observation_space": _describe(encode_space, model.observation_space),
        "action_space": _describe(encode_space, model.action_space),
        "learning_rate": _describe(encode_schedule, model.learning_rate),
        "rollout_buffer_class": _describe(encode_value, model.rollout_buffer_class, "rollout_buffer_class"),
        "rollout_buffer_kwargs": _describe(encode_value, model.rollout_buffer_kwargs, "rollout_buffer_kwargs"),
        "hyperparameters": {
            name: _describe(_encode_hyperparameter, model, name) for name in hyperparameter_names(type(model))
        },
        "state": {name: getattr(model, name) for name in STATE},
        "n_envs": int(model.n_envs),
    }


def description_json(model: Any) -> str:
    """
    :func:`describe_model` as a JSON string (non-finite floats such as infinite Box bounds are written
    as ``Infinity``/``NaN``, which Python's ``json`` reads back).

    :param model: a ``TRPO`` instance
    :return: the JSON text
    """
    return json.dumps(describe_model(model), indent=2)
