"""The many-seed preset screens (``benchmarks/screen_v5.py``): what each change trains with, the runs' order, the table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from benchmarks import screen_v5
from benchmarks.learning_setup import Preset

ZOO_SWIMMER = Preset(
    policy="MlpPolicy",
    kwargs={"n_steps": 1024, "batch_size": 128, "gamma": 0.9999, "gae_lambda": 0.95},
    n_envs=2,
    n_timesteps=1_000_000,
    normalize=True,
    normalize_kwargs={"gamma": 0.9999},
    raw={"n_envs": 2, "n_steps": 1024, "gamma": 0.9999},
)
SWIMMER = screen_v5.SCREENS["Swimmer-v5"]


def test_each_change_replaces_its_knob_and_keeps_the_others() -> None:
    eight_envs = SWIMMER.changes["8_envs"].apply(ZOO_SWIMMER)
    assert (eight_envs.n_envs, eight_envs.kwargs["n_steps"]) == (8, 256)  # the same 2048 steps per update
    assert eight_envs.kwargs["gamma"] == 0.9999 and eight_envs.normalize_kwargs == {"gamma": 0.9999}
    assert eight_envs.raw["n_envs"] == 8 and eight_envs.raw["n_steps"] == 256  # the record says what ran

    gamma = SWIMMER.changes["gamma_0.999"].apply(ZOO_SWIMMER)
    assert gamma.kwargs["gamma"] == gamma.normalize_kwargs["gamma"] == 0.999  # VecNormalize's discount follows

    no_reward_norm = SWIMMER.changes["no_reward_norm"].apply(ZOO_SWIMMER)
    assert no_reward_norm.normalize_kwargs == {"gamma": 0.9999, "norm_reward": False} and no_reward_norm.normalize

    wide_start = SWIMMER.changes["log_std_init_0.5"].apply(
        dataclasses.replace(ZOO_SWIMMER, kwargs=ZOO_SWIMMER.kwargs | {"policy_kwargs": {"ortho_init": True}})
    )
    assert wide_start.kwargs["policy_kwargs"] == {"ortho_init": True, "log_std_init": 0.5}  # merged, not replaced
    assert SWIMMER.changes["zoo"].apply(ZOO_SWIMMER) == ZOO_SWIMMER
    assert ZOO_SWIMMER.kwargs["n_steps"] == 1024 and ZOO_SWIMMER.n_envs == 2  # the reference is not mutated


def test_the_screens_seeds_are_none_the_campaign_or_the_searches_used() -> None:
    used = set(range(10)) | set(range(100, 105)) | set(range(200, 240)) | {1000}  # 210-239: Hopper's confirmations
    for screen in screen_v5.SCREENS.values():
        assert not used & set(screen.seeds) and "zoo" in screen.changes, screen.env_id
    assert len(SWIMMER.seeds) == 8 and SWIMMER.timesteps == 200_000
    assert screen_v5.SCREENS["Hopper-v5"].timesteps == 1_000_000  # Hopper's runs fall late
    assert "zoo" in SWIMMER.changes and SWIMMER.changes["zoo"] == screen_v5.Change(SWIMMER.changes["zoo"].why)


def write_result(results: Path, change: str, seed: int, final: float) -> None:
    folder = results / "Swimmer-v5" / change
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"seed{seed}.json").write_text(json.dumps({"seed": seed, "final_return": final}))


def test_the_runs_go_seed_by_seed_across_the_changes_and_skip_finished_ones(tmp_path: Path) -> None:
    write_result(tmp_path, "zoo", 300, 350.0)
    jobs = screen_v5.screen_jobs(SWIMMER, ["zoo", "8_envs"], [300, 301], tmp_path)
    assert jobs == [("8_envs", 300), ("zoo", 301), ("8_envs", 301)]


def test_the_table_counts_the_runs_that_escaped(tmp_path: Path) -> None:
    for seed, final in zip((300, 301, 302), (355.0, 120.0, 250.0), strict=True):
        write_result(tmp_path, "zoo", seed, final)
    write_result(tmp_path, "8_envs", 301, 340.0)
    rows = screen_v5.screen_table(SWIMMER, tmp_path)
    assert [row["change"] for row in rows] == ["zoo", "8_envs"]  # the screen's order; changes without runs left out
    zoo, eight_envs = rows
    assert zoo["finals"] == {300: 355.0, 301: 120.0, 302: 250.0}
    assert zoo["mean"] == pytest.approx(725.0 / 3) and (zoo["counted"], zoo["runs"]) == (2, 3)  # 250 counts as escaped
    assert (eight_envs["counted"], eight_envs["runs"], eight_envs["mean"]) == (1, 1, 340.0)


def test_a_screen_run_trains_with_the_change_and_records_it(tmp_path: Path, gymnasium_restored: list) -> None:
    """
    A shortened run of one change, on CartPole (no simulator needed): the model and the envs are the change's, the JSON
    under the change's name.
    """
    pytest.importorskip("rl_zoo3")
    from benchmarks import learning

    captured: dict[str, object] = {}
    make_model = learning.make_model

    def recording_make_model(algo: str, preset: Preset, env: object, seed: int, logger: object) -> object:
        model = make_model(algo, preset, env, seed, logger)
        captured.update(n_envs=env.num_envs, n_steps=model.n_steps, gamma=model.gamma)  # type: ignore[attr-defined]
        return model

    # rl-zoo3's CartPole-v1 settings are 2 envs x 512 steps at gamma 0.99; the change makes them 8 x 128 at 0.95.
    change = screen_v5.Change("more envs, shorter rollouts", kwargs={"n_steps": 128, "gamma": 0.95}, n_envs=8)
    screen = screen_v5.Screen("CartPole-v1", {"more_envs": change}, seeds=(300,), timesteps=2048, threshold=0.0, counts_as="")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(learning, "make_model", recording_make_model)
        patch.setitem(screen_v5.SCREENS, "CartPole-v1", screen)
        json_path = screen_v5.run_one_change("CartPole-v1", "more_envs", 300, tmp_path)
    assert json_path == tmp_path / "CartPole-v1" / "more_envs" / "seed300.json"
    meta = json.loads(json_path.read_text())
    assert captured == {"n_envs": 8, "n_steps": 128, "gamma": 0.95}
    assert (meta["algo"], meta["n_envs"], meta["steps_done"], meta["final_episodes"]) == ("more_envs", 8, 2048, 10)
    assert meta["hyperparams"]["n_steps"] == "128" and meta["hyperparams"]["n_envs"] == "8"
