"""
What the trust-region step maximises, on tensors: the importance-sampled surrogate ``L(θ)``, the mean entropy ``H̄``
of an entropy bonus, and the advantages' z-score over the (whole) batch that ``TRPO`` applies before the step.
"""

from __future__ import annotations

import math

import torch
from stable_baselines3.common.distributions import Distribution

from sb3_trpo_plugin.common.reductions import ONE_PROCESS, BatchReductions


def surrogate_objective(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """
    Importance-sampled surrogate ``L(θ) = mean_t[ π_θ(a_t|s_t) / π_old(a_t|s_t) · A_t ]``.

    :param log_prob: ``log π_θ(a_t|s_t)``
    :param old_log_prob: ``log π_old(a_t|s_t)``
    :param advantages: ``A_t``
    :return: scalar surrogate
    """
    return (torch.exp(log_prob - old_log_prob) * advantages).mean()


def mean_entropy(distribution: Distribution) -> torch.Tensor | None:
    """
    ``H̄(π) = mean_t H(π(·|s_t))``, with SB3's entropy per state (summed over independent action dimensions).

    :param distribution: an SB3 distribution after ``proba_distribution``
    :return: scalar mean entropy, or ``None`` when the distribution has no closed-form entropy (gSDE with
        ``squash_output``)
    """
    entropy = distribution.entropy()
    return None if entropy is None else entropy.mean()


def mean_entropy_value(distribution: Distribution) -> float:
    """``H̄`` as a float, for the logs (``nan`` when the distribution has no closed-form entropy)."""
    with torch.no_grad():
        entropy = mean_entropy(distribution)
    return math.nan if entropy is None else float(entropy)


def normalize_advantages(
    advantages: torch.Tensor, reductions: BatchReductions = ONE_PROCESS, eps: float = 1e-8
) -> torch.Tensor:
    """
    Z-score over the batch: ``Â = (A - mean A) / (std A + ε)``.

    Advantages that are all equal up to rounding (e.g. constant rewards) give zeros: their spread is
    rounding noise, which the z-score would otherwise blow up to unit scale and follow.

    :param advantages: ``A_t`` for this batch
    :param reductions: how this batch's moments become the whole batch's
    :param eps: ``ε`` guarding a zero standard deviation
    :return: ``Â``
    """
    mean, std = reductions.mean_std(advantages)
    normalized = (advantages - mean) / (std + eps)
    spread_is_rounding = std <= 32 * torch.finfo(advantages.dtype).eps * mean.abs()
    return torch.where(spread_is_rounding, torch.zeros_like(normalized), normalized)
