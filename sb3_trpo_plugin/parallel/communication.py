"""
Communication between the processes of a data-parallel run, over ``torch.distributed``.

:class:`Collectives` wraps an initialised process group of several processes (ranks): every method is one
collective (or none), and every all-reduce goes through one method, where an instrumentation hook installed by
a caller (the benchmarks count calls, bytes and time) sees it. Averaging (sum, then divide by the number of
ranks) equals the mean over the union of the ranks' batches when all ranks hold batches of the same size,
which the data-parallel algorithm checks. A single process has no :class:`Collectives`: the algorithm then
runs its single-process code, untouched.

A collective that waits for a rank that died or stopped answering fails within the process group's timeout
(:func:`collective_timeout`: ``SB3_TRPO_COLLECTIVE_TIMEOUT`` seconds, 300 by default, instead of torch's 30
minutes) with a :class:`CollectiveError` naming the operation and the ranks, so that ``torchrun`` can restart the group.
"""

from __future__ import annotations

import atexit
import importlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import numpy as np
import torch
import torch.distributed as dist
from stable_baselines3.common.running_mean_std import RunningMeanStd

from sb3_trpo_plugin.parallel.rendezvous import TIMEOUT_VARIABLE, CollectiveError, attempt_store, collective_timeout

#: ``(operation, payload bytes, seconds)`` of one all-reduce, seconds including the wait for the other ranks.
CollectiveObserver = Callable[[str, int, float], None]


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """Whether this process is rank 0, the one that logs, evaluates and saves."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """Whether the environment variables of a multi-process ``torchrun`` (or ``env://``) launch are set."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")) and (
        int(os.environ["WORLD_SIZE"]) > 1
    )


def init_from_environment(device: torch.device | str = "auto", timeout: float | None = None) -> bool:
    """
    Initialise the default process group from ``torchrun``'s environment variables, when launched by it.

    Backend ``nccl`` when the model runs on a GPU (each process then uses GPU ``LOCAL_RANK``), ``gloo``
    otherwise. Does nothing when already initialised or not launched with several processes. A group
    initialised here is destroyed when the interpreter exits. Under ``torchrun``'s shared store, every
    attempt (the first start and each restart) joins under keys of its own (:func:`~.rendezvous.attempt_store`).

    :param device: the model's device, as given to the algorithm
    :param timeout: seconds a collective waits for the other ranks (:func:`collective_timeout`; ``None``: the
        environment's ``SB3_TRPO_COLLECTIVE_TIMEOUT``, else 300)
    :return: whether ``torch.distributed`` is initialised with several processes afterwards
    :raise CollectiveError: when the other ranks do not join within the timeout
    """
    if dist.is_available() and not dist.is_initialized() and launched_by_torchrun():
        use_cuda = torch.cuda.is_available() and torch.device("cuda" if device == "auto" else device).type == "cuda"
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        # torch._dynamo, once imported (the first optimiser construction does it), keeps references to an
        # existing default group, so destroy_process_group() can no longer free it: its gloo threads then live
        # into interpreter shutdown and abort it ("terminate called without an active exception") when one
        # releases a finished collective's tensors. Imported before the group exists, it holds none.
        importlib.import_module("torch._dynamo")

        backend, limit = "nccl" if use_cuda else "gloo", collective_timeout(timeout)
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            store = attempt_store(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), rank, world, limit)
            dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world, timeout=limit)
        else:  # rank 0 hosts a store of its own: nothing left from an earlier attempt
            dist.init_process_group(backend=backend, init_method="env://", timeout=limit)
        # Created here, released here: exiting with a live gloo group can abort the interpreter's shutdown.
        atexit.register(_destroy_process_group)
    return is_distributed()


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


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


