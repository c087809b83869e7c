"""
The lean rollout's parts for a recurrent policy: the package's one loop (:mod:`sb3_trpo_plugin.rollout`), carrying
the LSTM states from step to step.

A recurrent policy acts from its LSTM states, and sb3-contrib's ``RecurrentPPO`` stores in its rollout buffer the
states held before each step, from which the update re-runs the sequences. :func:`recurrent_lean_rollout` gives the
lean loop what that takes: :class:`CarriedLSTMStates`, an inference that carries the states (the lean inference of
:mod:`~sb3_trpo_plugin.recurrent.inference`, bit for bit the policy's forward) and that the loop tells of each step's
end (:class:`~sb3_trpo_plugin.rollout.algorithm.CarriedState`); a writer that stores the states with each step; the
critic's states for the time-limit bootstrap and the last step's values. The state of an environment is reset to zero
before the first step of each of its episodes (inside the inference, from the episode starts); the states carry over
from one rollout to the next in the algorithm's ``_last_lstm_states``, as in ``RecurrentPPO``, whose own loop collects
for the policies the lean inference does not recognise (:mod:`~sb3_trpo_plugin.recurrent.on_policy`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_trpo_plugin.recurrent.inference import (
    RECURRENT_LEAN_INFERENCE,
    RecurrentPolicyInference,
    recurrent_policy_inference,
)
from sb3_trpo_plugin.rollout.algorithm import LeanRollout
from sb3_trpo_plugin.rollout.buffer_writers import BufferWriter


def zero_lstm_states(policy: RecurrentActorCriticPolicy, n_envs: int) -> RNNStates:
    """
    Zero hidden and cell states for the actor's and the critic's LSTM (sb3-contrib's ``RNNStates``).

    :param policy: the recurrent policy (both LSTMs have the actor's shape, as sb3-contrib assumes)
    :param n_envs: the number of environments
    :return: ``RNNStates(pi=(h, c), vf=(h, c))``, each ``(n_layers, n_envs, hidden_size)``
    """
    lstm = policy.lstm_actor
    shape = (lstm.num_layers, n_envs, lstm.hidden_size)

    def zeros() -> torch.Tensor:
        return torch.zeros(shape, device=policy.device)

    return RNNStates((zeros(), zeros()), (zeros(), zeros()))


def check_recurrent_buffer(rollout_buffer: RolloutBuffer) -> None:
    """
    Refuse a rollout buffer that cannot store the LSTM states.

    :param rollout_buffer: the buffer a rollout is to fill
    :raises TypeError: when it is not one of sb3-contrib's recurrent rollout buffers
    """
    if not isinstance(rollout_buffer, (RecurrentRolloutBuffer, RecurrentDictRolloutBuffer)):
        raise TypeError(f"a recurrent policy needs a recurrent rollout buffer to store its states, got {rollout_buffer}")


class CarriedLSTMStates:
    """
    The lean loop's inference for a recurrent policy, and the LSTM states it carries (a
    :class:`~sb3_trpo_plugin.rollout.algorithm.CarriedState`).

    Each call acts from ``states`` (held before the step) and the step's episode starts, and keeps the states after
    the step apart (``states_after_step``) until the loop calls :meth:`advance`; the buffer writer stores ``states``
    with the step.

    :param inference: the policy's lean inference
    :param states: the states held before the rollout's first step
    :param episode_starts: whether each environment starts an episode at that step
    :param keep: called with the held states at each :meth:`advance` (the algorithm's ``_last_lstm_states``)
    """

    def __init__(
        self,
        inference: RecurrentPolicyInference,
        states: RNNStates,
        episode_starts: np.ndarray,
        keep: Callable[[RNNStates], None],
    ) -> None:
        self.inference = inference
        self.policy = inference.policy
        self.states = states
        self.states_after_step = states
        self.episode_starts = episode_starts
        self.episode_starts_tensor: torch.Tensor | None = None
        self._keep = keep

    def __call__(
        self, obs_tensor: PyTorchObs, action_masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """
        The step's actions, values and log-probabilities, as ``policy(obs_tensor, states, episode_starts)`` returns them.

        :param obs_tensor: the observations as tensors
        :param action_masks: unused (recurrent policies act without masks)
        """
        self.episode_starts_tensor = torch.tensor(self.episode_starts, dtype=torch.float32, device=self.policy.device)
        any_start = bool(np.any(self.episode_starts))
        actions, values, log_probs, self.states_after_step = self.inference(
            obs_tensor, self.states, self.episode_starts_tensor, any_start
        )
        return actions, values, log_probs

    def actions(self, obs_tensor: PyTorchObs, action_masks: np.ndarray | None = None) -> np.ndarray:
        """The step's actions (the step is taken whole: the states after it are kept as by :meth:`__call__`)."""
        return self(obs_tensor, action_masks)[0]

    def upstream_mismatch(self, obs_tensor: PyTorchObs, masked: bool = False) -> str | None:
        """
        The proof of the lean inference from the rollout's first states and episode starts
        (:meth:`~sb3_trpo_plugin.recurrent.inference.RecurrentPolicyInference.upstream_mismatch`).

        :param obs_tensor: the observations the rollout starts from
        :param masked: unused (recurrent policies act without masks)
        """
        return self.inference.upstream_mismatch(obs_tensor, self.states, np.asarray(self.episode_starts))

    def advance(self, episode_starts: np.ndarray) -> None:
        """
        The step is written: its states after become the held ones (and the algorithm's ``_last_lstm_states``).

        :param episode_starts: whether each environment starts an episode at the next step
        """
        self.states = self.states_after_step
        self.episode_starts = episode_starts
        self._keep(self.states)

    def step_locals(self) -> dict[str, Any]:
        """The step's ``lstm_states`` (after it) and ``episode_starts``, as callbacks see them in ``RecurrentPPO``'s loop."""
        return {"lstm_states": self.states_after_step, "episode_starts": self.episode_starts_tensor}

    def terminal_value(self, terminal_observation: PyTorchObs, env_index: int) -> torch.Tensor:
        """
        ``predict_values`` of a truncated episode's terminal observation from the critic's states after the step
        (``RecurrentPPO``'s bootstrap: the terminal observation continues the episode).

        :param terminal_observation: one row
        :param env_index: the environment whose episode was truncated
        """
        critic_states = self.states_after_step.vf
        terminal_lstm_state = (
            critic_states[0][:, env_index : env_index + 1, :].contiguous(),
            critic_states[1][:, env_index : env_index + 1, :].contiguous(),
        )
        no_start = torch.zeros(1, dtype=torch.float32, device=self.policy.device)
        return self.policy.predict_values(terminal_observation, terminal_lstm_state, no_start)  # type: ignore[arg-type]

    def last_values(self, observations: PyTorchObs, episode_starts: np.ndarray) -> torch.Tensor:
        """
        ``predict_values`` of the observations after the last step, from the critic's states held after it.

        :param observations: the observations as tensors
        :param episode_starts: whether each environment starts an episode there (its states are reset)
        """
        starts = torch.tensor(episode_starts, dtype=torch.float32, device=self.policy.device)
        return self.policy.predict_values(observations, self.states.vf, starts)  # type: ignore[arg-type]


def lstm_states_writer(rollout_buffer: RolloutBuffer, carried: CarriedLSTMStates) -> BufferWriter:
    """
    ``rollout_buffer.add`` of sb3-contrib's recurrent buffers, with the LSTM states held before the step.

    :param rollout_buffer: a ``RecurrentRolloutBuffer`` or ``RecurrentDictRolloutBuffer``
    :param carried: the states the rollout carries (read at each write: the states before the step being written)
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
        if action_masks is not None:
            raise ValueError("a recurrent rollout buffer does not store action masks")
        rollout_buffer.add(
            obs,
            actions,
            rewards,
            episode_starts,
            values,
            log_probs,
            lstm_states=carried.states,  # type: ignore[call-arg]
        )

    return add


def recurrent_lean_rollout(
    policy: RecurrentActorCriticPolicy,
    rollout_buffer: RolloutBuffer,
    states: RNNStates,
    episode_starts: np.ndarray,
    keep: Callable[[RNNStates], None],
) -> LeanRollout | None:
    """
    The lean loop's parts for a recurrent policy, or ``None`` (sb3-contrib's ``RecurrentPPO`` loop) when its lean
    inference does not apply.

    :param policy: the algorithm's policy
    :param rollout_buffer: the buffer to fill (one of sb3-contrib's recurrent buffers)
    :param states: the LSTM states held before the rollout's first step
    :param episode_starts: whether each environment starts an episode at that step
    :param keep: called with the held states after each step (the algorithm's ``_last_lstm_states``)
    """
    check_recurrent_buffer(rollout_buffer)
    inference = recurrent_policy_inference(policy)
    if inference is None:
        return None
    carried = CarriedLSTMStates(inference, states, episode_starts, keep)
    return LeanRollout(
        carried, lstm_states_writer(rollout_buffer, carried), carried=carried, fast_path=RECURRENT_LEAN_INFERENCE
    )
