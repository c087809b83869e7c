"""``sb3-trpo plot``: reading runs, labelling them, averaging seeds and drawing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sb3_trpo_plugin.cli.plot import load_curves, mean_over_seeds, plot_curves, run_label, smooth


def write_monitor(folder: Path, returns: list[float], length: int = 10, seconds_per_episode: float = 1.0) -> None:
    """A Monitor CSV as SB3 writes it: a JSON header, then r (return), l (length), t (seconds since start)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f"{r},{length},{(i + 1) * seconds_per_episode}" for i, r in enumerate(returns)]
    header = json.dumps({"t_start": 1_700_000_000.0, "env_id": "CartPole-v1"})
    (folder / "0.monitor.csv").write_text("\n".join([f"#{header}", "r,l,t", *rows]) + "\n")


def test_smooth_is_a_trailing_mean() -> None:
    np.testing.assert_allclose(smooth(np.array([1.0, 2.0, 3.0, 4.0]), window=2), [1.0, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(smooth(np.array([1.0, 2.0, 3.0]), window=10), [1.0, 1.5, 2.0])


def test_mean_over_seeds() -> None:
    x = np.array([0.0, 10.0])
    curve = mean_over_seeds([x, x], [np.array([1.0, 1.0]), np.array([3.0, 5.0])], n_points=3)
    np.testing.assert_allclose(curve.x, [0.0, 5.0, 10.0])
    np.testing.assert_allclose(curve.mean, [2.0, 2.5, 3.0])
    np.testing.assert_allclose(curve.std, [1.0, 1.5, 2.0])
    assert curve.n_runs == 2
    # Beyond the end of the shorter run, the mean is that of the longer run alone.
    curve = mean_over_seeds([np.array([0.0, 5.0]), x], [np.array([1.0, 1.0]), np.array([3.0, 3.0])], n_points=3)
    np.testing.assert_allclose(curve.mean, [2.0, 2.0, 3.0])
    np.testing.assert_allclose(curve.std, [1.0, 1.0, 0.0])


def test_runs_are_labelled_by_algorithm_and_environment(tmp_path: Path) -> None:
    cli_run = tmp_path / "a"
    cli_run.mkdir()
    (cli_run / "run.json").write_text(json.dumps({"algo": "TRPO", "env": "Pendulum-v1"}))
    zoo_run = tmp_path / "logs" / "ppo" / "CartPole-v1_3"
    (zoo_run / "CartPole-v1").mkdir(parents=True)
    assert run_label(cli_run) == ("TRPO", "Pendulum-v1")
    assert run_label(zoo_run) == ("PPO", "CartPole-v1")
    assert run_label(tmp_path / "PPO_seed2") == ("PPO", None)
    assert run_label(tmp_path / "a2c-s1") == ("a2c", None)


def test_load_and_plot_several_seeds(tmp_path: Path) -> None:
    for seed, returns in enumerate([[10.0, 20.0, 30.0], [30.0, 40.0, 50.0]]):
        run = tmp_path / f"trpo_{seed}"
        write_monitor(run / "monitor", returns)
        (run / "run.json").write_text(json.dumps({"algo": "TRPO", "env": "CartPole-v1"}))
    write_monitor(tmp_path / "baselines" / "PPO_seed0", [5.0, 5.0], seconds_per_episode=2.0)

    curves = load_curves([tmp_path])
    assert sorted((curve.algo, curve.env) for curve in curves) == [
        ("PPO", None),
        ("TRPO", "CartPole-v1"),
        ("TRPO", "CartPole-v1"),
    ]
    trpo = next(curve for curve in curves if curve.path.name == "trpo_1")
    np.testing.assert_allclose(trpo.steps, [10, 20, 30])
    np.testing.assert_allclose(trpo.seconds, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(trpo.returns, [30.0, 40.0, 50.0])

    output = plot_curves(curves, tmp_path / "figures" / "curves.png", window=2, title="test")
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert output.stat().st_size > 10_000


def test_load_skips_runs_without_episodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_monitor(tmp_path / "empty", [])
    write_monitor(tmp_path / "full", [1.0])
    curves = load_curves([tmp_path])
    assert [curve.path.name for curve in curves] == ["full"]
    assert "skipping" in capsys.readouterr().out
