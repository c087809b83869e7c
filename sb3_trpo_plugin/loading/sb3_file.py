"""
Models from the files SB3 and sb3-contrib write (no ``sb3_trpo_plugin.json`` entry), without unpickling.

Such a zip holds ``data`` (JSON, with pickles for what is not JSON), the state dicts ``policy.pth`` and
``policy.optimizer.pth`` and ``pytorch_variables.pth``. :func:`load_sb3_file` reads the JSON fields that
are not pickles, rebuilds the pickled ones it needs from their readable attributes
(:mod:`sb3_trpo_plugin.loading.sb3_data`), and the tensors with ``torch.load(weights_only=True)``.

Which algorithm wrote the file is read from its fields (an allow-list): TRPO's (sb3-contrib's, or this
package's saved by SB3's own ``save``) load as this package's :class:`~sb3_trpo_plugin.TRPO`; SB3's PPO and
A2C as themselves. The model is then rebuilt as SB3's ``load`` does: constructed without its networks,
given the file's attributes, set up, and given the file's weights.
"""

from __future__ import annotations

import functools
import io
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.common.utils import check_for_correct_spaces
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_plugin.loading.sb3_data import (
    PartlyReadableSpaceError,
    class_from_data,
    is_serialized,
    policy_kwargs_from_data,
    space_from_data,
)
from sb3_trpo_plugin.loading.sb3_schedules import schedule_from_data
from sb3_trpo_plugin.serialization.description import UnsupportedValueError, hyperparameter_names
from sb3_trpo_plugin.trpo import TRPO
from sb3_trpo_plugin.trpo.critic_optimizer import critic_optimizer_state

#: The algorithms whose files load, with the ``data`` fields that identify each.
ALGORITHMS: dict[str, tuple[type[OnPolicyAlgorithm], frozenset[str]]] = {
    "TRPO": (TRPO, frozenset({"cg_max_steps", "cg_damping", "line_search_max_iter", "n_critic_updates"})),
    "PPO": (PPO, frozenset({"clip_range", "n_epochs", "batch_size"})),
    "A2C": (A2C, frozenset({"n_steps", "ent_coef", "vf_coef", "max_grad_norm"})),
}

#: Pickled fields rebuilt from their readable attributes, and how (``target_kl``: this TRPO's, when scheduled).
SCHEDULE_FIELDS = ("learning_rate", "clip_range", "clip_range_vf", "target_kl")
#: Pickled fields that only carry training progress between ``learn`` calls: left unset, ``learn`` starts them
#: afresh (the last observation, by resetting the environment; the episode statistics, empty). ``lr_schedule`` is
#: rebuilt from ``learning_rate`` by ``_setup_model``, as in SB3's ``load``.
DROPPED_FIELDS = (
    "_last_obs",
    "_last_episode_starts",
    "_last_original_obs",
    "ep_info_buffer",
    "ep_success_buffer",
    "lr_schedule",
)
#: Fields passed to the constructor or set apart, never copied onto the model as they are.
HANDLED_FIELDS = frozenset(
    {"policy_kwargs", "rollout_buffer_kwargs", "learning_rate", "observation_space", "action_space", "policy_class"}
    | {"rollout_buffer_class", "n_envs", "env", "policy", "device", "rollout_buffer"}
)
#: Constructor keywords kept under another attribute name.
RENAMED_ATTRIBUTES = {"stats_window_size": "_stats_window_size"}


class FileRefusal(ValueError):
    """Why a file cannot be loaded safely (the caller turns it into its own error, naming the file)."""


def identify_algorithm(data: Mapping[str, Any]) -> type[OnPolicyAlgorithm]:
    """
    The class that loads a file, from the fields of its ``data`` entry.

    :param data: the ``data`` JSON
    :return: this package's TRPO, SB3's PPO or A2C
    :raises FileRefusal: for the files of any other algorithm
    """
    if "cg_max_steps" in data:
        candidates = ["TRPO"]
    elif "clip_range" in data:
        candidates = ["PPO"]
    elif "batch_size" not in data and "buffer_size" not in data:
        candidates = ["A2C"]
    else:
        candidates = []
    for name in candidates:
        algorithm, fields = ALGORITHMS[name]
        if fields <= data.keys():
            return algorithm
    raise FileRefusal(
        "it is not a file of TRPO (sb3-contrib's or this package's), PPO or A2C, the algorithms safe_load rebuilds; "
        "load it with its own class only if you trust its source"
    )


