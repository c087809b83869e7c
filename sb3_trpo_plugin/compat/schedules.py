"""
SB3's learning-rate and clip-range schedules across its releases.

SB3 2.7 made schedules classes (``ConstantSchedule``, ``LinearSchedule``, and ``FloatSchedule`` around either),
which print their parameters and so can be written into a file's readable ``data`` and read back without a pickle.
SB3 2.3–2.6 made them closures (``constant_fn``, ``get_linear_fn``, ``get_schedule_fn``), which only a pickle
describes. The classes are found by feature detection: where they exist (SB3 ≥ 2.7) schedules are read and described
as such; where they do not, :func:`constant_schedule` and :func:`linear_schedule` return that release's own
closures (the same values at every progress), and :data:`SCHEDULE_CLASSES` says that no schedule is describable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stable_baselines3.common import utils as sb3_utils

#: Whether the installed SB3 has schedule classes (SB3 ≥ 2.7); with older SB3 a schedule is a closure.
SCHEDULE_CLASSES: bool = all(hasattr(sb3_utils, name) for name in ("ConstantSchedule", "LinearSchedule", "FloatSchedule"))


def constant_schedule(value: float) -> Callable[[float], float]:
    """
    SB3's constant schedule: ``ConstantSchedule(value)`` (SB3 ≥ 2.7), else ``constant_fn(value)`` (SB3 2.3–2.6).

    :param value: the constant
    :return: the schedule
    """
    if SCHEDULE_CLASSES:
        return sb3_utils.ConstantSchedule(value)
    return sb3_utils.constant_fn(value)


def linear_schedule(start: float, end: float, end_fraction: float) -> Callable[[float], float]:
    """
    SB3's linear schedule: ``LinearSchedule`` (SB3 ≥ 2.7), else ``get_linear_fn`` (SB3 2.3–2.6, the same formula).

    :param start: the value at progress remaining 1
    :param end: the value from progress remaining ``1 - end_fraction`` on
    :param end_fraction: the fraction of training over which the value moves
    :return: the schedule
    """
    if SCHEDULE_CLASSES:
        return sb3_utils.LinearSchedule(start, end, end_fraction)
    return sb3_utils.get_linear_fn(start, end, end_fraction)


def unwrap_float_schedule(schedule: Any) -> Any:
    """
    The schedule inside SB3's ``FloatSchedule`` (SB3 ≥ 2.7); anything else as is.

    :param schedule: a number or a schedule
    :return: ``schedule.value_schedule`` for a ``FloatSchedule``, else ``schedule``
    """
    if SCHEDULE_CLASSES and isinstance(schedule, sb3_utils.FloatSchedule):
        return schedule.value_schedule
    return schedule


def schedule_parameters(schedule: Any) -> tuple[str, tuple[float, ...]] | None:
    """
    The kind and parameters of one of SB3's schedule classes (SB3 ≥ 2.7); ``None`` for anything else, including
    every schedule of SB3 2.3–2.6 (closures, which only a pickle describes).

    :param schedule: a schedule (not wrapped in ``FloatSchedule``: see :func:`unwrap_float_schedule`)
    :return: ``("constant", (value,))``, ``("linear", (start, end, end_fraction))`` or ``None``
    """
    if not SCHEDULE_CLASSES:
        return None
    if isinstance(schedule, sb3_utils.ConstantSchedule):
        return "constant", (float(schedule.val),)
    if isinstance(schedule, sb3_utils.LinearSchedule):
        return "linear", (float(schedule.start), float(schedule.end), float(schedule.end_fraction))
    return None
