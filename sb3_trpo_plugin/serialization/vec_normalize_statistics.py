"""
``VecNormalize`` statistics in a file that holds no pickle: a NumPy ``.npz`` archive of plain arrays.

SB3's ``VecNormalize.save`` pickles the wrapper itself, so opening its ``.pkl`` can run code. The
same statistics fit in plain arrays: the running mean, variance and count of the observations (per key
for dict observations) and of the discounted returns, plus the wrapper's settings as a JSON string.
:func:`write_vec_normalize_statistics` writes them (atomically) and :func:`read_vec_normalize_statistics`
reads them with ``np.load(allow_pickle=False)``, which refuses any object array.
:func:`sb3_trpo_plugin.loading.safe_load_vec_normalize` turns them into a ``VecNormalize`` again.
"""

from __future__ import annotations

import io
import json
import math
import os
import pathlib
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecNormalize

from sb3_trpo_plugin.serialization.atomic import atomic_write_bytes

#: Identifies the format; bumped on incompatible changes.
STATISTICS_FORMAT = "sb3_trpo_plugin.vec_normalize/1"
#: The file name suffix of the pickle-free statistics (next to SB3's ``.pkl``).
STATISTICS_SUFFIX = ".npz"
#: The ``VecNormalize`` settings the file keeps: ``(name, type)``.
SETTINGS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("training", bool),
    ("norm_obs", bool),
    ("norm_reward", bool),
    ("clip_obs", (int, float)),
    ("clip_reward", (int, float)),
    ("gamma", (int, float)),
    ("epsilon", (int, float)),
)


class StatisticsFileError(ValueError):
    """A statistics file that is not a well-formed pickle-free ``VecNormalize`` statistics file."""


@dataclass(frozen=True)
class VecNormalizeStatistics:
    """
    What a ``VecNormalize`` needs besides its environment.

    :param settings: the constructor settings of :data:`SETTINGS`, and ``norm_obs_keys``
    :param obs_rms: the observations' running statistics (per key for dict observations)
    :param ret_rms: the discounted returns' running statistics
    """

    settings: dict[str, Any]
    obs_rms: RunningMeanStd | dict[str, RunningMeanStd]
    ret_rms: RunningMeanStd


def statistics_path(pickle_path: str | os.PathLike[str]) -> pathlib.Path:
    """
    Where the pickle-free statistics go next to SB3's ``.pkl`` (``vecnormalize.pkl`` → ``vecnormalize.npz``).

    :param pickle_path: the ``.pkl`` path
    :return: the ``.npz`` path
    """
    return pathlib.Path(pickle_path).with_suffix(STATISTICS_SUFFIX)


def statistics_bytes(vec_normalize: VecNormalize) -> bytes:
    """
    The ``.npz`` content of a ``VecNormalize``'s statistics.

    :param vec_normalize: the wrapper
    :return: the bytes of the archive
    """
    settings: dict[str, Any] = {name: getattr(vec_normalize, name) for name, _ in SETTINGS}
    settings = {name: value.item() if isinstance(value, np.generic) else value for name, value in settings.items()}
    norm_obs_keys = getattr(vec_normalize, "norm_obs_keys", None)
    settings["norm_obs_keys"] = list(norm_obs_keys) if norm_obs_keys is not None else None
    arrays: dict[str, np.ndarray] = {}

    def add(prefix: str, rms: RunningMeanStd) -> None:
        arrays[f"{prefix}.mean"] = np.asarray(rms.mean, dtype=np.float64)
        arrays[f"{prefix}.var"] = np.asarray(rms.var, dtype=np.float64)
        arrays[f"{prefix}.count"] = np.asarray(rms.count, dtype=np.float64)

    if isinstance(vec_normalize.obs_rms, dict):
        settings["obs_rms_keys"] = list(vec_normalize.obs_rms)
        for index, rms in enumerate(vec_normalize.obs_rms.values()):
            add(f"obs_rms.{index}", rms)
    else:
        settings["obs_rms_keys"] = None
        add("obs_rms", vec_normalize.obs_rms)
    add("ret_rms", vec_normalize.ret_rms)
    arrays["settings"] = np.asarray(json.dumps({"format": STATISTICS_FORMAT, **settings}))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def write_vec_normalize_statistics(vec_normalize: VecNormalize, path: str | os.PathLike[str]) -> None:
    """
    Write a ``VecNormalize``'s statistics to a pickle-free ``.npz`` file, atomically.

    :param vec_normalize: the wrapper
    :param path: the file (``.npz`` by convention: :func:`statistics_path`)
    """
    atomic_write_bytes(path, statistics_bytes(vec_normalize))


