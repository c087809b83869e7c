"""
The ``-v5`` MuJoCo presets: ``sb3-trpo train``'s (``cli/presets.py``) and the entries the zoo route gives rl-zoo3
(rl-zoo3's ``-v4`` entries, and this package's tuned ones of ``zoo/trpo_v5.yml``) hold the same settings, each route
trains with them and the observation they were tuned with.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import gymnasium
import pytest

from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.cli import main as cli_main
from sb3_trpo_plugin.cli.evaluate import evaluate_run
from sb3_trpo_plugin.cli.presets import PACKAGE_TUNED, PRESETS
from sb3_trpo_plugin.cli.run_folder import RunFolder
from sb3_trpo_plugin.zoo import (
    V5_HYPERPARAMS_MODULE,
    v5_entries,
    v5_hyperparams,
    with_default_hyperparams,
    zoo_hyperparameter_file,
)

REPO = Path(__file__).resolve().parents[1]
ANT_V4_OBSERVATION = {"include_cfrc_ext_in_observation": False}
TRPO_DEFAULT_TARGET_KL = inspect.signature(TRPO.__init__).parameters["target_kl"].default


def preprocessed(entry: dict[str, Any], env_id: str) -> tuple[dict[str, Any], int, bool]:
    """rl-zoo3's ``ExperimentManager`` preprocessing of a file entry: the model's keywords, ``n_envs``, ``normalize``."""
    from rl_zoo3.exp_manager import ExperimentManager

    with contextlib.redirect_stdout(io.StringIO()), tempfile.TemporaryDirectory() as tmp:
        manager = ExperimentManager(argparse.Namespace(), "trpo", env_id, tmp, verbose=0)
        kwargs, _, _, _ = manager._preprocess_hyperparams(dict(entry))
    return kwargs, manager.n_envs, bool(manager.normalize)


def run_zoo(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m sb3_trpo_plugin.zoo *argv`` in ``cwd``, its output captured."""
    command = [sys.executable, "-m", "sb3_trpo_plugin.zoo", *argv]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_the_package_file_lists_exactly_the_package_tuned_presets() -> None:
    tuned = {env_id for env_id, preset in PRESETS.items() if preset.source == PACKAGE_TUNED}
    assert tuned == set(v5_entries()) == {"Ant-v5", "Swimmer-v5"}
    assert PRESETS["Ant-v4"].source != PACKAGE_TUNED  # rl-zoo3's tuned values stay rl-zoo3's on -v4


#: The -v5 MuJoCo tasks of rl-zoo3's trpo.yml (as -v4) and of this package's presets.
ZOO_V5_IDS = ["Ant-v5", "HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Humanoid-v5", "Swimmer-v5"]


def test_the_zoo_route_gives_v5_ids_rl_zoo3s_v4_entries_unless_the_package_has_its_own() -> None:
    import yaml

    zoo = yaml.safe_load(zoo_hyperparameter_file().read_text())
    entries = v5_hyperparams()
    assert sorted(entries) == sorted(ZOO_V5_IDS)
    for env_id in ZOO_V5_IDS:
        expected = v5_entries()[env_id] if env_id in v5_entries() else zoo[env_id.replace("-v5", "-v4")]
        assert entries[env_id] == expected, env_id
    assert entries["Swimmer-v5"]["gamma"] == 0.9999 and entries["HalfCheetah-v5"]["target_kl"] == 0.04
    # The package's Swimmer-v5 entry: rl-zoo3's Swimmer-v4 values with one knob changed, the escape screen's.
    assert {key: value for key, value in entries["Swimmer-v5"].items() if key != "gae_lambda"} == {
        key: value for key, value in zoo["Swimmer-v4"].items() if key != "gae_lambda"
    }
    assert (zoo["Swimmer-v4"]["gae_lambda"], entries["Swimmer-v5"]["gae_lambda"]) == (0.95, 0.99)


