"""
Data-parallel training that survives a lost process (gloo on 127.0.0.1): a rank killed mid-training restarts
under ``torchrun --max-restarts`` from the newest checkpoint; a rank that stops answering makes the others
fail within the configured timeout. The ranks run ``tests/elastic_worker.py``. The restart test is marked slow
(the default suite keeps the stopped-rank test, the checkpoints between updates and the example's resume);
``tests/test_distributed.py`` runs its ranks through torchrun's c10d rendezvous with ``--nnodes=2``.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.compat.torch_features import torchrun_restarts_workers
from sb3_trpo_plugin.parallel import (
    CollectiveError,
    UpdateCheckpointCallback,
    collective_timeout,
    latest_checkpoint_on_every_rank,
    process_group,
)
from sb3_trpo_plugin.parallel.rendezvous import attempt_store
from sb3_trpo_plugin.serialization.checkpoints import find_latest_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from elastic_worker import KILL_AFTER_UPDATES, SAVE_EVERY, STEPS_PER_UPDATE, TARGET_STEPS
from test_distributed import _free_port, torchrun_environment

WORKER = Path(__file__).parent / "elastic_worker.py"
#: The collective timeout of the stopped-rank test, and the slack allowed on top of it on a loaded machine.
TIMEOUT_SECONDS, SLACK_SECONDS = 10.0, 60.0


def test_collective_timeout_is_configurable_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SB3_TRPO_COLLECTIVE_TIMEOUT", raising=False)
    assert collective_timeout().total_seconds() == 300.0  # not torch's 30 minutes
    monkeypatch.setenv("SB3_TRPO_COLLECTIVE_TIMEOUT", "12.5")
    assert collective_timeout().total_seconds() == 12.5
    assert collective_timeout(3).total_seconds() == 3.0  # an argument wins over the environment
    for bad in ("soon", "0", "-1", "inf"):
        monkeypatch.setenv("SB3_TRPO_COLLECTIVE_TIMEOUT", bad)
        with pytest.raises(ValueError, match="seconds"):
            collective_timeout()


def test_update_checkpoints_hold_a_consistent_step_count(tmp_path: Path) -> None:
    """Saved between updates: the step count is that of the updates the weights went through, and training's end is saved."""
    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=2, seed=0))
    model = TRPO("MlpPolicy", env, n_steps=16, batch_size=32, n_critic_updates=1, policy_kwargs=dict(net_arch=[8]), seed=0)
    callback = UpdateCheckpointCallback(save_every=64, save_path=tmp_path, save_vecnormalize=True)
    model.learn(32 * 5, callback=callback)  # 5 updates of 32 steps: saved before updates 3 and 5, and at the end
    assert sorted(p.name for p in tmp_path.glob("*.zip")) == [f"rl_model_{n}_steps.zip" for n in (128, 160, 64)]
    for steps in (64, 128, 160):
        saved = TRPO.load(tmp_path / f"rl_model_{steps}_steps.zip")
        assert saved.num_timesteps == steps and saved._n_updates == steps // 32
    # One process: every rank's newest checkpoint is this process's.
    checkpoint = latest_checkpoint_on_every_rank(tmp_path, require_vec_normalize=True)
    assert checkpoint == find_latest_checkpoint(tmp_path, require_vec_normalize=True)
    assert checkpoint is not None and checkpoint.num_timesteps == 160
    with pytest.raises(ValueError, match="positive"):
        UpdateCheckpointCallback(save_every=0, save_path=tmp_path)


@pytest.mark.parametrize(("restarts", "can_restart", "warns"), [("1", False, True), ("0", False, False), ("3", True, False)])
def test_restarts_torch_cannot_make_are_announced(
    monkeypatch: pytest.MonkeyPatch, restarts: str, can_restart: bool, warns: bool
) -> None:
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", restarts)
    monkeypatch.setattr(process_group, "torchrun_restarts_workers", lambda: can_restart)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        process_group.warn_if_restarts_cannot_happen()
    messages = [str(w.message) for w in caught]
    if warns:
        assert len(messages) == 1 and f"asked for {restarts} restart(s)" in messages[0]
        assert "pytorch/pytorch#123678" in messages[0] and "resume from the newest checkpoint" in messages[0]
    else:
        assert messages == []


def _scalar_steps(run: Path, tag: str) -> list[int]:
    accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0})
    accumulator.Reload()
    return sorted(event.step for event in accumulator.Scalars(tag))


