"""
One rank of RecurrentTRPO's data-parallel tests, launched (twice) by ``tests/test_recurrent_distributed.py`` with
``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set: for each case of :data:`CASES`, one rollout and one
``train()`` (every step of the update reduced over the ranks); the buffer and the weights before and after go to
``OUT/rank{RANK}_{CASE}.npz``. Then a few updates of ``learn()`` (the ranks must stay in sync), and the split update,
which must be refused.

Usage: ``python tests/recurrent_distributed_worker.py OUT``
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_plugin import RecurrentTRPO
from sb3_trpo_plugin.envs import RandomEnv
from tests.process_group_teardown import end_worker, print_stacks_if_stuck

N_STEPS, N_ENVS = 24, 2
TINY_LSTM = dict(lstm_hidden_size=6, net_arch=dict(pi=[8], vf=[8]))
#: Each case's keywords (shared by the ranks and the single-process reference), by name.
CASES: dict[str, dict[str, Any]] = {
    # The critic's own LSTM, fitted over the whole batch (one minibatch per epoch: the union's on one process).
    "critic_lstm": dict(policy_kwargs=TINY_LSTM),
    # The critic reads the actor's LSTM: the row-by-row regression over every rank's rows.
    "shared_lstm": dict(policy_kwargs=TINY_LSTM | dict(shared_lstm=True, enable_critic_lstm=False)),
    # Every 2nd sequence for the step, every 2nd of those for the Fisher products: ranks with different steps.
    "sub_sampled": dict(policy_kwargs=TINY_LSTM, sub_sampling_factor=2, fisher_sub_sampling_factor=2),
}
SHARED_KWARGS: dict[str, Any] = dict(n_steps=N_STEPS, batch_size=N_STEPS * N_ENVS, n_critic_updates=3, seed=0, device="cpu")
BUFFER_FIELDS = (
    "observations",
    "actions",
    "rewards",
    "returns",
    "episode_starts",
    "values",
    "log_probs",
    "advantages",
    "hidden_states_pi",
    "cell_states_pi",
    "hidden_states_vf",
    "cell_states_vf",
)
#: The environment axis of each buffer field (the LSTM states have the layers before it).
ENV_AXIS = {field: 2 if field.endswith("_states_pi") or field.endswith("_states_vf") else 1 for field in BUFFER_FIELDS}


def episode_lengths(rank: int) -> list[int]:
    """The episode length of each of rank ``rank``'s environments: the ranks' sequences differ in number and length."""
    return [[6, 7], [3, 4]][rank]


def environments(rank: int) -> VecEnv:
    lengths = iter(episode_lengths(rank))
    return make_vec_env(lambda: RandomEnv(spaces.Discrete(3), episode_length=next(lengths)), n_envs=N_ENVS, seed=rank)


def state(model: RecurrentTRPO) -> dict[str, np.ndarray]:
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in model.policy.state_dict().items()}


def one_update(out: Path, rank: int, case: str) -> None:
    model = RecurrentTRPO("MlpLstmPolicy", environments(rank), **SHARED_KWARGS, **CASES[case])
    assert model.collectives is not None and not model.splits_update(critic_depends_on_actor=False)
    before = state(model)
    _, callback = model._setup_learn(model.n_steps * model.n_envs, callback=None)
    callback.on_training_start(locals(), globals())
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)
    buffer = {field: getattr(model.rollout_buffer, field).copy() for field in BUFFER_FIELDS}
    with mock.patch.object(np.random, "randint", lambda high: 0):  # the buffer's sequences in their order (no rotation)
        model.train()
    arrays = {f"buffer/{k}": v for k, v in buffer.items()} | {f"before/{k}": v for k, v in before.items()}
    arrays |= {f"after/{k}": v for k, v in state(model).items()}
    arrays["accepted"] = np.array(model.logger.name_to_value.get("train/is_line_search_success", -1.0))
    np.savez(out / f"rank{rank}_{case}.npz", **arrays)


def learning(out: Path, rank: int) -> dict[str, Any]:
    """A few updates: every rank holds the same weights, the step count is global; the split update is refused."""
    model = RecurrentTRPO("MlpLstmPolicy", environments(rank), **SHARED_KWARGS, **CASES["critic_lstm"])
    model.sync_check_interval = 1
    model.learn(total_timesteps=3 * N_STEPS * N_ENVS * 2)
    np.savez(out / f"rank{rank}_learning.npz", **state(model))
    results: dict[str, Any] = {"num_timesteps": model.num_timesteps, "n_updates": model._n_updates}
    model.split_update = True
    try:
        model.learn(total_timesteps=N_STEPS * N_ENVS * 2)
    except NotImplementedError as error:
        refusal = str(error)
    else:
        refusal = None
    return results | {"split_refusal": refusal}


if __name__ == "__main__":
    print_stacks_if_stuck(240.0)  # the fixture waits 600 s
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    folder = Path(sys.argv[1])
    for name in CASES:
        one_update(folder, rank, name)
    results = learning(folder, rank)
    (folder / f"rank{rank}.json").write_text(json.dumps(results))
    end_worker()
