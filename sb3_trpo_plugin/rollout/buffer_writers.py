"""
How the lean rollout loop writes one step into a rollout buffer: for SB3's own ``RolloutBuffer`` and
``DictRolloutBuffer``, directly into their arrays (``add``'s writes without its intermediate copies and per-call
checks); for any other buffer class, through its ``add``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer

#: ``rollout_buffer.add(obs, actions, rewards, episode_starts, values, log_probs, action_masks)`` for one buffer.
BufferWriter = Callable[
    [Any, np.ndarray, np.ndarray, np.ndarray, "th.Tensor | None", "th.Tensor | None", "np.ndarray | None"], None
]


def rollout_buffer_writer(rollout_buffer: RolloutBuffer) -> BufferWriter:
    """
    ``rollout_buffer.add``, specialised once per rollout: for SB3's own ``RolloutBuffer`` and ``DictRolloutBuffer``,
    the same writes into its arrays without ``add``'s intermediate copies and per-call checks; any other buffer class
    gets the data through its ``add``.

    The writer takes the observations the actions were taken in, the actions (Discrete ones of shape
    ``(n_envs, 1)``), the rewards (with the time-limit bootstrap), whether each observation starts an episode, the
    values ``(n_envs, 1)`` and the log-probabilities ``(n_envs,)`` (``None`` for both leaves them to be filled for
    the whole rollout: SB3's buffers only), and the step's action masks (``None`` without masking; given, they go
    to ``add`` as its ``action_masks`` keyword, as sb3-contrib's maskable buffers take them).

    :param rollout_buffer: the buffer being filled
    """
    kind = type(rollout_buffer)
    if kind is RolloutBuffer or kind is DictRolloutBuffer:
        return direct_buffer_writer(rollout_buffer)

    def add_through_add(
        obs: Any,
        actions: np.ndarray,
        rewards: np.ndarray,
        episode_starts: np.ndarray,
        values: Any,
        log_probs: Any,
        action_masks: np.ndarray | None,
    ) -> None:
        assert values is not None and log_probs is not None, "a buffer of another class takes every step's values"
        if action_masks is None:
            rollout_buffer.add(obs, actions, rewards, episode_starts, values, log_probs)
        else:
            rollout_buffer.add(obs, actions, rewards, episode_starts, values, log_probs, action_masks=action_masks)  # type: ignore[call-arg]

    return add_through_add


def direct_buffer_writer(rollout_buffer: RolloutBuffer) -> BufferWriter:
    """
    ``RolloutBuffer.add`` (or ``DictRolloutBuffer.add``) as direct writes into the buffer's arrays, without ``add``'s
    intermediate copies and per-call checks, for a buffer with the arrays of SB3's (see :func:`rollout_buffer_writer`
    for the writer's arguments). Action masks are refused: a buffer that stores them wraps this writer.

    :param rollout_buffer: SB3's ``RolloutBuffer`` or ``DictRolloutBuffer``, or a subclass whose ``add`` adds fields
        of its own to SB3's
    """
    buffer, n_envs = rollout_buffer, rollout_buffer.n_envs
    action_shape = (n_envs, rollout_buffer.action_dim)
    # Reshape needed when using multiple envs with discrete observations (as in add)
    if isinstance(buffer, DictRolloutBuffer):
        discrete_shapes = {
            key: (n_envs, *buffer.obs_shape[key])
            for key, space in buffer.observation_space.spaces.items()
            if isinstance(space, spaces.Discrete)
        }

        def write_observations(position: int, obs: Any) -> None:
            for key, observations in buffer.observations.items():
                shape = discrete_shapes.get(key)
                observations[position] = obs[key] if shape is None else np.asarray(obs[key]).reshape(shape)

    elif isinstance(buffer.observation_space, spaces.Discrete):
        shape = (n_envs, *buffer.obs_shape)

        def write_observations(position: int, obs: Any) -> None:
            buffer.observations[position] = np.asarray(obs).reshape(shape)

    else:

        def write_observations(position: int, obs: Any) -> None:
            buffer.observations[position] = obs

    def add(
        obs: Any,
        actions: np.ndarray,
        rewards: np.ndarray,
        episode_starts: np.ndarray,
        values: Any,
        log_probs: Any,
        action_masks: np.ndarray | None,
    ) -> None:
        if action_masks is not None:
            raise ValueError(f"{type(buffer).__name__}'s writer does not store action masks")
        position = buffer.pos
        write_observations(position, obs)
        # Reshape to handle multi-dim and discrete action spaces, see GH #970 #1392
        buffer.actions[position] = actions.reshape(action_shape)
        buffer.rewards[position] = rewards
        buffer.episode_starts[position] = episode_starts
        if values is not None and log_probs is not None:
            buffer.values[position] = values.cpu().numpy().ravel()
            buffer.log_probs[position] = log_probs.cpu().numpy()
        buffer.pos += 1
        if buffer.pos == buffer.buffer_size:
            buffer.full = True

    return add
