"""
The critic's sequence minibatches of a recurrent rollout buffer, padded by one NumPy gather per field.

sb3-contrib's ``RecurrentRolloutBuffer.get(batch_size)`` rotates the buffer's steps (environment after environment,
each in time order) at a random index, splits them into runs of ``batch_size`` steps, cuts each run into sequences
where an episode starts or the environment changes, and pads the sequences to the longest one, building one tensor
per sequence and field (``torch.tensor`` then ``pad_sequence``): thousands of small tensors per epoch. The critic's
regression reads five of the fields. :func:`critic_minibatches` computes the same minibatches (the rotation drawn by
the same ``np.random.randint`` call, so the random stream moves alike) with the same values, bit for bit: each field
is padded by one fancy-indexed copy into a zero array.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.type_aliases import RecurrentDictRolloutBufferSamples, RecurrentRolloutBufferSamples
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_trpo_plugin.recurrent.sequences import LSTMStates


@dataclass(frozen=True)
class CriticSequences:
    """
    The fields of one of ``get(batch_size)``'s minibatches that the critic's regression reads (same names and layout).

    :param observations: one row per padded step (``n_sequences · max_length`` rows)
    :param returns: the λ-returns, one per padded step (0 at the padding)
    :param lstm_states_vf: the critic's LSTM states before each sequence, ``(n_layers, n_sequences, hidden_size)``
    :param episode_starts: 1 where an episode starts, one per padded step
    :param mask: 1 at the valid steps, 0 at the padding
    """

    observations: PyTorchObs
    returns: torch.Tensor
    lstm_states_vf: LSTMStates
    episode_starts: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def of(cls, samples: RecurrentRolloutBufferSamples | RecurrentDictRolloutBufferSamples) -> CriticSequences:
        """The critic's fields of one of ``get``'s minibatches."""
        return cls(samples.observations, samples.returns, samples.lstm_states.vf, samples.episode_starts, samples.mask)


def _padded(array: np.ndarray, rows: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """
    ``pad_sequence(batch_first=True)`` of sequences as one array: ``array[rows]`` put at the ``valid`` places of a
    zero array of shape ``(n_sequences, max_length, *array.shape[1:])``.
    """
    out = np.zeros((*valid.shape, *array.shape[1:]), dtype=array.dtype)
    out[valid] = array[rows]
    return out


def _as_tensor(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """A tensor of its own (as ``torch.tensor``, which sb3-contrib's buffer calls, makes one) on ``device``."""
    return torch.tensor(array, device=device)


def critic_minibatches(
    rollout_buffer: RecurrentRolloutBuffer | RecurrentDictRolloutBuffer, batch_size: int
) -> Iterator[CriticSequences]:
    """
    One epoch of ``rollout_buffer.get(batch_size)``'s minibatches, the critic's fields only (see the module's
    documentation). A buffer that has handed out no batch yet (its arrays are flattened by the first ``get``) is read
    through ``get`` itself.

    :param rollout_buffer: a full recurrent rollout buffer
    :param batch_size: steps per minibatch
    """
    if not rollout_buffer.generator_ready:
        yield from (CriticSequences.of(samples) for samples in rollout_buffer.get(batch_size))
        return
    n_rows = rollout_buffer.buffer_size * rollout_buffer.n_envs
    split_index = np.random.randint(n_rows)  # get()'s rotation, the same draw
    indices = np.concatenate((np.arange(n_rows)[split_index:], np.arange(n_rows)[:split_index]))
    env_change = np.zeros((rollout_buffer.buffer_size, rollout_buffer.n_envs))
    env_change[0, :] = 1.0
    env_change = rollout_buffer.swap_and_flatten(env_change)
    device = rollout_buffer.device
    for start in range(0, n_rows, batch_size):
        batch_indices = indices[start : start + batch_size]
        n_steps = len(batch_indices)
        # create_sequencers: a sequence starts where an episode starts, where the environment changes, and at 0
        starts_here = np.logical_or(rollout_buffer.episode_starts[batch_indices], env_change[batch_indices]).flatten()
        starts_here[0] = True
        sequence_starts = np.flatnonzero(starts_here)
        lengths = np.diff(np.append(sequence_starts, n_steps))
        max_length = int(lengths.max())
        offsets = np.arange(max_length)
        valid = offsets[None, :] < lengths[:, None]
        rows = batch_indices[(sequence_starts[:, None] + offsets[None, :])[valid]]

        padded_rows = valid.size
        observations: PyTorchObs
        if isinstance(rollout_buffer.observations, dict):
            observations = {
                key: _as_tensor(_padded(array, rows, valid).reshape((padded_rows, *rollout_buffer.obs_shape[key])), device)
                for key, array in rollout_buffer.observations.items()
            }
        else:
            shape = (padded_rows, *rollout_buffer.obs_shape)
            observations = _as_tensor(_padded(rollout_buffer.observations, rows, valid).reshape(shape), device)
        first_rows = batch_indices[sequence_starts]
        states = tuple(
            _as_tensor(array[first_rows].swapaxes(0, 1), device).contiguous()
            for array in (rollout_buffer.hidden_states_vf, rollout_buffer.cell_states_vf)
        )
        yield CriticSequences(
            observations=observations,
            returns=_as_tensor(_padded(rollout_buffer.returns, rows, valid).reshape(-1), device),
            lstm_states_vf=states,
            episode_starts=_as_tensor(_padded(rollout_buffer.episode_starts, rows, valid).reshape(-1), device),
            mask=_as_tensor(valid.reshape(-1).astype(rollout_buffer.returns.dtype), device),  # padded ones
        )
