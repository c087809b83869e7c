"""
How statistics of this process's batch become statistics of the whole batch.

TRPO's policy step and critic regression are written for one process. The few places where they reduce over
the batch (the advantages' moments, the surrogate and its gradient, Fisher-vector products, the line search's
surrogate and KL, the critic's rows and their shuffles) go through a :class:`BatchReductions`. On one process
this batch is the whole batch and every reduction is the identity (:data:`ONE_PROCESS`); a data-parallel run
injects reductions over every process's batch (:mod:`sb3_trpo_plugin.parallel.reductions`), the way Spinning
Up's TRPO averages over MPI in one-liners.
"""

from __future__ import annotations

from typing import Protocol

import torch


class BatchReductions(Protocol):
    """Reductions from this process's batch to the whole batch."""

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """A mean over this batch (a gradient, a Fisher-vector product) → the mean over the whole batch."""
        ...

    def mean_floats(self, *values: float | torch.Tensor) -> tuple[float, ...]:
        """Means over this batch of a few scalars → means over the whole batch, as Python floats."""
        ...

    def mean_std(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This batch's values → mean and unbiased standard deviation of the whole batch's values (0-d tensors)."""
        ...

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """This batch's rows → the whole batch's rows."""
        ...

    def minibatch_order(self, n_rows: int, batch_size: int, device: torch.device) -> tuple[torch.Tensor, int]:
        """
        One epoch's order of the whole batch's ``n_rows`` rows for minibatches of ``batch_size`` rows per process:
        a permutation of the rows, and the number of rows per minibatch (contiguous slices of the permuted rows).
        """
        ...


class OneProcess:
    """The reductions of a single process: its batch is the whole batch."""

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def mean_floats(self, *values: float | torch.Tensor) -> tuple[float, ...]:
        return tuple(float(value) for value in values)

    def mean_std(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return values.mean(), values.std()

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def minibatch_order(self, n_rows: int, batch_size: int, device: torch.device) -> tuple[torch.Tensor, int]:
        return torch.randperm(n_rows, device=device), batch_size


#: The reductions of a single process (stateless).
ONE_PROCESS = OneProcess()


class RowWeighted:
    """
    Reductions over processes whose batches differ in rows: each mean weighs this batch by its rows, so that it is the
    mean over the rows of every process's batch together (e.g. the valid steps of sub-sampled sequences). Build it with
    :func:`weighted_by_rows`.

    :param reductions: the reductions over the processes (plain means over them)
    :param weight: this batch's rows over the mean rows of a process's batch
    """

    def __init__(self, reductions: BatchReductions, weight: float):
        self.base = reductions
        self.weight = weight

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.base.mean(tensor * self.weight)

    def mean_floats(self, *values: float | torch.Tensor) -> tuple[float, ...]:
        return self.base.mean_floats(*(float(value) * self.weight for value in values))

    def mean_std(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base.mean_std(values)  # already the moments of every process's values together

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.base.gather_rows(tensor)

    def minibatch_order(self, n_rows: int, batch_size: int, device: torch.device) -> tuple[torch.Tensor, int]:
        return self.base.minibatch_order(n_rows, batch_size, device)


def weighted_by_rows(reductions: BatchReductions, n_rows: int) -> BatchReductions:
    """
    ``reductions`` whose means are over the rows of every process's batch together, this one holding ``n_rows``
    (one reduction to learn the other processes' rows). One process, or a batch of the mean rows, keeps
    ``reductions`` as they are (the same numbers: a weight of one changes nothing).

    :param reductions: the reductions over the processes (a :class:`RowWeighted` is weighed afresh from its base)
    :param n_rows: the rows of this process's batch over which its statistics are means
    """
    base = reductions.base if isinstance(reductions, RowWeighted) else reductions
    if isinstance(base, OneProcess):
        return base
    (mean_rows,) = base.mean_floats(float(n_rows))
    weight = n_rows / mean_rows if mean_rows > 0 else 0.0
    return base if weight == 1.0 else RowWeighted(base, weight)
