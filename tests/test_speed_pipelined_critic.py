"""The pipelined critic's benchmark: its per-round arithmetic, the fit jobs' sizes it records, the worker's memory."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env

from benchmarks import speed_pipelined_critic as pc
from benchmarks.learning_setup import load_preset
from benchmarks.speed_timing import LearnTiming
from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.trpo.critic_job import CriticFitJob
from sb3_trpo_plugin.trpo.critic_pipeline import CriticPipeline


def run(wall: float, steps: int = 1000, in_worker: int = 0, in_process: int = 0, **memory: Any) -> pc.PipelinedRun:
    return pc.PipelinedRun(LearnTiming(wall, wall * 0.75, wall * 0.25, steps), in_worker, in_process, **memory)


def test_summary_of_the_rounds() -> None:
    job = {"features": 40, "returns": 10, "shuffles": 800, "weights_and_optimizer": 150, "total": 1000}
    rounds = [
        {
            "pipelined": run(1.0, in_worker=8, in_process=2, job_bytes=job, rollout_bytes=50, worker_peak_kib=300),
            "sequential": run(2.0),
            "sb3-contrib": run(4.0),
        },
        {
            "pipelined": run(1.0, in_worker=6, in_process=4, job_bytes=None, rollout_bytes=50, worker_peak_kib=None),
            "sequential": run(1.5),
            "sb3-contrib": run(3.0),
        },
        {
            "pipelined": run(2.0, in_worker=9, in_process=1, job_bytes=job, rollout_bytes=50, worker_peak_kib=320),
            "sequential": run(2.5),
            "sb3-contrib": run(5.0),
        },
    ]
    summary = pc.summarize_pipelined(rounds)
    rates = summary["implementations"]
    assert rates["pipelined"]["steps_per_s"] == pytest.approx(1000.0)  # median of 1000, 1000, 500
    assert rates["sequential"]["steps_per_s"] == pytest.approx(500.0)  # median of 500, 667, 400
    assert rates["pipelined"]["rollout_share"] == pytest.approx(0.75)
    assert rates["sb3-contrib"]["update_share"] == pytest.approx(0.25)
    # Per-round ratios of steps/s, pipelined / sequential: 2, 1.5, 1.25; pipelined / contrib: 4, 3, 2.5.
    assert summary["ratios"]["pipelined/sequential"] == pytest.approx({"median": 1.5, "min": 1.25, "max": 2.0})
    assert summary["ratios"]["pipelined/sb3-contrib"] == pytest.approx({"median": 3.0, "min": 2.5, "max": 4.0})
    assert summary["ratios"]["sequential/sb3-contrib"] == pytest.approx({"median": 2.0, "min": 2.0, "max": 2.0})
    # 23 of 30 fits in the worker; the lowest round had 6 of 10.
    fits = {"in_worker": 23, "in_process": 7, "worker_share": 23 / 30, "worker_share_min": 0.6}
    assert summary["fits"] == pytest.approx(fits)
    assert summary["memory"] == {"job_bytes": job, "rollout_bytes": 50, "worker_peak_kib": 320}
    assert summary["rounds"] == 3


def test_the_summary_refuses_no_rounds_and_a_sequential_run_that_used_the_worker() -> None:
    with pytest.raises(ValueError, match="no rounds"):
        pc.summarize_pipelined([])
    rounds = [{"pipelined": run(1.0, in_worker=3), "sequential": run(1.0, in_worker=1), "sb3-contrib": run(2.0)}]
    with pytest.raises(ValueError, match="pipeline_critic = False was not honoured"):
        pc.summarize_pipelined(rounds)


def test_default_budgets_are_many_updates_and_rl_zoo3s_full_budget_on_cartpole() -> None:
    assert pc.PIPELINE_CONFIGS["cartpole"].timesteps == load_preset("trpo", "CartPole-v1").n_timesteps == 100_000
    assert set(pc.PIPELINE_CONFIGS) == {"cartpole", "pendulum_gsde", "hopper", "halfcheetah"}
    assert all(config.timesteps >= 50_000 for config in pc.PIPELINE_CONFIGS.values())
    assert pc.PIPELINE_CONFIGS["hopper"].env_id == "Hopper-v5"


def test_a_jobs_bytes_by_part() -> None:
    weights = [np.zeros((64, 4), np.float32), np.zeros(64, np.float32), np.zeros((1, 64), np.float32), np.zeros(1, np.float32)]
    state = {"state": {i: {"step": np.zeros((), np.float32), "exp_avg": np.zeros_like(w)} for i, w in enumerate(weights)}}
    job = CriticFitJob(
        weights=weights,
        has_bias=[True, True],
        activations=["tanh"],
        optimizer_class=object,  # type: ignore[arg-type]  # only the arrays are counted
        optimizer_settings={"lr": 1e-3},
        optimizer_state=state,
        optimizer_order=[0, 1, 2, 3],
        inputs=np.zeros((100, 4), np.float32),
        returns=np.zeros(100, np.float32),
        shuffles=np.zeros(5056, np.uint8),
        n_epochs=5,
        batch_size=10,
    )
    weight_bytes = (256 + 64 + 64 + 1) * 4
    assert pc.job_bytes(job) == {
        "features": 1600,
        "returns": 400,
        "shuffles": 5056,
        "weights_and_optimizer": 2 * weight_bytes + 4 * 4,
        "total": 1600 + 400 + 5056 + 2 * weight_bytes + 16,
    }
    assert pc.array_bytes({"a": [np.zeros(3), (np.zeros(2, np.int8), "text")], "b": 7}) == 26


def test_peak_rss_of_this_process_and_of_none() -> None:
    peak = pc.peak_rss_kib(os.getpid())
    assert peak is not None and peak > 10_000  # an interpreter with torch: tens of MiB at least
    assert pc.peak_rss_kib(-1) is None


def test_recording_the_jobs_of_a_pipelined_learn() -> None:
    model = TRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), n_steps=64, batch_size=32, seed=0)
    model.n_critic_updates = 3
    class_submit = CriticPipeline.submit
    sizes = pc.record_job_sizes(model.critic_pipeline)
    assert "submit" in vars(model.critic_pipeline) and CriticPipeline.submit is class_submit
    assert model.critic_pipeline.wait_until_ready(120.0)
    model.learn(4 * 128)
    pid = pc.worker_pid(model)
    assert pid is not None and (pc.peak_rss_kib(pid) or 0) > 10_000
    model.critic_pipeline.close()
    assert pc.worker_pid(model) is None
    # Updates 1-3 are pipelined (the worker was ready), the last one fits here.
    assert (model.critic_pipeline.fits_in_worker, model.critic_pipeline.fits_in_process) == (3, 1)
    assert len(sizes) == 3
    rows = 128
    assert sizes[0]["features"] == rows * 4 * 4  # float32 features of CartPole's 4 observations (a flatten extractor)
    assert sizes[0]["returns"] == rows * 4
    assert sizes[0]["shuffles"] == torch.get_rng_state().numel()  # a generator state, whatever the number of epochs
    assert pc.rollout_bytes(model.rollout_buffer) == rows * 4 * 4 + rows * 4
