"""
The critic's regression to the λ-returns, written for one process.

``n_critic_updates`` epochs of minibatch regression ``min_φ mean (V_φ(s) - R̂)²`` over the critic's own
parameters ``φ``, with its own optimiser; the actor's parameters are frozen meanwhile, so a features extractor
shared with the actor stays where the trust-region step put it. :func:`critic_regression` decides what the
regression feeds forward and how a minibatch's gradient is computed (by hand for SB3's plain MLP critic,
:class:`~sb3_trpo_plugin.critic.MLPRegression`, otherwise by autograd); :func:`fit_critic` runs the epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import MlpExtractor
from stable_baselines3.common.type_aliases import PyTorchObs
from torch.nn import functional as F
from torch.optim import optimizer as torch_optimizer

from sb3_trpo_plugin.common.observations import index_observations
from sb3_trpo_plugin.common.parameters import frozen
from sb3_trpo_plugin.common.reductions import ONE_PROCESS, BatchReductions
from sb3_trpo_plugin.critic import MLPRegression

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
    """

    inputs: PyTorchObs
    loss_and_gradients: LossAndGradients
    gradients_are_finite: Callable[[], bool] | None = None


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


def optimizer_step(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """
    ``optimizer.step`` for the critic's many small steps.

    For torch's fused Adam with plain settings (one parameter group, float hyperparameters, no step hooks), once
    its state exists, the step is the fused kernel called as ``Adam.step`` calls it (``state_steps += 1``, then
    ``torch._fused_adam_``): the same update bit for bit (tested), without ``Adam.step``'s per-call bookkeeping,
    which costs several times the kernel at the critic's sizes. Anything else, and the first step (which creates
    the state), is ``optimizer.step()``.

    :param optimizer: the critic's optimiser
    :return: a function that takes one step with the parameters' current gradients
    """
    group = optimizer.param_groups[0] if len(optimizer.param_groups) == 1 else {}
    plain_fused_adam = (
        type(optimizer) is torch.optim.Adam
        and callable(getattr(torch, "_fused_adam_", None))
        and group.get("fused") is True
        and not (group.get("capturable") or group.get("differentiable") or group.get("decoupled_weight_decay"))
        and all(_is_number(group.get(key)) for key in ("lr", "eps", "weight_decay"))
        and all(_is_number(beta) for beta in group.get("betas", (None,)))
        and not (optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks)
        and not (torch_optimizer._global_optimizer_pre_hooks or torch_optimizer._global_optimizer_post_hooks)
    )
    if not plain_fused_adam:
        return optimizer.step
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


def _is_number(value: object) -> bool:
    """A Python int or float (not a bool, not a tensor)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _supports_fused(optimizer_class: type[torch.optim.Optimizer], device: torch.device) -> bool:
    """Whether ``optimizer_class`` has a fused implementation for ``device`` (Adam/AdamW; CPU since torch 2.4)."""
    if optimizer_class not in (torch.optim.Adam, torch.optim.AdamW):
        return False
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return device.type == "cuda" or (device.type == "cpu" and (major, minor) >= (2, 4))


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
    if extractor_is_constant and type(policy).predict_values is ActorCriticPolicy.predict_values:
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
    plain MLP and holds exactly the parameters that move, else by autograd.

    :param policy: the actor-critic policy
    :param critic_parameters: the parameters the regression moves (exactly those of the critic's optimiser)
    :param inputs: what the head is fed, one row per state
    """
    if type(policy.mlp_extractor).forward_critic is MlpExtractor.forward_critic and inputs.dim() == 2:
        regression = MLPRegression.from_layers([policy.mlp_extractor.value_net, policy.value_net])
        if regression is not None and {id(p) for p in regression.parameters() if p.requires_grad} == {
            id(p) for p in critic_parameters
        }:
            hand_derived = regression
            return CriticRegression(
                inputs,
                lambda batch, targets: hand_derived.loss_and_gradients(cast(torch.Tensor, batch), targets),
                hand_derived.gradients_are_finite,
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
