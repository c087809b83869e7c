"""
Load a model file without unpickling anything.

``TRPO.load`` (SB3's ``BaseAlgorithm.load``) unpickles the spaces, the policy class and other
objects from the file, so opening a model someone sent you can run their code. :func:`safe_load`
reads only:

* in files this package's :meth:`TRPO.save <sb3_trpo_plugin.TRPO.save>` wrote (``TRPO``, ``MaskableTRPO``,
  ``RecurrentTRPO``, ``MaskableRecurrentTRPO``): the JSON description it adds to the zip (settings, spaces, class
  references resolved from an allow-list); SB3's ``data`` entry, where the pickles live, is never read;
* in files SB3 or sb3-contrib wrote (TRPO, PPO, A2C): the fields of ``data`` that are plain JSON and the
  readable attributes SB3 stores next to each pickle (:mod:`sb3_trpo_plugin.loading.sb3_file`), never the
  pickles themselves;
* the state dicts of the policy and of its optimiser, with ``torch.load(weights_only=True)``,
  PyTorch's restricted unpickler that rebuilds tensors and containers only.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import zipfile
from collections.abc import Mapping
from typing import Any

import torch
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.common.utils import check_for_correct_spaces, get_device

from sb3_trpo_plugin.loading.sb3_file import FileRefusal, load_sb3_file, read_state_dicts
from sb3_trpo_plugin.serialization.description import (
    DESCRIPTION_ENTRY,
    DESCRIPTION_FORMAT,
    STATE,
    UnsupportedValueError,
    decode_class,
    decode_schedule,
    decode_space,
    decode_value,
    hyperparameter_names,
)
from sb3_trpo_plugin.trpo import TRPO


class UnsafeModelFileError(ValueError):
    """The file cannot be restored without unpickling arbitrary objects (or is not a model saved by this package)."""


def _refuse(path: Any, reason: str) -> UnsafeModelFileError:
    return UnsafeModelFileError(f"safe_load refuses {path}: {reason}")


#: The algorithms of this package's files: the description's ``algorithm`` name, the role of its policy class among
#: :data:`~sb3_trpo_plugin.serialization.description.ALLOWED_CLASS_MODULES`.
POLICY_ROLES = {
    "TRPO": "policy_class",
    "MaskableTRPO": "maskable_policy_class",
    "RecurrentTRPO": "recurrent_policy_class",
    "MaskableRecurrentTRPO": "masked_recurrent_policy_class",
}


def _algorithm(name: str, path: Any) -> tuple[type[TRPO], type]:
    """
    The class of a described algorithm, and the base its policy class must have (the variants need sb3-contrib).

    :param name: the description's ``algorithm``
    :param path: the file, for the error
    """
    if name == "TRPO":
        return TRPO, ActorCriticPolicy
    try:
        if name == "MaskableTRPO":
            from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy

            from sb3_trpo_plugin.masked import MaskableTRPO

            return MaskableTRPO, MaskableActorCriticPolicy
        if name == "RecurrentTRPO":
            from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

            from sb3_trpo_plugin.recurrent import RecurrentTRPO

            return RecurrentTRPO, RecurrentActorCriticPolicy
        if name == "MaskableRecurrentTRPO":
            from sb3_trpo_plugin.masked_recurrent import MaskableRecurrentTRPO
            from sb3_trpo_plugin.masked_recurrent.policies import MaskableRecurrentActorCriticPolicy

            return MaskableRecurrentTRPO, MaskableRecurrentActorCriticPolicy
    except ImportError as error:
        raise _refuse(path, f"it holds a {name} model, which needs sb3-contrib ({error})") from error
    raise _refuse(path, f"it holds a {name!r} model, not one of {', '.join(POLICY_ROLES)}")


def _decoded(
    description: Mapping[str, Any], key: str, custom_objects: Mapping[str, Any], path: Any, policy_role: str = "policy_class"
) -> Any:
    """The value of a top-level description entry, or the caller's replacement for it."""
    if key in custom_objects:
        return custom_objects[key]
    if key not in description:
        raise _refuse(path, f"the description has no {key!r} entry")
    encoded = description[key]
    if isinstance(encoded, dict) and "unsupported" in encoded:
        raise _refuse(path, f"{key} could not be saved without pickle ({encoded['unsupported']}); pass it in custom_objects")
    try:
        if key in ("observation_space", "action_space"):
            return decode_space(encoded)
        if key == "learning_rate":
            return decode_schedule(encoded)
        if key == "policy_class":
            return decode_class(encoded["class"], policy_role)
        return decode_value(encoded, key)
    except (UnsupportedValueError, KeyError, TypeError, ValueError) as error:
        raise _refuse(path, f"{key}: {error}") from error


