"""
A rollout as sequences: the policy batch of a recurrent policy, and its LSTM re-run over the stored sequences.

sb3-contrib's recurrent rollout buffers hand out a batch as padded sequences: the steps of each environment in
order, cut where an episode starts (and where the environment changes), each sequence padded at its end to the
longest one, with the LSTM states the rollout held before its first step and a mask of the valid steps. The
trust-region step works on the valid steps only: :class:`RecurrentPolicyBatch` keeps the actions, old
log-probabilities and advantages of those, and what the LSTM needs to recompute their distributions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from sb3_trpo_plugin.common.observations import index_observations
from sb3_trpo_plugin.trpo.policy_step import PolicyBatch

#: An LSTM's ``(hidden, cell)`` states, each of shape ``(n_layers, n_sequences, hidden_size)``.
LSTMStates = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class RecurrentPolicyBatch(PolicyBatch):
    """
    The policy step's data as padded sequences (sb3-contrib's layout).

    ``observations``, ``episode_starts`` and ``mask`` have one row per padded step (``n_sequences · max_length``
    rows, sequence after sequence); ``actions``, ``old_log_prob`` and ``advantages`` have one row per valid step,
    in the same order: the padded steps are not part of the step's averages.

    :param initial_states: the actor's LSTM states before the first step of each sequence, as the rollout held them
    :param episode_starts: 1 where an episode starts (the LSTM state is reset before that step), else 0
    :param mask: ``True`` at the valid steps, ``False`` at the padding
    """

    initial_states: LSTMStates
    episode_starts: torch.Tensor
    mask: torch.Tensor

    @property
    def n_sequences(self) -> int:
        """The number of sequences."""
        return self.initial_states[0].shape[1]

    def valid_steps_of_every(self, k: int) -> torch.Tensor:
        """
        Which valid steps belong to every ``k``-th sequence: the rows of ``actions``, ``old_log_prob`` and ``advantages``
        that :meth:`every` keeps (the one rule by which a recurrent batch is sub-sampled).

        :param k: the step between selected sequences
        :return: ``True`` per kept valid step, in the order of the valid steps
        """
        mask = self.mask.reshape(self.n_sequences, -1)
        sequence_of_step = torch.arange(self.n_sequences, device=mask.device)[:, None].expand_as(mask)
        return sequence_of_step[mask] % k == 0

    def every(self, k: int) -> RecurrentPolicyBatch:
        """
        Every ``k``-th whole sequence (a sequence cannot be cut: its later steps need the earlier ones).

        :param k: the step between selected sequences
        :return: the selected sequences, padded to the longest of them
        """
        n_sequences = self.n_sequences
        mask = self.mask.reshape(n_sequences, -1)
        selected_valid_steps = self.valid_steps_of_every(k)
        selected_mask = mask[::k]
        max_length = int(selected_mask.sum(dim=1).max()) if selected_mask.numel() else 0
        selected_mask = selected_mask[:, :max_length]
        # The padded rows of the selected sequences, up to their longest valid length.
        first_rows = torch.arange(n_sequences, device=mask.device)[::k, None] * mask.shape[1]
        rows = (first_rows + torch.arange(max_length, device=mask.device)).flatten()
        return RecurrentPolicyBatch(
            observations=index_observations(self.observations, rows),
            actions=self.actions[selected_valid_steps],
            old_log_prob=self.old_log_prob[selected_valid_steps],
            advantages=self.advantages[selected_valid_steps],
            initial_states=(self.initial_states[0][:, ::k], self.initial_states[1][:, ::k]),
            episode_starts=self.episode_starts[rows],
            mask=selected_mask.flatten(),
        )


def run_over_sequences(
    lstm: nn.LSTM, features: torch.Tensor, initial_states: LSTMStates, episode_starts: torch.Tensor
) -> torch.Tensor:
    """
    The LSTM's outputs along each sequence from its initial state, the state reset to zero before every episode start:
    ``(h_t, c_t) = LSTM(x_t, (1 - e_t) · (h_{t-1}, c_{t-1}))``, ``(h_{-1}, c_{-1})`` the stored initial states.

    When episodes start only at the first step of sequences (as the rollout buffers cut them), the resets are
    applied to the initial states and the whole padded batch goes through one LSTM call; otherwise step by step.
    Padding at the end of a sequence does not change its valid steps' outputs.

    :param lstm: the LSTM (``batch_first=False``)
    :param features: inputs, ``(n_sequences · max_length, input_size)``, sequence after sequence
    :param initial_states: ``(h, c)`` before the first step, each ``(n_layers, n_sequences, hidden_size)``
    :param episode_starts: ``e_t`` per row of ``features``
    :return: the outputs ``h_t`` of the last layer, ``(n_sequences · max_length, hidden_size)``, in the same row order
    """
    n_sequences = initial_states[0].shape[1]
    inputs = features.reshape(n_sequences, -1, lstm.input_size).transpose(0, 1)  # (max_length, n_sequences, input_size)
    starts = episode_starts.reshape(n_sequences, -1).transpose(0, 1).to(features.dtype)  # (max_length, n_sequences)
    hidden, cell = initial_states
    if not bool(starts[1:].any()):
        keep = (1.0 - starts[0]).view(1, n_sequences, 1)
        outputs, _ = lstm(inputs, (keep * hidden, keep * cell))
    else:
        steps = []
        for step_inputs, step_starts in zip(inputs, starts, strict=True):
            keep = (1.0 - step_starts).view(1, n_sequences, 1)
            output, (hidden, cell) = lstm(step_inputs.unsqueeze(0), (keep * hidden, keep * cell))
            steps.append(output)
        outputs = torch.cat(steps)
    return outputs.transpose(0, 1).reshape(-1, lstm.hidden_size)


def valid_rows(observations: PyTorchObs, mask: torch.Tensor) -> PyTorchObs:
    """
    The valid rows of padded observations.

    :param observations: a tensor or a dict of tensors, one row per padded step
    :param mask: ``True`` at the valid steps
    :return: the valid rows, in order
    """
    return index_observations(observations, mask)
