"""A scheduled ``target_kl``: its value at each update bounds that update's step, is logged, and is saved and restored."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_trpo_plugin import TRPO, MaskableTRPO, RecurrentTRPO, safe_load
from sb3_trpo_plugin.compat.schedules import SCHEDULE_CLASSES, constant_schedule, linear_schedule
from sb3_trpo_plugin.loading import UnsafeModelFileError
from sb3_trpo_plugin.trpo.hyperparameters import HyperparameterError

KWARGS: dict[str, Any] = dict(n_steps=64, batch_size=32, n_critic_updates=2, seed=5, policy_kwargs=dict(net_arch=[16]))


def pendulum() -> Any:
    return make_vec_env("Pendulum-v1", n_envs=2, seed=5)


class UpdateLog(BaseCallback):
    """Each update's logged radius and KL, with the progress remaining that its ``train()`` saw."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[float, float, float, float]] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        values = self.model.logger.name_to_value
        if "train/target_kl" in values:
            progress = self.model._current_progress_remaining
            logged = (values[f"train/{key}"] for key in ("target_kl", "kl_divergence_loss", "is_line_search_success"))
            self.rows.append((progress, *logged))


def test_each_update_takes_the_schedules_radius() -> None:
    schedule = linear_schedule(0.02, 0.002, 1.0)
    model = TRPO("MlpPolicy", pendulum(), target_kl=schedule, **KWARGS)
    log = UpdateLog()
    model.learn(64 * 2 * 6, callback=log)
    assert len(log.rows) == 5  # the sixth update's logs are dumped after learn()'s last rollout
    for progress, target_kl, kl, accepted in log.rows:
        assert target_kl == pytest.approx(schedule(progress), rel=1e-12)
        assert accepted == 1.0 and 0.0 < kl <= target_kl
    radii = [row[1] for row in log.rows]
    assert radii == sorted(radii, reverse=True) and radii[0] > 2 * radii[-1]
    assert model.target_kl is schedule  # kept as given, as SB3 keeps learning_rate


@pytest.mark.parametrize("algorithm", [MaskableTRPO, RecurrentTRPO])
def test_the_variants_take_the_schedule_through_the_same_policy_step(algorithm: type[TRPO]) -> None:
    schedule = linear_schedule(0.02, 0.004, 1.0)
    policy = "MlpLstmPolicy" if algorithm is RecurrentTRPO else "MlpPolicy"
    env = make_vec_env("CartPole-v1", n_envs=2, seed=5)
    model = algorithm(policy, env, target_kl=schedule, n_steps=64, batch_size=32, n_critic_updates=2, seed=5)
    log = UpdateLog()
    model.learn(64 * 2 * 4, callback=log, **({"use_masking": False} if algorithm is MaskableTRPO else {}))
    assert len(log.rows) == 3
    for progress, target_kl, kl, _ in log.rows:
        assert target_kl == pytest.approx(schedule(progress), rel=1e-12) and kl <= target_kl