def _decoded_mapping(description: Mapping[str, Any], key: str, names: Any, path: Any) -> dict[str, Any]:
    """Decode each entry of a dict-valued description entry (``policy_kwargs``, ``hyperparameters``)."""
    encoded = description.get(key)
    if not isinstance(encoded, dict):
        raise _refuse(path, f"the description has no {key!r} mapping")
    decoded = {}
    for name, value in encoded.items():
        if names is not None and name not in names:
            raise _refuse(path, f"{key} has an unknown entry {name!r}")
        if isinstance(value, dict) and "unsupported" in value:
            reason = value["unsupported"]
            raise _refuse(path, f"{key}[{name!r}] could not be saved without pickle ({reason}); pass {key} in custom_objects")
        try:
            decoded[name] = decode_value(value, name)
        except UnsupportedValueError as error:
            raise _refuse(path, f"{key}[{name!r}]: {error}") from error
    return decoded


def _load_sb3_file(
    archive: zipfile.ZipFile, path: Any, env: GymEnv | None, device: torch.device | str, custom_objects: Mapping[str, Any]
) -> OnPolicyAlgorithm:
    """A file SB3 or sb3-contrib wrote: from its ``data`` JSON's readable parts (:func:`load_sb3_file`)."""
    if "data" not in archive.namelist():
        raise _refuse(path, f"it has neither a {DESCRIPTION_ENTRY!r} nor SB3's 'data' entry, so it is not a model file")
    try:
        data = json.loads(archive.read("data"))
    except ValueError as error:
        raise _refuse(path, f"its 'data' entry is not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise _refuse(path, "its 'data' entry is not a JSON object")
    try:
        return load_sb3_file(archive, data, env, get_device(device), custom_objects)
    except FileRefusal as refusal:
        raise _refuse(path, str(refusal)) from refusal


def safe_load(
    path: str | os.PathLike[str] | io.BufferedIOBase,
    env: GymEnv | None = None,
    device: torch.device | str = "auto",
    custom_objects: Mapping[str, Any] | None = None,
) -> OnPolicyAlgorithm:
    """
    Restore a model without unpickling anything from the file.

    Safe to call on files from untrusted sources: settings come from JSON, classes only from an
    allow-list (SB3's actor-critic policies and feature extractors, ``torch.nn`` activations,
    ``torch.optim`` optimisers, SB3's rollout buffers; sb3-contrib's maskable and recurrent policies and buffers
    for the variants), tensors through ``torch.load(weights_only=True)``.

    * Files of this package's ``save``: a :class:`~sb3_trpo_plugin.TRPO`, ``MaskableTRPO`` or ``RecurrentTRPO`` (the
      last two need sb3-contrib), from the JSON description; the policy class must be one the algorithm takes.
    * Files of sb3-contrib's TRPO (or of this TRPO saved by SB3's ``BaseAlgorithm.save``): a
      :class:`~sb3_trpo_plugin.TRPO`; files of SB3's PPO and A2C: a ``PPO`` or ``A2C``. Each from the plain
      JSON fields of SB3's ``data`` entry and the readable attributes SB3 stores next to its pickles:
      spaces from shape, dtype, bounds, ``n``, ``nvec`` (a Box whose bounds NumPy summarised takes the
      ``env``'s space when type, shape and dtype agree), classes by import path from the allow-list,
      schedules from the values they print. The episode statistics and last observation of an unfinished
      ``learn`` are not restored (``learn`` starts them afresh). Anything else that exists only as a
      pickle (a learning rate given as a function, a custom class) is refused, naming the field; pass it
      in ``custom_objects``.

    The result predicts exactly like the class's own ``load`` and can go on training
    (``learn(..., reset_num_timesteps=False)`` continues the step count).

    :param path: a model ``.zip`` (the suffix may be omitted), or an open binary file
    :param env: environment to attach (its spaces must equal the saved ones); ``None`` uses the saved
        spaces, enough for ``predict``
    :param device: device for the policy (``"auto"``: CUDA when available)
    :param custom_objects: values to use instead of fields that exist only as pickles (keys
        ``"learning_rate"``, ``"policy_kwargs"``, ``"policy_class"``, ``"observation_space"``,
        ``"action_space"``, ``"rollout_buffer_class"``; for SB3 files also ``"clip_range"``,
        ``"clip_range_vf"`` and any other ``data`` field); only pass values you trust
    :return: the model: a :class:`~sb3_trpo_plugin.TRPO` (or ``MaskableTRPO``, ``RecurrentTRPO``), or SB3's ``PPO`` or ``A2C``
    :raises UnsafeModelFileError: when the file is not a model of an allowed algorithm, references a
        class outside the allow-list, holds non-tensor objects in a state dict, holds non-finite weights,
        or describes something that needs pickle to rebuild
    """
    custom_objects = dict(custom_objects or {})
    if isinstance(path, (str, os.PathLike)):
        path = pathlib.Path(path)
        if not path.exists() and path.suffix == "":
            path = path.with_name(path.name + ".zip")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise _refuse(path, "it is not a zip archive") from error
    with archive:
        if DESCRIPTION_ENTRY not in archive.namelist():
            return _load_sb3_file(archive, path, env, device, custom_objects)
        try:
            description = json.loads(archive.read(DESCRIPTION_ENTRY))
        except ValueError as error:
            raise _refuse(path, f"{DESCRIPTION_ENTRY} is not valid JSON ({error})") from error
        if not isinstance(description, dict) or description.get("format") != DESCRIPTION_FORMAT:
            found = description.get("format") if isinstance(description, dict) else None
            raise _refuse(path, f"unknown description format {found!r} (expected {DESCRIPTION_FORMAT!r})")
        algorithm_name = description.get("algorithm")
        algorithm, policy_base = _algorithm(algorithm_name if isinstance(algorithm_name, str) else repr(algorithm_name), path)

        device = get_device(device)
        try:
            state_dicts = read_state_dicts(archive, device)
        except FileRefusal as refusal:
            raise _refuse(path, str(refusal)) from refusal

    policy_class = _decoded(description, "policy_class", custom_objects, path, POLICY_ROLES[algorithm.__name__])
    if not (isinstance(policy_class, type) and issubclass(policy_class, policy_base)):
        raise _refuse(path, f"policy_class {policy_class!r} is not a {policy_base.__name__}, as {algorithm.__name__} needs")
    observation_space = _decoded(description, "observation_space", custom_objects, path)
    action_space = _decoded(description, "action_space", custom_objects, path)
    learning_rate = _decoded(description, "learning_rate", custom_objects, path)
    rollout_buffer_class = _decoded(description, "rollout_buffer_class", custom_objects, path)
    rollout_buffer_kwargs = _decoded(description, "rollout_buffer_kwargs", custom_objects, path)
    if "policy_kwargs" in custom_objects:
        policy_kwargs = dict(custom_objects["policy_kwargs"])
    else:
        policy_kwargs = _decoded_mapping(description, "policy_kwargs", None, path)
    hyperparameters = _decoded_mapping(description, "hyperparameters", hyperparameter_names(algorithm), path)
    state = description.get("state", {})
    if not isinstance(state, dict) or any(
        name not in STATE or isinstance(value, bool) or not isinstance(value, (int, float)) for name, value in state.items()
    ):
        raise _refuse(path, "the 'state' entry must map known counters to numbers")

    if env is not None:
        env = algorithm._wrap_env(env, verbose=int(hyperparameters.get("verbose", 0)))
        check_for_correct_spaces(env, observation_space, action_space)
    try:
        model = algorithm(
            policy=policy_class,  # type: ignore[arg-type]
            env=env,  # type: ignore[arg-type]
            learning_rate=learning_rate,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            policy_kwargs=policy_kwargs,
            device=device,
            _init_setup_model=False,
            **hyperparameters,
        )
    except (TypeError, ValueError) as error:
        raise _refuse(path, f"its settings are not valid {algorithm.__name__} settings ({error})") from error
    model.observation_space = observation_space
    model.action_space = action_space
    if env is None:
        model.n_envs = int(description.get("n_envs", 1))
    model._setup_model()
    for name, value in state.items():
        setattr(model, name, value)

    try:
        model.set_parameters(state_dicts, exact_match=True, device=device)  # type: ignore[arg-type]
    except (RuntimeError, ValueError, KeyError) as error:
        raise _refuse(path, f"its weights do not fit the described policy ({error})") from error
    if model.use_sde:
        model.policy.reset_noise()
    return model


__all__ = ["UnsafeModelFileError", "safe_load"]
