"""
Crash and resume with real processes: SIGKILL between checkpoints, resume from the newest one; a crash
during a save leaves the previous model file intact.
"""

from __future__ import annotations

import os
import pathlib
import signal
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sb3_trpo_plugin import TRPO, safe_load, safe_load_vec_normalize
from sb3_trpo_plugin.serialization.checkpoints import CheckpointCallback, find_latest_checkpoint

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
STEPS_PER_ROLLOUT = 64  # n_steps=32 x 2 envs
STEPS_PER_CHECKPOINT = 128  # save_freq=64 calls x 2 envs

TRAINING_SCRIPT = """
import os, sys
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize
from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.serialization.checkpoints import CheckpointCallback
from sb3_trpo_plugin.serialization.atomic import atomic_write_bytes

folder = sys.argv[1]

class ReportProgress(BaseCallback):
    # Tells the test how far training got: the step count after each completed rollout.
    def _on_rollout_end(self):
        atomic_write_bytes(os.path.join(folder, "progress"), str(self.model.num_timesteps).encode())
    def _on_step(self):
        return True

env = VecNormalize(make_vec_env("CartPole-v1", n_envs=2, seed=0))
model = TRPO("MlpPolicy", env, n_steps=32, batch_size=64, n_critic_updates=2, policy_kwargs=dict(net_arch=[16]),
             seed=0, tensorboard_log=os.path.join(folder, "tb"))
checkpoints = CheckpointCallback(save_freq=64, save_path=os.path.join(folder, "checkpoints"), save_vecnormalize=True)
model.learn(10**9, callback=[checkpoints, ReportProgress()])
"""


def run_python(script: str, *args: str, **popen_kwargs: object) -> subprocess.Popen:
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], env=environment, **popen_kwargs)  # type: ignore[call-overload]


def scalar_steps(run_folder: pathlib.Path, tag: str) -> list[int]:
    accumulator = EventAccumulator(str(run_folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return sorted(event.step for event in accumulator.Scalars(tag))


def test_sigkill_between_checkpoints_then_resume(tmp_path: pathlib.Path) -> None:
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "wb") as stderr:
        process = run_python(TRAINING_SCRIPT, str(tmp_path), stderr=stderr)
    deadline = time.monotonic() + 120
    progress_file = tmp_path / "progress"
    try:
        while not (progress_file.exists() and int(progress_file.read_text()) >= 3 * STEPS_PER_CHECKPOINT + STEPS_PER_ROLLOUT):
            assert process.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, "training made too little progress"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    reached = int(progress_file.read_text())

    checkpoint = find_latest_checkpoint(tmp_path / "checkpoints", require_vec_normalize=True)
    assert checkpoint is not None
    # Every checkpoint up to the last reported step count was complete: at most the work since it is lost.
    assert checkpoint.num_timesteps >= reached // STEPS_PER_CHECKPOINT * STEPS_PER_CHECKPOINT
    assert checkpoint.num_timesteps % STEPS_PER_CHECKPOINT == 0

    env = VecNormalize.load(str(checkpoint.vec_normalize_path), make_vec_env("CartPole-v1", n_envs=2, seed=1))
    pickle_free = safe_load_vec_normalize(checkpoint.vec_normalize_statistics_path, make_vec_env("CartPole-v1", n_envs=2))
    assert pickle_free.obs_rms.count == env.obs_rms.count  # written before the model, like SB3's .pkl
    saved_count = env.obs_rms.count
    saved_mean = env.obs_rms.mean.copy()
    assert saved_count > checkpoint.num_timesteps  # the statistics of the killed run, not fresh ones
    model = TRPO.load(checkpoint.model_path, env=env)
    assert model.num_timesteps == checkpoint.num_timesteps
    assert safe_load(checkpoint.model_path).num_timesteps == checkpoint.num_timesteps

    model.learn(2 * STEPS_PER_ROLLOUT, reset_num_timesteps=False)

    assert model.num_timesteps == checkpoint.num_timesteps + 2 * STEPS_PER_ROLLOUT
    assert model.get_vec_normalize_env() is env
    # The statistics went on from the saved ones: one reset (2 observations) and 128 steps more.
    assert env.obs_rms.count == pytest.approx(saved_count + 2 * STEPS_PER_ROLLOUT + 2)
    assert np.abs(env.obs_rms.mean - saved_mean).max() < 0.5
    # The same TensorBoard run goes on, with step counts after the checkpoint's.
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["TRPO_1"]
    steps = scalar_steps(tmp_path / "tb" / "TRPO_1", "time/fps")
    assert checkpoint.num_timesteps + 2 * STEPS_PER_ROLLOUT in steps
    assert min(steps) == STEPS_PER_ROLLOUT  # the killed run's events are still there


CRASH_DURING_SAVE_SCRIPT = """
import os, signal, sys
import sb3_trpo_plugin.serialization.atomic as atomic
from sb3_trpo_plugin import TRPO

path = sys.argv[1]
model = TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, policy_kwargs=dict(net_arch=[64]), seed=0)
model.save(path)  # the previous model: no updates yet
model.learn(64)

def write_half_then_crash(file, data, chunk_size=1 << 20):
    file.write(data[: len(data) // 2])
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)

atomic.write_in_chunks = write_half_then_crash
model.save(path)  # killed half-way through writing
"""


def test_crash_during_save_keeps_the_previous_model(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "model.zip"
    process = run_python(CRASH_DURING_SAVE_SCRIPT, str(path))
    assert process.wait(timeout=120) == -signal.SIGKILL
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".model.zip.") and p.name.endswith(".tmp")]
    assert len(leftovers) == 1  # the crash did hit the write of the new file
    assert 0 < leftovers[0].stat().st_size < path.stat().st_size
    for loader in (TRPO.load, safe_load):
        previous = loader(path)
        assert previous.num_timesteps == 0 and previous._n_updates == 0
        assert all(torch.isfinite(p).all() for p in previous.policy.parameters())
    assert find_latest_checkpoint(tmp_path, name_prefix="model") is None  # temporary files never pass for models