def _how_to_supply(field: str) -> str:
    examples = {
        "learning_rate": "custom_objects={'learning_rate': 0.0} (any number will do for predict)",
        "clip_range": "custom_objects={'clip_range': 0.2} (any number will do for predict)",
        "clip_range_vf": "custom_objects={'clip_range_vf': None}",
        "target_kl": "custom_objects={'target_kl': 0.01} (any positive number will do for predict)",
        "observation_space": "env=... (an environment with that space) or custom_objects={'observation_space': ...}",
        "action_space": "env=... (an environment with that space) or custom_objects={'action_space': ...}",
    }
    return examples.get(field, f"custom_objects={{{field!r}: ...}} with a value you trust")


def _field(data: Mapping[str, Any], name: str, decode: Callable[[Any], Any], custom_objects: Mapping[str, Any]) -> Any:
    """The value of a ``data`` field: the caller's, else decoded from the readable parts, else refused."""
    if name in custom_objects:
        return custom_objects[name]
    try:
        return decode(data.get(name))
    except UnsupportedValueError as error:
        raise FileRefusal(f"{name} cannot be rebuilt without unpickling it ({error}); pass {_how_to_supply(name)}") from error


def _space(data: Mapping[str, Any], name: str, env_space: Any, custom_objects: Mapping[str, Any]) -> Any:
    """A space from the file; where its bounds are not readable, the environment's if type, shape and dtype agree."""
    try:
        return _field(data, name, lambda entry: space_from_data(entry, name), custom_objects)
    except FileRefusal as refusal:
        partly = refusal.__cause__
        if isinstance(partly, PartlyReadableSpaceError) and env_space is not None and partly.matches(env_space):
            return env_space
        raise


def _read_tensors(archive: zipfile.ZipFile, entry: str, device: torch.device) -> Any:
    try:
        return torch.load(io.BytesIO(archive.read(entry)), map_location=device, weights_only=True)
    except Exception as error:  # the restricted unpickler refuses anything but tensors and containers
        raise FileRefusal(f"{entry} holds objects other than tensors ({type(error).__name__}: {error})") from error


def read_state_dicts(archive: zipfile.ZipFile, device: torch.device) -> dict[str, dict[str, Any]]:
    """
    The policy's and its optimiser's state dicts, with ``torch.load(weights_only=True)`` (PyTorch's restricted
    unpickler: tensors and containers only).

    :param archive: the open zip
    :param device: where to put the tensors
    :return: ``{"policy": ..., "policy.optimizer": ...}``
    :raises FileRefusal: for a missing entry, objects other than tensors, non-finite weights, or other
        PyTorch variables (on-policy algorithms save none)
    """
    names = archive.namelist()
    state_dicts = {}
    for name in ("policy", "policy.optimizer"):
        if f"{name}.pth" not in names:
            raise FileRefusal(f"it has no {name + '.pth'!r} entry")
        state = _read_tensors(archive, f"{name}.pth", device)
        if not isinstance(state, dict):
            raise FileRefusal(f"{name}.pth is not a state dict")
        state_dicts[name] = state
    if "pytorch_variables.pth" in names and _read_tensors(archive, "pytorch_variables.pth", device):
        raise FileRefusal("pytorch_variables.pth holds variables, which no on-policy algorithm saves")
    for key, tensor in state_dicts["policy"].items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise FileRefusal(f"the policy's {key!r} holds non-finite values")
    return state_dicts


