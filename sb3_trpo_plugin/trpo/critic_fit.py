"""
The critic's regression to the λ-returns, written for one process.

``n_critic_updates`` epochs of minibatch regression ``min_φ mean (V_φ(s) - R̂)²`` over the critic's own
parameters ``φ``, with its own optimiser; the actor's parameters are frozen meanwhile, so a features extractor
shared with the actor stays where the trust-region step put it. :func:`critic_regression` decides what the
regression feeds forward and how a minibatch's gradient is computed (by hand for SB3's plain MLP critic once proved,
:mod:`sb3_trpo_plugin.replicas.critic_gradient`, otherwise by autograd); :func:`fit_critic` runs the epochs, each step
through :func:`~sb3_trpo_plugin.replicas.fused_adam.optimizer_step`. The optimiser itself is built in
:mod:`.critic_optimizer`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs
from torch.nn import functional as F

from sb3_trpo_plugin.common.observations import index_observations
from sb3_trpo_plugin.common.parameters import frozen
from sb3_trpo_plugin.common.reductions import ONE_PROCESS, BatchReductions
from sb3_trpo_plugin.critic import MLPRegression
from sb3_trpo_plugin.replicas.critic_gradient import critic_head_regression, values_from_features
from sb3_trpo_plugin.replicas.fused_adam import optimizer_step

#: ``(inputs, targets) ↦`` the minibatch's loss ``mean (V(s) - R̂)²``, its gradient written into the critic's ``.grad``.
LossAndGradients = Callable[[PyTorchObs, torch.Tensor], float]


@dataclass(frozen=True)
class CriticRegression:
    """
    What the critic's regression feeds forward and how it gets a minibatch's loss and gradient.

    :param inputs: the states, or their features when the critic's features extractor cannot change
    :param loss_and_gradients: a minibatch's loss, with its gradient written into the critic's parameters
    :param gradients_are_finite: whether the gradient just written is finite (``None``: every parameter's ``.grad``
        is checked with :func:`all_finite`)
    :param network: the hand-derived regression of the critic's head when that is what computes the gradient (its
        layers are the policy's; ``None``: autograd)
    """

    inputs: PyTorchObs
    loss_and_gradients: LossAndGradients
    gradients_are_finite: Callable[[], bool] | None = None
    network: MLPRegression | None = None


def critic_regression(
    policy: ActorCriticPolicy, critic_parameters: Sequence[torch.nn.Parameter], observations: PyTorchObs
) -> CriticRegression:
    """
    The cheapest exact way to regress ``policy``'s critic on ``observations``.

    When the critic's features extractor holds none of the critic's parameters (a parameter-free flatten,
    or an extractor shared with the actor and so frozen during the regression), its output cannot change:
    it is computed once instead of once per minibatch and epoch. When the rest of the critic is then SB3's
    plain MLP, its gradient is computed by hand (about 2× faster than autograd); otherwise autograd.

    :param policy: the actor-critic policy
    :param critic_parameters: the parameters the regression moves (exactly those of the critic's optimiser)
    :param observations: the states of the rollout
    :return: the inputs to feed forward and the minibatch loss-and-gradient function
    """
    critic_ids = {id(p) for p in critic_parameters}
    extractor_is_constant = not any(id(p) in critic_ids for p in policy.vf_features_extractor.parameters())
    if extractor_is_constant and values_from_features(policy, observations):
        with torch.no_grad():
            features = cast(torch.Tensor, policy.extract_features(observations, policy.vf_features_extractor))
        return head_regression(policy, critic_parameters, features)
    return CriticRegression(observations, autograd_loss_and_gradients(policy.predict_values, critic_parameters))


def head_regression(
    policy: ActorCriticPolicy, critic_parameters: Sequence[torch.nn.Parameter], inputs: torch.Tensor
) -> CriticRegression:
    """
    The regression of the critic's head (``mlp_extractor.forward_critic`` then ``value_net``) on inputs that cannot
    change during it (features, or a recurrent policy's latents): its gradient derived by hand when the head is SB3's
    plain MLP, holds exactly the parameters that move, and the hand-derived gradient was proved for the policy
    (:func:`~sb3_trpo_plugin.replicas.critic_gradient.critic_head_regression`), else by autograd.

    :param policy: the actor-critic policy
    :param critic_parameters: the parameters the regression moves (exactly those of the critic's optimiser)
    :param inputs: what the head is fed, one row per state
    """
    hand_derived = critic_head_regression(policy, critic_parameters, inputs)
    if hand_derived is not None:
        return CriticRegression(
            inputs,
            lambda batch, targets: hand_derived.loss_and_gradients(cast(torch.Tensor, batch), targets),
            hand_derived.gradients_are_finite,
            hand_derived,
        )

    def value_of(batch: PyTorchObs) -> torch.Tensor:
        return policy.value_net(policy.mlp_extractor.forward_critic(cast(torch.Tensor, batch)))

    return CriticRegression(inputs, autograd_loss_and_gradients(value_of, critic_parameters))


def autograd_loss_and_gradients(
    value_of: Callable[[PyTorchObs], torch.Tensor], critic_parameters: Sequence[torch.nn.Parameter]
) -> LossAndGradients:
    """
    The minibatch loss ``mean (V(s) - R̂)²`` of the critic ``value_of``, its gradient by backpropagation.

    :param value_of: inputs ↦ values
    :param critic_parameters: the parameters whose ``.grad`` receives the gradient
    :return: the loss-and-gradient function
    """

    def loss_and_gradients(inputs: PyTorchObs, targets: torch.Tensor) -> float:
        loss = F.mse_loss(value_of(inputs).flatten(), targets)
        for parameter in critic_parameters:  # the optimiser holds exactly these
            parameter.grad = None
        loss.backward()
        return loss.item()

    return loss_and_gradients


def fit_critic(
    regression: CriticRegression,
    returns: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    critic_parameters: Sequence[torch.nn.Parameter],
    actor_parameters: Sequence[torch.nn.Parameter],
    n_epochs: int,
    batch_size: int,
    reductions: BatchReductions = ONE_PROCESS,
) -> float:
    """
    ``n_epochs`` epochs of minibatch regression ``min_φ mean (V_φ(s) - R̂)²`` to the λ-returns ``R̂``.

    Each epoch shuffles the whole batch once; its minibatches are then contiguous slices (views, no gathers).
    Only the critic's own parameters move; a non-finite loss or gradient (e.g. overflow from huge inputs)
    skips its minibatch, so it never reaches the weights. In a data-parallel run every process fits the
    critic to the whole batch's rows, each minibatch being the union of one minibatch of ``batch_size``
    rows per process: no synchronisation per step, the same weights on every process.

    :param regression: what to feed forward and how to get a minibatch's loss and gradient
    :param returns: the λ-returns, the regression's targets
    :param optimizer: the critic's optimiser (over ``critic_parameters`` only)
    :param critic_parameters: the parameters that move
    :param actor_parameters: frozen meanwhile (no gradient is computed for them)
    :param n_epochs: passes over the batch
    :param batch_size: rows per minibatch (per process, in a data-parallel run)
    :param reductions: the whole batch's rows and their shuffles (identity and a random permutation on one process)
    :return: mean loss over all minibatches (``nan`` when there were none)
    """
    inputs, returns = _gather_observations(regression.inputs, reductions), reductions.gather_rows(returns)
    n_rows = returns.shape[0]
    step = optimizer_step(optimizer)
    gradients_are_finite = regression.gradients_are_finite or (lambda: all_finite(p.grad for p in critic_parameters))
    losses = []
    with frozen(actor_parameters):
        for _ in range(n_epochs):
            order, minibatch_size = reductions.minibatch_order(n_rows, batch_size, returns.device)
            epoch_inputs, epoch_returns = index_observations(inputs, order), returns[order]
            for start in range(0, n_rows, minibatch_size):
                minibatch = slice(start, start + minibatch_size)
                loss = regression.loss_and_gradients(index_observations(epoch_inputs, minibatch), epoch_returns[minibatch])
                losses.append(loss)
                if math.isfinite(loss) and gradients_are_finite():
                    step()
    return float(np.mean(losses)) if losses else float("nan")


def _gather_observations(observations: PyTorchObs, reductions: BatchReductions) -> PyTorchObs:
    """The whole batch's rows of a batch of observations, a tensor or a dict of tensors."""
    if isinstance(observations, dict):
        return {key: reductions.gather_rows(value) for key, value in observations.items()}
    return reductions.gather_rows(observations)


def all_finite(parameters: Any) -> bool:
    """
    Whether every tensor in ``parameters`` (e.g. ``policy.parameters()`` or a list of gradients) is finite.

    One fused reduction and one host synchronisation, whatever the number of tensors: a NaN or inf
    anywhere makes the sum of the tensors' norms non-finite. (Values so large that a norm overflows
    float32, above about 1e19, count as non-finite too: no usable update holds them.)

    :param parameters: an iterable of tensors; ``None`` entries (missing gradients) are skipped
    :return: ``True`` when no tensor holds a NaN or an inf
    """
    tensors = [t for t in parameters if t is not None]
    if not tensors:
        return True
    return math.isfinite(float(torch.stack(torch._foreach_norm(tensors)).sum()))
