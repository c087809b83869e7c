"""
The batch reductions a data-parallel run injects into TRPO's single-process update.

:class:`AllRanks` reduces over every rank's batch with collectives (each rank holds one part of the whole
batch); :class:`WholeBatchOnThisRank` serves one rank that computes alone on the whole batch, already
gathered (the split update). Both shuffle the critic's rows so that each minibatch is the union of one
minibatch per rank, from a generator seeded alike wherever it is used.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sb3_trpo_plugin.common.reductions import OneProcess
from sb3_trpo_plugin.parallel.collectives import Collectives


class InterleavedShuffle:
    """
    Epoch orders of the rows of ``world_size`` ranks, gathered rank by rank (rank ``r`` holding rows
    ``r·n .. (r+1)·n - 1``): each rank's rows are shuffled apart and the minibatches interleaved, so that slice
    ``i`` of ``world_size · batch_size`` rows holds minibatch ``i`` of every rank.

    :param world_size: number of ranks
    :param draw_seed: gives the generator's seed on first use (the same on every rank that shuffles)
    """

    def __init__(self, world_size: int, draw_seed: Callable[[], int]):
        self.world_size = world_size
        self._draw_seed = draw_seed
        self._generator: torch.Generator | None = None

    def order(self, n_rows: int, batch_size: int, device: torch.device) -> tuple[torch.Tensor, int]:
        """
        :param n_rows: rows of all ranks together
        :param batch_size: rows per minibatch per rank
        :param device: where the order is used
        :return: the permutation of the rows and the rows per minibatch
        """
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self._draw_seed())
        n_local = n_rows // self.world_size
        permutations = torch.stack(
            [torch.randperm(n_local, generator=self._generator) + r * n_local for r in range(self.world_size)]
        )
        order = torch.cat([block.reshape(-1) for block in permutations.split(batch_size, dim=1)])
        return order.to(device), batch_size * self.world_size


def _random_seed() -> int:
    return int(torch.randint(2**62, ()))


class AllRanks:
    """
    Reductions over the batches of all ranks, each holding one part of the whole batch.

    :param collectives: the process group's collectives
    """

    def __init__(self, collectives: Collectives):
        self.collectives = collectives
        # Every rank shuffles the gathered rows alike: rank 0's seed, broadcast on first use.
        self._shuffle = InterleavedShuffle(collectives.world_size, lambda: collectives.broadcast_object(_random_seed()))

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.collectives.mean(tensor)

    def mean_floats(self, *values: float | torch.Tensor) -> tuple[float, ...]:
        return self.collectives.mean_floats(*values)

    def mean_std(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.collectives.mean_std(values)

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.collectives.gather_rows(tensor)

    def minibatch_order(self, n_rows: int, batch_size: int, device: torch.device) -> tuple[torch.Tensor, int]:
        return self._shuffle.order(n_rows, batch_size, device)


class WholeBatchOnThisRank(OneProcess):
    """
    Reductions of a rank that computes alone on the whole batch (every rank's rows, gathered rank by rank):
    the identity, but the critic's minibatches interleave the ranks' rows as :class:`AllRanks` would.

    :param world_size: how many ranks' rows the batch holds
    """

    def __init__(self, world_size: int):
        self._shuffle = InterleavedShuffle(world_size, _random_seed)

    def minibatch_order(self, n_rows: int, batch_size: int, device: torch.device) -> tuple[torch.Tensor, int]:
        return self._shuffle.order(n_rows, batch_size, device)