def test_checkpoint_callback_writes_sb3_names_and_finds_the_newest(tmp_path: pathlib.Path) -> None:
    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=2, seed=0))
    model = TRPO("MlpPolicy", env, n_steps=16, batch_size=32, n_critic_updates=1, policy_kwargs=dict(net_arch=[8]), seed=0)
    model.learn(96, callback=CheckpointCallback(save_freq=16, save_path=str(tmp_path), save_vecnormalize=True))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"rl_model_{n}_steps.zip" for n in (32, 64, 96)] + sorted(
        f"rl_model_vecnormalize_{n}_steps.{suffix}" for n in (32, 64, 96) for suffix in ("npz", "pkl")
    )
    (tmp_path / "rl_model_vecnormalize_96_steps.pkl").unlink()  # as if a crash came between the two files
    assert find_latest_checkpoint(tmp_path).num_timesteps == 96  # type: ignore[union-attr]
    checkpoint = find_latest_checkpoint(tmp_path, require_vec_normalize=True)
    assert checkpoint is not None and checkpoint.num_timesteps == 64
    assert VecNormalize.load(str(checkpoint.vec_normalize_path), make_vec_env("CartPole-v1", n_envs=2)).obs_rms.count > 64
    assert find_latest_checkpoint(tmp_path / "missing") is None


def test_atomic_save_writes_where_sb3_would_with_the_usual_permissions(tmp_path: pathlib.Path) -> None:
    model = TRPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, policy_kwargs=dict(net_arch=[4]), seed=0)
    model.save(tmp_path / "nested" / "model")  # missing folders are created and ".zip" appended, as SB3 does
    saved = tmp_path / "nested" / "model.zip"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o666 & ~umask
    model.save(saved)  # replacing an existing file leaves no temporary file behind
    assert [p.name for p in saved.parent.iterdir()] == ["model.zip"]
    assert safe_load(saved).num_timesteps == 0
