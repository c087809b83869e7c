"""
Features of torch that exist in some of the supported releases only.

- Adam's and AdamW's fused implementation runs on the CPU since torch 2.4; torch 2.3 refuses ``fused=True`` for
  CPU tensors. :func:`fused_adam_on_cpu` finds out by asking torch to build one.
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
