"""
The one recogniser of "plain" modules: modules whose call computes exactly what their class's ``forward`` computes,
and nothing else, so that a replica may compute it with the same kernels without calling them.

A module is plain when calling it runs no code but its class's ``forward``: no hooks (forward, forward-pre,
backward, backward-pre; on the module, on any submodule, on a parameter, or registered globally for every module),
``__call__`` neither overridden nor compiled, and no method replaced on the instance (``module.forward = f``). A
plain MLP is ``Linear (σ Linear)*`` of such modules, ``nn.Sequential`` containers unrolled, ``σ`` an ``nn.Tanh`` or
``nn.ReLU``; exact types only, since a subclass may compute something else. Every replica of this package asks here:
the lean rollout inference (per module), the actor's hand-derived Jacobian and the critic's hand-derived gradient
(per MLP).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import nn
from torch.nn.modules import module as torch_module

from sb3_trpo_plugin.trust_region.mlp_jacobian import Activation

#: The activations whose derivative the hand-derived replicas write out, by exact module type.
ACTIVATIONS: dict[type[nn.Module], Activation] = {nn.Tanh: "tanh", nn.ReLU: "relu"}

#: Module-level hook registries of ``torch.nn.Module`` (global hooks run inside every ``__call__``).
GLOBAL_HOOK_REGISTRIES = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


def global_hooks_registered() -> bool:
    """Whether a module hook is registered for every module (``register_module_forward_hook`` and the like)."""
    return any(getattr(torch_module, name, None) for name in GLOBAL_HOOK_REGISTRIES)


def instance_overrides(obj: object) -> list[str]:
    """The methods of ``obj``'s class that ``obj`` shadows with an instance attribute (e.g. ``module.forward = f``)."""
    return [name for name, value in vars(obj).items() if callable(value) and callable(getattr(type(obj), name, None))]


def not_plain_reason(module: nn.Module) -> str | None:
    """
    Why calling ``module`` may compute something else than its class's ``forward`` (this module alone: neither its
    submodules nor global hooks), or ``None`` when it cannot.

    :param module: any module
    :return: e.g. ``"has hooks"``; ``None`` for a plain module
    """
    if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks:
        return "has hooks"
    if any(p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None) for p in module.parameters(recurse=False)):
        return "has hooks on its parameters"
    if type(module).__call__ is not nn.Module.__call__ or getattr(module, "_compiled_call_impl", None) is not None:
        return "is called another way than through its forward (compiled, or __call__ overridden)"
    overridden = instance_overrides(module)
    if overridden:
        return f"has methods replaced on the instance: {', '.join(overridden)}"
    return None


def all_plain(modules: Iterable[nn.Module]) -> bool:
    """Whether no global hook is registered and each of ``modules`` and their submodules is plain."""
    return not global_hooks_registered() and all(
        not_plain_reason(sub) is None for module in modules for sub in module.modules()
    )


@dataclass(frozen=True)
class PlainMLP:
    """
    ``Linear (σ Linear)*``: the linear layers, first to last, and the activation after each but the last.

    :param linears: the linear layers
    :param activations: ``"tanh"`` or ``"relu"``, one fewer than ``linears``
    """

    linears: list[nn.Linear]
    activations: list[Activation]


def plain_mlp(layers: Sequence[nn.Module]) -> PlainMLP | None:
    """
    The plain MLP that applying ``layers`` one after the other computes, or ``None`` for anything else (another module
    type, two linear layers in a row, an activation at the end, a module that is not plain).

    :param layers: modules in the order they are applied (``nn.Sequential`` containers are unrolled)
    """
    if not all_plain(layers):
        return None
    flat: list[nn.Module] = []
    for layer in layers:
        flat.extend(layer if type(layer) is nn.Sequential else [layer])
    linears: list[nn.Linear] = []
    activations: list[Activation] = []
    for position, layer in enumerate(flat):
        if position % 2 == 0 and type(layer) is nn.Linear:
            linears.append(layer)
        elif position % 2 == 1 and type(layer) in ACTIVATIONS:
            activations.append(ACTIVATIONS[type(layer)])
        else:
            return None
    if not linears or len(activations) != len(linears) - 1:
        return None
    return PlainMLP(linears, activations)
