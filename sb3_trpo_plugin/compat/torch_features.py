"""
Features of torch that exist in some of the supported releases only.

- Adam's and AdamW's fused implementation runs on the CPU since torch 2.4; torch 2.3 refuses ``fused=True`` for
  CPU tensors. :func:`fused_adam_on_cpu` finds out by asking torch to build one.
- ``torchrun`` restarts a failed worker group since torch 2.4: torch 2.3's elastic agent shuts its rendezvous down
  whenever it stops the workers, restarts included, so the restart ends in ``RendezvousClosedError``
  (pytorch/pytorch#123678, fixed in 2.4 by pytorch/pytorch#124819; 2.3.1, the last 2.3 release, still has it).
  :func:`torchrun_restarts_workers` says which; ``tests/test_distributed_elastic.py`` kills a rank under ``torchrun``
  on each release of the support matrix and checks the answer.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def fused_adam_on_cpu() -> bool:
    """
    Whether this torch builds ``torch.optim.Adam(..., fused=True)`` for CPU parameters (torch ≥ 2.4).

    :return: whether it does (a constant of the installed torch, found once per process)
    """
    try:
        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], fused=True)
    except RuntimeError:  # "`fused=True` requires all the params to be floating point Tensors of supported devices"
        return False
    return True


def torchrun_restarts_workers() -> bool:
    """
    Whether this torch's ``torchrun`` can restart a failed worker group (``--max-restarts``): torch ≥ 2.4.

    :return: whether it can; with torch 2.3 a lost process ends the whole job instead
    """
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 4)
