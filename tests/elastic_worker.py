"""
One rank of the tests of lost processes (``tests/test_distributed_elastic.py``), launched with ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set (by ``torchrun`` or by the test).

``python tests/elastic_worker.py restart OUT [ALGORITHM]``: trains (``TRPO``, or ``RecurrentTRPO``: a key of
:data:`ALGORITHMS`) to ``TARGET_STEPS`` with checkpoints, resuming from the newest one when there is one (the pattern
of ``examples/distributed_cartpole.py``); in the first attempt rank 1 kills itself (SIGKILL) during the rollout after
``KILL_AFTER_UPDATES`` updates, unless ``OUT/killed.json`` says it did already. Each attempt of each rank writes
``OUT/attempt{A}_rank{R}.json`` when it starts training, and ``OUT/rank{R}.json`` / ``.npz`` when it ends.

``python tests/elastic_worker.py stop OUT``: trains; rank 1 stops itself (SIGSTOP: its connections stay open)
during its second rollout; rank 0 writes the error its next collective raised to ``OUT/rank0.json``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_trpo_plugin import TRPO, RecurrentTRPO, parallel, safe_load_vec_normalize

N_ENVS, N_STEPS = 2, 16
STEPS_PER_UPDATE = N_ENVS * N_STEPS * 2  # of both ranks
SAVE_EVERY = 2 * STEPS_PER_UPDATE
TARGET_STEPS = 12 * STEPS_PER_UPDATE
KILL_AFTER_UPDATES = 5
MODEL_KWARGS: dict[str, Any] = dict(
    n_steps=N_STEPS, batch_size=N_STEPS * N_ENVS, n_critic_updates=2, cg_max_steps=5, policy_kwargs=dict(net_arch=[8])
)
#: The algorithms the restart test trains, and their policy, by name.
ALGORITHMS: dict[str, tuple[type[TRPO], str, dict[str, Any]]] = {
    "TRPO": (TRPO, "MlpPolicy", {}),
    "RecurrentTRPO": (RecurrentTRPO, "MlpLstmPolicy", dict(policy_kwargs=dict(lstm_hidden_size=4, net_arch=[8]))),
}


class SignalAtStep(gym.Wrapper):
    """Sends ``signal_number`` to this process at its ``at_step``-th step (counted over episodes), after writing ``marker``."""

    def __init__(self, env: gym.Env, at_step: int, signal_number: int, marker: Path):
        super().__init__(env)
        self.at_step, self.signal_number, self.marker, self.steps = at_step, signal_number, marker, 0

    def step(self, action: Any) -> Any:
        self.steps += 1
        if self.steps == self.at_step:
            self.marker.write_text(json.dumps({"step": self.steps, "time": time.time()}))
            os.kill(os.getpid(), self.signal_number)
        return self.env.step(action)


def environments(rank: int, fault: tuple[int, int, Path] | None) -> Any:
    """Rank's environments; with ``fault`` = (step, signal, marker), its first environment signals this process."""
    venv = make_vec_env("CartPole-v1", n_envs=N_ENVS)
    if fault is not None:
        at_step, signal_number, marker = fault
        first = venv.envs[0]  # type: ignore[attr-defined]
        venv.envs[0] = SignalAtStep(first, at_step, signal_number, marker)  # type: ignore[attr-defined]
    return venv


def restart(out: Path, algorithm_name: str = "TRPO") -> None:
    parallel.init_from_environment()  # the group first: the ranks agree on the checkpoint to resume
    rank, attempt = parallel.rank(), int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
    checkpoints = out / "checkpoints"
    checkpoint = parallel.latest_checkpoint_on_every_rank(checkpoints, require_vec_normalize=True)
    kill_step = KILL_AFTER_UPDATES * N_STEPS + N_STEPS // 2  # in the rollout after KILL_AFTER_UPDATES updates
    killed = out / "killed.json"  # once only: with torch 2.3 the test launches the job again instead of a restart
    fault = (kill_step, signal.SIGKILL, killed) if rank == 1 and attempt == 0 and not killed.exists() else None
    venv = environments(rank, fault)
    algorithm, policy, own_kwargs = ALGORITHMS[algorithm_name]
    if checkpoint is None:
        kwargs = MODEL_KWARGS | own_kwargs
        model = algorithm(policy, VecNormalize(venv), seed=0, tensorboard_log=str(out / "tb"), verbose=1, **kwargs)
    else:
        assert checkpoint.vec_normalize_statistics_path is not None  # sent to every rank with the model
        env = safe_load_vec_normalize(checkpoint.vec_normalize_statistics_path, venv)
        model = algorithm.load(checkpoint.model_path, env=env, tensorboard_log=str(out / "tb"))
    callback = parallel.UpdateCheckpointCallback(SAVE_EVERY, checkpoints, save_vecnormalize=True)
    started = {
        "attempt": attempt,
        "resumed_from": None if checkpoint is None else checkpoint.num_timesteps,
        "num_timesteps": model.num_timesteps,
        "obs_count": model.get_vec_normalize_env().obs_rms.count,  # type: ignore[union-attr]
    }
    (out / f"attempt{attempt}_rank{rank}.json").write_text(json.dumps(started))
    model.learn(
        TARGET_STEPS - model.num_timesteps, callback=callback, reset_num_timesteps=checkpoint is None, tb_log_name="run"
    )
    env = model.get_vec_normalize_env()
    assert env is not None
    weights = {name: tensor.numpy() for name, tensor in model.policy.state_dict().items()}
    np.savez(out / f"rank{rank}.npz", obs_mean=env.obs_rms.mean, **weights)
    result = {
        "num_timesteps": model.num_timesteps,
        "n_updates": model._n_updates,
        "obs_count": env.obs_rms.count,
        "algorithm": type(model).__name__,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))


def stop(out: Path) -> None:
    rank = int(os.environ["RANK"])
    fault = (N_STEPS + N_STEPS // 2, signal.SIGSTOP, out / "stopped.json") if rank == 1 else None
    model = TRPO("MlpPolicy", environments(rank, fault), seed=0, **MODEL_KWARGS)
    try:
        model.learn(TARGET_STEPS)
    except parallel.CollectiveError as error:
        (out / f"rank{rank}.json").write_text(
            json.dumps({"error": str(error), "traceback": traceback.format_exc(), "time": time.time()})
        )
        raise


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, folder, *algorithm_name = sys.argv[1:]
    {"restart": restart, "stop": stop}[mode](Path(folder), *algorithm_name)
