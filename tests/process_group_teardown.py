"""How a data-parallel test worker ends: its process group destroyed, except where torch's gloo teardown can block."""

from __future__ import annotations

import torch

#: torch releases whose ``destroy_process_group()`` was seen to block for good (holding the GIL) in gloo's teardown,
#: intermittently, in one or both ranks of two (torch 2.3 on the floor row of docs/compatibility.md). Workers there
#: leave with ``os._exit`` once their results are written; later releases destroy the group, and the tests check it.
TEARDOWN_MAY_BLOCK = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2]) < (2, 4)
