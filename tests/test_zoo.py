"""The rl-zoo3 route: ``sb3_trpo_plugin.zoo.register()`` and ``python -m sb3_trpo_plugin.zoo train|enjoy``."""

from __future__ import annotations

import csv
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import sb3_trpo_plugin
from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.zoo import main, register

REPO = Path(__file__).resolve().parents[1]
# Keys of rl-zoo3's hyperparameter files that rl-zoo3 consumes itself rather than passing to the constructor.
ZOO_OWN_KEYS = {"n_envs", "n_timesteps", "normalize", "policy", "env_wrapper", "frame_stack", "callback", "vec_env_wrapper"}


@pytest.fixture
def zoo_algos(gymnasium_restored: list) -> Iterator[dict]:
    """
    rl-zoo3's algorithm registry. Importing rl-zoo3 also swaps Gymnasium's TimeLimit for its own: both are put back
    after the test, so that the tests that share this process see Gymnasium as it was.
    """
    from rl_zoo3 import gym_patches
    from rl_zoo3.utils import ALGOS

    # rl-zoo3 patches on its first import only: patch again for tests after the first.
    for home in gymnasium_restored:
        home.TimeLimit = gym_patches.PatchedTimeLimit
    saved = dict(ALGOS)
    yield ALGOS
    ALGOS.clear()
    ALGOS.update(saved)


def zoo_hyperparams_file() -> Path:
    """rl-zoo3's trpo.yml, found without importing rl-zoo3 (whose import patches Gymnasium)."""
    spec = importlib.util.find_spec("rl_zoo3")
    assert spec is not None and spec.submodule_search_locations is not None
    return Path(spec.submodule_search_locations[0]) / "hyperparams" / "trpo.yml"


