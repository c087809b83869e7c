"""The pure parts of the learning-quality benchmark: aggregation over seeds, thresholds, the report section."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium
import pytest

from benchmarks import learning_report as lr


def curve(*points: tuple[int, float, float]) -> list:
    """``(step, train_wall_s, mean_return)`` triples as a learning curve."""
    return [lr.CurvePoint(step, wall, ret, 0.0, 10) for step, wall, ret in points]


def run(seed: int, finals: float, threshold_at: tuple[int, float] | None = None, algo: str = "trpo") -> object:
    points = [(0, 0.0, 10.0)]
    if threshold_at is not None:
        points.append((threshold_at[0], threshold_at[1], 500.0))
    points.append((100_000, 60.0, finals))
    return lr.RunResult(
        "CartPole-v1",
        algo,
        seed,
        curve(*points),
        {"train_wall_s": 60.0 + seed, "train_cpu_s": 50.0 + seed, "total_timesteps": 100_000},
    )


def test_interquartile_mean_matches_the_definition() -> None:
    # 8 values: the middle 50 % are exactly 3, 4, 5, 6.
    assert lr.interquartile_mean([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)
    # 4 values: the middle two.
    assert lr.interquartile_mean([1, 2, 3, 100]) == pytest.approx(2.5)
    # 3 values: a quarter of the outer ones, all of the median, over 1.5 values' worth of weight.
    assert lr.interquartile_mean([500, 435, 500]) == pytest.approx((0.25 * 435 + 500 + 0.25 * 500) / 1.5)
    assert lr.interquartile_mean([7.0]) == 7.0
    assert math.isnan(lr.interquartile_mean([]))
    # 5 values: the interval [1.25, 3.75] of the sorted values, so three quarters of the 2nd and 4th.
    assert lr.interquartile_mean([-26, -144, 128, 130, 131]) == pytest.approx((0.75 * -26 + 128 + 0.75 * 130) / 2.5)


def test_mean_std_is_the_population_std() -> None:
    mean, std = lr.mean_std([93, -0.1, 93])
    assert mean == pytest.approx(61.966666, rel=1e-6)
    assert std == pytest.approx(43.8870, rel=1e-4)
    assert all(math.isnan(v) for v in lr.mean_std([]))


def test_first_reaching_skips_the_untrained_policy() -> None:
    c = curve((0, 0.0, 500.0), (10_000, 5.0, 200.0), (20_000, 11.0, 475.0), (30_000, 16.0, 300.0), (40_000, 22.0, 500.0))
    hit = lr.first_reaching(c, 475.0)
    assert hit is not None and (hit.step, hit.train_wall_s) == (20_000, 11.0)
    assert lr.first_reaching(c, 501.0) is None


def test_summarize_over_seeds() -> None:
    runs = [run(0, 500.0, (30_000, 20.0)), run(1, 435.0, (50_000, 31.0)), run(2, 500.0)]
    s = lr.summarize(runs, threshold=475.0)
    assert s.n_seeds == 3
    assert s.finals == [500.0, 435.0, 500.0]
    assert s.final_mean == pytest.approx(478.3333, rel=1e-6)
    assert s.n_solved == 2
    # Seeds 0 and 1 hit 500 during training; seed 2 only at its final evaluation (500 >= 475).
    assert s.steps_to_threshold == pytest.approx(50_000)  # median of 30k, 50k, 100k
    assert s.wall_to_threshold_s == pytest.approx(31.0)
    assert s.train_wall_mean_s == pytest.approx(61.0)
    assert s.train_cpu_mean_s == pytest.approx(51.0)
    # Each run's last three evaluations (seed 2 has only two), averaged per run, then over seeds.
    assert s.late_mean == pytest.approx(((10 + 500 + 500) / 3 + (10 + 500 + 435) / 3 + (10 + 500) / 2) / 3)
    no_threshold = lr.summarize(runs, threshold=None)
    assert no_threshold.n_solved == 0 and math.isnan(no_threshold.steps_to_threshold)


def test_curves_round_trip_through_the_results_folder(tmp_path: Path) -> None:
    import json

    folder = tmp_path / "CartPole-v1" / "trpo"
    folder.mkdir(parents=True)
    original = curve((0, 0.0, 9.5), (50_000, 12.25, 250.0), (100_352, 30.5, 500.0))
    lr.write_curve(folder / "seed1.csv", original)
    (folder / "seed1.json").write_text(json.dumps({"env_id": "CartPole-v1", "algo": "trpo", "seed": 1, "train_wall_s": 30.5}))
    (folder / "seed2.csv").write_text("unfinished run: no JSON beside it\n")
    table = lr.load_results(tmp_path)
    (loaded,) = table["CartPole-v1"]["trpo"]
    assert loaded.seed == 1 and loaded.curve == original and loaded.final_return == 500.0


def test_replace_section_keeps_the_rest_of_the_document() -> None:
    speed = "# Benchmarks\n\n## Speed\n\nfast.\n"
    first = lr.replace_section(speed, "## Learning quality\n\nv1")
    assert first.startswith(speed.rstrip("\n")) and "v1" in first
    second = lr.replace_section(first + "\n## Later section\n", "## Learning quality\n\nv2")
    assert "v1" not in second and "v2" in second and "## Speed" in second and "## Later section" in second
    assert second.count("<!-- learning:start -->") == 1 and second.count("<!-- learning:end -->") == 1
    assert lr.replace_section("", "x").startswith("# Benchmarks")


def test_render_section_tables_and_missing_envs() -> None:
    table = {"CartPole-v1": {"sb3_contrib_trpo": [run(0, 435.0, algo="sb3_contrib_trpo")], "trpo": [run(0, 500.0)]}}
    text = lr.render_section(table, ["CartPole-v1", "Pendulum-v1"], {"CartPole-v1": 475.0}, {}, "Method.")
    rows = [line for line in text.splitlines() if line.startswith("| TRPO")]
    assert rows[0].startswith("| TRPO (this plugin) | 1 | 500.0 ± 0.0 |")  # ours first, whatever the dict order
    assert "| 1/1 |" in rows[0] and "| 0/1 |" in rows[1]
    assert "Pendulum-v1: no finished run" in text


def test_one_run_writes_its_curve_then_its_metadata(tmp_path: Path, gymnasium_restored: list) -> None:
    """A shortened CartPole-v1 run: evaluations at the planned steps, the final one last, and its JSON beside the curve."""
    import json

    pytest.importorskip("rl_zoo3")
    pytest.importorskip("sb3_contrib")
    from benchmarks import learning

    # rl-zoo3's CartPole-v1 preset: 2 envs x 512 steps, so two rollouts of 1024 steps.
    json_path = learning.run_one(
        "CartPole-v1", "trpo", 0, tmp_path, n_evals=2, eval_episodes=2, final_episodes=3, timesteps=2048
    )
    assert json_path == tmp_path / "CartPole-v1" / "trpo" / "seed0.json"
    assert sorted(path.name for path in json_path.parent.iterdir()) == ["seed0.csv", "seed0.json"]  # no temporary file left
    meta = json.loads(json_path.read_text())
    (loaded,) = lr.load_results(tmp_path)["CartPole-v1"]["trpo"]
    # Before each rollout that starts at or past a half of the budget, then the final evaluation.
    assert [(point.step, point.n_episodes) for point in loaded.curve] == [(0, 2), (1024, 2), (2048, 3)]
    assert all(5 <= point.mean_return <= 500 for point in loaded.curve)
    train_walls = [point.train_wall_s for point in loaded.curve]
    assert train_walls == sorted(train_walls)  # training time, the evaluations' own excluded, only grows
    assert (meta["total_timesteps"], meta["steps_done"], meta["n_envs"], meta["final_episodes"]) == (2048, 2048, 2, 3)
    assert meta["final_return"] == pytest.approx(loaded.curve[-1].mean_return, abs=1e-4)  # the CSV keeps 4 decimals
    assert meta["train_wall_s"] + meta["eval_wall_s"] <= meta["total_wall_s"]
    assert meta["diagnostics"]["train/kl_divergence_loss"]["n"] == 2  # one per update, the last one included
    assert meta["zoo_file"] == "trpo.yml" and meta["torch_threads"] == 1
    assert meta["pipeline_critic"] is False  # the critic fitted in the run's process: its CPU time counts all the work


def test_the_preset_algorithm_trains_with_the_package_presets_settings(gymnasium_restored: list) -> None:
    """``trpo_preset`` reads the package's rl-zoo3 file: the settings of ``sb3-trpo train``'s preset, its observation."""
    pytest.importorskip("rl_zoo3")
    from benchmarks.learning_setup import PRESET_ALGO, env_kwargs, load_preset, zoo_file
    from sb3_trpo_plugin.cli.presets import PRESETS

    cli = PRESETS["Ant-v5"]
    assert Path(zoo_file(PRESET_ALGO)).name == "trpo_v5.yml"
    assert env_kwargs("Ant-v5") == dict(cli.env_kwargs) == {"include_cfrc_ext_in_observation": False}
    if "Ant-v5" not in gymnasium.envs.registry:  # rl-zoo3 looks the id up before it reads the entry
        pytest.skip("the installed gymnasium has no Ant-v5 (MuJoCo's -v5 tasks came with gymnasium 1.0)")
    preset = load_preset(PRESET_ALGO, "Ant-v5")
    assert (preset.policy, preset.n_envs, preset.n_timesteps, preset.normalize) == (
        cli.policy,
        cli.n_envs,
        cli.n_timesteps,
        cli.normalize,
    )
    # rl-zoo3 wraps a constant learning rate in a schedule (SB3 ≥ 2.7: ConstantSchedule; before: constant_fn's closure).
    kwargs = dict(preset.kwargs)
    assert kwargs.pop("learning_rate")(1.0) == cli.hyperparams["learning_rate"]
    assert kwargs == {key: value for key, value in cli.hyperparams.items() if key != "learning_rate"}


def _make_reach_env() -> object:
    """A tiny 3-D continuous-control task (no Box2D or MuJoCo needed): reward ``-‖a - s[:3]‖²``."""
    import gymnasium as gym
    import numpy as np

    class Reach(gym.Env):
        observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
            super().reset(seed=seed)
            self.t = 0
            self.state = self.np_random.uniform(-1, 1, 4).astype(np.float32)
            return self.state, {}

        def step(self, action: np.ndarray) -> tuple:
            reward = -float(np.sum((action - self.state[:3]) ** 2))
            self.t += 1
            self.state = self.np_random.uniform(-1, 1, 4).astype(np.float32)
            return self.state, reward, False, self.t >= 50, {}

    return Reach()


def test_trpo_takes_sb3_contribs_step_with_the_same_preset() -> None:
    """On a 3-D Box, the same preset keywords give both TRPOs the same update (target_kl per action dimension)."""
    pytest.importorskip("sb3_contrib")
    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import Logger

    from benchmarks.learning_setup import Preset, make_model

    preset = Preset("MlpPolicy", {"n_steps": 256, "n_critic_updates": 1}, 2, 512, False, {}, {})

    steps = {}
    for algo in ("sb3_contrib_trpo", "trpo"):
        env = make_vec_env(_make_reach_env, n_envs=2, seed=0)
        model = make_model(algo, preset, env, seed=0, logger=Logger(folder=None, output_formats=[]))
        actor = [
            *model.policy.mlp_extractor.policy_net.parameters(),
            *model.policy.action_net.parameters(),
            model.policy.log_std,
        ]
        before = torch.cat([p.detach().flatten() for p in actor])
        model.learn(512)  # one rollout, one update
        steps[algo] = torch.cat([p.detach().flatten() for p in actor]) - before

    contrib = steps["sb3_contrib_trpo"]
    assert contrib.norm() > 0

    def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(a @ b / (a.norm() * b.norm()))

    assert cosine(steps["trpo"], contrib) == pytest.approx(1.0, abs=1e-4)
    assert float(steps["trpo"].norm() / contrib.norm()) == pytest.approx(1.0, abs=1e-3)


def test_the_model_factory_keeps_trpos_pipelined_critic() -> None:
    """Only a campaign run (``run_one``) fits the critic in its own process; the speed benchmarks build with the default."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import Logger

    from benchmarks.learning_setup import Preset, make_model

    preset = Preset("MlpPolicy", {"n_steps": 64}, 1, 64, False, {}, {})
    model = make_model("trpo", preset, make_vec_env("CartPole-v1", n_envs=1, seed=0), 0, Logger(None, []))
    assert model.pipeline_critic is True