def _running_mean_std(arrays: Mapping[str, np.ndarray], prefix: str) -> RunningMeanStd:
    try:
        mean, var, count = (arrays[f"{prefix}.{name}"] for name in ("mean", "var", "count"))
    except KeyError as error:
        raise StatisticsFileError(f"it has no {error.args[0]!r} array") from error
    if any(array.dtype.kind != "f" for array in (mean, var, count)) or mean.shape != var.shape or count.shape != ():
        raise StatisticsFileError(f"{prefix}: mean and variance must be float arrays of one shape, count a float")
    if not (np.isfinite(mean).all() and np.isfinite(var).all() and (var >= 0).all() and math.isfinite(count) and count > 0):
        raise StatisticsFileError(f"{prefix}: the statistics must be finite, the variance >= 0 and the count > 0")
    rms = RunningMeanStd(shape=mean.shape)
    rms.mean, rms.var, rms.count = mean.astype(np.float64), var.astype(np.float64), float(count)
    return rms


def statistics_from_state(state: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> VecNormalizeStatistics:
    """
    Check settings and arrays and make the statistics of them.

    :param state: the settings (:data:`SETTINGS`, ``norm_obs_keys``, ``obs_rms_keys``)
    :param arrays: ``{prefix}.mean``, ``.var``, ``.count`` for ``obs_rms`` (or ``obs_rms.{i}``) and ``ret_rms``
    :return: the statistics
    :raises StatisticsFileError: for missing or ill-typed values
    """
    settings: dict[str, Any] = {}
    for name, kind in SETTINGS:
        value = state.get(name)
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise StatisticsFileError(f"setting {name} = {value!r} is not a {getattr(kind, '__name__', 'number')}")
        settings[name] = value
    norm_obs_keys = state.get("norm_obs_keys")
    if norm_obs_keys is not None and not (isinstance(norm_obs_keys, list) and all(isinstance(k, str) for k in norm_obs_keys)):
        raise StatisticsFileError(f"norm_obs_keys = {norm_obs_keys!r} is not a list of names")
    settings["norm_obs_keys"] = norm_obs_keys
    obs_rms_keys = state.get("obs_rms_keys")
    obs_rms: RunningMeanStd | dict[str, RunningMeanStd]
    if obs_rms_keys is None:
        obs_rms = _running_mean_std(arrays, "obs_rms")
    elif isinstance(obs_rms_keys, list) and all(isinstance(k, str) for k in obs_rms_keys):
        obs_rms = {key: _running_mean_std(arrays, f"obs_rms.{index}") for index, key in enumerate(obs_rms_keys)}
    else:
        raise StatisticsFileError(f"obs_rms_keys = {obs_rms_keys!r} is not a list of names")
    return VecNormalizeStatistics(settings, obs_rms, _running_mean_std(arrays, "ret_rms"))


def read_vec_normalize_statistics(content: bytes) -> VecNormalizeStatistics:
    """
    Read what :func:`write_vec_normalize_statistics` wrote, without unpickling (``allow_pickle=False``).

    :param content: the file's bytes
    :return: the statistics
    :raises StatisticsFileError: for anything but a well-formed statistics file
    """
    try:
        with np.load(io.BytesIO(content), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise StatisticsFileError(f"it is not a NumPy archive of plain arrays ({error})") from error
    settings = arrays.pop("settings", None)
    if settings is None or settings.dtype.kind != "U" or settings.shape != ():
        raise StatisticsFileError("it has no 'settings' text")
    try:
        state = json.loads(str(settings))
    except ValueError as error:
        raise StatisticsFileError(f"its settings are not JSON ({error})") from error
    if not isinstance(state, dict) or state.get("format") != STATISTICS_FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise StatisticsFileError(f"unknown format {found!r} (expected {STATISTICS_FORMAT!r})")
    return statistics_from_state(state, arrays)