def load_sb3_file(
    archive: zipfile.ZipFile,
    data: Mapping[str, Any],
    env: GymEnv | None,
    device: torch.device,
    custom_objects: Mapping[str, Any],
) -> OnPolicyAlgorithm:
    """
    Rebuild the model of an SB3 or sb3-contrib file from its readable parts.

    :param archive: the open zip
    :param data: its ``data`` entry, parsed
    :param env: environment to attach, or ``None``
    :param device: device for the policy
    :param custom_objects: values to use instead of the file's fields (only values the caller trusts)
    :return: the model (this package's TRPO, SB3's PPO or A2C)
    :raises FileRefusal: for what cannot be rebuilt without unpickling, or does not fit together
    """
    algorithm = identify_algorithm(data)
    unknown = sorted(
        name
        for name, entry in data.items()
        if is_serialized(entry)
        and name not in custom_objects
        and name not in (*SCHEDULE_FIELDS, *DROPPED_FIELDS, "observation_space", "action_space", "policy_class")
        and name not in ("policy_kwargs", "rollout_buffer_class")
    )
    if unknown:
        listed = ", ".join(unknown)
        raise FileRefusal(f"only pickles hold {listed}, and safe_load never reads them; pass {_how_to_supply(unknown[0])}")

    vec_env: VecEnv | None = algorithm._wrap_env(env, verbose=0) if env is not None else None
    observation_space = _space(data, "observation_space", vec_env and vec_env.observation_space, custom_objects)
    action_space = _space(data, "action_space", vec_env and vec_env.action_space, custom_objects)
    policy_class = _field(data, "policy_class", lambda entry: class_from_data(entry, "policy_class"), custom_objects)
    policy_kwargs = _field(data, "policy_kwargs", policy_kwargs_from_data, custom_objects)
    buffer_class = _field(
        data,
        "rollout_buffer_class",
        lambda entry: None if entry is None else class_from_data(entry, "rollout_buffer_class"),
        custom_objects,
    )
    schedules = {
        name: _field(data, name, functools.partial(schedule_from_data, where=name), custom_objects)
        for name in SCHEDULE_FIELDS
        if name in data or name in custom_objects
    }
    keywords = hyperparameter_names(algorithm)
    # The plain JSON fields, and the caller's values for any other field (as SB3's load uses custom_objects).
    plain = {name: value for name, value in data.items() if not is_serialized(value)}
    plain.update(custom_objects)
    hyperparameters = {
        name: plain[RENAMED_ATTRIBUTES.get(name, name)] for name in keywords if RENAMED_ATTRIBUTES.get(name, name) in plain
    }
    hyperparameters.update({name: value for name, value in schedules.items() if name in keywords and name != "learning_rate"})
    if algorithm is A2C:
        # A2C keeps use_rms_prop only as the optimiser class it puts into policy_kwargs, which the file holds.
        hyperparameters["use_rms_prop"] = False
    if vec_env is not None:
        check_for_correct_spaces(vec_env, observation_space, action_space)

    try:
        model = algorithm(
            policy=policy_class,
            env=vec_env,  # type: ignore[arg-type]
            learning_rate=schedules.get("learning_rate", 0.0),
            policy_kwargs=policy_kwargs,
            rollout_buffer_class=buffer_class,
            rollout_buffer_kwargs=plain.get("rollout_buffer_kwargs"),
            device=device,
            _init_setup_model=False,
            **hyperparameters,
        )
    except (TypeError, ValueError, AssertionError) as error:
        raise FileRefusal(f"its settings are not valid {algorithm.__name__} settings ({error})") from error
    model.observation_space, model.action_space = observation_space, action_space
    if vec_env is None:
        model.n_envs = int(plain.get("n_envs", 1))
    # The other fields are attributes SB3's load sets as they are (step counters, progress, ...): the caller's, and
    # from the file only those the model has as plain values (never its objects: environment, policy, logger).
    for name, value in plain.items():
        if name in keywords or name in HANDLED_FIELDS or not name.isidentifier() or name.startswith("__"):
            continue
        plain_attribute = hasattr(model, name) and isinstance(
            getattr(model, name), (type(None), bool, int, float, str, list, dict)
        )
        if name in custom_objects or plain_attribute:
            setattr(model, name, value)
    try:
        model._setup_model()
    except (TypeError, ValueError, AssertionError) as error:
        raise FileRefusal(f"its policy cannot be built from the file's settings ({error})") from error

    state_dicts = read_state_dicts(archive, device)
    if isinstance(model, TRPO):
        try:
            state_dicts["policy.optimizer"] = critic_optimizer_state(
                model.policy, model._critic_params, state_dicts["policy.optimizer"]
            )
        except ValueError as error:
            raise FileRefusal(f"policy.optimizer.pth: {error}") from error
    try:
        model.set_parameters(state_dicts, exact_match=True, device=device)  # type: ignore[arg-type]
    except (RuntimeError, ValueError, KeyError) as error:
        raise FileRefusal(f"its weights do not fit the described policy ({error})") from error
    if model.use_sde:
        model.policy.reset_noise()
    return model