def test_a_constant_schedule_trains_as_the_number() -> None:
    """The schedule only chooses δ: with one of constant value the weights agree bit for bit with the plain number."""
    weights = []
    for target_kl in (0.015, constant_schedule(0.015)):
        model = TRPO("MlpPolicy", pendulum(), target_kl=target_kl, **KWARGS)
        model.learn(64 * 2 * 3)
        assert model.logger.name_to_value["train/target_kl"] == 0.015
        weights.append(torch.cat([p.detach().flatten() for p in model.policy.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_the_schedule_bounds_the_full_step() -> None:
    """β = sqrt(2δ / xᵀFx): with the quadratic KL model a quarter of δ gives half the largest step."""
    sizes = []
    for target_kl in (0.02, linear_schedule(0.005, 0.005, 1.0)):
        model = TRPO("MlpPolicy", pendulum(), target_kl=target_kl, **KWARGS)
        model.learn(64 * 2)
        sizes.append(model.logger.name_to_value["train/max_step_size"])
    assert sizes[1] == pytest.approx(sizes[0] / 2, rel=1e-6)


@pytest.mark.parametrize(
    ("schedule", "progress"),
    [(lambda progress: 0.01 * progress, "0.0"), (lambda progress: float("nan"), "1.0"), (lambda progress: -0.01, "1.0")],
)
def test_a_schedule_leaving_the_range_is_refused_on_construction(schedule: Any, progress: str) -> None:
    with pytest.raises(HyperparameterError, match=rf"target_kl's schedule gave .* at progress_remaining={progress}"):
        TRPO("MlpPolicy", pendulum(), target_kl=schedule, **KWARGS)


def test_a_schedule_leaving_the_range_mid_training_stops_the_update() -> None:
    def dips(progress: float) -> float:
        return 0.01 if progress in (0.0, 1.0) or progress > 0.6 else 0.0

    model = TRPO("MlpPolicy", pendulum(), target_kl=dips, **KWARGS)
    with pytest.raises(HyperparameterError, match=r"target_kl's schedule gave 0\.0 at progress_remaining=0\.5"):
        model.learn(64 * 2 * 4)
    assert model._n_updates == 1


def test_an_invalid_number_is_still_refused() -> None:
    with pytest.raises(HyperparameterError, match=r"target_kl must be > 0 \(or a schedule\), got 0"):
        TRPO("MlpPolicy", pendulum(), target_kl=0, **KWARGS)


def trained_with_schedule() -> tuple[TRPO, Any]:
    schedule = linear_schedule(0.02, 0.004, 0.5)
    model = TRPO("MlpPolicy", pendulum(), target_kl=schedule, **KWARGS)
    model.learn(64 * 2 * 2)
    return model, schedule


def test_save_and_safe_load_keep_the_schedule(tmp_path: pathlib.Path) -> None:
    model, schedule = trained_with_schedule()
    model.save(tmp_path / "model.zip")
    loaded = TRPO.load(tmp_path / "model.zip")  # SB3's load (pickles): the schedule object itself
    assert [loaded.target_kl(p) for p in (1.0, 0.7, 0.0)] == [schedule(p) for p in (1.0, 0.7, 0.0)]
    if not SCHEDULE_CLASSES:
        # SB3 2.3-2.6: schedules are closures, which only a pickle describes
        with pytest.raises(UnsafeModelFileError, match="target_kl is a function, which has no JSON description"):
            safe_load(tmp_path / "model.zip")
        return
    restored = safe_load(tmp_path / "model.zip", env=pendulum())
    assert type(restored.target_kl) is type(schedule)
    assert (restored.target_kl.start, restored.target_kl.end, restored.target_kl.end_fraction) == (0.02, 0.004, 0.5)
    restored.learn(64 * 2, reset_num_timesteps=False)
    assert restored.logger.name_to_value["train/target_kl"] == pytest.approx(schedule(restored._current_progress_remaining))


@pytest.mark.skipif(not SCHEDULE_CLASSES, reason="SB3 < 2.7 writes schedules as closures, which safe_load refuses (tested)")
def test_safe_load_reads_a_schedule_from_sb3s_own_save(tmp_path: pathlib.Path) -> None:
    model, schedule = trained_with_schedule()
    BaseAlgorithm.save(model, tmp_path / "sb3.zip")
    restored = safe_load(tmp_path / "sb3.zip")
    assert [restored.target_kl(p) for p in (1.0, 0.7, 0.2)] == pytest.approx([schedule(p) for p in (1.0, 0.7, 0.2)])


def test_safe_load_refuses_an_unreadable_schedule_in_sb3s_own_save(tmp_path: pathlib.Path) -> None:
    model = TRPO("MlpPolicy", pendulum(), target_kl=lambda progress: 0.01 + 0.01 * progress, **KWARGS)
    BaseAlgorithm.save(model, tmp_path / "sb3.zip")
    with pytest.raises(UnsafeModelFileError, match=r"target_kl cannot be rebuilt without unpickling it .*'target_kl': 0.01"):
        safe_load(tmp_path / "sb3.zip")
    restored = safe_load(tmp_path / "sb3.zip", custom_objects={"target_kl": 0.01})
    assert restored.target_kl == 0.01