@pytest.mark.parametrize(
    ("algo", "expected_class", "lean_rollout", "fisher_product", "numpy_order"),
    [
        ("trpo", "sb3_trpo_plugin.trpo.trpo.TRPO", True, "auto", False),
        ("trpo_preset", "sb3_trpo_plugin.trpo.trpo.TRPO", True, "auto", False),
        ("trpo_sb3_loop", "sb3_trpo_plugin.trpo.trpo.TRPO", False, "auto", False),
        ("trpo_kl_hessian", "sb3_trpo_plugin.trpo.trpo.TRPO", True, "kl_hessian", False),
        ("trpo_numpy_shuffle", "sb3_trpo_plugin.trpo.trpo.TRPO", True, "auto", True),
        ("sb3_contrib_trpo", "sb3_contrib.trpo.trpo.TRPO", None, None, False),
        ("ppo", "stable_baselines3.ppo.ppo.PPO", None, None, False),
    ],
)
def test_the_model_factory_builds_each_algorithm_and_ablation_as_announced(
    algo: str, expected_class: str, lean_rollout: bool | None, fisher_product: str | None, numpy_order: bool
) -> None:
    """Each algorithm's class, and the one thing each ablation changes (the autograd critic patches a module: left out)."""
    pytest.importorskip("sb3_contrib")
    import numpy as np
    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import Logger

    from benchmarks.learning_setup import Preset, make_model

    preset = Preset("MlpPolicy", {"n_steps": 64}, 1, 64, False, {}, {})
    model = make_model(algo, preset, make_vec_env("CartPole-v1", n_envs=1, seed=0), 0, Logger(None, []))
    assert f"{type(model).__module__}.{type(model).__name__}" == expected_class
    assert model.seed == 0 and model.verbose == 0 and model.device == torch.device("cpu")
    assert getattr(model, "lean_rollout", None) is lean_rollout
    assert getattr(model, "fisher_product", None) == fisher_product
    if expected_class.startswith("sb3_trpo_plugin"):
        reductions = model.batch_reductions()
        if numpy_order:  # each epoch's order is NumPy's permutation of the rows, as sb3-contrib's buffer draws it
            np.random.seed(7)
            order, batch_size = reductions.minibatch_order(10, 4, torch.device("cpu"))
            np.random.seed(7)
            assert order.tolist() == np.random.permutation(10).tolist() and batch_size == 4
        else:
            assert reductions is None  # one process: TRPO's own reductions


def test_the_model_factory_refuses_an_unknown_algorithm() -> None:
    from benchmarks.learning_setup import Preset, make_model

    with pytest.raises(ValueError, match="unknown algorithm 'trpo_unknown'"):
        make_model("trpo_unknown", Preset("MlpPolicy", {}, 1, 64, False, {}, {}), None, 0, None)


@pytest.mark.parametrize("option", ["--evals", "--eval-episodes", "--final-episodes"])
def test_counts_below_one_are_refused_on_the_command_line(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.learning import main

    with pytest.raises(SystemExit) as exit_info:
        main(["run", option, "0", "--envs", "CartPole-v1"])
    assert exit_info.value.code == 2 and f"argument {option}: must be at least 1, got 0" in capsys.readouterr().err
