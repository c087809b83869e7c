"""
Joining the process group, start after restart, and how long any rank waits for the others.

Under ``torchrun``, the elastic agent hosts one TCP store for the whole run and hands its address to the workers
of every attempt (the first start and each restart; ``TORCHELASTIC_USE_AGENT_STORE=True``, with the static and
the c10d rendezvous alike). ``init_process_group`` on that store writes the group's keys (gloo's address of each
rank, ...) under the same names at every attempt, and torch does not tell attempts apart (each agent counts its
own restarts in ``TORCHELASTIC_RESTART_COUNT``, so the count is not shared by all nodes): a restarted rank that reads
a key before the new rank has rewritten it gets the address of a dead process, and the group fails to form
("Gloo connectFullMesh failed ... Connection refused"). :func:`attempt_store` gives each attempt keys of its own,
under a name rank 0 draws and hands to every other rank.
"""

from __future__ import annotations

import datetime
import os
import time
import uuid

import torch.distributed as dist

#: Environment variable: seconds a collective (or joining the group) waits for the other ranks before it fails.
TIMEOUT_VARIABLE = "SB3_TRPO_COLLECTIVE_TIMEOUT"
#: Its default: long enough for rank 0's evaluations and checkpoints between two collectives, far below torch's 30 minutes.
DEFAULT_TIMEOUT_SECONDS = 300.0
#: Rank 0's pause between two looks at the store while the other ranks join.
POLL_SECONDS = 0.05


class CollectiveError(RuntimeError):
    """A collective, or joining the process group, failed: a rank died, or did not answer within the timeout."""


def collective_timeout(seconds: float | None = None) -> datetime.timedelta:
    """
    How long a collective waits for the other ranks before it fails.

    :param seconds: the timeout; ``None`` reads ``SB3_TRPO_COLLECTIVE_TIMEOUT``, else 300 seconds
    :return: the timeout
    :raise ValueError: for a timeout that is not a positive, finite number of seconds
    """
    if seconds is None:
        text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
        try:
            seconds = float(text) if text else DEFAULT_TIMEOUT_SECONDS
        except ValueError:
            raise ValueError(f"{TIMEOUT_VARIABLE} must be a number of seconds, got {text!r}") from None
    if not 0 < seconds < float("inf"):
        raise ValueError(f"The collective timeout must be a positive, finite number of seconds, got {seconds}")
    return datetime.timedelta(seconds=seconds)


def attempt_store(host: str, port: int, rank: int, world_size: int, timeout: datetime.timedelta) -> dist.Store:
    """
    The agent's store at ``host:port``, seen through keys that belong to this attempt of the group alone.

    Rank 0 draws a fresh name for the attempt. Every other rank posts a fresh random token under its rank and
    waits for rank 0's answer under that token, which no earlier attempt can have written; rank 0 answers every
    token it finds unanswered (an earlier attempt's among them, harmlessly) until each rank has confirmed, under
    the attempt's name, that it got it.

    :param host: the store's address (``MASTER_ADDR``)
    :param port: its port (``MASTER_PORT``)
    :param rank: this process's rank
    :param world_size: number of ranks
    :param timeout: how long to wait for the other ranks
    :return: a store whose keys are private to this attempt
    :raise CollectiveError: when a rank does not join within ``timeout``
    """
    run = os.environ.get("TORCHELASTIC_RUN_ID", "run")
    store = dist.PrefixStore(f"sb3_trpo_plugin/{run}", dist.TCPStore(host, port, is_master=False, timeout=timeout))
    deadline = time.monotonic() + timeout.total_seconds()
    if rank == 0:
        attempt = uuid.uuid4().hex
        _admit_ranks(store, attempt, world_size, deadline)
    else:
        token = uuid.uuid4().hex
        store.set(f"token/{rank}", token)
        try:
            store.wait([f"answer/{token}"], timeout)
        except RuntimeError as error:  # the store's timeout (DistStoreError)
            raise CollectiveError(
                f"Rank {rank} of {world_size} could not join the process group: rank 0 did not answer within "
                f"{timeout.total_seconds():g} s ({TIMEOUT_VARIABLE})"
            ) from error
        attempt = store.get(f"answer/{token}").decode()
        store.set(f"{attempt}/joined/{rank}", "1")
    return dist.PrefixStore(f"attempt/{attempt}", store)


def _admit_ranks(store: dist.Store, attempt: str, world_size: int, deadline: float) -> None:
    """Rank 0's side of :func:`attempt_store`: answer the ranks' tokens with ``attempt`` until every rank confirmed."""
    waiting = set(range(1, world_size))
    while waiting:
        for other in sorted(waiting):
            if store.check([f"{attempt}/joined/{other}"]):
                waiting.discard(other)
            elif store.check([f"token/{other}"]):
                token = store.get(f"token/{other}").decode()
                if not store.check([f"answer/{token}"]):
                    store.set(f"answer/{token}", attempt)
        if waiting and time.monotonic() > deadline:
            raise CollectiveError(
                f"Rank 0 of {world_size} formed no process group: rank(s) {sorted(waiting)} did not join within the "
                f"timeout ({TIMEOUT_VARIABLE})"
            )
        if waiting:
            time.sleep(POLL_SECONDS)