def run_zoo(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # The worktree first on the path, so that the subprocess imports this checkout of the package.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "sb3_trpo_plugin.zoo", *argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def saved_attributes(model_zip: Path) -> dict:
    """The attributes an SB3 zip file stores in its ``data`` entry (JSON)."""
    with zipfile.ZipFile(model_zip) as archive:
        return json.loads(archive.read("data"))


def test_register_replaces_sb3_contribs_trpo(zoo_algos: dict) -> None:
    import sb3_contrib
    from rl_zoo3 import enjoy, exp_manager, train

    assert zoo_algos["trpo"] is sb3_contrib.TRPO
    previous = register()
    assert previous is sb3_contrib.TRPO
    # Every rl-zoo3 module shares the one dictionary, so they all see the new entry.
    for module in (train, enjoy, exp_manager):
        assert module.ALGOS["trpo"] is sb3_trpo_plugin.TRPO
    assert zoo_algos["ppo"].__name__ == "PPO"  # nothing else changed


def test_zoo_algos_fixture_puts_gymnasium_back(zoo_algos: dict) -> None:
    import gymnasium

    assert gymnasium.wrappers.TimeLimit.__module__ == "rl_zoo3.gym_patches"  # while rl-zoo3 runs, as it expects


# sb3-contrib's optimiser holds all the policy's parameters, this TRPO's the critic's only: SB3 drops the saved
# optimiser state, with a warning written for DQN. Predictions, all that enjoy needs, are unaffected.
@pytest.mark.filterwarnings("ignore:You are probably loading a DQN model")
def test_models_saved_by_sb3_contrib_load_for_enjoy(tmp_path: Path) -> None:
    import gymnasium

    assert gymnasium.wrappers.TimeLimit.__module__.startswith("gymnasium")  # put back after the tests above
    # rl-zoo3's pretrained TRPO agents were saved by sb3-contrib; once registered, enjoy loads them with this class.
    import numpy as np
    import sb3_contrib
    from stable_baselines3.common.env_util import make_vec_env

    contrib_model = sb3_contrib.TRPO(
        "MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), n_steps=32, batch_size=64, seed=0
    )
    contrib_model.learn(64)
    contrib_model.save(tmp_path / "contrib_trpo")
    model = TRPO.load(tmp_path / "contrib_trpo")
    assert isinstance(model, TRPO) and model.fisher_product == "auto"  # attributes sb3-contrib did not save: defaults
    observations = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    np.testing.assert_array_equal(
        model.predict(observations, deterministic=True)[0], contrib_model.predict(observations, deterministic=True)[0]
    )


def test_zoo_trpo_file_is_accepted_unchanged() -> None:
    trpo_file = yaml.safe_load(zoo_hyperparams_file().read_text())
    constructor = set(inspect.signature(TRPO.__init__).parameters)
    for env_id, entry in trpo_file.items():
        assert set(entry) - ZOO_OWN_KEYS <= constructor, env_id


def test_unknown_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot"]) == 2
    assert "unknown script 'plot'" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "train,enjoy" in capsys.readouterr().out


def test_train_then_enjoy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], zoo_algos: dict
) -> None:
    train = run_zoo(
        *("train", "--algo", "trpo", "--env", "CartPole-v1", "-f", "logs", "-n", "512", "--seed", "1"),
        *("--eval-freq", "-1", "--hyperparams", "n_steps:128", "batch_size:256", "n_critic_updates:2"),
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr
    run_folder = tmp_path / "logs" / "trpo" / "CartPole-v1_1"
    model_zip = run_folder / "CartPole-v1.zip"
    assert model_zip.exists()
    attributes = saved_attributes(model_zip)
    # Only this package's TRPO has these attributes: rl-zoo3 built it, from its trpo.yml plus the overrides.
    assert attributes["fisher_product"] == "auto" and "cg_residual_tol" in attributes
    assert (attributes["n_steps"], attributes["cg_damping"], attributes["n_critic_updates"]) == (128, 0.001, 2)
    assert "cg_residual" in train.stdout  # a log key of this TRPO only

    # enjoy in-process (the subprocess above already covers python -m): rl-zoo3 loads the model through the registry.
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert (
        main(["enjoy", "--algo", "trpo", "--env", "CartPole-v1", "-f", "logs", "--exp-id", "1", "--no-render", "-n", "600"])
        == 0
    )
    enjoy_output = capsys.readouterr().out
    assert f"Loading {Path('logs') / 'trpo' / 'CartPole-v1_1' / 'CartPole-v1.zip'}" in enjoy_output
    assert "Episode Reward:" in enjoy_output


def test_hyperparameter_optimisation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], zoo_algos: dict
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--algo", "trpo", "--env", "CartPole-v1", "-f", "logs", "-n", "512", "--seed", "0", "-optimize"]
    argv += ["--n-trials", "1", "--n-jobs", "1", "--n-evaluations", "1", "--eval-episodes", "1", "--sampler", "random"]
    assert main([*argv, "--pruner", "none", "--no-optim-plots", "--optimization-log-path", "trials"]) == 0
    assert "Number of finished trials:  1" in capsys.readouterr().out
    (report,) = (tmp_path / "logs" / "trpo").glob("report_CartPole-v1_*.csv")
    (trial,) = list(csv.DictReader(report.open()))
    assert trial["state"] == "COMPLETE" and float(trial["value"]) > 0
    # The trial's model is this package's TRPO, with the sampled hyperparameters.
    (best_model,) = (tmp_path / "trials").rglob("best_model.zip")
    attributes = saved_attributes(best_model)
    assert "cg_residual_tol" in attributes
    assert attributes["target_kl"] == pytest.approx(float(trial["params_target_kl"]))


def test_register_adds_recurrent_trpo_as_trpo_lstm(zoo_algos: dict) -> None:
    from rl_zoo3 import train

    assert "trpo_lstm" not in zoo_algos
    register()
    assert train.ALGOS["trpo_lstm"] is sb3_trpo_plugin.RecurrentTRPO
    assert zoo_algos["ppo_lstm"].__name__ == "RecurrentPPO"  # unchanged


def test_zoo_trpo_lstm_file_is_accepted() -> None:
    from sb3_trpo_plugin import RecurrentTRPO
    from sb3_trpo_plugin.zoo import RECURRENT_HYPERPARAMS

    constructor = set(inspect.signature(RecurrentTRPO.__init__).parameters)
    for env_id, entry in yaml.safe_load(RECURRENT_HYPERPARAMS.read_text()).items():
        assert set(entry) - ZOO_OWN_KEYS <= constructor, env_id


