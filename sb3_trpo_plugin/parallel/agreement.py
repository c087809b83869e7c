"""
What the ranks of a data-parallel run agree on besides the batch: identical weights, and merged running statistics.

:func:`check_in_sync` compares the ranks' weights through :func:`checksum` (one small all-reduce) and raises on every
rank when they have drifted apart. :func:`merge_running_mean_std` makes each rank's ``RunningMeanStd`` (VecNormalize's
statistics) those of every rank's observations, from the state where they last agreed
(:func:`running_mean_std_state`). Each is one all-reduce of :class:`~.collectives.Collectives`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
from stable_baselines3.common.running_mean_std import RunningMeanStd

from sb3_trpo_plugin.parallel.collectives import Collectives

#: ``(count, mean, var)`` of running statistics.
RunningMeanStdState = tuple[float, np.ndarray, np.ndarray]


def checksum(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """
    Two float64 sums that change when any value changes or values trade places: ``Σ x`` and ``Σ x · w``
    with fixed pseudo-random position weights ``w``.

    :param tensors: e.g. a module's parameters
    :return: 1-D tensor of two values
    """
    flat = torch.cat([t.detach().reshape(-1) for t in tensors]).to(torch.float64)
    weights = torch.sin(torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device))
    return torch.stack([flat.sum(), (flat * weights).sum()])


def check_in_sync(collectives: Collectives, module: torch.nn.Module, context: str = "") -> None:
    """
    Raise on every rank when ranks' parameters differ: one small all-reduce (max of the checksums and of their negatives).

    :param collectives: the process group's collectives
    :param module: the model every rank should hold identically
    :param context: where the check happens, for the error message
    :raise RuntimeError: when the weights have drifted apart
    """
    local = checksum([*module.parameters(), *module.buffers()]).to(collectives.device)
    extremes = collectives.all_reduce(torch.cat([local, -local]), "check_in_sync", op=dist.ReduceOp.MAX).tolist()
    highest, lowest = extremes[:2], [-value for value in extremes[2:]]
    if highest != lowest:
        raise RuntimeError(
            f"Data-parallel ranks hold different weights{' ' + context if context else ''}: parameter checksums range "
            f"from {lowest} to {highest} over {collectives.world_size} ranks (this rank {collectives.rank}: "
            f"{local.tolist()}). Every rank must run the same code, hyperparameters and library versions, and nothing "
            "may change one rank's weights alone."
        )


def running_mean_std_state(rms: RunningMeanStd) -> RunningMeanStdState:
    """
    A copy of ``(count, mean, var)`` of running statistics, e.g. where all ranks last agreed.

    :param rms: running statistics
    :return: count, mean and variance
    """
    return float(rms.count), np.array(rms.mean, dtype=np.float64), np.array(rms.var, dtype=np.float64)


def merge_running_mean_std(collectives: Collectives, rms: RunningMeanStd, start: RunningMeanStdState) -> None:
    """
    Make ``rms`` the statistics of everything all ranks saw: the common ``start`` plus each rank's new data.

    Each rank began from the same statistics ``start`` and updated them with its own observations. The
    new data's moments about the start's mean (count, ``Σ(x - m₀)``, ``Σ(x - m₀)²``, recovered from each
    rank's ``(count, mean, var)``) are summed over ranks in float64 and added to the start's. Every rank
    ends with the same statistics, those of the union of all observations.

    :param collectives: the process group's collectives
    :param rms: this rank's statistics, updated in place
    :param start: ``(count, mean, var)`` when all ranks last agreed (:func:`running_mean_std_state`)
    """
    start_count, start_mean, start_var = start
    count, shift = rms.count, rms.mean - start_mean
    new_first = count * shift
    new_second = count * (rms.var + shift**2) - start_count * start_var
    packed = np.concatenate([[count - start_count], np.ravel(new_first), np.ravel(new_second)])
    summed = collectives.all_reduce(
        torch.as_tensor(packed, dtype=torch.float64, device=collectives.device), "merge_running_mean_std"
    )
    total = summed.cpu().numpy()
    shape, size = start_mean.shape, start_mean.size
    merged_count = start_count + total[0]
    merged_shift = total[1 : 1 + size].reshape(shape) / merged_count
    merged_second = (start_count * start_var + total[1 + size :].reshape(shape)) / merged_count
    rms.count = float(merged_count)
    rms.mean = start_mean + merged_shift
    rms.var = np.maximum(merged_second - merged_shift**2, 0.0)