def running_mean_std_state(rms: RunningMeanStd) -> tuple[float, np.ndarray, np.ndarray]:
    """
    A copy of ``(count, mean, var)`` of running statistics, e.g. where all ranks last agreed.

    :param rms: running statistics
    :return: count, mean and variance
    """
    return float(rms.count), np.array(rms.mean, dtype=np.float64), np.array(rms.var, dtype=np.float64)


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

    def _all_reduce(
        self, tensor: torch.Tensor, operation: str, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM
    ) -> torch.Tensor:
        """In-place all-reduce, reported to :attr:`observer` as ``operation``."""
        start = time.perf_counter()
        try:
            dist.all_reduce(tensor, op=op)
        except RuntimeError as error:  # gloo's and nccl's errors (DistBackendError, ...) are RuntimeErrors
            self._fail(operation, start, error)
        if self.observer is not None:
            self.observer(operation, tensor.numel() * tensor.element_size(), time.perf_counter() - start)
        return tensor

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """
        Mean of ``tensor`` over ranks (a new tensor; the input is left as it is).

        :param tensor: same shape and dtype on every rank
        :return: the mean over ranks
        """
        return self._all_reduce(tensor.detach().clone(), "mean").div_(self.world_size)

    def mean_floats(self, *values: float | torch.Tensor) -> tuple[float, ...]:
        """
        Means over ranks of a few scalars, in one all-reduce.

        :param values: Python numbers or 0-d tensors
        :return: their means over ranks, as Python floats
        """
        stacked = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.device).reshape(()) for v in values])
        return tuple(self._all_reduce(stacked, "mean_floats").div_(self.world_size).tolist())

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
        return self._all_reduce(blocks, operation).to(tensor.device).reshape(-1, *tensor.shape[1:])

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """
        Sum of ``tensor`` over ranks, in place (each rank can fill its own part and leave zeros elsewhere:
        adding zeros is exact).

        :param tensor: same shape and dtype on every rank
        :return: ``tensor``, summed
        """
        return self._all_reduce(tensor, "sum")

    def sum_ints(self, *values: int) -> tuple[int, ...]:
        """
        Sums over ranks of a few integers, in one all-reduce.

        :param values: Python integers
        :return: their sums over ranks
        """
        summed = self._all_reduce(torch.tensor(values, dtype=torch.int64, device=self.device), "sum_ints")
        return tuple(int(v) for v in summed.tolist())

    def broadcast_parameters(self, module: torch.nn.Module, src: int = 0) -> None:
        """
        Overwrite ``module``'s parameters and buffers with those of rank ``src``.

        :param module: the same architecture on every rank
        :param src: the rank whose values are kept
        """
        start = time.perf_counter()
        try:
            with torch.no_grad():
                for tensor in [*module.parameters(), *module.buffers()]:
                    dist.broadcast(tensor.data, src=src)
        except RuntimeError as error:
            self._fail("broadcast_parameters", start, error)

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """
        Rank ``src``'s value of a picklable object, on every rank.

        :param obj: this rank's value (ignored except on ``src``)
        :param src: the rank whose value is kept
        :return: rank ``src``'s value
        """
        holder, start = [obj], time.perf_counter()
        try:
            dist.broadcast_object_list(holder, src=src)
        except RuntimeError as error:
            self._fail("broadcast_object", start, error)
        return holder[0]

    def all_gather_objects(self, items: list[Any]) -> list[list[Any]]:
        """
        Every rank's list of picklable items, in rank order.

        :param items: this rank's items (e.g. the episode infos of the last rollout)
        :return: one list per rank
        """
        gathered: list[Any] = [None] * self.world_size
        start = time.perf_counter()
        try:
            dist.all_gather_object(gathered, items)
        except RuntimeError as error:
            self._fail("all_gather_objects", start, error)
        return gathered

    def _fail(self, operation: str, start: float, error: RuntimeError) -> NoReturn:
        """Raise the :class:`CollectiveError` that says which collective failed, after how long, and waiting for whom."""
        others = [other for other in range(self.world_size) if other != self.rank]
        waited = time.perf_counter() - start
        timed_out = "timed out" in str(error).lower() or "timeout" in str(error).lower()
        cause = (
            f"no answer within the process group's timeout ({TIMEOUT_VARIABLE} or init_from_environment's timeout): "
            "a rank stopped answering (a frozen process, a lost machine or network) or runs far behind"
            if timed_out
            else "a rank's connection broke: it died (killed, out of memory, crashed) or its machine went away"
        )
        raise CollectiveError(
            f"Collective '{operation}' failed on rank {self.rank} of {self.world_size} after waiting {waited:.1f} s "
            f"for rank(s) {others}: {cause}. Under torchrun --max-restarts, the group restarts; resume from the newest "
            f"checkpoint (docs/distributed.md, 'When a process dies'). {type(error).__name__}: {error}"
        ) from error

    def check_in_sync(self, module: torch.nn.Module, context: str = "") -> None:
        """
        Raise on every rank when ranks' parameters differ: one small all-reduce (max of the checksums and of their negatives).

        :param module: the model every rank should hold identically
        :param context: where the check happens, for the error message
        :raise RuntimeError: when the weights have drifted apart
        """
        local = checksum([*module.parameters(), *module.buffers()]).to(self.device)
        extremes = self._all_reduce(torch.cat([local, -local]), "check_in_sync", op=dist.ReduceOp.MAX).tolist()
        highest, lowest = extremes[:2], [-value for value in extremes[2:]]
        if highest != lowest:
            raise RuntimeError(
                f"Data-parallel ranks hold different weights{' ' + context if context else ''}: parameter checksums range "
                f"from {lowest} to {highest} over {self.world_size} ranks (this rank {self.rank}: {local.tolist()}). Every "
                "rank must run the same code, hyperparameters and library versions, and nothing may change one rank's "
                "weights alone."
            )

    def merge_running_mean_std(self, rms: RunningMeanStd, start: tuple[float, np.ndarray, np.ndarray]) -> None:
        """
        Make ``rms`` the statistics of everything all ranks saw: the common ``start`` plus each rank's new data.

        Each rank began from the same statistics ``start`` and updated them with its own observations. The
        new data's moments about the start's mean (count, ``Σ(x - m₀)``, ``Σ(x - m₀)²``, recovered from each
        rank's ``(count, mean, var)``) are summed over ranks in float64 and added to the start's. Every rank
        ends with the same statistics, those of the union of all observations.

        :param rms: this rank's statistics, updated in place
        :param start: ``(count, mean, var)`` when all ranks last agreed (:func:`running_mean_std_state`)
        """
        start_count, start_mean, start_var = start
        count, shift = rms.count, rms.mean - start_mean
        new_first = count * shift
        new_second = count * (rms.var + shift**2) - start_count * start_var
        packed = np.concatenate([[count - start_count], np.ravel(new_first), np.ravel(new_second)])
        summed = self._all_reduce(torch.as_tensor(packed, dtype=torch.float64, device=self.device), "merge_running_mean_std")
        total = summed.cpu().numpy()
        shape, size = start_mean.shape, start_mean.size
        merged_count = start_count + total[0]
        merged_shift = total[1 : 1 + size].reshape(shape) / merged_count
        merged_second = (start_count * start_var + total[1 + size :].reshape(shape)) / merged_count
        rms.count = float(merged_count)
        rms.mean = start_mean + merged_shift
        rms.var = np.maximum(merged_second - merged_shift**2, 0.0)