@pytest.mark.parametrize("env_id", ZOO_V5_IDS)
def test_both_routes_hold_the_same_settings(env_id: str, gymnasium_restored: list) -> None:
    preset = PRESETS[env_id]
    entry = dict(v5_hyperparams()[env_id])
    assert entry.pop("env_kwargs", {}) == dict(preset.env_kwargs)
    # What the zoo route passes as --conf-file: the file's entry without its env_kwargs (given as --env-kwargs).
    passed = importlib.import_module(V5_HYPERPARAMS_MODULE).hyperparams[env_id]
    assert passed == entry
    assert (int(entry["n_timesteps"]), entry["policy"]) == (preset.n_timesteps, preset.policy)
    if env_id not in gymnasium.envs.registry:  # rl-zoo3 looks the id up before it reads the entry
        pytest.skip(f"the installed gymnasium has no {env_id} (MuJoCo's -v5 tasks came with gymnasium 1.0)")
    # Every key left is the algorithm's (rl-zoo3 before 2.8 hands a file's env_kwargs to it too).
    kwargs, n_envs, normalize = preprocessed(passed, env_id)
    assert kwargs.pop("policy") == preset.policy
    assert (n_envs, normalize) == (preset.n_envs, preset.normalize)
    # rl-zoo3 wraps a constant learning rate in a schedule (SB3 ≥ 2.7: ConstantSchedule; before: constant_fn's closure).
    learning_rate = kwargs.pop("learning_rate")
    assert learning_rate(1.0) == learning_rate(0.0) == preset.hyperparams["learning_rate"]
    assert kwargs == {key: value for key, value in preset.hyperparams.items() if key != "learning_rate"}


def test_zoo_route_reads_the_package_file_for_its_ids() -> None:
    ant = ["--algo", "trpo", "--env", "Ant-v5", "-n", "1000"]
    assert with_default_hyperparams(ant) == [
        *ant,
        *("--conf-file", V5_HYPERPARAMS_MODULE),
        *("--env-kwargs", "include_cfrc_ext_in_observation:False"),
    ]
    # The user's own file or observation win; other ids and algorithms keep rl-zoo3's file.
    assert with_default_hyperparams([*ant, "-conf", "mine.yml"]) == [*ant, "-conf", "mine.yml"]
    own_observation = [*ant, "--env-kwargs", "include_cfrc_ext_in_observation:True"]
    assert with_default_hyperparams(own_observation) == [*own_observation, "--conf-file", V5_HYPERPARAMS_MODULE]
    # rl-zoo3's file has no -v5 entries (it would train them with its untuned 'default'): the route gives the -v4 ones.
    hopper = ["--algo", "trpo", "--env", "Hopper-v5"]
    assert with_default_hyperparams(hopper) == [*hopper, "--conf-file", V5_HYPERPARAMS_MODULE]
    for other in (
        ["--algo", "trpo", "--env", "Ant-v4"],
        ["--algo", "trpo", "--env", "CartPole-v1"],
        ["--algo", "ppo", "--env", "Ant-v5"],
    ):
        assert with_default_hyperparams(other) == other


def saved_attributes(model_zip: Path) -> dict[str, Any]:
    """The attributes an SB3 zip file stores in its ``data`` entry (JSON)."""
    with zipfile.ZipFile(model_zip) as archive:
        return json.loads(archive.read("data"))


def test_zoo_route_trains_and_evaluates_ant_v5_with_its_observation(tmp_path: Path) -> None:
    pytest.importorskip("mujoco")
    # Evaluations during training: rl-zoo3 2.9 would build the evaluation env with v5's default observation (105
    # entries) from a file's env_kwargs, and fail on the model's 27.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    argv = ["train", "--algo", "trpo", "--env", "Ant-v5", "-f", "logs", "-n", "1024", "--seed", "3"]
    argv += ["--eval-freq", "256", "--eval-episodes", "1", "--hyperparams", "n_steps:256", "n_critic_updates:1"]
    train = run_zoo(argv, tmp_path, env)
    assert train.returncode == 0, train.stderr[-3000:]
    run = tmp_path / "logs" / "trpo" / "Ant-v5_1"
    attributes = saved_attributes(run / "Ant-v5.zip")
    assert "cg_residual_tol" in attributes  # this package's TRPO
    model = TRPO.load(run / "Ant-v5.zip", device="cpu")
    assert model.observation_space.shape == (27,)
    assert (run / "evaluations.npz").exists()
    # enjoy reads the observation from the run's saved arguments.
    enjoy_argv = ["enjoy", "--algo", "trpo", "--env", "Ant-v5", "-f", "logs", "--exp-id", "1", "--no-render", "-n", "50"]
    enjoy = run_zoo(enjoy_argv, tmp_path, env)
    assert enjoy.returncode == 0, enjoy.stderr[-3000:]
    expected = {**PRESETS["Ant-v5"].hyperparams, "n_steps": 256, "n_critic_updates": 1}
    for key in ("gamma", "gae_lambda", "target_kl", "learning_rate", "batch_size", "n_steps", "n_critic_updates"):
        if key in expected:
            assert getattr(getattr(model, key), "val", getattr(model, key)) == pytest.approx(expected[key]), key


