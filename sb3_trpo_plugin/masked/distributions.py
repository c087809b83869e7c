"""
sb3-contrib's masked action distributions in the form :mod:`sb3_trpo_plugin.common.distributions` reads.

sb3-contrib masks an action by replacing its logit with ``-1e8`` (not ``-inf``): its probability is then exactly
zero in floating point, its log-probability finite. So the closed-form Fisher matrix ``diag(p) - p pᵀ`` of a masked
categorical has zero rows and columns for the invalid actions, the KL ``Σ_a p_a (log p_a - log q_a)`` has zero
terms for them, and the Jacobian of the masked logits in the network's parameters is zero there too (``torch.where``
passes no gradient to the replaced logits): no ``0 · (-inf)`` anywhere. With every action valid the masked
logits are the policy's logits, bit for bit.

Discrete actions need no adaptation (``MaskableCategorical`` is a torch ``Categorical``). MultiDiscrete and
MultiBinary ones (sb3-contrib writes a MultiBinary action as ``d`` two-way categoricals) keep their components in
``distributions``; :func:`as_trust_region_distribution` presents them as SB3's ``MultiCategoricalDistribution``
whose ``distribution`` is that list of masked categoricals.
"""

from __future__ import annotations

from sb3_contrib.common.maskable.distributions import (
    MaskableBernoulliDistribution,
    MaskableCategorical,
    MaskableDistribution,
    MaskableMultiCategoricalDistribution,
)
from stable_baselines3.common.distributions import Distribution, MultiCategoricalDistribution


class MaskedMultiCategoricalDistribution(MultiCategoricalDistribution):
    """
    SB3's ``MultiCategoricalDistribution`` over masked components: the KL sums the components' KLs, then divides
    by ``kl_averaged_dimensions`` (read by :func:`~sb3_trpo_plugin.common.distributions.averaged_dimensions`).

    :param action_dims: the number of choices of each component
    :param components: the masked categoricals, one per component
    :param kl_averaged_dimensions: ``d`` for MultiBinary actions (``target_kl`` bounds the KL per action dimension,
        as TRPO's on MultiBinary), 1 for MultiDiscrete ones (the joint KL, as TRPO's)
    """

    def __init__(self, action_dims: list[int], components: list[MaskableCategorical], kl_averaged_dimensions: int):
        super().__init__(action_dims)
        self.distribution = list(components)
        self.kl_averaged_dimensions = kl_averaged_dimensions


def as_trust_region_distribution(distribution: MaskableDistribution) -> Distribution:
    """
    The masked distribution of a batch's states, as the trust-region step reads it (same tensors, no copy).

    :param distribution: sb3-contrib's distribution after ``proba_distribution`` and ``apply_masking``
    :return: ``distribution`` itself for Discrete actions; for MultiDiscrete and MultiBinary ones, a
        :class:`MaskedMultiCategoricalDistribution` over its components
    """
    if isinstance(distribution, MaskableMultiCategoricalDistribution):
        averaged = len(distribution.action_dims) if isinstance(distribution, MaskableBernoulliDistribution) else 1
        return MaskedMultiCategoricalDistribution(list(distribution.action_dims), distribution.distributions, averaged)
    return distribution
