"""
The graph's recurrent part, for policies with an actor LSTM (sb3-contrib's recurrent policies).

Recognised by the policy's ``lstm_actor`` (torch's ``nn.LSTM``), not by its class. ``predict(obs, state,
episode_start)`` of a recurrent policy runs one step of the actor's LSTM between the features and the actor's MLP
(``_process_sequence`` with sequences of length one) and returns the new states; the graph does the same step with
the states and the episode starts as inputs and the new states as outputs:

    h, c = (1 - episode_start) · h, (1 - episode_start) · c        (a new episode starts from zero states)
    latent, (h', c') = lstm(features, (h, c))

which is both of ``_process_sequence``'s branches for one step (with no episode start the factor is exactly 1).
The states are the actor's, ``(num_layers, batch, hidden_size)`` each, as ``predict`` takes and returns them.
Whatever else the policy has (action masks: :mod:`.action_masks`) is another part of the graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from sb3_trpo_plugin.export.tensors import BATCH, ExportError, GraphTensor

#: The graph's inputs: the actor's LSTM states, and whether each observation starts an episode.
LSTM_HIDDEN, LSTM_CELL, EPISODE_STARTS = "lstm_hidden", "lstm_cell", "episode_starts"
#: The graph's outputs: the states after the step (the next step's inputs).
NEXT_LSTM_HIDDEN, NEXT_LSTM_CELL = "next_lstm_hidden", "next_lstm_cell"


def has_actor_lstm(policy: Any) -> bool:
    """:return: whether ``policy`` runs its actor through an LSTM (sb3-contrib's ``lstm_actor``)"""
    return getattr(policy, "lstm_actor", None) is not None


class LstmStateInputs(nn.Module):
    """
    The actor LSTM's step, with its states and the episode starts as inputs and its new states as outputs.

    :param lstm: the policy's actor LSTM
    """

    def __init__(self, lstm: nn.Module) -> None:
        super().__init__()
        if not isinstance(lstm, nn.LSTM) or lstm.batch_first or lstm.bidirectional or lstm.proj_size:
            raise ExportError(
                f"the actor's recurrent module is {lstm!r}; the exporter steps torch's LSTM as sb3-contrib builds it "
                "(not batch-first, one direction, no projection)"
            )
        self.lstm = lstm
        state_shape = (lstm.num_layers, BATCH, lstm.hidden_size)
        self.graph_inputs = [
            GraphTensor(LSTM_HIDDEN, np.dtype(np.float32), state_shape),
            GraphTensor(LSTM_CELL, np.dtype(np.float32), state_shape),
            GraphTensor(EPISODE_STARTS, np.dtype(np.bool_), (BATCH,)),
        ]
        #: The outputs, in the graph's order; their batch axis is 1, as the inputs'.
        self.names = [NEXT_LSTM_HIDDEN, NEXT_LSTM_CELL]

    def forward(self, features: torch.Tensor, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """
        :param features: the actor's features, ``(batch, input_size)``
        :param inputs: the graph's inputs by name
        :return: the LSTM's output for the actor's MLP, ``(batch, hidden_size)``, and the new states by output name
        """
        keep = (1.0 - inputs[EPISODE_STARTS].to(features.dtype)).view(1, -1, 1)
        states = (keep * inputs[LSTM_HIDDEN], keep * inputs[LSTM_CELL])
        output, (hidden, cell) = self.lstm(features.unsqueeze(0), states)
        return output.squeeze(0), {NEXT_LSTM_HIDDEN: hidden, NEXT_LSTM_CELL: cell}

    def initial_states(self, batch: int) -> dict[str, np.ndarray]:
        """:return: zero states for ``batch`` environments, as ``predict`` starts from (``state=None``)"""
        shape = (self.lstm.num_layers, batch, self.lstm.hidden_size)
        return {LSTM_HIDDEN: np.zeros(shape, np.float32), LSTM_CELL: np.zeros(shape, np.float32)}

    def describe(self) -> dict[str, Any]:
        """:return: the part as JSON (the graph's metadata)"""
        return {
            "num_layers": self.lstm.num_layers,
            "hidden_size": self.lstm.hidden_size,
            "inputs": [tensor.name for tensor in self.graph_inputs],
            "outputs": self.names,
        }
