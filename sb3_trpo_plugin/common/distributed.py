"""
Data-parallel communication over ``torch.distributed``: every function is the identity when it is not initialised.

Each process (rank) collects its own rollouts; the update averages over ranks everything it needs, so every
rank takes the same step. Averaging (sum, then divide by the world size) equals the mean over the union of the
ranks' batches when all ranks hold batches of the same size, which the data-parallel algorithm checks.

The collectives are counted in :data:`COMMUNICATION` (calls and payload bytes), for the benchmarks.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from stable_baselines3.common.running_mean_std import RunningMeanStd


@dataclass
class CommunicationStats:
    """Running totals of the collectives issued by this module on this rank."""

    all_reduce_calls: int = 0
    all_reduce_bytes: int = 0
    other_calls: int = 0
    #: ``kind -> [calls, bytes, seconds]`` of the all-reduces, by what they carry (seconds include waiting for other ranks).
    by_kind: dict[str, list[float]] = field(default_factory=dict)

    def reset(self) -> None:
        """Set all counters to zero."""
        self.all_reduce_calls = self.all_reduce_bytes = self.other_calls = 0
        self.by_kind = {}


#: The counters of this process.
COMMUNICATION = CommunicationStats()


#: Set inside :func:`alone`: this process computes on its own, as if not distributed.
_ALONE = False


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is initialised with more than one process (and not inside :func:`alone`)."""
    return not _ALONE and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """
    Inside the block this process works by itself: every function here is the identity, as without
    ``torch.distributed`` (e.g. while one rank runs a single-process computation on data gathered from all).
    """
    global _ALONE
    previous, _ALONE = _ALONE, True
    try:
        yield
    finally:
        _ALONE = previous


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