def test_train_then_enjoy_trpo_lstm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], zoo_algos: dict
) -> None:
    train = run_zoo(
        *("train", "--algo", "trpo_lstm", "--env", "CartPoleNoVel-v1", "-f", "logs", "-n", "512", "--seed", "1"),
        *("--eval-freq", "-1", "--hyperparams", "n_steps:32", "n_critic_updates:2"),
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr
    model_zip = tmp_path / "logs" / "trpo_lstm" / "CartPoleNoVel-v1_1" / "CartPoleNoVel-v1.zip"
    attributes = saved_attributes(model_zip)
    # Built by rl-zoo3 from this package's trpo_lstm.yml, plus the overrides.
    assert (attributes["n_steps"], attributes["gamma"], attributes["n_critic_updates"]) == (32, 0.98, 2)
    assert "RecurrentActorCriticPolicy" in json.dumps(attributes["policy_class"])
    assert "cg_residual" in train.stdout

    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    argv = ["enjoy", "--algo", "trpo_lstm", "--env", "CartPoleNoVel-v1", "-f", "logs", "--exp-id", "1", "--no-render"]
    assert main([*argv, "-n", "100"]) == 0


def skip_without_default_hyperparameters(algo: str) -> None:
    """Skip where the installed rl-zoo3 reads no ``"default"`` entry (2.6 and older): there ``algo`` needs ``-conf``."""
    from rl_zoo3.exp_manager import ExperimentManager

    if '"default"' not in inspect.getsource(ExperimentManager.read_hyperparameters):
        pytest.skip(f"this rl-zoo3 reads no 'default' hyperparameters (2.6 and older): {algo} needs -conf naming the env")


def test_train_then_enjoy_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], zoo_algos: dict
) -> None:
    """``--algo trpo_mask``: MaskableTRPO with the package's default hyperparameters, on an env given by --gym-packages."""
    skip_without_default_hyperparameters("trpo_mask")
    (tmp_path / "masked_envs.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('InvalidActionDiscrete-v0', entry_point='sb3_contrib.common.envs:InvalidActionEnvDiscrete',\n"
        "             kwargs={'dim': 20, 'n_invalid_actions': 10})\n"
    )
    common = ("--algo", "trpo_mask", "--env", "InvalidActionDiscrete-v0", "--gym-packages", "masked_envs", "-f", "logs")
    train = run_zoo(
        *("train", *common, "-n", "256", "--seed", "1", "--eval-freq", "-1"),
        *("--hyperparams", "n_steps:128", "batch_size:128", "n_critic_updates:2"),
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr
    assert "sb3_trpo_plugin.zoo.trpo_mask" in train.stdout  # the package's hyperparameters (rl-zoo3 has no trpo_mask.yml)
    model_zip = tmp_path / "logs" / "trpo_mask" / "InvalidActionDiscrete-v0_1" / "InvalidActionDiscrete-v0.zip"
    attributes = saved_attributes(model_zip)
    assert (attributes["n_steps"], attributes["n_critic_updates"], attributes["target_kl"]) == (128, 2, 0.01)
    assert "cg_residual" in train.stdout
    from sb3_trpo_plugin import MaskableTRPO

    model = MaskableTRPO.load(model_zip)
    assert model.num_timesteps == 256 and type(model.policy).__name__ == "MaskableActorCriticPolicy"

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    capsys.readouterr()
    assert main(["enjoy", *common, "--exp-id", "1", "--no-render", "-n", "200"]) == 0
    assert "Episode Reward:" in capsys.readouterr().out


def test_train_masked_recurrent_as_trpo_lstm_mask(tmp_path: Path, zoo_algos: dict) -> None:
    """``--algo trpo_lstm_mask``: MaskableRecurrentTRPO with the package's default hyperparameters (an LSTM policy)."""
    skip_without_default_hyperparameters("trpo_lstm_mask")
    (tmp_path / "cue_envs.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('CueWithForbiddenActions-v0', entry_point='sb3_trpo_plugin.envs:CueWithForbiddenActionsEnv')\n"
    )
    common = ("--algo", "trpo_lstm_mask", "--env", "CueWithForbiddenActions-v0", "--gym-packages", "cue_envs", "-f", "logs")
    train = run_zoo(
        *("train", *common, "-n", "128", "--seed", "1", "--eval-freq", "-1"),
        *("--hyperparams", "n_steps:64", "batch_size:64", "n_critic_updates:2"),
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr
    assert "sb3_trpo_plugin.zoo.trpo_lstm_mask" in train.stdout
    model_zip = tmp_path / "logs" / "trpo_lstm_mask" / "CueWithForbiddenActions-v0_1" / "CueWithForbiddenActions-v0.zip"
    from sb3_trpo_plugin import MaskableRecurrentTRPO

    model = MaskableRecurrentTRPO.load(model_zip)
    assert model.num_timesteps == 128 and type(model.policy).__name__ == "MaskableRecurrentActorCriticPolicy"
    assert model.n_critic_updates == 2
