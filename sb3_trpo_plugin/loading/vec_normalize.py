"""
``VecNormalize`` statistics without running code from the file: :func:`safe_load_vec_normalize`.

Two files hold them:

* the pickle-free ``.npz`` this package writes next to SB3's ``.pkl`` (checkpoints, ``sb3-trpo train``),
  read by :func:`~sb3_trpo_plugin.serialization.vec_normalize_statistics.read_vec_normalize_statistics`;
* SB3's ``.pkl`` (``VecNormalize.save``), a pickle of the wrapper. It is read by :class:`StatisticsUnpickler`,
  which resolves only the globals such a file needs, and none of them to code that acts: NumPy's array,
  dtype and scalar reconstructors (object arrays refused), and inert holders that record the state of
  ``VecNormalize``, ``RunningMeanStd``, gymnasium spaces and NumPy random generators without calling them.
  Any other global is refused by name before anything is called. The statistics are then checked and
  put into a ``VecNormalize`` built here around the caller's environment.
"""

from __future__ import annotations

import importlib
import io
import os
import pathlib
import pickle
from collections import OrderedDict
from typing import Any

import numpy as np
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from sb3_trpo_plugin.serialization.vec_normalize_statistics import (
    SETTINGS,
    StatisticsFileError,
    VecNormalizeStatistics,
    read_vec_normalize_statistics,
    statistics_from_state,
)


class UnsafeStatisticsFileError(ValueError):
    """A ``VecNormalize`` statistics file that cannot be read without running code from it, or is malformed."""


class StateHolder:
    """
    Stands for an object of an allowed class in a pickle: records its arguments and state, runs nothing.

    Pickle makes objects with ``cls.__new__(cls, *args)`` (then ``__setstate__``) or ``cls(*args)``; both end here.
    """

    #: The class this holder stands for.
    qualified_name = ""
    args: tuple[Any, ...]
    state: Any

    def __new__(cls, *args: Any, **kwargs: Any) -> StateHolder:
        holder = object.__new__(cls)
        holder.args, holder.state = args, None
        return holder

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _holder(qualified_name: str) -> type[StateHolder]:
    """A holder class standing for ``qualified_name``."""
    return type(f"Holder[{qualified_name}]", (StateHolder,), {"qualified_name": qualified_name})


def _checked_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("arrays of Python objects are refused")
    return dtype


def _numpy_multiarray() -> Any:
    try:
        return importlib.import_module("numpy._core.multiarray")  # NumPy 2
    except ImportError:  # pragma: no cover - NumPy 1
        return importlib.import_module("numpy.core.multiarray")


def _checked_reconstruct(cls: Any, *args: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"only plain NumPy arrays are rebuilt, not {cls!r}")
    return _numpy_multiarray()._reconstruct(cls, *args)


def _checked_scalar(dtype: Any, *args: Any) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("only NumPy scalars of plain dtypes are rebuilt")
    return _numpy_multiarray().scalar(dtype, *args)


_NUMPY_CORE = ("numpy._core.multiarray", "numpy.core.multiarray")
_SPACES = ("Box", "Discrete", "MultiDiscrete", "MultiBinary", "Dict", "Tuple")
_RANDOM = (
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random._pcg64", "PCG64DXSM"),
    ("numpy.random._mt19937", "MT19937"),
    ("numpy.random._philox", "Philox"),
    ("numpy.random._sfc64", "SFC64"),
)

#: Every global an SB3 ``VecNormalize`` pickle may name, and what it resolves to here.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(module, "_reconstruct"): _checked_reconstruct for module in _NUMPY_CORE},
    **{(module, "scalar"): _checked_scalar for module in _NUMPY_CORE},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _checked_dtype,
    ("collections", "OrderedDict"): OrderedDict,
    ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"): _holder("VecNormalize"),
    ("stable_baselines3.common.running_mean_std", "RunningMeanStd"): _holder("RunningMeanStd"),
    **{
        (f"gymnasium.spaces.{name.lower().replace('multid', 'multi_d').replace('multib', 'multi_b')}", name): _holder(name)
        for name in _SPACES
    },
    **{key: _holder(key[1]) for key in _RANDOM},
}


class StatisticsUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` and refuses every other global by name."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not one a VecNormalize statistics file needs") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent references are refused")


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _rms_arrays(holder: Any, prefix: str, arrays: dict[str, np.ndarray]) -> None:
    if not (isinstance(holder, StateHolder) and holder.qualified_name == "RunningMeanStd" and isinstance(holder.state, dict)):
        raise StatisticsFileError(f"{prefix} is not a RunningMeanStd")
    for name in ("mean", "var", "count"):
        arrays[f"{prefix}.{name}"] = np.asarray(holder.state.get(name), dtype=np.float64)


def statistics_from_pickle(content: bytes) -> VecNormalizeStatistics:
    """
    The statistics of an SB3 ``VecNormalize.save`` file, read by :class:`StatisticsUnpickler`.

    :param content: the file's bytes
    :return: the statistics
    :raises StatisticsFileError: for a pickle that names another global or does not hold a VecNormalize
    """
    try:
        holder = StatisticsUnpickler(io.BytesIO(content)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise StatisticsFileError(f"unpickling refused: {error}") from error
    if not (isinstance(holder, StateHolder) and holder.qualified_name == "VecNormalize" and isinstance(holder.state, dict)):
        raise StatisticsFileError("it does not hold a VecNormalize")
    state = {key: _plain(value) for key, value in holder.state.items()}
    arrays: dict[str, np.ndarray] = {}
    obs_rms = state.get("obs_rms")
    if isinstance(obs_rms, dict):
        state["obs_rms_keys"] = list(obs_rms)
        for index, rms in enumerate(obs_rms.values()):
            _rms_arrays(rms, f"obs_rms.{index}", arrays)
    else:
        state["obs_rms_keys"] = None
        _rms_arrays(obs_rms, "obs_rms", arrays)
    _rms_arrays(state.get("ret_rms"), "ret_rms", arrays)
    if isinstance(state.get("norm_obs_keys"), tuple):
        state["norm_obs_keys"] = list(state["norm_obs_keys"])
    return statistics_from_state(state, arrays)


def _fits(rms: RunningMeanStd, expected: RunningMeanStd, where: str) -> RunningMeanStd:
    if rms.mean.shape != expected.mean.shape:
        raise StatisticsFileError(f"{where} has shape {rms.mean.shape}, the environment's observations {expected.mean.shape}")
    return rms


def _statistics(content: bytes) -> VecNormalizeStatistics:
    """The statistics of either file: an ``.npz`` is a zip archive (its first bytes are "PK"), a pickle is not."""
    return read_vec_normalize_statistics(content) if content[:2] == b"PK" else statistics_from_pickle(content)


def read_statistics_file(path: str | os.PathLike[str]) -> VecNormalizeStatistics:
    """
    The statistics of a ``VecNormalize`` file without an environment to wrap (what ONNX export folds into a graph).

    :param path: the statistics file (``.npz`` or SB3's ``.pkl``, read as :func:`safe_load_vec_normalize` reads it)
    :return: the settings and running statistics
    :raises UnsafeStatisticsFileError: for a pickle that names any other global, or a malformed file
    """
    try:
        return _statistics(pathlib.Path(path).read_bytes())
    except StatisticsFileError as error:
        raise UnsafeStatisticsFileError(f"refusing the statistics file {path}: {error}") from error


def safe_load_vec_normalize(path: str | os.PathLike[str], venv: VecEnv) -> VecNormalize:
    """
    ``VecNormalize.load(path, venv)`` without running code from the file.

    Reads the pickle-free ``.npz`` this package writes (checkpoints, ``sb3-trpo train``) or SB3's ``.pkl``
    through an unpickler that rebuilds only arrays, NumPy scalars and plain containers and records the
    state of the few classes the file names (``VecNormalize``, ``RunningMeanStd``, spaces), refusing any
    other global by name. The result normalises exactly as ``VecNormalize.load``'s.

    :param path: the statistics file (``.npz`` or SB3's ``.pkl``)
    :param venv: the vectorised environment to wrap (its observation shapes must match the statistics)
    :return: a ``VecNormalize`` around ``venv`` with the file's settings and statistics
    :raises UnsafeStatisticsFileError: for a pickle that names any other global, a malformed file, or
        statistics that do not fit the environment
    """
    content = pathlib.Path(path).read_bytes()
    try:
        statistics = _statistics(content)
        settings = statistics.settings
        vec_normalize = VecNormalize(
            venv, norm_obs_keys=settings["norm_obs_keys"], **{name: settings[name] for name, _ in SETTINGS}
        )
        if isinstance(vec_normalize.obs_rms, dict) != isinstance(statistics.obs_rms, dict):
            raise StatisticsFileError("the statistics and the environment disagree on dict observations")
        if isinstance(vec_normalize.obs_rms, dict) and isinstance(statistics.obs_rms, dict):
            if statistics.obs_rms.keys() != vec_normalize.obs_rms.keys():
                raise StatisticsFileError(
                    f"statistics for keys {sorted(statistics.obs_rms)}, normalised keys {sorted(vec_normalize.obs_rms)}"
                )
            vec_normalize.obs_rms = {
                key: _fits(rms, vec_normalize.obs_rms[key], f"obs_rms[{key!r}]") for key, rms in statistics.obs_rms.items()
            }
        elif isinstance(statistics.obs_rms, RunningMeanStd) and isinstance(vec_normalize.obs_rms, RunningMeanStd):
            vec_normalize.obs_rms = _fits(statistics.obs_rms, vec_normalize.obs_rms, "obs_rms")
        vec_normalize.ret_rms = _fits(statistics.ret_rms, vec_normalize.ret_rms, "ret_rms")
    except (StatisticsFileError, ValueError, AssertionError, KeyError) as error:
        raise UnsafeStatisticsFileError(f"safe_load_vec_normalize refuses {path}: {error}") from error
    return vec_normalize
