"""
Learning rates, clip ranges and scheduled ``target_kl`` values in the ``data`` entry that SB3's ``save`` writes, read
without unpickling: numbers as they are, SB3's schedule classes (written by SB3 ≥ 2.7) from the values their readable
attributes print, rebuilt as the installed SB3's schedule of those values (:mod:`sb3_trpo_plugin.compat.schedules`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sb3_trpo_plugin.compat.schedules import constant_schedule, linear_schedule
from sb3_trpo_plugin.loading.sb3_data import NUMBER_TEXT, UnreadableValueError, is_serialized, readable_attributes, type_name

#: The text of the schedule a ``FloatSchedule`` wraps, by SB3 class name.
_SCHEDULE_TEXT = {
    "ConstantSchedule": re.compile(rf"ConstantSchedule\(val=({NUMBER_TEXT})\)"),
    "LinearSchedule": re.compile(
        rf"LinearSchedule\(start=({NUMBER_TEXT}), end=({NUMBER_TEXT}), end_fraction=({NUMBER_TEXT})\)"
    ),
}


def schedule_from_data(entry: Any, where: str) -> float | Callable[[float], float] | None:
    """
    A learning rate, clip range or scheduled ``target_kl``: a number as is; SB3's ``FloatSchedule``, ``ConstantSchedule`` and
    ``LinearSchedule`` (written by SB3 ≥ 2.7) from the values their readable attributes print, as the installed
    SB3's schedule of those values (:mod:`sb3_trpo_plugin.compat.schedules`).

    :param entry: the ``data`` value
    :param where: the field, for error messages
    :return: a number, ``None``, or an SB3 schedule
    :raises UnreadableValueError: for any other callable (a function's pickle is its only description)
    """
    if entry is None or (isinstance(entry, (int, float)) and not isinstance(entry, bool)):
        return entry
    if not is_serialized(entry):
        raise UnreadableValueError(f"{where}: {entry!r} is not a number or a schedule")
    attributes = readable_attributes(entry)
    kind = type_name(entry).rpartition(".")[2]
    if kind == "FloatSchedule":
        text = str(attributes.get("value_schedule"))
        for name, pattern in _SCHEDULE_TEXT.items():
            match = pattern.fullmatch(text)
            if match:
                values = [float(group) for group in match.groups()]
                return constant_schedule(values[0]) if name == "ConstantSchedule" else linear_schedule(*values)
        raise UnreadableValueError(f"{where} is a FloatSchedule of {text[:80]!r}, which only its pickle describes")
    numbers = {
        key: value for key, value in attributes.items() if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    if kind == "ConstantSchedule" and set(numbers) == {"val"}:
        return constant_schedule(float(numbers["val"]))
    if kind == "LinearSchedule" and set(numbers) == {"start", "end", "end_fraction"}:
        return linear_schedule(float(numbers["start"]), float(numbers["end"]), float(numbers["end_fraction"]))
    raise UnreadableValueError(f"{where} is a {type_name(entry) or 'callable'}, which only its pickle describes")
