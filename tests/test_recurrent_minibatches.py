"""The critic's sequence minibatches are sb3-contrib's ``RecurrentRolloutBuffer.get(batch_size)``'s, bit for bit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env

from sb3_trpo_plugin import RecurrentTRPO
from sb3_trpo_plugin.recurrent.minibatches import CriticSequences, critic_minibatches
from tests.conftest import ACTION_SPACES, RandomEnv

DICT_OBSERVATIONS = spaces.Dict({"position": spaces.Box(-1, 1, (3,), np.float32), "mode": spaces.Discrete(3)})


def filled_model(observation_space: spaces.Space | None, n_envs: int = 3, n_steps: int = 20) -> RecurrentTRPO:
    """A RecurrentTRPO whose buffer holds one rollout of random episodes of 1 to 9 steps (many sequences)."""
    lengths = iter([1, 4, 9, 2, 7, 3, 5, 1, 8, 6] * 20)
    env = make_vec_env(
        lambda: RandomEnv(ACTION_SPACES["discrete"], observation_space, episode_length=next(lengths)), n_envs=n_envs, seed=0
    )
    policy = "MultiInputLstmPolicy" if isinstance(observation_space, spaces.Dict) else "MlpLstmPolicy"
    policy_kwargs = dict(lstm_hidden_size=4, n_lstm_layers=2, net_arch=dict(pi=[4], vf=[4]))
    model = RecurrentTRPO(policy, env, n_steps=n_steps, batch_size=n_steps, seed=0, policy_kwargs=policy_kwargs)
    _, callback = model._setup_learn(n_steps * n_envs, callback=None)
    callback.on_training_start({}, {})
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=n_steps)
    return model


def assert_same(ours: CriticSequences, theirs: CriticSequences) -> None:
    def same(a: Any, b: Any) -> bool:
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)

    if isinstance(theirs.observations, dict):
        assert isinstance(ours.observations, dict) and ours.observations.keys() == theirs.observations.keys()
        assert all(same(ours.observations[key], theirs.observations[key]) for key in theirs.observations)
    else:
        assert same(ours.observations, theirs.observations)
    for name in ("returns", "episode_starts", "mask"):
        assert same(getattr(ours, name), getattr(theirs, name)), name
    assert len(ours.lstm_states_vf) == 2
    assert all(same(a, b) and a.is_contiguous() for a, b in zip(ours.lstm_states_vf, theirs.lstm_states_vf, strict=True))


@pytest.mark.parametrize("observation_space", [None, DICT_OBSERVATIONS], ids=["box", "dict"])
@pytest.mark.parametrize("batch_size", [1, 7, 16, 60, 100])
def test_the_same_minibatches_as_the_buffers_get(observation_space: spaces.Space | None, batch_size: int) -> None:
    model = filled_model(observation_space)
    buffer = model.rollout_buffer
    next(buffer.get(batch_size=None))  # as train() reads the whole batch first
    n_sequences = []
    for seed in range(4):  # several rotations
        np.random.seed(seed)
        theirs = [CriticSequences.of(samples) for samples in buffer.get(batch_size)]
        state_after_get = np.random.get_state()[1]
        np.random.seed(seed)
        ours = list(critic_minibatches(buffer, batch_size))
        assert np.array_equal(np.random.get_state()[1], state_after_get)  # the same draw, nothing more
        assert len(ours) == len(theirs) == -(-60 // batch_size)
        for mine, reference in zip(ours, theirs, strict=True):
            assert_same(mine, reference)
        n_sequences += [mine.lstm_states_vf[0].shape[1] for mine in ours]
    if batch_size >= 16:  # episodes and environments cut the minibatches into several sequences
        assert max(n_sequences) > 3


def test_a_buffer_not_yet_read_is_read_through_get() -> None:
    buffer = filled_model(None).rollout_buffer
    assert not buffer.generator_ready
    np.random.seed(0)
    ours = list(critic_minibatches(buffer, 16))
    assert buffer.generator_ready
    np.random.seed(0)
    for mine, reference in zip(ours, buffer.get(16), strict=True):
        assert_same(mine, CriticSequences.of(reference))


def test_training_takes_the_same_steps_as_with_the_buffers_get(monkeypatch: pytest.MonkeyPatch) -> None:
    weights = []
    for fast in (True, False):
        model = filled_model(None)
        if not fast:
            from sb3_trpo_plugin.recurrent import critic_fit

            monkeypatch.setattr(
                critic_fit, "critic_minibatches", lambda buffer, size: (CriticSequences.of(s) for s in buffer.get(size))
            )
        np.random.seed(3)
        torch.manual_seed(3)
        model.train()
        weights.append(torch.nn.utils.parameters_to_vector(model.policy.parameters()).detach())
    assert torch.equal(weights[0], weights[1])
