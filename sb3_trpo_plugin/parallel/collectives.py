"""
The collectives of a data-parallel run, over ``torch.distributed``'s default process group.

:class:`Collectives` wraps an initialised process group of several processes (ranks): every method is one
collective (or none), and every all-reduce goes through one method, :meth:`Collectives.all_reduce`, where an
instrumentation hook installed by a caller (the benchmarks count calls, bytes and time) sees it. Averaging (sum, then
divide by the number of ranks) equals the mean over the union of the ranks' batches when all ranks hold batches of
the same size, which the data-parallel algorithm checks. A single process has no :class:`Collectives`: the algorithm
then runs its single-process code, untouched.

A collective that waits for a rank that died or stopped answering fails within the process group's timeout
(:func:`~sb3_trpo_plugin.parallel.collective_timeout`: ``SB3_TRPO_COLLECTIVE_TIMEOUT`` seconds, 300 by default,
instead of torch's 30 minutes); every collective runs through :meth:`Collectives.run`, which turns the failure into a
:class:`~sb3_trpo_plugin.parallel.CollectiveError` naming the operation and the ranks, so that ``torchrun`` can
restart the group.

The tensors of all-reduces and broadcasts are kept for :data:`KEEP_TENSORS_SECONDS` after their collective (the latest
one until the next), so that it is this process's Python code, never one of gloo's threads, that frees them. Up to
torch 2.7, a gloo thread that releases a finished collective whose tensor Python has already dropped takes the GIL to
free the tensor's Python object; when ``destroy_process_group()`` follows at once (a rank that ends its script right
after ``learn()``), it holds the GIL while joining that thread, and the process hangs for good: seen on most tries of
``examples/distributed_cartpole.py`` under ``torchrun`` with torch 2.3 and 2.7, and still on 2 tries in 8 when only
the latest tensor was kept (a gloo thread, preempted on a busy machine, released a collective after the next one had
completed). Tensors are kept, not the collectives' ``Work``, which would keep gloo's connections alive past
``destroy_process_group()``. The memory they hold is bounded by what the update holds anyway: the largest is the
gathered rollout, alive during the update that uses it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from sb3_trpo_plugin.parallel.process_group import is_distributed
from sb3_trpo_plugin.parallel.rendezvous import TIMEOUT_VARIABLE, CollectiveError

#: ``(operation, payload bytes, seconds)`` of one all-reduce, seconds including the wait for the other ranks.
CollectiveObserver = Callable[[str, int, float], None]
Result = TypeVar("Result")
#: Seconds a collective's tensor is kept after the collective completed (see the module's docstring): far beyond how
#: long a gloo thread, preempted between completing a collective and releasing it, stays behind.
KEEP_TENSORS_SECONDS = 1.0


class Collectives:
    """
    The collectives of the default process group, which must be initialised with several processes.

    :ivar world_size: number of ranks
    :ivar rank: this process's rank
    :ivar observer: instrumentation hook called after each all-reduce (``None``: nothing is recorded)
    """

    def __init__(self) -> None:
        if not is_distributed():
            raise RuntimeError("Collectives need torch.distributed initialised with several processes")
        self.world_size: int = dist.get_world_size()
        self.rank: int = dist.get_rank()
        # nccl communicates tensors on the GPU; tensors built here from Python numbers must live there.
        self.device = (
            torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        )
        self.observer: CollectiveObserver | None = None
        # The tensors of the latest collectives and when each completed (see the module's docstring).
        self._recent_tensors: deque[tuple[float, torch.Tensor]] = deque()

    def run(self, operation: str, collective: Callable[[], Result]) -> Result:
        """
        Run one collective (or several that fail as one), turning its failure into a
        :class:`~sb3_trpo_plugin.parallel.CollectiveError`.

        :param operation: the collective's name, for the error message
        :param collective: the calls to ``torch.distributed``
        :return: what ``collective`` returns
        :raise CollectiveError: when it fails (gloo's and nccl's errors, ``DistBackendError`` among them, are
            ``RuntimeError``\\ s): which collective, after how long, and waiting for whom
        """
        start = time.perf_counter()
        try:
            return collective()
        except RuntimeError as error:
            raise self._error(operation, time.perf_counter() - start, error) from error

    def all_reduce(
        self, tensor: torch.Tensor, operation: str, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM
    ) -> torch.Tensor:
        """
        In-place all-reduce, reported to ``observer`` as ``operation``: every all-reduce goes through here.

        :param tensor: same shape and dtype on every rank; overwritten by the result
        :param operation: the name the observer and a failure's message see
        :param op: the reduction (a sum by default)
        :return: ``tensor``, reduced
        """
        start = time.perf_counter()
        self.run(operation, lambda: dist.all_reduce(tensor, op=op))
        self._keep(tensor)
        if self.observer is not None:
            self.observer(operation, tensor.numel() * tensor.element_size(), time.perf_counter() - start)
        return tensor

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """
        Mean of ``tensor`` over ranks (a new tensor; the input is left as it is).

        :param tensor: same shape and dtype on every rank
        :return: the mean over ranks
        """
        return self.all_reduce(tensor.detach().clone(), "mean").div_(self.world_size)

    def mean_floats(self, *values: float | torch.Tensor) -> tuple[float, ...]:
        """
        Means over ranks of a few scalars, in one all-reduce.

        :param values: Python numbers or 0-d tensors
        :return: their means over ranks, as Python floats
        """
        stacked = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.device).reshape(()) for v in values])
        return tuple(self.all_reduce(stacked, "mean_floats").div_(self.world_size).tolist())

    def mean_std(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Mean and unbiased standard deviation over the union of the ranks' ``values``, as ``torch.std`` would give.

        Each rank's count ``n_r``, mean ``m_r`` and sum of squared deviations ``M2_r`` (two local passes, float64)
        are gathered in one collective and merged as ``m = Σ n_r m_r / N``, ``M2 = Σ M2_r + Σ n_r (m_r - m)²``,
        which has no cancellation.

        :param values: this rank's values, any shape
        :return: ``(mean, std)`` as 0-d tensors of ``values``' dtype
        """
        flat = values.detach().reshape(-1).to(torch.float64)
        local_mean = flat.mean()
        local = torch.stack([flat.new_tensor(float(flat.numel())), local_mean, ((flat - local_mean) ** 2).sum()])
        counts, means, m2s = self._gather_rows(local.reshape(1, 3), "mean_std").unbind(dim=1)
        total = counts.sum()
        mean = (counts * means).sum() / total
        m2 = m2s.sum() + (counts * (means - mean) ** 2).sum()
        return mean.to(values.dtype), torch.sqrt(m2 / (total - 1)).to(values.dtype)

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """
        Every rank's rows of ``tensor``, concatenated in rank order, on every rank: one all-reduce of a buffer
        where each rank fills its own block (adding zeros is exact).

        :param tensor: same shape and dtype on every rank
        :return: ``(world_size * len(tensor), ...)``
        """
        return self._gather_rows(tensor, "gather_rows")

    def gather_row_blocks(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """
        :meth:`gather_rows` of several tensors with the same number of rows, in one collective, bit for bit.

        The blocks travel as their bytes: a common dtype would change values (a rollout's integer observations
        first would truncate the float returns and advantages that follow), while bytes summed with zeros come back
        exactly, whatever each block's dtype.

        :param tensors: same shapes and dtypes on every rank, equal first dimension, any dtypes
        :return: each tensor's rows of every rank, in rank order, with its dtype
        """
        n_rows = tensors[0].shape[0]
        rows_as_bytes = [t.detach().contiguous().reshape(n_rows, -1).view(torch.uint8) for t in tensors]
        gathered = self._gather_rows(torch.cat(rows_as_bytes, dim=1), "gather_row_blocks")
        widths = [block.shape[1] for block in rows_as_bytes]
        return [
            block.contiguous().view(t.dtype).reshape(-1, *t.shape[1:])
            for block, t in zip(gathered.split(widths, dim=1), tensors, strict=True)
        ]

    def _gather_rows(self, tensor: torch.Tensor, operation: str) -> torch.Tensor:
        blocks = tensor.new_zeros((self.world_size, *tensor.shape), device=self.device)
        blocks[self.rank] = tensor
        return self.all_reduce(blocks, operation).to(tensor.device).reshape(-1, *tensor.shape[1:])

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """
        Sum of ``tensor`` over ranks, in place (each rank can fill its own part and leave zeros elsewhere:
        adding zeros is exact).

        :param tensor: same shape and dtype on every rank
        :return: ``tensor``, summed
        """
        return self.all_reduce(tensor, "sum")

    def sum_ints(self, *values: int) -> tuple[int, ...]:
        """
        Sums over ranks of a few integers, in one all-reduce.

        :param values: Python integers
        :return: their sums over ranks
        """
        summed = self.all_reduce(torch.tensor(values, dtype=torch.int64, device=self.device), "sum_ints")
        return tuple(int(v) for v in summed.tolist())

    def broadcast_parameters(self, module: torch.nn.Module, src: int = 0) -> None:
        """
        Overwrite ``module``'s parameters and buffers with those of rank ``src``.

        :param module: the same architecture on every rank
        :param src: the rank whose values are kept
        """

        @torch.no_grad()
        def broadcast_each() -> None:
            for tensor in [*module.parameters(), *module.buffers()]:
                data = tensor.data
                dist.broadcast(data, src=src)
                self._keep(data)

        self.run("broadcast_parameters", broadcast_each)

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """
        Rank ``src``'s value of a picklable object, on every rank.

        :param obj: this rank's value (ignored except on ``src``)
        :param src: the rank whose value is kept
        :return: rank ``src``'s value
        """
        holder = [obj]
        self.run("broadcast_object", lambda: dist.broadcast_object_list(holder, src=src))
        return holder[0]

    def all_gather_objects(self, items: list[Any]) -> list[list[Any]]:
        """
        Every rank's list of picklable items, in rank order.

        :param items: this rank's items (e.g. the episode infos of the last rollout)
        :return: one list per rank
        """
        gathered: list[Any] = [None] * self.world_size
        self.run("all_gather_objects", lambda: dist.all_gather_object(gathered, items))
        return gathered

    def _keep(self, tensor: torch.Tensor) -> None:
        """Keep the tensor of a collective that just completed; let go of those kept longer than KEEP_TENSORS_SECONDS."""
        now = time.monotonic()
        while self._recent_tensors and now - self._recent_tensors[0][0] > KEEP_TENSORS_SECONDS:
            self._recent_tensors.popleft()
        self._recent_tensors.append((now, tensor))

    def _error(self, operation: str, waited: float, error: RuntimeError) -> CollectiveError:
        """The ``CollectiveError`` that says which collective failed, after how long, and waiting for whom."""
        others = [other for other in range(self.world_size) if other != self.rank]
        timed_out = "timed out" in str(error).lower() or "timeout" in str(error).lower()
        cause = (
            f"no answer within the process group's timeout ({TIMEOUT_VARIABLE} or init_from_environment's timeout): "
            "a rank stopped answering (a frozen process, a lost machine or network) or runs far behind"
            if timed_out
            else "a rank's connection broke: it died (killed, out of memory, crashed) or its machine went away"
        )
        return CollectiveError(
            f"Collective '{operation}' failed on rank {self.rank} of {self.world_size} after waiting {waited:.1f} s "
            f"for rank(s) {others}: {cause}. Under torchrun --max-restarts, the group restarts; resume from the newest "
            f"checkpoint (docs/distributed.md, 'When a process dies'). {type(error).__name__}: {error}"
        )
