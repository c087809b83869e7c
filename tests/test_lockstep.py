"""
This TRPO's update against sb3-contrib's along sb3-contrib's own training trajectory (``benchmarks/lockstep.py``).

One-update tests (tests/test_trpo_step.py) start both algorithms from the same fresh state. Here the comparison runs
for several updates of a real training run, with VecNormalize, the critic's regression and its Adam state included:
what carries over from one update to the next (Adam's moments and step count, the learning rate, the minibatch
order) is covered too. On Ant-v5 the same comparison ran for 215 updates (investigations/ant_learning_gap/).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from sb3_contrib import TRPO as ContribTRPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecNormalize

from benchmarks import lockstep
from sb3_trpo_plugin import TRPO

#: rl-zoo3's MuJoCo settings for TRPO, at a smaller batch.
SETTINGS = dict(n_steps=256, batch_size=64, gamma=0.99, gae_lambda=0.95, cg_max_steps=25, cg_damping=0.1, n_critic_updates=5)


def pendulum(seed: int) -> VecNormalize:
    return VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=seed), gamma=0.99)


def test_every_update_is_sb3_contribs_along_its_own_trajectory() -> None:
    def lr(progress_remaining: float) -> float:  # a schedule: the learning rate must follow it in both
        return 1e-3 * progress_remaining

    leader = ContribTRPO("MlpPolicy", pendulum(0), seed=0, device="cpu", learning_rate=lr, **SETTINGS)
    leader.set_logger(Logger(folder=None, output_formats=[]))
    rows: list[dict[str, float]] = []

    def make_follower() -> TRPO:
        return TRPO("MlpPolicy", pendulum(1), seed=0, device="cpu", learning_rate=lr, **SETTINGS)

    lockstep.run_lockstep(leader, make_follower, n_updates=6, on_row=rows.append)
    assert len(rows) == 6
    for row in rows:
        for mode in lockstep.MODES:
            assert row[f"{mode} actor cosine"] == pytest.approx(1.0, abs=1e-6)
            assert row[f"{mode} actor norm ratio"] == pytest.approx(1.0, abs=1e-4)
            assert row[f"{mode} train/kl_divergence_loss"] > 0
            assert row[f"{mode} train/value_loss"] == pytest.approx(row["leader train/value_loss"], rel=1e-4)
            assert row[f"{mode} train/is_line_search_success"] == row["leader train/is_line_search_success"]
        # From the same start, the critic and its Adam state end where sb3-contrib's do, to float32 rounding (Adam's
        # division by sqrt(v) + eps magnifies it in places: 1e-6 to 1e-4 of the fit's change measured).
        assert row["reset critic diff / change"] < 1e-3
        assert row["reset adam relative diff"] < 1e-3
    # Carried over from its own fits, the critic stays with sb3-contrib's; Adam's step count included (inf otherwise).
    assert max(row["free_critic critic diff / change"] for row in rows) < 2e-2
    assert max(row["free_critic adam relative diff"] for row in rows) < 1e-3


@pytest.mark.parametrize("follower", ["trpo_kl_hessian", "trpo_autograd_critic"])
def test_an_ablation_follows_as_this_trpo_does(follower: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sb3_trpo_plugin.trpo.critic_fit as critic_fit

    original = critic_fit.head_regression
    monkeypatch.setattr(critic_fit, "head_regression", original)  # the autograd ablation replaces it: restored after
    out = tmp_path / "lockstep.csv"
    lockstep.main(["Pendulum-v1", "--updates", "2", "--seed", "0", "--follower", follower, "--out", str(out)])
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2
    assert (critic_fit.head_regression is not original) == (follower == "trpo_autograd_critic")
    for row in rows:  # the ablations compute the same update: they too follow sb3-contrib's
        assert float(row["reset actor cosine"]) == pytest.approx(1.0, abs=1e-6)
        assert float(row["reset critic diff / change"]) < 1e-3
