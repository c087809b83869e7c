"""Every script in examples/, run shortened: it finishes, saves what it says, and reports sensible numbers."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.compat.schedules import SCHEDULE_CLASSES

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module, without running its ``__main__`` block."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested() -> None:
    tested = {"cartpole_quickstart", "ppo_to_trpo_callbacks", "pendulum_gsde", "pixel_cnn", "mujoco_hopper"}
    tested |= {"tensorboard_custom_scalars", "distributed_cartpole", "recurrent_ppo_to_trpo", "maskable_ppo_to_trpo"}
    tested |= {"export_onnx", "distributed_recurrent_cartpole", "maskable_recurrent_trpo"}
    assert {path.stem for path in EXAMPLES.glob("*.py")} == tested


def test_cartpole_quickstart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    quickstart = load_example("cartpole_quickstart")
    argv = ["cartpole_quickstart.py", "--timesteps", "1024", "--output", str(tmp_path), "--no-progress-bar"]
    monkeypatch.setattr(sys, "argv", argv)
    quickstart.main()
    out = capsys.readouterr().out
    mean_return = float(out.split("Mean return over 20 deterministic episodes: ")[1].split(" ±")[0])
    assert 5 <= mean_return <= 500  # CartPole's episodes: about 8 steps at the shortest, 500 at the longest
    assert TRPO.load(tmp_path / "trpo_cartpole.zip").num_timesteps == 1024
    assert list((tmp_path / "tensorboard").glob("TRPO_CartPole_1/events.out.tfevents.*"))


@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_ppo_script_swapped_to_trpo(tmp_path: Path, algo: str) -> None:
    if not SCHEDULE_CLASSES:
        pytest.skip("the example uses SB3 2.7's LinearSchedule; older SB3 spells it get_linear_fn")
    example = load_example("ppo_to_trpo_callbacks")
    mean_return = example.main(
        ["--algo", algo, "--timesteps", "1024", "--eval-freq", "512", "--output", str(tmp_path), "--no-progress-bar"]
    )
    assert 5 <= mean_return <= 500  # CartPole's episodes: about 8 steps at the shortest, 500 at the longest
    run_folder = tmp_path / f"{algo.upper()}_seed0"
    # EvalCallback's log and best model, the final model, one monitor file per env, TensorBoard.
    assert (run_folder / "evaluations.npz").exists() and (run_folder / "best_model.zip").exists()
    assert (run_folder / "model.zip").exists()
    assert len(list(run_folder.glob("*.monitor.csv"))) == example.ALGORITHMS[algo][2]
    assert list(run_folder.glob(f"tensorboard/{algo.upper()}_1/events.out.tfevents.*"))


def test_pendulum_gsde(tmp_path: Path) -> None:
    mean_return = load_example("pendulum_gsde").main(["--timesteps", "2048", "--output", str(tmp_path), "--no-progress-bar"])
    assert -16.3 * 200 < mean_return <= 0  # at most 16.3 cost per step, 200 steps; about -1200 untrained
    model = TRPO.load(tmp_path / "trpo_pendulum_gsde.zip")
    assert model.use_sde and model.sde_sample_freq == 4


def test_pixel_cnn(tmp_path: Path) -> None:
    example = load_example("pixel_cnn")
    argv = ["--timesteps", "256", "--n-steps", "64", "--output", str(tmp_path), "--no-progress-bar"]
    mean_return = example.main(argv)
    # Between 30 steps ending 5 cells further than the start, and reaching a target 6 cells away by the shortest path.
    assert -0.05 * 30 - 0.1 * 5 - 1e-6 <= mean_return <= 1 + 0.05 * 6 + 1e-6
    model = TRPO.load(tmp_path / "trpo_pixels.zip")
    assert type(model.policy.features_extractor).__name__ == "NatureCNN"
    assert model.observation_space.shape == (1, 36, 36)  # SB3 moved the channel first


def test_mujoco_hopper(tmp_path: Path) -> None:
    pytest.importorskip("mujoco")
    mean_return = load_example("mujoco_hopper").main(["--timesteps", "2048", "--output", str(tmp_path), "--no-progress-bar"])
    assert math.isfinite(mean_return) and mean_return > 0  # Hopper earns a survival bonus each step
    assert (tmp_path / "vecnormalize.pkl").exists() and (tmp_path / "trpo_hopper.zip").exists()


def test_tensorboard_custom_scalars(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = load_example("tensorboard_custom_scalars").main(
        ["--timesteps", "2048", "--output", str(tmp_path), "--no-progress-bar"]
    )
    events = EventAccumulator(str(log_dir))
    events.Reload()
    assert {"custom/policy_entropy", "custom/mean_abs_pole_angle", "train/kl_divergence_loss"} <= set(events.Tags()["scalars"])
    entropies = [event.value for event in events.Scalars("custom/policy_entropy")]
    assert len(entropies) == 2  # one per rollout of 2 x 512 steps
    assert all(0 < entropy <= math.log(2) + 1e-6 for entropy in entropies)  # two actions: at most log 2
    angles = [event.value for event in events.Scalars("custom/mean_abs_pole_angle")]
    assert all(0 <= angle < 0.21 for angle in angles)  # episodes end beyond 12 degrees (0.21 rad)


def test_distributed_cartpole_runs_as_a_single_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_example("distributed_cartpole")
    monkeypatch.setattr(sys, "argv", ["distributed_cartpole.py", "--timesteps", "2048", "--output", str(tmp_path)])
    example.main()
    out = capsys.readouterr().out
    assert "process 0 of 1" in out and "2048 steps over 1 process(es)" in out
    assert TRPO.load(tmp_path / "trpo_cartpole_distributed.zip").num_timesteps == 2048


def test_distributed_recurrent_cartpole_runs_as_a_single_process_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sb3_trpo_plugin import RecurrentTRPO

    example = load_example("distributed_recurrent_cartpole")
    arguments = ["--output", str(tmp_path), "--n-envs", "2", "--checkpoint-every", "256", "--eval-episodes", "2"]
    for timesteps in (256, 512):  # one update each, the second resumed from the first one's checkpoint
        monkeypatch.setattr(sys, "argv", ["distributed_recurrent_cartpole.py", *arguments, "--timesteps", str(timesteps)])
        example.main()
    out = capsys.readouterr().out
    assert "process 0 of 1" in out and "resuming from 256 steps" in out and "512 steps over 1 process(es)" in out
    model = RecurrentTRPO.load(tmp_path / "recurrent_trpo_cartpole_distributed.zip")
    assert model.num_timesteps == 512 and model._n_updates == 2 and model.observation_space.shape == (2,)


@pytest.mark.parametrize("algo", ["ppo_lstm", "trpo_lstm"])
def test_recurrent_ppo_script_swapped_to_trpo(tmp_path: Path, algo: str) -> None:
    from sb3_contrib import RecurrentPPO

    from sb3_trpo_plugin import RecurrentTRPO

    example = load_example("recurrent_ppo_to_trpo")
    mean_return = example.main(["--algo", algo, "--timesteps", "1024", "--output", str(tmp_path), "--no-progress-bar"])
    assert 5 <= mean_return <= 500  # CartPole's episodes: about 8 steps at the shortest, 500 at the longest
    model = {"ppo_lstm": RecurrentPPO, "trpo_lstm": RecurrentTRPO}[algo].load(tmp_path / "model.zip")
    assert model.num_timesteps == 1024 and model.observation_space.shape == (2,)  # the velocities hidden
    assert (tmp_path / "vecnormalize.pkl").exists()
    tensorboard_run = {"ppo_lstm": "RecurrentPPO_1", "trpo_lstm": "RecurrentTRPO_1"}[algo]
    assert list(tmp_path.glob(f"tensorboard/{tensorboard_run}/events.out.tfevents.*"))


@pytest.mark.parametrize("algo", ["maskable_ppo", "maskable_trpo"])
def test_maskable_ppo_script_swapped_to_trpo(tmp_path: Path, algo: str) -> None:
    example = load_example("maskable_ppo_to_trpo")
    argv = ["--algo", algo, "--timesteps", "4096", "--eval-freq", "2048", "--output", str(tmp_path), "--no-progress-bar"]
    mean_return = example.main(argv)
    # 10 of 20 cells valid at each step: about 10 per 100-step episode by chance with masks, 100 at best.
    assert 50 < mean_return <= 100
    run_folder = tmp_path / f"{algo}_seed0"
    assert (run_folder / "evaluations.npz").exists() and (run_folder / "best_model.zip").exists()
    assert type(example.ALGORITHMS[algo].load(run_folder / "model.zip")).__name__ == {"maskable_ppo": "MaskablePPO"}.get(
        algo, "MaskableTRPO"
    )


def test_export_onnx(tmp_path: Path) -> None:
    example = load_example("export_onnx")
    argv = ["--timesteps", "2048", "--episodes", "3", "--latency-rounds", "1", "--output", str(tmp_path), "--no-progress-bar"]
    result = example.main(argv)
    # The deployment process played the same episodes as predict(): discrete actions, the same returns exactly.
    assert result["onnx_returns"] == result["predict_returns"] and len(result["onnx_returns"]) == 3
    assert all(9 <= episode_return <= 500 for episode_return in result["onnx_returns"])
    assert result["training_stack_imported"] == []
    assert 5_000 < result["size_bytes"] == (tmp_path / "cartpole.onnx").stat().st_size < 100_000  # two 64-unit layers
    assert all(latency > 0 for latency in result["onnx_us"] + result["predict_us"])
    # The deployment side run by itself, its process's modules inspected from outside the example's own report.
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['export_onnx.py', '--run-onnx', {str(tmp_path / 'cartpole.onnx')!r}, '--episodes', '2']\n"
        f"runpy.run_path({str(EXAMPLES / 'export_onnx.py')!r}, run_name='__main__')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'stable_baselines3', 'sb3_trpo_plugin')))"
    )
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert json.loads(lines[0])["returns"] == result["onnx_returns"][:2]
    assert lines[1] == "[]"


def test_maskable_recurrent_trpo(tmp_path: Path) -> None:
    from sb3_trpo_plugin import MaskableRecurrentTRPO

    example = load_example("maskable_recurrent_trpo")
    mean_return = example.main(["--timesteps", "1024", "--output", str(tmp_path)])
    assert -1.0 <= mean_return <= 1.0  # the task's returns: -1 (a forbidden action), 0 or 1
    assert MaskableRecurrentTRPO.load(tmp_path / "model.zip").num_timesteps == 1024
