"""Batches of observations as SB3 policies take them: a tensor, or a dict of tensors for Dict observation spaces."""

from __future__ import annotations

import torch
from stable_baselines3.common.type_aliases import PyTorchObs


def index_observations(observations: PyTorchObs, index: torch.Tensor | slice) -> PyTorchObs:
    """
    Select rows of a batch of observations, a tensor or a dict of tensors.

    :param observations: batch of observations
    :param index: row indices or a slice
    :return: the selected rows
    """
    if isinstance(observations, dict):
        return {key: value[index] for key, value in observations.items()}
    return observations[index]