def test_sb3_trpo_train_and_eval_ant_v5_with_its_observation(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("mujoco")
    run = RunFolder(tmp_path / "ant")
    argv = ["train", "--env", "Ant-v5", "--log-folder", str(run.path), "--n-timesteps", "512", "--no-progress-bar"]
    argv += [
        "--hyperparams",
        "n_steps=128",
        "n_critic_updates=1",
        "--eval-freq",
        "256",
        "--eval-episodes",
        "1",
        "--save-freq",
        "0",
    ]
    assert cli_main(argv) == 0, capsys.readouterr().err
    config = json.loads(run.config.read_text())
    assert config["env_kwargs"] == ANT_V4_OBSERVATION and config["preset_source"] == PACKAGE_TUNED
    model = TRPO.load(run.model, device="cpu")
    assert model.observation_space.shape == (27,) and model.n_envs == PRESETS["Ant-v5"].n_envs
    assert run.vecnormalize.exists()
    mean_return, _ = evaluate_run(run, episodes=1)
    assert mean_return == evaluate_run(run, episodes=1)[0]  # same seeded episode, same observation


def test_ant_v5_preset_values_are_the_searchs_best_trial() -> None:
    preset = PRESETS["Ant-v5"]
    assert (preset.n_timesteps, preset.n_envs, preset.policy, preset.normalize) == (1_000_000, 2, "MlpPolicy", True)
    assert dict(preset.env_kwargs) == ANT_V4_OBSERVATION
    assert dict(preset.hyperparams) == dict(
        batch_size=128,
        n_steps=1024,
        gamma=0.99,
        gae_lambda=0.95,
        sub_sampling_factor=1,
        cg_max_steps=25,
        cg_damping=0.1,
        n_critic_updates=20,
        learning_rate=1e-3,
    )
    # The search's record: its best finished trial drew these values (target_kl and the network at TRPO's defaults).
    trials = json.loads((REPO / "benchmarks" / "results" / "presets" / "Ant-v5" / "trials.json").read_text())["trials"]
    best = max((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: t["value"])
    drawn = dict(best["params"])
    assert drawn.pop("net_arch") == "small" and drawn.pop("target_kl") == TRPO_DEFAULT_TARGET_KL
    assert drawn == {key: preset.hyperparams[key] for key in drawn}


def test_swimmer_v5_preset_is_the_escape_screens_candidate_confirmed_at_1m() -> None:
    """The preset's one change is the screen's best (the rule of docs/benchmarks.md), and its 1M runs reached 357."""
    from benchmarks import screen_v5

    screen = screen_v5.SCREENS["Swimmer-v5"]
    rows = {row["change"]: row for row in screen_v5.screen_table(screen, screen.results)}
    best = max(rows.values(), key=lambda row: (row["counted"], row["mean"]))
    assert best["change"] == "gae_lambda_0.99" and best["runs"] == len(screen.seeds)
    assert best["counted"] >= 7 and best["counted"] > rows["zoo"]["counted"]
    preset = PRESETS["Swimmer-v5"]
    assert screen.changes[best["change"]].kwargs == {"gae_lambda": preset.hyperparams["gae_lambda"]}
    confirmation = REPO / "benchmarks" / "results" / "mujoco_1m" / "Swimmer-v5" / "trpo_preset"
    runs = [json.loads(path.read_text()) for path in sorted(confirmation.glob("seed*.json"))]
    assert sorted(run["seed"] for run in runs) == list(range(200, 210))  # seeds the screen did not use
    assert all(run["hyperparams"]["gae_lambda"] == "0.99" and run["total_timesteps"] == 1_000_000 for run in runs)
    assert sum(run["final_return"] for run in runs) / len(runs) >= 357  # the published 359 ± 2
