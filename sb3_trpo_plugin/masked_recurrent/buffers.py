"""
Recurrent rollout buffers that also store each step's action masks: sb3-contrib's ``RecurrentRolloutBuffer`` and
``RecurrentDictRolloutBuffer`` (LSTM states, padded sequence minibatches) with the masks of sb3-contrib's maskable
buffers (``(n_steps, n_envs, mask_dims)``, ones until a step writes its masks).

A minibatch's masks are padded like its other fields, sequence after sequence, with every action valid in the padded
rows (so that a distribution computed there stays defined; the update reads only the valid rows).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.type_aliases import TensorDict
from stable_baselines3.common.vec_env import VecNormalize


class MaskableRecurrentRolloutBufferSamples(NamedTuple):
    """sb3-contrib's ``RecurrentRolloutBufferSamples`` with ``action_masks``, ``(n_seq · max_length, mask_dims)``."""

    observations: torch.Tensor
    actions: torch.Tensor
    old_values: torch.Tensor
    old_log_prob: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    lstm_states: RNNStates
    episode_starts: torch.Tensor
    mask: torch.Tensor
    action_masks: torch.Tensor


class MaskableRecurrentDictRolloutBufferSamples(NamedTuple):
    """sb3-contrib's ``RecurrentDictRolloutBufferSamples`` with ``action_masks``, ``(n_seq · max_length, mask_dims)``."""

    observations: TensorDict
    actions: torch.Tensor
    old_values: torch.Tensor
    old_log_prob: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    lstm_states: RNNStates
    episode_starts: torch.Tensor
    mask: torch.Tensor
    action_masks: torch.Tensor


def mask_dimensions(action_space: spaces.Space) -> int:
    """
    The width of an action mask, as sb3-contrib's maskable buffers count it: one entry per choice of each component.

    :param action_space: Discrete, MultiDiscrete or MultiBinary (two choices per dimension)
    """
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, spaces.MultiDiscrete):
        return int(np.sum(action_space.nvec))
    if isinstance(action_space, spaces.MultiBinary) and isinstance(action_space.n, int):
        return 2 * action_space.n
    raise ValueError(f"no action masks for {action_space}")


class ActionMaskStorage:
    """
    The masks' array beside a recurrent buffer's fields (a mixin of the buffers below): reset with the buffer, written
    with each step, padded like the fields in a minibatch.
    """

    action_space: spaces.Space
    buffer_size: int
    n_envs: int
    pos: int
    generator_ready: bool
    pad: Any
    action_masks: np.ndarray
    mask_dims: int

    def reset(self) -> None:
        super().reset()  # type: ignore[misc]
        self._reset_masks()

    def add(self, *args: Any, lstm_states: RNNStates, action_masks: np.ndarray | None = None, **kwargs: Any) -> None:
        """
        Store one step, with the LSTM states held before it and its masks (``None``: every action valid).

        :param lstm_states: the LSTM states before the step
        :param action_masks: ``(n_envs, mask_dims)`` (or any shape of that size), true where an action is valid
        """
        self._store_masks(action_masks)
        super().add(*args, lstm_states=lstm_states, **kwargs)  # type: ignore[misc]

    def get(self, batch_size: int | None = None) -> Generator[Any, None, None]:
        """The buffer's minibatches, each with its masks (see ``_get_samples``)."""
        if not self.generator_ready:  # flattened in the fields' order (env after env), once, as the fields are
            self.action_masks = self.swap_and_flatten(self.action_masks)  # type: ignore[attr-defined]
        yield from super().get(batch_size)  # type: ignore[misc]

    def _reset_masks(self) -> None:
        self.mask_dims = mask_dimensions(self.action_space)
        self.action_masks = np.ones((self.buffer_size, self.n_envs, self.mask_dims), dtype=np.float32)

    def _store_masks(self, action_masks: np.ndarray | None) -> None:
        if action_masks is not None:
            self.action_masks[self.pos] = np.asarray(action_masks).reshape((self.n_envs, self.mask_dims))

    def _padded_masks(self, batch_inds: np.ndarray, padded_batch_size: int) -> torch.Tensor:
        """The minibatch's masks in its sequences' layout (``self.pad`` is the minibatch's, set by ``_get_samples``)."""
        return self.pad(self.action_masks[batch_inds], padding_value=1.0).reshape((padded_batch_size, self.mask_dims))


class MaskableRecurrentRolloutBuffer(ActionMaskStorage, RecurrentRolloutBuffer):  # type: ignore[misc]
    """
    sb3-contrib's ``RecurrentRolloutBuffer`` storing each step's action masks (see the module's documentation).

    :param buffer_size: Max number of element in the buffer
    :param observation_space: Observation space
    :param action_space: Discrete, MultiDiscrete or MultiBinary action space
    :param hidden_state_shape: ``(n_steps, lstm.num_layers, n_envs, lstm.hidden_size)``
    :param device: PyTorch device
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param gamma: Discount factor
    :param n_envs: Number of parallel environments
    """

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env_change: np.ndarray, env: VecNormalize | None = None
    ) -> MaskableRecurrentRolloutBufferSamples:
        samples = super()._get_samples(batch_inds, env_change, env)
        masks = self._padded_masks(batch_inds, int(samples.mask.shape[0]))
        return MaskableRecurrentRolloutBufferSamples(*samples, action_masks=masks)


class MaskableRecurrentDictRolloutBuffer(ActionMaskStorage, RecurrentDictRolloutBuffer):  # type: ignore[misc]
    """
    sb3-contrib's ``RecurrentDictRolloutBuffer`` storing each step's action masks (see the module's documentation).

    :param buffer_size: Max number of element in the buffer
    :param observation_space: Observation space (a ``Dict``)
    :param action_space: Discrete, MultiDiscrete or MultiBinary action space
    :param hidden_state_shape: ``(n_steps, lstm.num_layers, n_envs, lstm.hidden_size)``
    :param device: PyTorch device
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param gamma: Discount factor
    :param n_envs: Number of parallel environments
    """

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env_change: np.ndarray, env: VecNormalize | None = None
    ) -> MaskableRecurrentDictRolloutBufferSamples:
        samples = super()._get_samples(batch_inds, env_change, env)
        masks = self._padded_masks(batch_inds, int(samples.mask.shape[0]))
        return MaskableRecurrentDictRolloutBufferSamples(*samples, action_masks=masks)


__all__ = [
    "ActionMaskStorage",
    "MaskableRecurrentDictRolloutBuffer",
    "MaskableRecurrentDictRolloutBufferSamples",
    "MaskableRecurrentRolloutBuffer",
    "MaskableRecurrentRolloutBufferSamples",
    "mask_dimensions",
]
