"""
The shims of ``sb3_trpo_plugin.compat``: each gives the installed releases' own objects, and the features that
need a newer release switch on and off with it (docs/compatibility.md lists the rows these run on).
"""

from __future__ import annotations

import pathlib

import pytest
from stable_baselines3.common import utils as sb3_utils

from sb3_trpo_plugin import TRPO, safe_load
from sb3_trpo_plugin.compat.schedules import (
    SCHEDULE_CLASSES,
    constant_schedule,
    linear_schedule,
    schedule_parameters,
    unwrap_float_schedule,
)
from sb3_trpo_plugin.loading import UnsafeModelFileError
from sb3_trpo_plugin.loading.sb3_data import schedule_from_data
from sb3_trpo_plugin.serialization.description import UnsupportedValueError, decode_learning_rate, encode_learning_rate

PROGRESS = (1.0, 0.9, 0.75, 0.5, 0.25, 0.0)


def test_schedule_classes_are_detected_from_sb3_itself() -> None:
    assert hasattr(sb3_utils, "LinearSchedule") == SCHEDULE_CLASSES
    assert hasattr(sb3_utils, "FloatSchedule") == SCHEDULE_CLASSES


def test_schedules_compute_what_sb3_s_own_do() -> None:
    """Classes (SB3 ≥ 2.7) or closures (SB3 2.3–2.6): the values of SB3's formula, bit for bit."""
    constant, linear = constant_schedule(3e-4), linear_schedule(1e-3, 1e-4, 0.5)
    for progress in PROGRESS:
        assert constant(progress) == 3e-4
        expected = 1e-4 if 1 - progress > 0.5 else 1e-3 + (1 - progress) * (1e-4 - 1e-3) / 0.5
        assert linear(progress) == expected, progress
    if SCHEDULE_CLASSES:
        assert type(constant) is sb3_utils.ConstantSchedule and type(linear) is sb3_utils.LinearSchedule
    else:
        assert constant.__qualname__.startswith("constant_fn") and linear.__qualname__.startswith("get_linear_fn")


def test_descriptions_of_schedules_round_trip_where_sb3_has_classes() -> None:
    linear = linear_schedule(1e-3, 1e-4, 0.5)
    if not SCHEDULE_CLASSES:
        assert schedule_parameters(linear) is None
        with pytest.raises(UnsupportedValueError, match=r"SB3 ≥ 2.7; older SB3's schedules are closures"):
            encode_learning_rate(linear)
        return
    assert schedule_parameters(linear) == ("linear", (1e-3, 1e-4, 0.5))
    assert encode_learning_rate(sb3_utils.FloatSchedule(linear)) == encode_learning_rate(linear)
    assert unwrap_float_schedule(sb3_utils.FloatSchedule(linear)) is linear
    decoded = decode_learning_rate(encode_learning_rate(linear))
    assert [decoded(p) for p in PROGRESS] == [linear(p) for p in PROGRESS]  # type: ignore[operator]


@pytest.mark.parametrize(
    ("text", "attributes"),
    [
        ("<class 'stable_baselines3.common.utils.ConstantSchedule'>", {"val": 0.25}),
        ("<class 'stable_baselines3.common.utils.LinearSchedule'>", {"start": 1e-3, "end": 1e-4, "end_fraction": 0.5}),
    ],
    ids=["constant", "linear"],
)
def test_schedules_that_newer_sb3_writes_are_read_with_any_sb3(text: str, attributes: dict[str, float]) -> None:
    """A file of SB3 ≥ 2.7 read where SB3 is older: the installed SB3's schedule of the same values."""
    entry = {":type:": text, ":serialized:": "unused", **attributes}
    schedule = schedule_from_data(entry, "learning_rate")
    expected = constant_schedule(0.25) if "val" in attributes else linear_schedule(1e-3, 1e-4, 0.5)
    assert callable(schedule) and type(schedule) is type(expected)
    assert [schedule(p) for p in PROGRESS] == [expected(p) for p in PROGRESS]


def test_a_schedule_closure_is_refused_as_only_its_pickle_describes_it(tmp_path: pathlib.Path) -> None:
    """What every schedule of SB3 2.3–2.6 is, and any other callable: no readable description, so no safe load."""

    def closure(progress_remaining: float) -> float:  # as SB3 2.3-2.6's constant_fn returns
        return 1e-3

    model = TRPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, learning_rate=closure, seed=0)
    model.save(tmp_path / "model.zip")
    with pytest.raises(UnsafeModelFileError, match="learning_rate"):
        safe_load(tmp_path / "model.zip")