@pytest.mark.slow  # two attempts of two processes: about a minute on 2 loaded cores
@pytest.mark.parametrize("algorithm", ["TRPO", "RecurrentTRPO"])
def test_killed_rank_restarts_from_the_newest_checkpoint(tmp_path: Path, algorithm: str) -> None:
    """
    SIGKILL of rank 1 mid-training, under ``torchrun --max-restarts=1``: both ranks restart, load the same
    checkpoint, lose at most one checkpoint interval, and finish at the target with identical weights.

    With torch 2.3, whose agent cannot restart (:func:`torchrun_restarts_workers`), rank 0 warns at the start, the
    job ends, and the same command run again resumes the same way: what the warning tells the user to do.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--max-restarts=1"]
    launch = [*command, "--monitor-interval=0.2", str(WORKER), "restart", str(tmp_path), algorithm]

    def run_job() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            launch, env=torchrun_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300
        )

    launcher = run_job()
    assert (tmp_path / "killed.json").is_file(), "rank 1 was never killed: the test would prove nothing"
    first = [json.loads((tmp_path / f"attempt0_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [start["resumed_from"] for start in first] == [None, None]
    if torchrun_restarts_workers():
        assert launcher.returncode == 0, launcher.stdout
        assert "pytorch/pytorch#123678" not in launcher.stdout
        restarted = [json.loads((tmp_path / f"attempt1_rank{rank}.json").read_text()) for rank in (0, 1)]
    else:
        assert launcher.returncode != 0 and "RendezvousClosedError" in launcher.stdout, launcher.stdout
        assert "pytorch/pytorch#123678" in launcher.stdout and not (tmp_path / "attempt1_rank0.json").exists()
        launcher = run_job()
        assert launcher.returncode == 0, launcher.stdout
        restarted = [json.loads((tmp_path / f"attempt0_rank{rank}.json").read_text()) for rank in (0, 1)]

    # The step count at the restart: the same checkpoint on both ranks, between updates, at most one interval lost.
    killed_at = KILL_AFTER_UPDATES * STEPS_PER_UPDATE  # updates done when rank 1 died
    resumed_from = restarted[0]["resumed_from"]
    assert restarted[1]["resumed_from"] == resumed_from and resumed_from is not None
    assert killed_at - SAVE_EVERY < resumed_from <= killed_at and resumed_from % STEPS_PER_UPDATE == 0
    assert [start["num_timesteps"] for start in restarted] == [resumed_from, resumed_from]
    # The VecNormalize statistics of the killed run (all ranks' observations), not fresh ones, on both ranks.
    assert restarted[0]["obs_count"] == restarted[1]["obs_count"] > resumed_from

    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for result in results:
        assert result["num_timesteps"] == TARGET_STEPS and result["algorithm"] == algorithm
        assert result["n_updates"] == TARGET_STEPS // STEPS_PER_UPDATE
    archives = [np.load(tmp_path / f"rank{rank}.npz") for rank in (0, 1)]
    for name in archives[0].files:
        np.testing.assert_array_equal(archives[0][name], archives[1][name], err_msg=name)
    final = find_latest_checkpoint(tmp_path / "checkpoints", require_vec_normalize=True)
    assert final is not None and final.num_timesteps == TARGET_STEPS
    # One TensorBoard run, continued after the restart up to the target.
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["run_1"]
    steps = _scalar_steps(tmp_path / "tb" / "run_1", "time/fps")
    assert steps[0] == STEPS_PER_UPDATE and steps[-1] == TARGET_STEPS and resumed_from + STEPS_PER_UPDATE in steps


def test_stopped_rank_fails_the_others_within_the_timeout(tmp_path: Path) -> None:
    """Rank 1 stops (SIGSTOP: no error, its connections stay open); rank 0 fails within the timeout, naming both."""
    environment = torchrun_environment() | {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": "2",
        "SB3_TRPO_COLLECTIVE_TIMEOUT": str(TIMEOUT_SECONDS),
    }
    ranks = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "stop", str(tmp_path)],
            env=environment | {"RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    try:
        output = ranks[0].communicate(timeout=240)[0]
    finally:
        for process in ranks:
            process.kill()  # rank 1 is stopped: SIGKILL is the signal it cannot postpone
            process.wait()
    assert ranks[0].returncode != 0, output
    assert (tmp_path / "stopped.json").is_file(), output
    stopped_at = json.loads((tmp_path / "stopped.json").read_text())["time"]
    failure = json.loads((tmp_path / "rank0.json").read_text())
    assert "Collective 'sum_ints' failed on rank 0 of 2" in failure["error"], failure["traceback"]
    assert "for rank(s) [1]" in failure["error"] and "timeout" in failure["error"]
    waited = float(re.search(r"after waiting ([0-9.]+) s", failure["error"]).group(1))  # type: ignore[union-attr]
    assert TIMEOUT_SECONDS - 0.5 <= waited <= TIMEOUT_SECONDS + SLACK_SECONDS
    assert failure["time"] - stopped_at <= TIMEOUT_SECONDS + SLACK_SECONDS
    assert "CollectiveError" in output


def test_example_resumes_from_its_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The documented pattern: a second run of the example resumes from the first one's newest checkpoint."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
    try:
        import distributed_cartpole
    finally:
        sys.path.pop(0)
    arguments = ["distributed_cartpole.py", "--output", str(tmp_path), "--checkpoint-every", "1024", "--eval-episodes", "1"]
    for timesteps in (1024, 2048):  # one update each
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys, "argv", [*arguments, "--timesteps", str(timesteps)])
            distributed_cartpole.main()
    out = capsys.readouterr().out
    assert "resuming from 1024 steps" in out and "2048 steps over 1 process(es)" in out
    model = TRPO.load(tmp_path / "trpo_cartpole_distributed.zip")
    assert model.num_timesteps == 2048 and model._n_updates == 2
    assert [p.name for p in (tmp_path / "tensorboard").iterdir()] == ["TRPO_CartPole_distributed_1"]


def _torchrun(arguments: list[str], timeout: float) -> str:
    """Run ``torchrun --nproc-per-node=2`` on 127.0.0.1 with ``arguments``; its output, or a failure if it does not end."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
        f"--master-port={_free_port()}", *arguments,
    ]  # fmt: skip
    output_options = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    launcher = subprocess.Popen(command, env=torchrun_environment(), start_new_session=True, **output_options)
    try:
        output = launcher.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        # torchrun starts its workers in sessions of their own: SIGTERM makes it end them (SIGKILL after 30 s)
        launcher.terminate()
        try:
            output = launcher.communicate(timeout=90)[0]
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            output = "(torchrun did not stop on SIGTERM; killed)"
        pytest.fail(f"the torchrun job did not end in {timeout} s (a rank stuck at its end?):\n{output}")
    assert launcher.returncode == 0, output
    return output


