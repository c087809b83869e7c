"""
``Adam.step`` for the critic's many small steps, as the fused kernel call it makes, proved against ``Adam.step``.

For torch's fused Adam with plain settings (one parameter group, float hyperparameters, no step hooks), once its state
exists, ``Adam.step`` increments the state's step counts and calls ``torch._fused_adam_`` on the parameters, their
gradients and the state. :func:`optimizer_step` makes the same two calls directly: the same update bit for bit,
without ``Adam.step``'s per-call bookkeeping, which costs several times the kernel at the critic's sizes. Anything
else, and the first step (which creates the state), is ``optimizer.step()``.

Before the direct step first serves an optimiser (per device and settings), it is proved on copies: a twin of the
optimiser's settings over small parameters of a generator of its own takes three steps (the learning rate changing
between them, as a schedule does) through the direct step, another through ``Adam.step``, and the parameters and every
state tensor must agree bit for bit (:data:`FUSED_ADAM` in the optimiser's
:func:`~sb3_trpo_plugin.replicas.proofs.proofs_of`). A torch whose ``Adam.step`` does something else around the kernel,
or that lacks the kernel, keeps ``Adam.step``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim import optimizer as torch_optimizer

from sb3_trpo_plugin.replicas.proofs import FastPath, array_difference, probe_generator, proofs_of, upstream

#: The direct fused Adam step, as its proofs and warnings name it.
FUSED_ADAM = FastPath("the direct fused Adam step", "torch.optim.Adam.step")

#: The settings of a parameter group that the proof's twin optimisers copy.
_SETTINGS = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")


def optimizer_step(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """
    ``optimizer.step`` for the critic's many small steps: the direct fused Adam step when ``optimizer`` is torch's
    fused Adam with plain settings and the step was proved for it (see the module's documentation), else
    ``optimizer.step`` itself.

    :param optimizer: the critic's optimiser
    :return: a function that takes one step with the parameters' current gradients
    """
    if not _plain_fused_adam(optimizer):
        return optimizer.step
    group = optimizer.param_groups[0]
    device = group["params"][0].device if group["params"] else torch.device("cpu")
    key = f"{device.type}, amsgrad={group['amsgrad']}, maximize={group['maximize']}, weight decay={group['weight_decay'] != 0}"
    if not proofs_of(optimizer).serves(FUSED_ADAM, lambda: _upstream_mismatch(optimizer), key):
        return optimizer.step
    return _direct_step(optimizer)


def _plain_fused_adam(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` is torch's fused Adam with the settings the direct step handles (and no step hooks)."""
    group = optimizer.param_groups[0] if len(optimizer.param_groups) == 1 else {}
    return (
        type(optimizer) is torch.optim.Adam
        and callable(getattr(torch, "_fused_adam_", None))
        and group.get("fused") is True
        and not (group.get("capturable") or group.get("differentiable") or group.get("decoupled_weight_decay"))
        and all(_is_number(group.get(key)) for key in ("lr", "eps", "weight_decay"))
        and all(_is_number(beta) for beta in group.get("betas", (None,)))
        and isinstance(group.get("amsgrad"), bool)
        and isinstance(group.get("maximize"), bool)
        and not (optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks)
        and not (torch_optimizer._global_optimizer_pre_hooks or torch_optimizer._global_optimizer_post_hooks)
    )


def _direct_step(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """The direct step of a plain fused Adam (see :func:`_plain_fused_adam`), unproved."""
    group = optimizer.param_groups[0]
    params: list[torch.Tensor] = group["params"]
    beta1, beta2 = group["betas"]
    state: list[list[torch.Tensor]] = []  # exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, once they exist

    def step() -> None:
        if not state:
            optimizer.step()  # creates the state (and takes the step)
            if all(p in optimizer.state and p.grad is not None for p in params):
                states = [optimizer.state[p] for p in params]
                state.extend(
                    [
                        [s["exp_avg"] for s in states],
                        [s["exp_avg_sq"] for s in states],
                        [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else [],
                        [s["step"] for s in states],
                    ]
                )
            return
        grads = [p.grad for p in params]
        if any(grad is None for grad in grads):
            optimizer.step()  # Adam skips parameters without a gradient
            return
        exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = state
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(
            params,
            grads,  # type: ignore[arg-type]
            exp_avgs,
            exp_avg_sqs,
            max_exp_avg_sqs,
            steps,
            amsgrad=group["amsgrad"],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
            grad_scale=None,
            found_inf=None,
        )

    return step


def _upstream_mismatch(optimizer: torch.optim.Optimizer) -> str | None:
    """
    How the direct step differs from ``Adam.step`` on twins of ``optimizer`` over small parameters (``None``: they
    agree bit for bit, parameters and state).

    :raises UpstreamFailed: when the twin's ``Adam.step`` raises
    """
    group = optimizer.param_groups[0]
    like: torch.Tensor = group["params"][0]
    settings = {key: group[key] for key in _SETTINGS}
    generator = probe_generator()
    shapes = [(3, 2), (2,), (1,)]
    start = [torch.randn(shape, generator=generator, dtype=like.dtype) for shape in shapes]
    gradients = [[torch.randn(shape, generator=generator, dtype=like.dtype) for shape in shapes] for _ in range(3)]

    def run(direct: bool) -> tuple[list[nn.Parameter], dict[Any, Any]]:
        params = [nn.Parameter(value.to(like.device, copy=True)) for value in start]
        twin = torch.optim.Adam(params, fused=True, **settings)
        step = _direct_step(twin) if direct else twin.step
        for k, step_gradients in enumerate(gradients):
            for param, gradient in zip(params, step_gradients, strict=True):
                param.grad = gradient.to(like.device, copy=True)  # (the kernel may write into it)
            twin.param_groups[0]["lr"] = settings["lr"] / (k + 1)  # as a schedule changes it between steps
            step()
        return params, twin.state

    reference_params, reference_state = upstream(lambda: run(direct=False))
    direct_params, direct_state = run(direct=True)
    for index, (direct_param, reference_param) in enumerate(zip(direct_params, reference_params, strict=True)):
        difference = array_difference(f"the parameters of tensor {index}", direct_param, reference_param)
        if difference is not None:
            return difference
        direct, reference = direct_state[direct_param], reference_state[reference_param]
        if direct.keys() != reference.keys():
            return f"the state of tensor {index} holds {sorted(direct)}, not {sorted(reference)}"
        for name, value in reference.items():
            difference = array_difference(f"the state {name!r} of tensor {index}", direct[name], value)
            if difference is not None:
                return difference
    return None


def _is_number(value: object) -> bool:
    """A Python int or float (not a bool, not a tensor)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
