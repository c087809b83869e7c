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
