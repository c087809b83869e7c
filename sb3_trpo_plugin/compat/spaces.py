"""
Gymnasium's spaces across its releases.

``Discrete`` takes a ``dtype`` since gymnasium 1.0; in 0.29 its elements are always ``int64``. Found by feature
detection (the constructor's parameters): :func:`discrete_space` passes a dtype only where the installed gymnasium
takes one, and refuses any other dtype than ``int64`` where it does not (a space that release cannot build).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from gymnasium import spaces

#: Whether ``spaces.Discrete`` takes a ``dtype`` (gymnasium ≥ 1.0).
DISCRETE_DTYPE: bool = "dtype" in inspect.signature(spaces.Discrete.__init__).parameters


def discrete_space(n: int, start: int = 0, dtype: Any = np.int64) -> spaces.Discrete:
    """
    ``spaces.Discrete(n, start=start, dtype=dtype)``, on every supported gymnasium.

    :param n: the number of elements
    :param start: the first element
    :param dtype: the elements' NumPy integer type
    :return: the space
    :raises TypeError: for a dtype other than ``int64`` on gymnasium 0.29, which has no such space
    """
    if DISCRETE_DTYPE:
        return spaces.Discrete(n, start=start, dtype=np.dtype(dtype).type)
    if np.dtype(dtype) != np.int64:
        raise TypeError(f"this gymnasium's Discrete holds int64 elements only, not {np.dtype(dtype).name} (gymnasium ≥ 1.0)")
    return spaces.Discrete(n, start=start)
