"""The ``sb3-trpo`` command line: train, eval, plot, presets, hyperparameter overrides and its error messages."""

from __future__ import annotations

import importlib.util
import inspect
import json
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import yaml
from stable_baselines3.common.vec_env import VecNormalize

from sb3_trpo_plugin import TRPO, safe_load_vec_normalize
from sb3_trpo_plugin.cli import main
from sb3_trpo_plugin.cli.environments import make_env
from sb3_trpo_plugin.cli.evaluate import evaluate_run
from sb3_trpo_plugin.cli.hyperparams import known_keys, parse_hyperparams, parse_value
from sb3_trpo_plugin.cli.presets import DEFAULT_PRESET, PACKAGE_TUNED, PRESETS, ZOO_MUJOCO_BLOCK, ZOO_TUNED, get_preset
from sb3_trpo_plugin.cli.run_folder import RunFolder
from sb3_trpo_plugin.serialization.vec_normalize_statistics import statistics_path

REPO = Path(__file__).resolve().parents[1]
# A tiny budget: 2 envs x 64 steps per update, 2 updates; few critic epochs.
TINY = ["--n-timesteps", "256", "--hyperparams", "n_steps=64", "batch_size=64", "n_critic_updates=2", "--no-progress-bar"]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``sb3-trpo`` in-process: exit status, stdout, stderr."""
    try:
        status = main(list(argv))
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    assert status == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (
            "train",
            ["--env", "--n-timesteps", "--seed", "--n-envs", "--log-folder", "--hyperparams", "--eval-freq", "--save-freq"],
        ),
        ("eval", ["--log-folder", "--episodes", "--render", "--best"]),
        ("plot", ["DIR", "--output", "--window"]),
        ("export", ["RUN_OR_MODEL", "--onnx", "--best", "--vecnormalize", "--no-vecnormalize", "--stochastic", "--opset"]),
    ],
)
def test_help_explains_every_option(capsys: pytest.CaptureFixture[str], command: str, options: list[str]) -> None:
    status, out, _ = run_cli(capsys, command, "--help")
    assert status == 0
    for option in options:
        assert option in out
    if command == "train":
        assert "CartPole-v1" in out and "Hopper-v5" in out and "LunarLander-v3" in out  # the presets are listed


def test_unknown_env_is_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = run_cli(capsys, "train", "--env", "CartPol-v1", "--log-folder", str(tmp_path / "run"))
    assert_one_line_error(status, err, "unknown environment 'CartPol-v1'", "did you mean 'CartPole-v1'?")
    assert not (tmp_path / "run").exists()


def test_unknown_hyperparameter_is_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = run_cli(capsys, "train", "--env", "CartPole-v1", "--hyperparams", "target_k=0.02")
    assert_one_line_error(status, err, "unknown hyperparameter 'target_k'", "did you mean 'target_kl'?")
    status, _, err = run_cli(capsys, "train", "--env", "CartPole-v1", "--hyperparams", "target_kl")
    assert_one_line_error(status, err, "'target_kl' is not of the form key=value")
    status, _, err = run_cli(capsys, "train", "--env", "CartPole-v1", "--hyperparams", "n_envs=4")
    assert_one_line_error(status, err, "n_envs is not a hyperparameter here: use the option --n-envs")


def test_invalid_hyperparameter_value_is_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["train", "--env", "CartPole-v1", "--log-folder", str(tmp_path), "--hyperparams", "target_kl=-1"]
    status, _, err = run_cli(capsys, *argv)
    assert_one_line_error(status, err, "target_kl must be > 0 (or a schedule), got -1")
    assert not RunFolder(tmp_path).config.exists()


def test_module_entry_point_reports_errors_without_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sb3_trpo_plugin", "train", "--env", "NoSuchEnv-v0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "sb3-trpo train: error: unknown environment 'NoSuchEnv-v0'"


def test_parse_hyperparams() -> None:
    assert parse_value("0.02") == 0.02
    assert parse_value("True") is True
    assert parse_value("[64, 64]") == [64, 64]
    assert parse_value("kl_hessian") == "kl_hessian"
    from torch import nn

    assert parse_value("dict(net_arch=[32], activation_fn=nn.ReLU)") == {"net_arch": [32], "activation_fn": nn.ReLU}
    assert parse_hyperparams(["n_steps=64", "normalize=True", "policy=MlpPolicy"]) == {
        "n_steps": 64,
        "normalize": True,
        "policy": "MlpPolicy",
    }
    assert "fisher_product" in known_keys() and "cg_residual_tol" in known_keys()
    assert "seed" not in known_keys()  # it has its own option


def test_presets_are_valid_trpo_arguments() -> None:
    constructor = set(inspect.signature(TRPO.__init__).parameters)
    for env_id, preset in PRESETS.items():
        assert set(preset.hyperparams) <= constructor, env_id
        assert preset.n_timesteps > 0 and preset.n_envs >= 1 and preset.policy == "MlpPolicy"
    assert get_preset("CartPole-v1").hyperparams["n_steps"] == 512
    assert get_preset("SomethingElse-v0") is DEFAULT_PRESET


def test_presets_match_rl_zoo3_trpo_file() -> None:
    # Found without importing rl-zoo3, whose import patches Gymnasium's TimeLimit for the whole process.
    spec = importlib.util.find_spec("rl_zoo3")
    assert spec is not None and spec.submodule_search_locations is not None
    zoo = yaml.safe_load((Path(spec.submodule_search_locations[0]) / "hyperparams" / "trpo.yml").read_text())
    compared = 0
    for env_id, preset in PRESETS.items():
        if preset.source == PACKAGE_TUNED:  # this package's own values: tests/test_v5_presets.py
            continue
        zoo_env_id = env_id.replace("-v5", "-v4") if env_id.endswith("-v5") and env_id.replace("-v5", "-v4") in zoo else env_id
        if env_id.startswith("LunarLander") and zoo_env_id not in zoo:  # rl-zoo3 2.3's file: gymnasium 0.29's -v2
            zoo_env_id = env_id.replace("-v3", "-v2")
        if zoo_env_id not in zoo:
            # Gymnasium's MuJoCo tasks that the file lacks: its MuJoCo block, as Hopper-v4's, said to be untuned.
            assert preset.source == ZOO_MUJOCO_BLOCK, env_id
            assert replace(preset, source=ZOO_TUNED) == PRESETS["Hopper-v4"], env_id
            continue
        entry = dict(zoo[zoo_env_id])
        assert preset.n_timesteps == entry.pop("n_timesteps"), env_id
        assert preset.n_envs == entry.pop("n_envs", 1), env_id
        assert preset.policy == entry.pop("policy"), env_id
        assert preset.normalize == entry.pop("normalize", False), env_id
        assert dict(preset.hyperparams) == entry, env_id
        compared += 1
    # All but the 5 unlisted MuJoCo tasks (v4 and v5) and the package's own presets come from rl-zoo3's file.
    package_tuned = sum(preset.source == PACKAGE_TUNED for preset in PRESETS.values())
    assert package_tuned == 2 and compared == len(PRESETS) - 2 * 5 - package_tuned


def test_train_eval_plot_round_trip(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = RunFolder(tmp_path / "cartpole")
    argv = ["train", "--env", "CartPole-v1", "--seed", "3", "--log-folder", str(run.path), *TINY]
    status, out, err = run_cli(capsys, *argv, "--eval-freq", "128", "--save-freq", "128", "--eval-episodes", "1")
    assert status == 0, err
    assert f"Model saved to {run.model}" in out

    config = run.read_config()
    assert (config["algo"], config["env"], config["seed"], config["n_envs"], config["n_timesteps"]) == (
        "TRPO",
        "CartPole-v1",
        3,
        2,
        256,
    )
    # The preset's values, with the overrides on top.
    assert config["env_kwargs"] == {}  # no keywords of gym.make in this preset
    assert config["hyperparams"] == {
        **PRESETS["CartPole-v1"].hyperparams,
        "n_steps": 64,
        "batch_size": 64,
        "n_critic_updates": 2,
    }
    model = TRPO.load(run.model)
    assert (model.n_steps, model.batch_size, model.n_critic_updates, model.num_timesteps) == (64, 64, 2, 256)
    assert run.best_model.exists() and not run.vecnormalize.exists()
    assert sorted(path.name for path in run.checkpoints.iterdir()) == ["model_128_steps.zip", "model_256_steps.zip"]
    assert np.load(run.evaluations)["timesteps"].tolist() == [128, 256]
    assert sorted(path.name for path in run.monitor.iterdir()) == ["0.monitor.csv", "1.monitor.csv"]
    assert list(run.tensorboard.glob("TRPO_1/events.out.tfevents.*"))

    status, out, _ = run_cli(capsys, "eval", "--log-folder", str(run.path), "--episodes", "2")
    assert status == 0
    mean_return = float(out.split("mean return over 2 episodes: ")[1].split(" ±")[0])
    assert 5 <= mean_return <= 500  # CartPole's episodes: about 8 steps at the shortest, 500 at the longest
    assert evaluate_run(run, episodes=2) == evaluate_run(run, episodes=2)  # evaluation episodes are seeded
    if importlib.util.find_spec("pygame") is not None:  # CartPole's window needs pygame; SDL's dummy driver needs no screen
        monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
        assert evaluate_run(run, episodes=1, render=True) == evaluate_run(run, episodes=1)  # rendering changes nothing

    status, out, _ = run_cli(capsys, "plot", str(tmp_path), "-o", str(tmp_path / "curves.png"))
    assert status == 0 and "1 run drawn" in out
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A second run into the same folder is refused rather than mixed with the first.
    status, _, err = run_cli(capsys, *argv)
    assert_one_line_error(status, err, "already holds a run")


def test_train_with_vecnormalize_preset_saves_and_uses_statistics(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # MountainCarContinuous-v0's preset: VecNormalize and gSDE.
    run = RunFolder(tmp_path / "mcc")
    argv = ["train", "--env", "MountainCarContinuous-v0", "--log-folder", str(run.path), *TINY, "--eval-freq", "128"]
    status, _, err = run_cli(capsys, *argv, "--save-freq", "0", "--eval-episodes", "1")
    assert status == 0, err
    config = run.read_config()
    assert config["normalize"] is True and config["hyperparams"]["use_sde"] is True
    assert run.vecnormalize.exists() and run.best_vecnormalize.exists()
    assert not run.checkpoints.exists()
    with run.vecnormalize.open("rb") as file:
        statistics = pickle.load(file)  # what VecNormalize.load reads, before attaching an environment
    assert isinstance(statistics, VecNormalize)
    assert statistics.obs_rms.count > 256  # updated on every training step
    assert statistics.gamma == 0.99  # rewards normalised with TRPO's discount
    for pickled in (run.vecnormalize, run.best_vecnormalize):  # the same statistics, pickle-free, next to each
        pickle_free = safe_load_vec_normalize(statistics_path(pickled), make_env("MountainCarContinuous-v0", 1, 0))
        reference = VecNormalize.load(str(pickled), make_env("MountainCarContinuous-v0", 1, 0))
        np.testing.assert_array_equal(pickle_free.obs_rms.mean, reference.obs_rms.mean)
        assert pickle_free.obs_rms.count == reference.obs_rms.count and pickle_free.ret_rms.var == reference.ret_rms.var

    status, out, _ = run_cli(capsys, "eval", "--log-folder", str(run.path), "--episodes", "1", "--best")
    assert status == 0 and "best model" in out
    expected = evaluate_run(run, episodes=1)

    # eval unpickles nothing: it reads the pickle-free statistics, and the model through safe_load (not SB3's loader).
    run.vecnormalize.unlink()
    run.best_vecnormalize.unlink()
    with mock.patch("stable_baselines3.common.base_class.load_from_zip_file", side_effect=AssertionError("SB3's loader")):
        assert evaluate_run(run, episodes=1) == expected
        status, out, _ = run_cli(capsys, "eval", "--log-folder", str(run.path), "--episodes", "1", "--best")
    assert status == 0 and "best model" in out


class CrashDuringSave(BaseException):
    """Stands for the process dying during a save: a ``BaseException``, so that nothing on the way catches it."""


def test_crash_during_a_checkpoint_leaves_no_file_under_a_checkpoint_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first checkpoint (128 steps) dies while its VecNormalize statistics are being serialised. SB3's
    # CheckpointCallback would leave model_128_steps.zip, saved first, beside an empty model_vecnormalize_128_steps.pkl
    # (opened under its final name before the bytes are ready); the crash-safe one leaves nothing under either name.
    def crash(self: VecNormalize) -> dict[str, Any]:
        raise CrashDuringSave

    monkeypatch.setattr(VecNormalize, "__getstate__", crash)
    run = RunFolder(tmp_path / "mcc")
    argv = ["train", "--env", "MountainCarContinuous-v0", "--log-folder", str(run.path), *TINY, "--eval-freq", "0"]
    with pytest.raises(CrashDuringSave):
        run_cli(capsys, *argv, "--save-freq", "128")
    assert run.checkpoints.is_dir()
    assert [path.name for path in run.checkpoints.iterdir() if not path.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("env_id", "simulator"),
    [("Pendulum-v1", None), ("LunarLanderContinuous-v3", "Box2D"), ("Hopper-v5", "mujoco")],
)
def test_presets_of_each_family_train(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, env_id: str, simulator: str | None
) -> None:
    if simulator is not None:
        pytest.importorskip(simulator)
    run = RunFolder(tmp_path / env_id)
    argv = ["train", "--env", env_id, "--log-folder", str(run.path), *TINY, "--eval-freq", "0", "--save-freq", "0"]
    status, _, err = run_cli(capsys, *argv)
    assert status == 0, err
    preset = PRESETS[env_id]
    model = TRPO.load(run.model)
    assert model.n_envs == preset.n_envs and model.num_timesteps == 256
    assert model.gamma == preset.hyperparams.get("gamma", 0.99)
    assert run.vecnormalize.exists() == preset.normalize
    assert not run.evaluations.exists() and not run.checkpoints.exists()  # both turned off


def test_eval_and_plot_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = run_cli(capsys, "eval", "--log-folder", str(tmp_path))
    assert_one_line_error(status, err, "holds no sb3-trpo run")
    status, _, err = run_cli(capsys, "plot", str(tmp_path))
    assert_one_line_error(status, err, "no monitor files")
    (tmp_path / "run.json").write_text(json.dumps({"algo": "TRPO", "env": "CartPole-v1", "seed": 0, "normalize": False}))
    status, _, err = run_cli(capsys, "eval", "--log-folder", str(tmp_path), "--best")
    assert_one_line_error(status, err, "best_model.zip does not exist")


@pytest.mark.slow
def test_cartpole_preset_learns(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # The whole route with the bundled preset (rl-zoo3's tuned values, 1e5 steps): about a minute or two on 2 cores.
    run = RunFolder(tmp_path / "cartpole")
    status, _, err = run_cli(capsys, "train", "--env", "CartPole-v1", "--log-folder", str(run.path), "--no-progress-bar")
    assert status == 0, err
    mean_return, _ = evaluate_run(run, episodes=10)
    assert mean_return >= 450  # the maximum is 500
    best_evaluation = np.load(run.evaluations)["results"].mean(axis=1).max()
    assert best_evaluation >= 450
