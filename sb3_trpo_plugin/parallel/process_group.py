"""
The process group of a data-parallel run: who this process is among the ranks, and joining the group.

This is the one module of the package that changes state belonging to the whole process rather than to an object,
because ``torch.distributed`` keeps its default process group there and nowhere else:

- :func:`init_from_environment` creates torch's default process group (``init_process_group``), which every
  collective of the process then uses;
- on a GPU it sets the process's current CUDA device to ``LOCAL_RANK`` (``torch.cuda.set_device``), which ``nccl``
  reads to place each rank's tensors;
- it imports ``torch._dynamo`` before the group exists (see the comment there: afterwards its references would keep
  the group alive into the interpreter's shutdown);
- it registers an ``atexit`` handler that destroys the group it created, since exiting with a live gloo group can
  abort the interpreter's shutdown.

Each happens once per process, only under a multi-process launch (``torchrun``), and only when no group exists yet:
a single process never reaches any of them. Everything else of the data-parallel run (the collectives, the
shuffles, the statistics where the ranks last agreed) lives on the algorithm instance.
"""

from __future__ import annotations

import atexit
import importlib
import os
import warnings

import torch
import torch.distributed as dist

from sb3_trpo_plugin.compat.torch_features import torchrun_restarts_workers
from sb3_trpo_plugin.parallel.rendezvous import attempt_store, collective_timeout


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
    :param timeout: seconds a collective waits for the other ranks (:func:`~sb3_trpo_plugin.parallel.collective_timeout`;
        ``None``: the environment's ``SB3_TRPO_COLLECTIVE_TIMEOUT``, else 300)
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
        if is_main_process():
            warn_if_restarts_cannot_happen()
    return is_distributed()


def warn_if_restarts_cannot_happen() -> None:
    """
    Warn when ``torchrun`` was asked for restarts (``--max-restarts``) that this torch's agent cannot make.

    torch 2.3's elastic agent closes its rendezvous when it stops the workers to restart them, so a lost process
    ends the job (:func:`~sb3_trpo_plugin.compat.torch_features.torchrun_restarts_workers`). Nothing is lost with
    checkpoints between updates: the same command, run again, resumes from the newest.
    """
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    if restarts > 0 and not torchrun_restarts_workers():
        warnings.warn(
            f"torchrun was asked for {restarts} restart(s), but torch {torch.__version__}'s elastic agent closes its "
            "rendezvous when it stops the workers to restart them (pytorch/pytorch#123678, fixed in torch 2.4): a lost "
            "process will end the job instead. Run the same command again to resume from the newest checkpoint "
            "(UpdateCheckpointCallback), or use torch >= 2.4.",
            stacklevel=2,
        )


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
