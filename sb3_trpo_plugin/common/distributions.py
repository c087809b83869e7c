"""
Adapters between SB3 action distributions and the trust-region maths.

An SB3 :class:`~stable_baselines3.common.distributions.Distribution` wraps PyTorch distributions
(``Categorical`` with logits, ``Bernoulli`` with logits, ``Normal`` with mean and standard
deviation, or a list of ``Categorical`` for MultiDiscrete). This module exposes their parameters
as a list of tensors, rebuilds a distribution from such a list (to detach the old policy or to
differentiate in the parameters), and gives the Fisher matrix ``M`` in those parameters.
Distributions of other kinds return ``None``: the caller falls back to double backpropagation.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TypeVar

import torch
from stable_baselines3.common.distributions import Distribution, kl_divergence
from torch.distributions import Bernoulli, Categorical, Normal

from sb3_trpo_plugin.trust_region.fisher import (
    TensorListMap,
    bernoulli_fisher,
    block_diagonal,
    categorical_fisher,
    normal_fisher,
)

SelfDistribution = TypeVar("SelfDistribution", bound=Distribution)


def distribution_parameters(distribution: Distribution) -> list[torch.Tensor] | None:
    """
    The tensors that determine the action distribution, per state.

    :param distribution: an SB3 distribution after ``proba_distribution``
    :return: ``[logits]`` (Categorical, Bernoulli), ``[mean, std]`` (Normal, gSDE), the logits of
        each component (MultiCategorical), or ``None`` for other kinds
    """
    inner = distribution.distribution
    if isinstance(inner, list) and all(isinstance(part, Categorical) for part in inner):
        return [part.logits for part in inner]  # type: ignore[attr-defined]
    if isinstance(inner, (Categorical, Bernoulli)):
        return [inner.logits]
    if isinstance(inner, Normal):
        return [inner.loc, inner.scale]
    return None


def with_parameters(distribution: SelfDistribution, parameters: Sequence[torch.Tensor]) -> SelfDistribution:
    """
    A shallow copy of ``distribution`` whose PyTorch distribution is rebuilt from ``parameters``.

    SB3 policies return the same distribution object on every call, so a copy is needed to keep
    the old policy while the weights move.

    :param distribution: an SB3 distribution accepted by :func:`distribution_parameters`
    :param parameters: tensors in the layout :func:`distribution_parameters` returns
    :return: the copy
    """
    inner = distribution.distribution
    rebuilt = copy.copy(distribution)
    # validate_args=False: the values come from a valid distribution, and validation costs a host sync.
    if isinstance(inner, list):
        rebuilt.distribution = [Categorical(logits=logits, validate_args=False) for logits in parameters]
    elif isinstance(inner, Categorical):
        rebuilt.distribution = Categorical(logits=parameters[0], validate_args=False)
    elif isinstance(inner, Bernoulli):
        rebuilt.distribution = Bernoulli(logits=parameters[0], validate_args=False)
    elif isinstance(inner, Normal):
        rebuilt.distribution = Normal(parameters[0], parameters[1], validate_args=False)
    else:
        raise TypeError(f"Cannot rebuild a distribution of type {type(inner).__name__}")
    return rebuilt


def averaged_dimensions(distribution: Distribution) -> int:
    """
    How many independent action dimensions :func:`kl_per_state` averages over.

    SB3's ``kl_divergence`` keeps one KL per dimension for a diagonal Gaussian (Box, gSDE) and for
    Bernoulli variables (MultiBinary), and sb3-contrib's TRPO takes their mean, so ``target_kl``
    bounds the KL per action dimension there: the joint KL divided by ``d``. A Categorical has one
    KL per state, and SB3 already sums a MultiCategorical's components.

    A distribution may also say so itself with a ``kl_averaged_dimensions`` attribute (the masked variant's
    MultiBinary actions, written as ``d`` two-way categoricals): duck typing, so that this module imports no variant.

    :param distribution: an SB3 distribution after ``proba_distribution``
    :return: ``d`` for a Normal or Bernoulli of shape ``(n_states, d)``, the distribution's own
        ``kl_averaged_dimensions`` if it has one, else 1
    """
    inner = distribution.distribution
    if isinstance(inner, (Normal, Bernoulli)) and len(inner.batch_shape) > 1:
        return int(inner.batch_shape[-1])
    return int(getattr(distribution, "kl_averaged_dimensions", 1))


def fisher_metric(distribution: Distribution, scale: float) -> TensorListMap | None:
    """
    The Hessian ``M`` of :func:`kl_per_state` in the parameters of :func:`distribution_parameters`.

    Components are independent, so ``M`` is block diagonal: ``diag(p) - p pᵀ`` per categorical (``/ d`` when the
    distribution averages its ``d`` components' KL), ``diag(p(1-p)) / d`` for ``d`` Bernoulli logits,
    ``diag(1/σ², 2/σ²) / d`` for a ``d``-dimensional normal in (μ, σ) (the ``1/d`` of the per-dimension mean,
    see :func:`averaged_dimensions`).

    :param distribution: an SB3 distribution
    :param scale: factor on ``M`` (``1/N`` for the mean KL over ``N`` states)
    :return: ``u ↦ scale · M u``, or ``None`` for other kinds
    """
    inner = distribution.distribution
    if isinstance(inner, list) and all(isinstance(part, Categorical) for part in inner):
        component_scale = scale / averaged_dimensions(distribution)
        return block_diagonal(
            [categorical_fisher(part.probs, component_scale) for part in inner],  # type: ignore[attr-defined]
            [1] * len(inner),
        )
    if isinstance(inner, Categorical):
        return categorical_fisher(inner.probs, scale)
    if isinstance(inner, Bernoulli):
        return bernoulli_fisher(inner.probs, scale / averaged_dimensions(distribution))
    if isinstance(inner, Normal):
        return normal_fisher(inner.scale, scale / averaged_dimensions(distribution))
    return None


def kl_per_state(old: Distribution, new: Distribution) -> torch.Tensor:
    """
    ``KL(π_old(·|s) ‖ π_new(·|s))`` for each state: the quantity ``target_kl`` bounds, in the direction of the TRPO
    paper. sb3-contrib's TRPO measures the other direction, ``KL(π_new ‖ π_old)``: both have the same Hessian at
    ``π_new = π_old`` (so the same Fisher matrix and the same proposed step), and they differ only far from it, where
    the line search's test may then accept a step of another length (see the README's differences from sb3-contrib).

    For Discrete and MultiDiscrete actions it is the KL of the action distribution (SB3 sums a
    MultiCategorical's components). For the ``d`` independent dimensions of a Gaussian (Box, gSDE)
    or of Bernoulli variables (MultiBinary) it is their mean, ``KL_joint / d``, as sb3-contrib's TRPO takes it:
    rl-zoo3's tuned ``target_kl`` values mean that (see :func:`averaged_dimensions`).

    :param old: distribution of the old policy
    :param new: distribution of the new policy, same type
    :return: tensor of shape ``(n_states,)``
    """
    kl = kl_divergence(old, new)
    if kl.dim() > 1:
        return kl.mean(dim=-1)
    dimensions = averaged_dimensions(new)
    return kl / dimensions if dimensions > 1 else kl


def mean_action_std(distribution: Distribution) -> float:
    """
    Mean over states and action dimensions of the Gaussian action noise's standard deviation before any
    squashing (``nan`` for other distributions). With gSDE it is ``sqrt(Σ_j φ_j(s)² σ_ij²)`` per state, which
    ``train/std`` (the mean of ``exp(log_std)``, i.e. of ``σ``) does not show.

    :param distribution: an SB3 distribution after ``proba_distribution``
    :return: the mean standard deviation, or ``nan``
    """
    normal = getattr(distribution, "distribution", None)
    if isinstance(normal, Normal):
        return float(normal.stddev.detach().mean())
    return float("nan")
