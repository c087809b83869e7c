"""The measuring parts of the speed benchmarks: per-round arithmetic, the instrumentation, the dummy env, the variants."""

from __future__ import annotations

import itertools
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from benchmarks import speed_end_to_end as e2e
from benchmarks import speed_report, speed_train, speed_variants
from benchmarks import speed_timing as st


def timing(wall: float, rollout: float, update: float, steps: int = 1000) -> Any:
    return st.LearnTiming(wall_s=wall, rollout_s=rollout, update_s=update, timesteps=steps)


def test_each_round_starts_one_further_along_the_order() -> None:
    order = ["ours", "sb3-contrib", "ppo", "bare"]
    assert st.rotated(order, 0) == order
    assert st.rotated(order, 1) == ["sb3-contrib", "ppo", "bare", "ours"]
    assert st.rotated(order, 6) == ["ppo", "bare", "ours", "sb3-contrib"]


def test_learn_does_whole_rollouts_until_the_budget_is_reached() -> None:
    assert e2e.learn_steps(4096, n_steps=512, n_envs=2) == 4096
    assert e2e.learn_steps(4097, n_steps=512, n_envs=2) == 5120
    assert e2e.learn_steps(1, n_steps=1024, n_envs=2) == 2048


def test_per_step_time_and_overhead_above_stepping() -> None:
    assert st.microseconds_per_step(0.5, 1000) == pytest.approx(500.0)
    assert e2e.overhead_above_stepping(30.0, 10.0) == pytest.approx(2.0)
    assert e2e.overhead_above_stepping(10.0, 10.0) == 0.0
    assert e2e.overhead_above_stepping(15.0, 10.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no steps"):
        st.microseconds_per_step(1.0, 0)
    with pytest.raises(ValueError, match="bare stepping"):
        e2e.overhead_above_stepping(1.0, 0.0)


def test_the_speed_up_is_the_median_of_per_round_ratios() -> None:
    # Ratios 2, 3, 1: median 2; the ratio of the medians would be 4 / 3.
    assert st.median_ratio([2.0, 9.0, 4.0], [1.0, 3.0, 4.0]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        st.median_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="no rounds"):
        st.median_ratio([], [])


def test_summary_of_the_rounds() -> None:
    rounds = [
        {"ours": timing(1.0, 0.6, 0.3), "sb3-contrib": timing(2.0, 1.0, 1.0), "ppo": timing(4.0, 1.0, 2.9)},
        {"ours": timing(0.5, 0.3, 0.2), "sb3-contrib": timing(2.5, 1.5, 1.0), "ppo": timing(5.0, 1.0, 4.0)},
        {"ours": timing(2.0, 1.5, 0.5), "sb3-contrib": timing(3.0, 1.5, 1.5), "ppo": timing(4.5, 1.0, 3.5)},
    ]
    stepping = [e2e.SteppingTiming(0.1, 1000), e2e.SteppingTiming(0.2, 1000), e2e.SteppingTiming(0.5, 1000)]
    summary = e2e.summarize_end_to_end(rounds, stepping)
    ours = summary["implementations"]["ours"]
    assert ours["steps_per_s"] == pytest.approx(1000.0)  # median of 1000, 2000, 500
    # Shares of the times summed over rounds (3.5 s): they add up to 1, the rest included.
    assert ours["rollout_share"] == pytest.approx(2.4 / 3.5)
    assert ours["update_share"] == pytest.approx(1.0 / 3.5)
    assert ours["rest_share"] == pytest.approx(0.1 / 3.5)
    assert ours["rollout_us_per_step"] == pytest.approx(600.0)  # median of 600, 300, 1500
    # Per-round overheads against the same round's stepping (100, 200, 500 µs): 5, 0.5, 2.
    assert ours["overhead"] == pytest.approx(2.0)
    assert summary["bare_us_per_step"] == pytest.approx(200.0)
    # Per-round ratios ours / contrib: 2, 5, 1.5.
    assert summary["speed_up"] == pytest.approx(2.0)
    assert (summary["speed_up_min"], summary["speed_up_max"]) == pytest.approx((1.5, 5.0))
    assert summary["implementations"]["ppo"]["update_share"] == pytest.approx(10.4 / 13.5)
    assert summary["rounds"] == 3
    with pytest.raises(ValueError, match="one bare stepping per round"):
        e2e.summarize_end_to_end(rounds, stepping[:2])


def test_budgets_from_the_command_line() -> None:
    defaults = {"cartpole": 4096, "hopper": 6144}
    assert e2e.parse_timesteps([], defaults) == defaults
    assert e2e.parse_timesteps(["hopper=2048"], defaults) == {"cartpole": 4096, "hopper": 2048}
    for item in ("walker=1000", "cartpole", "cartpole=0", "cartpole=1e3", "cartpole=-5"):
        with pytest.raises(ValueError):
            e2e.parse_timesteps([item], defaults)


def test_ppo_shares_the_rollout_settings_only() -> None:
    pendulum = {"n_steps": 1024, "gamma": 0.9, "n_critic_updates": 15, "use_sde": True, "sde_sample_freq": 4}
    assert e2e.ppo_kwargs(pendulum) == {"n_steps": 1024, "use_sde": True, "sde_sample_freq": 4}
    assert e2e.ppo_kwargs({"n_steps": 512, "batch_size": 512, "cg_damping": 1e-3}) == {"n_steps": 512}


def test_mujoco_presets_are_rl_zoo3s_tuned_settings() -> None:
    for name in ("hopper", "halfcheetah"):
        env_id = e2e.E2E_CONFIGS[name].env_id
        if env_id not in gymnasium.envs.registry:
            pytest.skip(f"the installed gymnasium has no {env_id} (MuJoCo's -v5 tasks came with gymnasium 1.0)")
        preset = e2e.load_preset("trpo", env_id)
        assert (preset.n_envs, preset.normalize) == (2, True)
        kwargs = preset.kwargs
        assert (kwargs["batch_size"], kwargs["n_steps"], kwargs["cg_max_steps"]) == (128, 1024, 25)
        assert (kwargs["cg_damping"], kwargs["n_critic_updates"], kwargs["learning_rate"](1.0)) == (0.1, 20, 1e-3)
        assert kwargs.get("target_kl") == (0.04 if name == "halfcheetah" else None)


class FakeModel:
    """Stands in for an algorithm: the two methods the benchmark times."""

    def collect_rollouts(self, steps: int) -> bool:
        return steps > 0

    def train(self) -> None:
        pass


def test_instrumentation_times_the_instance_and_leaves_the_class_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = itertools.count(start=0.0, step=0.5)  # every reading of the clock is 0.5 s after the previous one
    monkeypatch.setattr(st.time, "perf_counter", lambda: next(clock))
    methods = (FakeModel.collect_rollouts, FakeModel.train)
    model = FakeModel()
    totals = st.instrument(model)
    assert model.collect_rollouts(3) is True  # the wrapped methods return what the methods return
    assert model.collect_rollouts(0) is False
    model.train()
    assert totals == {"rollout": 1.0, "update": 0.5}
    assert (FakeModel.collect_rollouts, FakeModel.train) == methods and not vars(FakeModel())
    assert set(vars(model)) == {"collect_rollouts", "train"}
    assert model.collect_rollouts.__name__ == "collect_rollouts"  # functools.wraps


def test_synthetic_envs_give_standard_normal_rewards_and_200_step_episodes() -> None:
    observation_space = spaces.Box(-1, 1, (17,), np.float32)
    venv = speed_train.synthetic(observation_space, spaces.Box(-1, 1, (6,), np.float32), n_envs=2)()
    venv.seed(3)
    first = venv.reset()
    assert first.shape == (2, 17) and observation_space.contains(first[0])
    rewards, dones = [], []
    for _ in range(200):
        _, reward, done, _ = venv.step(np.zeros((2, 6), np.float32))
        rewards.append(reward)
        dones.append(done)
    rewards_array, dones_array = np.array(rewards), np.array(dones)
    # gymnasium seeds np_random as NumPy's default_rng(seed); the envs get seeds 3 and 4.
    np.testing.assert_allclose(rewards_array[:, 0], np.random.default_rng(3).normal(size=200), rtol=1e-6)
    np.testing.assert_allclose(rewards_array[:, 1], np.random.default_rng(4).normal(size=200), rtol=1e-6)
    assert not dones_array[:-1].any() and dones_array[-1].all()


def test_variant_comparison_rotates_the_implementations_and_takes_medians_of_per_round_ratios(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    walls = {"lean": [1.0, 2.0, 1.0], "peer_loop": [2.0, 3.0, 3.0], "peer": [4.0, 4.0, 2.5]}
    calls: list[tuple[str, int, int]] = []
    comparison = speed_variants.VARIANTS["masked"]

    def fake_learn(given: Any, implementation: str, seed: int, timesteps: int) -> Any:
        assert given is comparison
        calls.append((implementation, seed, timesteps))
        if timesteps == 1:  # the warm-up round: one update each
            return timing(1.0, 0.5, 0.5, steps=1024)
        wall = walls[implementation][seed]
        return timing(wall, wall / 2, wall / 2, steps=timesteps)

    monkeypatch.setattr(speed_variants, "time_variant_learn", fake_learn)
    result = speed_variants.time_variant(comparison, rounds=3, timesteps=4096)
    timed = [(name, seed) for name, seed, steps in calls if steps == 4096]
    assert timed == [(name, r) for r in range(3) for name in st.rotated(speed_variants.VARIANT_IMPLEMENTATIONS, r)]
    rows = result["implementations"]
    # Per-round ratios peer_loop / lean: 2, 1.5, 3 -> 2; peer / lean: 4, 2, 2.5 -> 2.5.
    assert rows["peer_loop"]["lean_speed_up"] == pytest.approx(2.0)
    assert rows["peer"]["lean_speed_up"] == pytest.approx(2.5)
    assert "lean_speed_up" not in rows["lean"]
    assert rows["lean"]["steps_per_s"] == pytest.approx(4096 / 1.0)
    assert rows["lean"]["rollout_us_per_step"] == pytest.approx(0.5 / 4096 * 1e6)
    assert rows["lean"]["rollout_share"] == pytest.approx(0.5)
    record = {"command": "python -m benchmarks.speed_variants masked", "machine": "test", "date": "today"}
    text = speed_report.variant_section({**record, "results": speed_variants.described(comparison, result)})
    assert "| MaskableTRPO, sb3-contrib's rollout loop | 1365 | 50% | 366.2 | **2.00×** |" in text
    assert "| MaskableTRPO | 4096 | 50% | 122.1 | — |" in text
    assert "| MaskablePPO (sb3-contrib) | 1024 | 50% | 488.3 | **2.50×** |" in text


@pytest.mark.parametrize("name", sorted(speed_variants.VARIANTS))
def test_variant_models_are_the_announced_implementations(name: str) -> None:
    comparison = speed_variants.VARIANTS[name]
    models = {implementation: comparison.make(implementation, 0) for implementation in speed_variants.VARIANT_IMPLEMENTATIONS}
    assert models["lean"].lean_rollout is True and models["peer_loop"].lean_rollout is False
    assert type(models["lean"]) is type(models["peer_loop"]) and type(models["peer"]).__module__.startswith("sb3_contrib")
    assert models["lean"].n_steps == models["peer"].n_steps and models["lean"].n_envs == models["peer"].n_envs
