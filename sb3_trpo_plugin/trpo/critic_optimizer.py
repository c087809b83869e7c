"""
The critic's optimiser: built over the critic's parameters alone, and the optimiser state of sb3-contrib's TRPO files.

sb3-contrib's TRPO (like SB3's algorithms) keeps one optimiser over every parameter of the policy and steps it on the
critic's loss only; this TRPO's optimiser holds the critic's parameters only (the actor moves by the trust-region step
alone), with torch's fused Adam where the device has it. :func:`critic_optimizer_state` converts a saved state of the
first layout into the second. How each step is taken is :func:`sb3_trpo_plugin.replicas.fused_adam.optimizer_step`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_trpo_plugin.compat.torch_features import fused_adam_on_cpu


def critic_optimizer(
    policy: ActorCriticPolicy, critic_parameters: Sequence[torch.nn.Parameter], learning_rate: float
) -> torch.optim.Optimizer:
    """
    The critic's optimiser: the policy's ``optimizer_class`` and ``optimizer_kwargs`` over the critic's parameters only.

    Adam and AdamW take their fused implementation where torch has one for the device (same update, one
    kernel for all tensors: the critic's many small steps are bound by per-operation overhead), unless the
    caller chose ``fused`` or ``foreach`` themselves.

    :param policy: the actor-critic policy
    :param critic_parameters: what the optimiser moves
    :param learning_rate: the initial learning rate
    :return: the optimiser
    """
    optimizer_kwargs = dict(policy.optimizer_kwargs)
    if _supports_fused(policy.optimizer_class, policy.device) and not {"fused", "foreach"} & optimizer_kwargs.keys():
        optimizer_kwargs["fused"] = True
    return policy.optimizer_class(critic_parameters, lr=learning_rate, **optimizer_kwargs)  # type: ignore[call-arg]


def critic_optimizer_state(
    policy: ActorCriticPolicy, critic_parameters: Sequence[torch.nn.Parameter], state: dict[str, Any]
) -> dict[str, Any]:
    """
    An optimiser state saved over all of the policy's parameters (sb3-contrib's TRPO, SB3's layout) as the state of
    the critic's optimiser, which holds the critic's parameters only.

    sb3-contrib's TRPO keeps SB3's optimiser over every parameter but steps it on the critic's loss only, so only
    the critic's parameters have optimiser state. Each of them moves to its index among ``critic_parameters``; the
    saved hyperparameters (learning rate, betas, ...) are kept, while how the optimiser runs (``fused``, ``foreach``,
    ...) stays the current optimiser's choice. A state already over the critic's parameters is returned unchanged.

    :param policy: the policy, with ``policy.optimizer`` over ``critic_parameters``
    :param critic_parameters: the critic's parameters, in the optimiser's order
    :param state: the saved ``policy.optimizer`` state dict
    :return: the state dict for ``policy.optimizer``
    :raises ValueError: for a state of another shape
    """
    parameters = list(policy.parameters())
    groups = state.get("param_groups")
    if not (isinstance(groups, list) and len(groups) == 1 and isinstance(groups[0], dict)):
        raise ValueError("the optimiser state does not hold one parameter group")
    if len(groups[0].get("params", [])) != len(parameters) or len(critic_parameters) == len(parameters):
        return state
    index = {id(parameter): i for i, parameter in enumerate(parameters)}
    saved_state = state.get("state", {})
    own_group = policy.optimizer.state_dict()["param_groups"][0]
    execution = ("fused", "foreach", "capturable", "differentiable")
    group = {
        **{k: v for k, v in groups[0].items() if k not in execution},
        **{k: own_group[k] for k in execution if k in own_group},
        "params": list(range(len(critic_parameters))),
    }
    moved = {j: saved_state[index[id(p)]] for j, p in enumerate(critic_parameters) if index[id(p)] in saved_state}
    return {"state": moved, "param_groups": [group]}


def with_critic_optimizer_state(
    policy: ActorCriticPolicy, critic_parameters: Sequence[torch.nn.Parameter], params: dict[str, Any]
) -> dict[str, Any]:
    """
    The parameters to load into a model (SB3's ``get_parameters`` layout) with their ``"policy.optimizer"`` state
    converted by :func:`critic_optimizer_state`; a state of no layout it knows is left as it is, so that SB3's loading
    (and torch's) says what is wrong with it.

    :param policy: the policy, with ``policy.optimizer`` over ``critic_parameters``
    :param critic_parameters: the critic's parameters, in the optimiser's order
    :param params: the state dicts to load
    """
    if not isinstance(params.get("policy.optimizer"), dict):
        return params
    try:
        optimizer_state = critic_optimizer_state(policy, critic_parameters, params["policy.optimizer"])
    except ValueError:
        return params
    return {**params, "policy.optimizer": optimizer_state}


def _supports_fused(optimizer_class: type[torch.optim.Optimizer], device: torch.device) -> bool:
    """Whether ``optimizer_class`` has a fused implementation for ``device`` (Adam/AdamW; CPU since torch 2.4)."""
    if optimizer_class not in (torch.optim.Adam, torch.optim.AdamW):
        return False
    return device.type == "cuda" or (device.type == "cpu" and fused_adam_on_cpu())