def init_from_environment(device: torch.device | str = "auto") -> bool:
    """
    Initialise the default process group from ``torchrun``'s environment variables, when launched by it.

    Backend ``nccl`` when the model runs on a GPU (each process then uses GPU ``LOCAL_RANK``), ``gloo``
    otherwise. Does nothing when already initialised or not launched with several processes. A group
    initialised here is destroyed when the interpreter exits.

    :param device: the model's device, as given to the algorithm
    :return: whether ``torch.distributed`` is initialised with several processes afterwards
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

        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        # Created here, released here: exiting with a live gloo group can abort the interpreter's shutdown.
        atexit.register(_destroy_process_group)
    return is_distributed()


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _communication_device() -> torch.device:
    """Where tensors built here from Python numbers live: the GPU for ``nccl``, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(tensor: torch.Tensor, kind: str, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> torch.Tensor:
    """In-place all-reduce, counted under ``kind``."""
    size = tensor.numel() * tensor.element_size()
    COMMUNICATION.all_reduce_calls += 1
    COMMUNICATION.all_reduce_bytes += size
    totals = COMMUNICATION.by_kind.setdefault(kind, [0, 0, 0.0])
    totals[0] += 1
    totals[1] += size
    start = time.perf_counter()
    dist.all_reduce(tensor, op=op)
    totals[2] += time.perf_counter() - start
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """
    Mean of ``tensor`` over ranks (a new tensor; the input is left as it is). Identity when not distributed.

    :param tensor: same shape and dtype on every rank
    :return: the mean over ranks
    """
    if not is_distributed():
        return tensor
    return _all_reduce(tensor.detach().clone(), "tensor").div_(world_size())


def all_reduce_mean_float(*values: float | torch.Tensor) -> tuple[float, ...]:
    """
    Means over ranks of a few scalars, in one all-reduce.

    :param values: Python numbers or 0-d tensors
    :return: their means over ranks, as Python floats
    """
    if not is_distributed():
        return tuple(float(value) for value in values)
    device = _communication_device()
    stacked = torch.stack([torch.as_tensor(value, dtype=torch.float64, device=device).reshape(()) for value in values])
    return tuple(_all_reduce(stacked, "scalars").div_(world_size()).tolist())


def all_reduce_mean_with_scalar(tensor: torch.Tensor, scalar: float | torch.Tensor) -> tuple[torch.Tensor, float]:
    """
    Means over ranks of a flat tensor and a scalar, in one all-reduce (e.g. a gradient and its objective).

    :param tensor: 1-D tensor, same size on every rank
    :param scalar: a Python number or 0-d tensor
    :return: ``(mean tensor, mean scalar)``
    """
    if not is_distributed():
        return tensor, float(scalar)
    scalar_tensor = torch.as_tensor(scalar, dtype=tensor.dtype, device=tensor.device).reshape(1)
    packed = torch.cat([tensor.detach().reshape(-1), scalar_tensor])
    _all_reduce(packed, "tensor and scalar").div_(world_size())
    return packed[:-1].view_as(tensor), float(packed[-1])


def averaged(product: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """
    ``v ↦ mean over ranks of product(v)``: e.g. the Fisher-vector product of the union of the ranks' batches.

    :param product: a linear map evaluated on this rank's data
    :return: the averaged map (``product`` itself when not distributed)
    """
    if not is_distributed():
        return product
    return lambda vector: all_reduce_mean(product(vector))


def global_mean_std(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Mean and unbiased standard deviation over the union of the ranks' ``values``, as ``torch.std`` would give.

    Each rank's count ``n_r``, mean ``m_r`` and sum of squared deviations ``M2_r`` (two local passes, float64)
    are gathered in one collective and merged as ``m = Σ n_r m_r / N``, ``M2 = Σ M2_r + Σ n_r (m_r - m)²``,
    which has no cancellation.

    :param values: this rank's values, any shape
    :return: ``(mean, std)`` as 0-d tensors of ``values``' dtype
    """
    if not is_distributed():
        return values.mean(), values.std()
    flat = values.detach().reshape(-1).to(torch.float64)
    local_mean = flat.mean()
    local = torch.stack([flat.new_tensor(float(flat.numel())), local_mean, ((flat - local_mean) ** 2).sum()])
    counts, means, m2s = _gather_rows(local.reshape(1, 3), "mean and std").unbind(dim=1)
    total = counts.sum()
    mean = (counts * means).sum() / total
    m2 = m2s.sum() + (counts * (means - mean) ** 2).sum()
    return mean.to(values.dtype), torch.sqrt(m2 / (total - 1)).to(values.dtype)


def all_reduce_mean_gradients(parameters: Sequence[torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
    """
    Replace each ``parameter.grad`` by its mean over ranks, and average ``loss`` with them, in one all-reduce.

    :param parameters: the parameters an optimiser is about to step (a missing gradient counts as zero)
    :param loss: this rank's loss, 0-d
    :return: the mean loss over ranks, 0-d (non-finite when any rank's loss is)
    """
    if not is_distributed():
        return loss
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in parameters]
    packed = torch.cat([*(g.reshape(-1) for g in grads), loss.detach().reshape(1).to(grads[0].dtype)])
    _all_reduce(packed, "gradients").div_(world_size())
    offset = 0
    for parameter, grad in zip(parameters, grads, strict=True):
        parameter.grad = packed[offset : offset + grad.numel()].view_as(grad)
        offset += grad.numel()
    return packed[-1]


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """
    Every rank's rows of ``tensor``, concatenated in rank order, on every rank: one all-reduce of a buffer
    where each rank fills its own block (adding zeros is exact). Identity when not distributed.

    :param tensor: same shape and dtype on every rank
    :return: ``(world_size * len(tensor), ...)``
    """
    if not is_distributed():
        return tensor
    return _gather_rows(tensor, "gathered rows")


def all_gather_row_blocks(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """
    :func:`all_gather_rows` of several tensors with the same number of rows, in one collective.

    :param tensors: same shapes and dtypes on every rank, equal first dimension; cast to the first one's dtype in transit
    :return: each tensor's rows of every rank, in rank order (the tensors themselves when not distributed)
    """
    if not is_distributed():
        return list(tensors)
    n_rows, dtype = tensors[0].shape[0], tensors[0].dtype
    packed = torch.cat([t.reshape(n_rows, -1).to(dtype) for t in tensors], dim=1)
    gathered = _gather_rows(packed, "gathered rollout")
    widths = [t[:1].numel() for t in tensors]
    return [
        block.reshape(-1, *t.shape[1:]).to(t.dtype) for block, t in zip(gathered.split(widths, dim=1), tensors, strict=True)
    ]


def all_reduce_sum(tensor: torch.Tensor, kind: str) -> torch.Tensor:
    """
    Sum of ``tensor`` over ranks, in place (each rank can fill its own part and leave zeros elsewhere:
    adding zeros is exact). Identity when not distributed.

    :param tensor: same shape and dtype on every rank
    :param kind: what it carries, for :data:`COMMUNICATION`
    :return: ``tensor``, summed
    """
    if not is_distributed():
        return tensor
    return _all_reduce(tensor, kind)


def _gather_rows(tensor: torch.Tensor, kind: str) -> torch.Tensor:
    blocks = tensor.new_zeros((world_size(), *tensor.shape), device=_communication_device())
    blocks[rank()] = tensor
    return _all_reduce(blocks, kind).to(tensor.device).reshape(-1, *tensor.shape[1:])


def all_reduce_sum_int(*values: int) -> tuple[int, ...]:
    """
    Sums over ranks of a few integers, in one all-reduce.

    :param values: Python integers
    :return: their sums over ranks
    """
    if not is_distributed():
        return values
    return tuple(
        int(v)
        for v in _all_reduce(torch.tensor(values, dtype=torch.int64, device=_communication_device()), "integers").tolist()
    )


def broadcast_parameters(module: torch.nn.Module, src: int = 0) -> None:
    """
    Overwrite ``module``'s parameters and buffers with those of rank ``src``.

    :param module: the same architecture on every rank
    :param src: the rank whose values are kept
    """
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            COMMUNICATION.other_calls += 1
            dist.broadcast(tensor.data, src=src)


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


def check_in_sync(module: torch.nn.Module, context: str = "") -> None:
    """
    Raise on every rank when ranks' parameters differ: one small all-reduce (max of the checksums and of their negatives).

    :param module: the model every rank should hold identically
    :param context: where the check happens, for the error message
    :raise RuntimeError: when the weights have drifted apart
    """
    if not is_distributed():
        return
    local = checksum([*module.parameters(), *module.buffers()]).to(_communication_device())
    extremes = _all_reduce(torch.cat([local, -local]), "checksum", op=dist.ReduceOp.MAX).tolist()
    highest, lowest = extremes[:2], [-value for value in extremes[2:]]
    if highest != lowest:
        raise RuntimeError(
            f"Data-parallel ranks hold different weights{' ' + context if context else ''}: parameter checksums range "
            f"from {lowest} to {highest} over {world_size()} ranks (this rank {rank()}: {local.tolist()}). Every rank must "
            "run the same code, hyperparameters and library versions, and nothing may change one rank's weights alone."
        )


def running_mean_std_state(rms: RunningMeanStd) -> tuple[float, np.ndarray, np.ndarray]:
    """
    A copy of ``(count, mean, var)`` of running statistics, e.g. where all ranks last agreed.

    :param rms: running statistics
    :return: count, mean and variance
    """
    return float(rms.count), np.array(rms.mean, dtype=np.float64), np.array(rms.var, dtype=np.float64)


def merge_running_mean_std(rms: RunningMeanStd, start: tuple[float, np.ndarray, np.ndarray]) -> None:
    """
    Make ``rms`` the statistics of everything all ranks saw: the common ``start`` plus each rank's new data.

    Each rank began from the same statistics ``start`` and updated them with its own observations. The
    new data's moments about the start's mean (count, ``Σ(x - m₀)``, ``Σ(x - m₀)²``, recovered from each
    rank's ``(count, mean, var)``) are summed over ranks in float64 and added to the start's. Every rank
    ends with the same statistics, those of the union of all observations.

    :param rms: this rank's statistics, updated in place
    :param start: ``(count, mean, var)`` when all ranks last agreed (:func:`running_mean_std_state`)
    """
    if not is_distributed():
        return
    start_count, start_mean, start_var = start
    count, shift = rms.count, rms.mean - start_mean
    new_first = count * shift
    new_second = count * (rms.var + shift**2) - start_count * start_var
    packed = np.concatenate([[count - start_count], np.ravel(new_first), np.ravel(new_second)])
    summed = _all_reduce(torch.as_tensor(packed, dtype=torch.float64, device=_communication_device()), "running statistics")
    total = summed.cpu().numpy()
    shape, size = start_mean.shape, start_mean.size
    merged_count = start_count + total[0]
    merged_shift = total[1 : 1 + size].reshape(shape) / merged_count
    merged_second = (start_count * start_var + total[1 + size :].reshape(shape)) / merged_count
    rms.count = float(merged_count)
    rms.mean = start_mean + merged_shift
    rms.var = np.maximum(merged_second - merged_shift**2, 0.0)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """
    Rank ``src``'s value of a picklable object, on every rank.

    :param obj: this rank's value (ignored except on ``src``)
    :param src: the rank whose value is kept
    :return: rank ``src``'s value (``obj`` when not distributed)
    """
    if not is_distributed():
        return obj
    holder = [obj]
    COMMUNICATION.other_calls += 1
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_objects(items: list[Any]) -> list[list[Any]]:
    """
    Every rank's list of picklable items, in rank order.

    :param items: this rank's items (e.g. the episode infos of the last rollout)
    :return: one list per rank (``[items]`` when not distributed)
    """
    if not is_distributed():
        return [items]
    gathered: list[Any] = [None] * world_size()
    COMMUNICATION.other_calls += 1
    dist.all_gather_object(gathered, items)
    return gathered
