"""How a data-parallel test worker ends: its process group destroyed, except where torch's gloo teardown can block."""

from __future__ import annotations

import faulthandler

import torch

#: torch releases whose ``destroy_process_group()`` was seen to block for good (holding the GIL) in gloo's teardown,
#: intermittently, in one or both ranks of two (torch 2.3 on the floor row of docs/compatibility.md). Workers there
#: leave with ``os._exit`` once their results are written; later releases destroy the group, and the tests check it.
TEARDOWN_MAY_BLOCK = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2]) < (2, 4)


def print_stacks_if_stuck(after_seconds: float) -> None:
    """
    Have this worker print every thread's Python stack to stderr once it has run ``after_seconds`` (and every
    ``after_seconds`` after that), so a worker that hangs says where before its test's timeout ends it. faulthandler's
    watchdog is a C thread: it prints even while a blocked call holds the GIL.

    :param after_seconds: below the fixture's timeout
    """
    faulthandler.dump_traceback_later(after_seconds, repeat=True)
