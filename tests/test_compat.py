"""
The shims of ``sb3_trpo_plugin.compat``: each gives the installed releases' own objects, and the features that
need a newer release switch on and off with it (docs/compatibility.md lists the rows these run on).
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common import utils as sb3_utils
from stable_baselines3.common.buffers import RolloutBuffer

from sb3_trpo_plugin import TRPO, safe_load
from sb3_trpo_plugin.compat import advantages as advantages_module
from sb3_trpo_plugin.compat.schedules import (
    SCHEDULE_CLASSES,
    constant_schedule,
    linear_schedule,
    schedule_parameters,
    unwrap_float_schedule,
)
from sb3_trpo_plugin.loading import UnsafeModelFileError
from sb3_trpo_plugin.loading.sb3_schedules import schedule_from_data
from sb3_trpo_plugin.rollout.advantages import compute_returns_and_advantage
from sb3_trpo_plugin.serialization.description import UnsupportedValueError, decode_schedule, encode_schedule

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
            encode_schedule(linear)
        return
    assert schedule_parameters(linear) == ("linear", (1e-3, 1e-4, 0.5))
    assert encode_schedule(sb3_utils.FloatSchedule(linear)) == encode_schedule(linear)
    assert unwrap_float_schedule(sb3_utils.FloatSchedule(linear)) is linear
    decoded = decode_schedule(encode_schedule(linear))
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


def gae_of(dtype: type | None) -> Any:
    """An SB3 ``compute_returns_and_advantage``: 2.3's (``np.float64``), 2.4+'s (``np.float32``), or one of neither."""

    def compute_returns_and_advantage(self: RolloutBuffer, last_values: torch.Tensor, dones: np.ndarray) -> None:
        values = last_values.clone().cpu().numpy().flatten()
        self.advantages[:] = advantages_module._advantages(self, values, dones, dtype or np.float32)
        if dtype is None:  # a future SB3 computing otherwise: one more rounding
            self.advantages[:] = self.advantages * np.float32(1 + 2**-20)
        self.returns = self.advantages + self.values

    return compute_returns_and_advantage


def test_the_gae_probe_tells_the_releases_apart() -> None:
    buffer, last_values, dones = advantages_module._probe_buffer()
    values = last_values.numpy().flatten()
    float32 = advantages_module._advantages(buffer, values, dones, np.float32)
    float64 = advantages_module._advantages(buffer, values, dones, np.float64)
    assert not np.array_equal(float32, float64)
    assert advantages_module.gae_recursion_dtype() in (np.float32, np.float64)  # the installed SB3 is one of them


@pytest.mark.parametrize("release", [np.float32, np.float64, None], ids=["sb3-2.4+", "sb3-2.3", "sb3-otherwise"])
def test_advantages_follow_the_installed_sb3_bit_for_bit(monkeypatch: pytest.MonkeyPatch, release: type | None) -> None:
    monkeypatch.setattr(RolloutBuffer, "compute_returns_and_advantage", gae_of(release))
    advantages_module.gae_recursion_dtype.cache_clear()
    try:
        assert advantages_module.gae_recursion_dtype() is release
        rng = np.random.default_rng(3)
        buffers = [RolloutBuffer(37, spaces.Box(-1, 1, (3,)), spaces.Discrete(2), n_envs=2, gamma=0.97) for _ in range(2)]
        for buffer in buffers:
            buffer.rewards[:] = np.random.default_rng(4).standard_normal(buffer.rewards.shape)
            buffer.values[:] = np.random.default_rng(5).standard_normal(buffer.values.shape)
            buffer.episode_starts[:] = np.random.default_rng(6).random(buffer.episode_starts.shape) < 0.2
        last_values, dones = torch.as_tensor(rng.standard_normal((2, 1)), dtype=torch.float32), np.array([False, True])
        buffers[0].compute_returns_and_advantage(last_values, dones)
        compute_returns_and_advantage(buffers[1], last_values, dones)
        np.testing.assert_array_equal(buffers[1].advantages, buffers[0].advantages)
        np.testing.assert_array_equal(buffers[1].returns, buffers[0].returns)
    finally:
        advantages_module.gae_recursion_dtype.cache_clear()
