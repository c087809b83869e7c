"""Which parameters of an actor-critic policy belong to the actor, found from the autograd graph."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from sb3_trpo_plugin.common.modes import modules_called, training_mode


def split_actor_critic(
    policy: ActorCriticPolicy, distribution_of: Callable[[PyTorchObs], Distribution] | None = None
) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """
    Split the trainable parameters into those that shape the action distribution and the rest.

    The split is structural: a parameter belongs to the actor when the log-probability of an action
    depends on it in the autograd graph of ``policy.get_distribution``. So a features extractor
    shared by actor and critic counts as the actor's, and custom policies need no naming convention.
    The one observation is traced in evaluation mode (each module's mode given back after): BatchNorm uses
    (and does not update) its running statistics, Dropout is the identity, a one-sample batch is no problem.

    :param policy: the actor-critic policy (a sample of its observation space is the input)
    :param distribution_of: observations ↦ action distribution, for policies whose ``get_distribution`` takes
        more inputs (e.g. recurrent states); default ``policy.get_distribution``
    :return: ``(actor_parameters, critic_parameters)``, each in ``policy.parameters()`` order
    """
    trainable = [p for p in policy.parameters() if p.requires_grad]
    observation, _ = policy.obs_to_tensor(policy.observation_space.sample())
    with torch.enable_grad(), training_mode(policy, False):
        distribution = (distribution_of or policy.get_distribution)(observation)
        log_prob = distribution.log_prob(distribution.get_actions(deterministic=True).detach())
        grads = torch.autograd.grad(log_prob.sum(), trainable, allow_unused=True)
    actor = [p for p, g in zip(trainable, grads, strict=True) if g is not None]
    critic = [p for p, g in zip(trainable, grads, strict=True) if g is None]
    if not actor:
        raise ValueError("No trainable parameter of the policy influences the action distribution")
    return actor, critic


def values_depend_on(
    policy: ActorCriticPolicy,
    parameters: Sequence[torch.nn.Parameter],
    values_of: Callable[[PyTorchObs], torch.Tensor] | None = None,
) -> bool:
    """
    Whether the critic's value ``V(s)`` depends on any of ``parameters`` in the autograd graph of
    ``policy.predict_values`` (e.g. on the actor's, through a features extractor they share).

    :param policy: the actor-critic policy (a sample of its observation space is the input)
    :param parameters: parameters of ``policy`` with ``requires_grad=True``
    :param values_of: observations ↦ values, for policies whose ``predict_values`` takes more inputs;
        default ``policy.predict_values``
    :return: whether any of them influences the value
    """
    observation, _ = policy.obs_to_tensor(policy.observation_space.sample())
    with torch.enable_grad(), training_mode(policy, False):
        values = (values_of or policy.predict_values)(observation)
        grads = torch.autograd.grad(values.sum(), list(parameters), allow_unused=True)
    return any(g is not None for g in grads)


def actor_modules(
    policy: ActorCriticPolicy, distribution_of: Callable[[PyTorchObs], Distribution] | None = None
) -> list[nn.Module]:
    """
    The modules that computing the action distribution calls (``policy.get_distribution``), e.g. a features extractor
    shared with the critic: their mode and statistics belong to the policy step. Traced on one sample observation in
    evaluation mode, without gradients and without side effects.

    :param policy: the actor-critic policy
    :param distribution_of: observations ↦ action distribution, as for :func:`split_actor_critic`
    :return: the modules, in the order of their first call
    """
    observation, _ = policy.obs_to_tensor(policy.observation_space.sample())
    with torch.no_grad(), training_mode(policy, False):
        return modules_called(policy, lambda: (distribution_of or policy.get_distribution)(observation))


@contextlib.contextmanager
def frozen(parameters: Sequence[torch.nn.Parameter]) -> Iterator[None]:
    """
    Turn off gradients of ``parameters`` inside the block, so backward passes neither compute nor
    apply anything to them (and stop early where only they lie upstream).

    :param parameters: parameters with ``requires_grad=True``
    """
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)
