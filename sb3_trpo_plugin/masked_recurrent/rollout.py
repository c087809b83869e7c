"""
The rollout of a masked recurrent policy through the package's one loop (:mod:`sb3_trpo_plugin.rollout`): the
recurrent rollout's carried LSTM states and the masked rollout's step masks together.

No SB3-family library has a loop for this policy to fall back on, and the lean inference replicas do not cover it, so
every step acts through the policy's own ``forward(obs, lstm_states, episode_starts, action_masks=...)`` (exact by
construction; nothing to prove). The loop's other parts are the variants': the masks asked of the environments before
each step (``get_action_masks``, as ``MaskablePPO``'s loop), the LSTM states carried, reset at episode starts, stored
with each step and kept for the next rollout (:class:`~sb3_trpo_plugin.recurrent.rollout.CarriedLSTMStates`: the
time-limit bootstrap and the last values from the critic's states), and a writer storing both in the buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_plugin.masked.inference import NO_MASKS_MESSAGE
from sb3_trpo_plugin.masked_recurrent.buffers import MaskableRecurrentDictRolloutBuffer, MaskableRecurrentRolloutBuffer
from sb3_trpo_plugin.masked_recurrent.policies import MaskableRecurrentActorCriticPolicy
from sb3_trpo_plugin.recurrent.rollout import CarriedLSTMStates
from sb3_trpo_plugin.replicas.proofs import FastPath
from sb3_trpo_plugin.rollout.algorithm import LeanRollout
from sb3_trpo_plugin.rollout.buffer_writers import BufferWriter

#: The rollout step of a masked recurrent policy, as the loop's proof records it: the policy's own forward, which
#: needs no proof (:meth:`CarriedMaskedLSTMStates.upstream_mismatch` finds no difference by construction).
MASKED_RECURRENT_FORWARD = FastPath("the masked recurrent rollout step (the policy's own forward)", "the policy's own forward")


class MaskedRecurrentForward:
    """
    One rollout step of a masked recurrent policy: its own ``forward`` without gradients, the actions as NumPy.

    :param policy: the algorithm's policy
    """

    def __init__(self, policy: MaskableRecurrentActorCriticPolicy) -> None:
        self.policy = policy

    def __call__(
        self,
        obs_tensor: PyTorchObs,
        lstm_states: RNNStates,
        episode_starts: torch.Tensor,
        any_start: bool,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, RNNStates]:
        """
        The step's actions, values, log-probabilities and new LSTM states, as ``forward`` returns them.

        :param obs_tensor: the observations as tensors
        :param lstm_states: the states before the step
        :param episode_starts: 1.0 where an episode starts
        :param any_start: unused (``forward`` looks at the episode starts itself)
        :param action_masks: the step's masks; ``None``: every action valid
        """
        with torch.no_grad():
            actions, values, log_probs, new_states = self.policy(
                obs_tensor, lstm_states, episode_starts, action_masks=action_masks
            )
        return actions.cpu().numpy(), values, log_probs, new_states


class CarriedMaskedLSTMStates(CarriedLSTMStates):
    """
    :class:`~sb3_trpo_plugin.recurrent.rollout.CarriedLSTMStates` acting with the step's masks: the lean loop's
    inference and carried state for a masked recurrent policy.

    :param inference: the policy's step
    :param states: the states held before the rollout's first step
    :param episode_starts: whether each environment starts an episode at that step
    :param keep: called with the held states at each ``advance`` (the algorithm's ``_last_lstm_states``)
    """

    def __init__(
        self,
        inference: MaskedRecurrentForward,
        states: RNNStates,
        episode_starts: np.ndarray,
        keep: Callable[[RNNStates], None],
    ) -> None:
        super().__init__(inference, states, episode_starts, keep)  # type: ignore[arg-type]
        self.masked_inference = inference

    def __call__(
        self, obs_tensor: PyTorchObs, action_masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """
        The step's actions, values and log-probabilities among the valid actions.

        :param obs_tensor: the observations as tensors
        :param action_masks: the step's masks, ``(n_envs, mask_dims)``; ``None``: every action valid
        """
        self.episode_starts_tensor = torch.tensor(self.episode_starts, dtype=torch.float32, device=self.policy.device)
        actions, values, log_probs, self.states_after_step = self.masked_inference(
            obs_tensor, self.states, self.episode_starts_tensor, bool(np.any(self.episode_starts)), action_masks
        )
        return actions, values, log_probs

    def upstream_mismatch(self, obs_tensor: PyTorchObs, masked: bool = False) -> str | None:
        """Nothing to prove: each step is the policy's own ``forward``."""
        return None


def masks_and_states_writer(
    rollout_buffer: MaskableRecurrentRolloutBuffer | MaskableRecurrentDictRolloutBuffer, carried: CarriedLSTMStates
) -> BufferWriter:
    """
    ``rollout_buffer.add`` with the LSTM states held before the step and the step's masks.

    :param rollout_buffer: a maskable recurrent buffer
    :param carried: the states the rollout carries (read at each write: those before the step being written)
    """

    def add(
        obs: Any,
        actions: np.ndarray,
        rewards: np.ndarray,
        episode_starts: np.ndarray,
        values: Any,
        log_probs: Any,
        action_masks: np.ndarray | None,
    ) -> None:
        rollout_buffer.add(
            obs, actions, rewards, episode_starts, values, log_probs, lstm_states=carried.states, action_masks=action_masks
        )

    return add


def masked_recurrent_rollout(
    policy: MaskableRecurrentActorCriticPolicy,
    env: VecEnv,
    rollout_buffer: RolloutBuffer,
    states: RNNStates,
    episode_starts: np.ndarray,
    keep: Callable[[RNNStates], None],
    use_masking: bool,
) -> LeanRollout:
    """
    The one loop's parts for a masked recurrent policy.

    :param policy: the algorithm's policy
    :param env: the training environment; with masking, it must expose ``action_masks()``
    :param rollout_buffer: a maskable recurrent buffer
    :param states: the LSTM states held before the rollout's first step
    :param episode_starts: whether each environment starts an episode at that step
    :param keep: called with the held states after each step (the algorithm's ``_last_lstm_states``)
    :param use_masking: ask the environments for masks before each step and act with them
    :raises ValueError: with masking, for environments without ``action_masks()``
    :raises TypeError: for a buffer that stores no masks or no LSTM states
    """
    if not isinstance(rollout_buffer, (MaskableRecurrentRolloutBuffer, MaskableRecurrentDictRolloutBuffer)):
        raise TypeError(f"a masked recurrent policy needs a buffer storing masks and LSTM states, got {rollout_buffer}")
    if use_masking and not is_masking_supported(env):
        raise ValueError(NO_MASKS_MESSAGE)
    carried = CarriedMaskedLSTMStates(MaskedRecurrentForward(policy), states, episode_starts, keep)
    return LeanRollout(
        carried,
        masks_and_states_writer(rollout_buffer, carried),
        action_masks=(lambda: get_action_masks(env)) if use_masking else None,
        carried=carried,
        fast_path=MASKED_RECURRENT_FORWARD,
    )


__all__ = [
    "MASKED_RECURRENT_FORWARD",
    "CarriedMaskedLSTMStates",
    "MaskedRecurrentForward",
    "masked_recurrent_rollout",
    "masks_and_states_writer",
]
