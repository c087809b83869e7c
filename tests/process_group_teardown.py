"""How a data-parallel test worker ends: its process group destroyed, except where torch's gloo teardown can block."""

from __future__ import annotations

import faulthandler
import os
import sys
from typing import NoReturn

import torch

#: torch releases whose ``destroy_process_group()`` was seen to block for good (holding the GIL) in gloo's teardown,
#: intermittently, in one or both ranks of two: torch 2.3 (the floor row of docs/compatibility.md) and torch 2.7.1 (the
#: middle row: gdb showed ``ProcessGroupGloo``'s destructor joining a gloo thread that waited for the GIL to free a
#: tensor). Never seen on 2.13 or 2.15; 2.4-2.6 and 2.8-2.12 are untested, so the bound is 2.8. Workers there leave with
#: ``os._exit`` once their results are written; later releases destroy the group, and the tests check it.
TEARDOWN_MAY_BLOCK = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2]) < (2, 8)


def print_stacks_if_stuck(after_seconds: float) -> None:
    """
    Have this worker print every thread's Python stack to stderr once it has run ``after_seconds`` (and every
    ``after_seconds`` after that), so a worker that hangs says where before its test's timeout ends it. faulthandler's
    watchdog is a C thread: it prints even while a blocked call holds the GIL.

    :param after_seconds: below the fixture's timeout
    """
    faulthandler.dump_traceback_later(after_seconds, repeat=True)


def end_worker() -> NoReturn:
    """
    End a worker whose results are written: destroy its process group if it is still there and that cannot block
    (:data:`TEARDOWN_MAY_BLOCK`), then leave without the interpreter's teardown, where the same deadlock can happen: on
    torch 2.7.1 a worker hung there once the last reference to the gloo group was dropped (``ProcessGroupGloo``'s
    destructor, run with the GIL held, joining a gloo thread that waited for the GIL to free a tensor's Python object;
    gdb, 2026-12-06; docs/compatibility.md).
    """
    if not TEARDOWN_MAY_BLOCK and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