def test_ranks_end_right_after_their_last_all_reduce() -> None:
    """
    ``destroy_process_group()`` right after an all-reduce whose result was dropped ends (tests/collectives_teardown_worker.py).
    Up to torch 2.7 it hung in most tries when a gloo thread was left to free the result's tensor, the GIL held by the
    teardown joining that thread; three tries, so that the old behaviour fails here nearly always (4 hangs in 5 on torch
    2.3, 2026-12-07).
    """
    worker = str(Path(__file__).parent / "collectives_teardown_worker.py")
    for _ in range(3):
        output = _torchrun([worker], timeout=120)
        assert "rank 0 ended" in output and "rank 1 ended" in output, output


@pytest.mark.parametrize(
    ("example", "timesteps"), [("distributed_cartpole.py", 4096), ("distributed_recurrent_cartpole.py", 1024)]
)
def test_the_distributed_examples_end_under_torchrun(tmp_path: Path, example: str, timesteps: int) -> None:
    """
    The documented command, ``torchrun --nproc_per_node=2 examples/<example>``, trains, saves and ends; each rank
    destroys the group right after ``learn()`` (which hung rank 1 on most tries with torch 2.3 and 2.7, as in
    :func:`test_ranks_end_right_after_their_last_all_reduce`).
    """
    script = str(Path(__file__).parent.parent / "examples" / example)
    arguments = ["--timesteps", str(timesteps), "--n-envs", "2", "--checkpoint-every", "1000000", "--eval-episodes", "1"]
    output = _torchrun([script, *arguments, "--output", str(tmp_path)], timeout=300)  # ~12 s alone
    assert f"{timesteps} steps over 2 process(es)" in output, output


def _join(port: int, world_size: int, timeout: float = 60.0) -> list[dist.Store]:
    """Every rank's :func:`attempt_store` of one attempt, joined from threads (as from processes)."""
    with concurrent.futures.ThreadPoolExecutor(world_size) as pool:
        futures = [
            pool.submit(attempt_store, "127.0.0.1", port, rank, world_size, datetime.timedelta(seconds=timeout))
            for rank in range(world_size)
        ]
        return [future.result() for future in futures]


def test_each_attempt_joins_under_keys_of_its_own() -> None:
    """What a restart under torchrun's shared store needs: no rank of a new attempt sees the previous attempt's keys."""
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    first = _join(server.port, 3)
    first[0].set("rank_0_address", "a dead process")  # what init_process_group leaves behind
    # An earlier rank 1 that posted a token and died before rank 0 answered it.
    dist.PrefixStore("sb3_trpo_plugin/run", server).set("token/1", "unanswered")
    second = _join(server.port, 3)
    second[2].set("shared", "by this attempt")
    assert [store.get("shared") for store in second] == [b"by this attempt"] * 3  # one key space per attempt
    assert not any(store.check(["rank_0_address"]) for store in second)  # none of the previous attempt's keys
    assert not first[1].check(["shared"])


def test_joining_fails_within_the_timeout_when_rank_zero_is_missing() -> None:
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    with pytest.raises(CollectiveError, match="Rank 1 of 2 could not join"):
        attempt_store("127.0.0.1", server.port, 1, 2, datetime.timedelta(seconds=1))
    with pytest.raises(CollectiveError, match=r"rank\(s\) \[1\] did not join"):
        attempt_store("127.0.0.1", server.port, 0, 2, datetime.timedelta(seconds=1))
