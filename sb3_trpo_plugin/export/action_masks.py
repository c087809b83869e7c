"""
The graph's action-mask input, for policies whose action distribution takes masks (sb3-contrib's maskable ones).

Recognised by the distribution, not by the policy's class: a policy whose ``action_dist`` has ``apply_masking``
(sb3-contrib's ``MaskableDistribution`` family) gets a boolean ``action_masks`` input, applied to the distribution
as ``MaskableActorCriticPolicy.get_distribution`` applies it (``apply_masking``: invalid actions' logits set to
``-1e8``). Whatever else the policy has (an LSTM: :mod:`.lstm_states`) is another part of the graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution

from sb3_trpo_plugin.export.tensors import BATCH, ExportError, GraphTensor

#: The graph input of the masks.
ACTION_MASKS = "action_masks"


def takes_action_masks(policy: Any) -> bool:
    """:return: whether ``policy``'s action distribution applies action masks (sb3-contrib's ``apply_masking``)"""
    return callable(getattr(getattr(policy, "action_dist", None), "apply_masking", None))


def mask_groups(action_space: spaces.Space[Any]) -> list[int]:
    """
    The choices each sub-action masks, in the masks' order (sb3-contrib's flat mask layout).

    :param action_space: a Discrete, MultiDiscrete or MultiBinary space (a MultiBinary action is two choices)
    :return: one count per sub-action
    """
    if isinstance(action_space, spaces.Discrete):
        return [int(action_space.n)]
    if isinstance(action_space, spaces.MultiDiscrete):
        return [int(n) for n in np.asarray(action_space.nvec).ravel()]
    if isinstance(action_space, spaces.MultiBinary):
        return [2] * int(np.prod(action_space.shape))
    raise ExportError(f"action masks need a Discrete, MultiDiscrete or MultiBinary action space, not {action_space}")


class ActionMaskInput:
    """
    The ``action_masks`` input: ``True`` where an action is valid, as ``predict(..., action_masks=...)`` takes them.

    :param action_space: the policy's action space
    """

    def __init__(self, action_space: spaces.Space[Any]) -> None:
        self.groups = mask_groups(action_space)
        self.graph_input = GraphTensor(ACTION_MASKS, np.dtype(np.bool_), (BATCH, sum(self.groups)))

    def apply(self, distribution: Distribution, inputs: dict[str, torch.Tensor]) -> None:
        """
        Mask the distribution (in place, as sb3-contrib's policies do).

        :param distribution: the policy's action distribution for the batch
        :param inputs: the graph's inputs by name
        """
        distribution.apply_masking(inputs[ACTION_MASKS])  # type: ignore[attr-defined]

    def draw(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        """
        Random masks with at least one valid choice per sub-action (the check's inputs).

        :param rng: where the draws come from
        :param batch: how many
        :return: ``(batch, sum(groups))`` booleans
        """
        masks = rng.random((batch, sum(self.groups))) < 0.5
        start = 0
        for size in self.groups:
            masks[np.arange(batch), start + rng.integers(size, size=batch)] = True
            start += size
        return masks

    def describe(self) -> dict[str, Any]:
        """:return: the input as JSON (the graph's metadata): the choices per sub-action in the masks' order"""
        return {**self.graph_input.describe(), "groups": self.groups}
