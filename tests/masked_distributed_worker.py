"""
One rank of MaskableTRPO's data-parallel test, launched (twice) by ``tests/test_maskable.py`` with ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set: one rollout with masks and one ``train()``, for each update
path (``split``: the critic on rank 0, the policy step on rank 1, both on the gathered union, masks included;
``averaged``: every step of the update reduced over the ranks); the buffers and the weights before and after go to
``OUT/rank{RANK}_{PATH}.npz``.

Usage: ``python tests/masked_distributed_worker.py OUT``
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
from sb3_contrib.common.envs import InvalidActionEnvMultiDiscrete
from stable_baselines3.common.env_util import make_vec_env

from sb3_trpo_plugin import MaskableTRPO
from tests.process_group_teardown import end_worker

#: Shared by the ranks and the single-process reference in the test.
KWARGS = dict(n_steps=32, n_critic_updates=2, policy_kwargs=dict(net_arch=dict(pi=[16], vf=[16])), seed=0, device="cpu")
N_ENVS = 2
BUFFER_FIELDS = ("observations", "actions", "rewards", "returns", "episode_starts", "values", "log_probs", "advantages")
BUFFER_FIELDS += ("action_masks",)


def make_env() -> InvalidActionEnvMultiDiscrete:
    return InvalidActionEnvMultiDiscrete(dims=[3, 4], n_invalid_actions=3)


def state(model: MaskableTRPO) -> dict[str, np.ndarray]:
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in model.policy.state_dict().items()}


#: The update paths: whether the update is split over the ranks (MaskableTRPO's default) or reduced step by step.
UPDATE_PATHS = {"split": True, "averaged": False}


def one_update(out: Path, rank: int, path: str) -> None:
    model = MaskableTRPO("MlpPolicy", make_vec_env(make_env, n_envs=N_ENVS), batch_size=32 * N_ENVS, **KWARGS)
    model.split_update = UPDATE_PATHS[path]
    assert model.collectives is not None and model.splits_update(critic_depends_on_actor=False) == UPDATE_PATHS[path]
    before = state(model)
    _, callback = model._setup_learn(model.n_steps * model.n_envs, callback=None)
    callback.on_training_start(locals(), globals())
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)
    buffer = {field: getattr(model.rollout_buffer, field).copy() for field in BUFFER_FIELDS}
    model.train()
    arrays = {f"buffer/{k}": v for k, v in buffer.items()} | {f"before/{k}": v for k, v in before.items()}
    arrays |= {f"after/{k}": v for k, v in state(model).items()}
    arrays["accepted"] = np.array(model.logger.name_to_value.get("train/is_line_search_success", -1.0))
    np.savez(out / f"rank{rank}_{path}.npz", **arrays)


if __name__ == "__main__":
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    for update_path in UPDATE_PATHS:
        one_update(Path(sys.argv[1]), rank, update_path)
    end_worker()
