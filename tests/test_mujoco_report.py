"""The pure parts of the MuJoCo campaign's report: exact tests of two groups of returns, mean curves, the table."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from benchmarks import learning_report as lr
from benchmarks import mujoco_report as mr


def run(algo: str, seed: int, returns: list[float], walls: list[float], env_id: str = "Ant-v5") -> object:
    steps = [i * 100_000 for i in range(len(returns))]
    curve = [lr.CurvePoint(s, w, r, 0.0, 10) for s, w, r in zip(steps, walls, returns, strict=True)]
    return lr.RunResult(env_id, algo, seed, curve, {"train_wall_s": walls[-1], "train_cpu_s": walls[-1] * 0.9})


def test_three_against_three_all_below_is_p_one_tenth() -> None:
    # Of the 20 splits of six values into two threes, only the observed one and its mirror are as extreme.
    c = mr.compare([1914, 2128, 2663], [4049, 4645, 3232])
    assert c.permutation_p == pytest.approx(2 / 20)
    assert c.mann_whitney_u == 0 and c.mann_whitney_p == pytest.approx(2 / 20)
    assert c.mean_difference == pytest.approx(np.mean([1914, 2128, 2663]) - np.mean([4049, 4645, 3232]))


def test_exact_tests_match_a_brute_force_enumeration_with_ties() -> None:
    a, b = [3.0, 1.0, 4.0, 1.0, 5.0], [9.0, 2.0, 6.0, 5.0, 3.0, 5.0]
    pooled = a + b
    observed_difference = np.mean(a) - np.mean(b)

    # U counts, for each pair (x from a, y from b), 1 if x > y and 1/2 if tied.
    def u_of(xs: list[float], ys: list[float]) -> float:
        return sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in xs for y in ys)

    observed_u, centre = u_of(a, b), len(a) * len(b) / 2
    extreme_means = extreme_us = total = 0
    for chosen in itertools.combinations(range(len(pooled)), len(a)):
        xs = [pooled[i] for i in chosen]
        ys = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        extreme_means += abs(np.mean(xs) - np.mean(ys)) >= abs(observed_difference) - 1e-12
        extreme_us += abs(u_of(xs, ys) - centre) >= abs(observed_u - centre) - 1e-12
        total += 1
    c = mr.compare(a, b)
    assert c.mann_whitney_u == observed_u
    assert c.permutation_p == pytest.approx(extreme_means / total)
    assert c.mann_whitney_p == pytest.approx(extreme_us / total)


def test_identical_groups_are_not_different() -> None:
    c = mr.compare([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert c.mean_difference == 0 and c.permutation_p == 1.0 and c.mann_whitney_p == 1.0


def test_standard_error() -> None:
    assert mr.standard_error([1.0, 3.0]) == pytest.approx(1.0)
    assert math.isnan(mr.standard_error([1.0]))


def test_first_reaching_the_peers_mean_uses_the_seed_averaged_curve() -> None:
    runs = [run("trpo", 0, [0, 100, 300, 400], [0, 10, 20, 30]), run("trpo", 1, [0, 300, 100, 400], [0, 12, 22, 32])]
    _, walls, returns = mr.mean_curve(runs)
    assert list(returns) == [0, 200, 200, 400] and list(walls) == [0, 11, 21, 31]
    assert mr.first_reaching_mean(runs, 200) == (100_000.0, 11.0)
    assert mr.first_reaching_mean(runs, 401) is None


def test_campaign_table_reports_means_standard_errors_and_where_ours_reaches_the_peer() -> None:
    table = {
        "Ant-v5": {
            "trpo": [run("trpo", 0, [0, 2000, 3000], [0, 50, 100]), run("trpo", 1, [0, 1000, 4000], [0, 60, 120])],
            "sb3_contrib_trpo": [run("sb3_contrib_trpo", s, [0, 1000, 1500 + 1000 * s], [0, 100, 200]) for s in (0, 1)],
        }
    }
    text = "\n".join(mr.campaign_table(table))
    assert "| Ant-v5 | TRPO (this plugin) | 2 | 3500 ± 500 | 3000 / 4000 |" in text
    assert "| Ant-v5 | TRPO (sb3-contrib 2.9.2) | 2 | 2000 ± 500 | 1500 / 2500 |" in text
    # ours' mean curve is 1500 at 100k steps, below sb3-contrib's final mean 2000; 3500 at 200k, after 110 s
    assert "0.2M steps, 110 s (sb3-contrib's run: 200 s)" in text
    tests = "\n".join(mr.tests_table(table, {}))
    assert "Ant-v5: this TRPO vs sb3-contrib's | 2 vs 2 | 3500 ± 500 | 2000 ± 500 | +1500 |" in tests


def test_the_preset_runs_get_rows_and_exact_tests_against_both_trpos() -> None:
    table = {
        "Ant-v5": {
            "trpo": [run("trpo", s, [0, 1000, 2000 + 1000 * s], [0, 50, 100]) for s in (0, 1)],
            "trpo_preset": [run("trpo_preset", 100 + k, [0, 2000, 4000 + 1000 * k], [0, 50, 100]) for k in range(3)],
            "sb3_contrib_trpo": [run("sb3_contrib_trpo", s, [0, 1000, 3000], [0, 100, 200]) for s in (0, 1)],
        }
    }
    rows = mr.campaign_table(table)
    labels = [row.split(" | ")[1] for row in rows if row.startswith("| Ant-v5")]
    assert labels == ["TRPO (this plugin)", "TRPO (this plugin), the package's preset", "TRPO (sb3-contrib 2.9.2)"]
    assert "| 3 | 5000 ± 577 | 4000 / 5000 / 6000 |" in "\n".join(rows)
    tests = "\n".join(mr.tests_table(table, {mr.PRESET: "the preset"}))
    # 3 vs 2: ten splits, the observed one (every preset seed above every other) and its mirror are the extremes
    assert "Ant-v5: the preset vs TRPO (this plugin) | 3 vs 2 | 5000 ± 577 | 2500 ± 500 | +2500 | 0.200 | 6 | 0.200 |" in tests
    assert "Ant-v5: the preset vs TRPO (sb3-contrib 2.9.2) | 3 vs 2 | 5000 ± 577 | 3000 ± 0 | +2000 |" in tests


def test_preset_runs_of_any_env_are_tested_and_ablations_only_on_ant() -> None:
    def runs(algo: str, seeds: range, final: int) -> list:
        return [run(algo, s, [0, final, final + s], [0, 50, 100]) for s in seeds]

    table = {
        "Swimmer-v5": {
            "trpo": runs("trpo", range(2), 300),
            "trpo_preset": runs("trpo_preset", range(100, 103), 360),
            "trpo_sb3_loop": runs("trpo_sb3_loop", range(2), 100),
            "sb3_contrib_trpo": runs("sb3_contrib_trpo", range(2), 300),
        }
    }
    tests = "\n".join(mr.tests_table(table, {mr.PRESET: "the preset", "trpo_sb3_loop": "SB3's loop"}))
    assert "Swimmer-v5: the preset vs TRPO (this plugin) | 3 vs 2 |" in tests
    assert "Swimmer-v5: the preset vs TRPO (sb3-contrib 2.9.2) | 3 vs 2 |" in tests
    assert "SB3's loop" not in tests


def test_the_ablations_get_a_table_of_their_own_with_returns_and_cpu_time() -> None:
    def runs(algo: str, finals: list[int]) -> list:
        return [run(algo, s, [0, 500, final], [0, 50, 100 * (s + 1)]) for s, final in enumerate(finals)]

    ablations = {"trpo_sb3_loop": "SB3's loop", "trpo_kl_hessian": "double backprop", mr.PRESET: "the preset"}
    table = {
        "Ant-v5": {
            "trpo": runs("trpo", [3000, 4000]),
            "trpo_kl_hessian": runs("trpo_kl_hessian", [1000, 2000, 6000]),
            "sb3_contrib_trpo": runs("sb3_contrib_trpo", [3500, 3500]),
        },
        "Hopper-v5": {"trpo": runs("trpo", [3000]), "trpo_sb3_loop": runs("trpo_sb3_loop", [100])},
    }
    rows = mr.ablations_table(table, ablations)
    # this TRPO first, then each ablation with finished runs on Ant-v5 (none of SB3's loop there); CPU: 0.9 x the wall
    assert rows[2:] == [
        "| TRPO (this plugin) | the fast paths | 2 | 3500 ± 500 | 3000 / 4000 | 135 s |",
        "| `trpo_kl_hessian` | double backprop | 3 | 3000 ± 1528 | 1000 / 2000 / 6000 | 180 s |",
        "",
    ]
    section = mr.render_section(table, ablations, {}, "Preamble.", "mujoco_Ant-v5_ablations.png")
    assert "### Ablations of the fast paths on Ant-v5" in section
    assert "![Ant-v5 ablations](mujoco_Ant-v5_ablations.png)" in section
    assert "Ant-v5: double backprop vs TRPO (this plugin) | 3 vs 2 |" in section
    # nothing of the kind without ablation runs
    del table["Ant-v5"]["trpo_kl_hessian"]
    assert mr.ablations_table(table, ablations) == []
    assert "Ablations of the fast paths" not in mr.render_section(table, ablations, {}, "Preamble.")


def test_random_splits_stand_in_for_too_many_and_agree_with_the_exact_tests() -> None:
    a = [1008.0, 4557.0, 1596.0, 1405.0, 4449.0, 1520.0, 1729.0, 4195.0]
    b = [3602.0, 4591.0, 1292.0, 4401.0, 1379.0, 3890.0, 4893.0, 3684.0]
    exact = mr.compare(a, b)
    assert exact.exact and math.comb(16, 8) == 12870
    small = mr.compare(a, b, max_splits=10_000)  # fewer than the 12870 splits: sampled
    assert small == mr.compare(a, b, max_splits=10_000)  # a fixed generator: the same p every time
    assert not small.exact and small.mean_difference == exact.mean_difference
    assert small.permutation_p == pytest.approx(exact.permutation_p, abs=0.015)
    assert small.mann_whitney_p == pytest.approx(exact.mann_whitney_p, abs=0.015)
    # Twenty against twenty (1.4e11 splits) are sampled, not enumerated.
    twenty = mr.compare(list(range(20)), list(range(10, 30)))
    assert not twenty.exact and twenty.permutation_p < 0.01
    assert "random splits" in mr.comparison_lines("x", list(range(20)), list(range(10, 30)))
