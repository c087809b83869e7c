"""benchmarks/entropy_bonus.py: one tiny run per entropy coefficient is written, resumed and reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_runs_are_written_skipped_when_done_and_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import entropy_bonus as benchmark

    monkeypatch.setattr(benchmark, "RESULTS", tmp_path)
    monkeypatch.setitem(benchmark.ZOO_SETTINGS, "CartPole-v1", dict(n_envs=1, hyperparams=dict(n_steps=64, batch_size=64)))
    for ent_coef in (0.0, 5.0):
        benchmark.run_one("CartPole-v1", ent_coef, seed=0, timesteps=256)
    results = {path.name: json.loads(path.read_text()) for path in (tmp_path / "CartPole-v1").glob("*.json")}
    assert set(results) == {"ent_coef0_seed0.json", "ent_coef5_seed0.json"}
    assert all(9 <= result["final_return_mean"] <= 500 for result in results.values())
    # The entropy bonus shows in the policy's entropy after the same four updates from the same seed.
    assert results["ent_coef5_seed0.json"]["final_entropy"] > results["ent_coef0_seed0.json"]["final_entropy"]
    table = benchmark.report("CartPole-v1").splitlines()
    assert table[2].startswith("| 0 | 1 |") and table[3].startswith("| 5 | 1 |")
