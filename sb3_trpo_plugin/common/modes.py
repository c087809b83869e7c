"""
Training and evaluation modes of a policy's modules, for layers whose forward depends on them (BatchNorm, Dropout).

SB3 runs rollouts and ``predict`` in evaluation mode and its updates in training mode. TRPO's policy step needs the
surrogate, the KL and the Fisher products to be one deterministic function of the weights, so it runs in evaluation
mode after one training-mode pass has refreshed the statistics (see :class:`~sb3_trpo_plugin.trpo.policy_step.PolicyStep`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch import nn


@contextlib.contextmanager
def training_mode(module: nn.Module, mode: bool) -> Iterator[None]:
    """
    Put ``module`` and all its submodules in training (``True``) or evaluation (``False``) mode inside the block, then
    give each its own previous mode back (``module.train(mode)`` would lose a submodule's own setting).

    :param module: the root module, e.g. the policy
    :param mode: the mode inside the block
    """
    with modules_in_mode(list(module.modules()), mode):
        yield


@contextlib.contextmanager
def modules_in_mode(modules: Sequence[nn.Module], mode: bool) -> Iterator[None]:
    """
    Set the ``training`` flag of each of ``modules`` (not of their other submodules) inside the block; restore it after.

    :param modules: the modules whose own flag is set
    :param mode: the flag inside the block
    """
    previous = [module.training for module in modules]
    for module in modules:
        module.training = mode
    try:
        yield
    finally:
        for module, was_training in zip(modules, previous, strict=True):
            module.training = was_training


def modules_called(root: nn.Module, forward: Callable[[], Any]) -> list[nn.Module]:
    """
    The submodules of ``root`` (itself included) that ``forward()`` calls through ``nn.Module.__call__``, in the order
    of their first call. Temporary forward pre-hooks record them; they are removed before this returns.

    :param root: the module whose submodules are watched
    :param forward: the computation to watch
    :return: the modules called
    """
    called: dict[int, nn.Module] = {}

    def record(module: nn.Module, args: Any) -> None:
        called.setdefault(id(module), module)

    handles = [module.register_forward_pre_hook(record) for module in root.modules()]
    try:
        forward()
    finally:
        for handle in handles:
            handle.remove()
    return list(called.values())


def has_statistics(module: nn.Module) -> bool:
    """
    Whether ``module`` holds buffers (e.g. BatchNorm's running mean and variance), the state that a training-mode
    forward may update besides the parameters.

    :param module: e.g. the policy
    """
    return any(True for _ in module.buffers())
