"""
TRPO's policy step on masked action distributions, through the step's seam (nothing of the step is copied).

:class:`MaskedPolicyBatch` carries each state's action mask; :class:`MaskedPolicyStep` computes the batch's
distributions with those masks applied. Everything the step derives from them is then that of the masked policy:
the surrogate's ratio, the Fisher matrix of the conjugate gradient (closed form ``Jᵀ M J``: the invalid actions'
rows and columns of ``M`` vanish) and the KL that the line search bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from stable_baselines3.common.distributions import Distribution

from sb3_trpo_plugin.masked.distributions import as_trust_region_distribution
from sb3_trpo_plugin.trpo.policy_step import PolicyBatch, PolicyStep


@dataclass(frozen=True)
class MaskedPolicyBatch(PolicyBatch):
    """
    The policy step's data with each state's action mask.

    :param action_masks: ``(n_states, Σ n_choices)``, true (or 1) where an action is valid; ``None``: no masking
    """

    action_masks: torch.Tensor | None = None

    def every(self, k: int) -> MaskedPolicyBatch:
        """
        Every ``k``-th sample of the batch, masks included.

        :param k: the step between selected samples
        :return: the selected samples
        """
        plain = super().every(k)
        masks = None if self.action_masks is None else self.action_masks[::k]  # the rows PolicyBatch.every selects
        return MaskedPolicyBatch(plain.observations, plain.actions, plain.old_log_prob, plain.advantages, masks)


class MaskedPolicyStep(PolicyStep):
    """The trust-region step of :class:`~sb3_trpo_plugin.trpo.policy_step.PolicyStep` on the masked policy ``π(·|s, mask)``."""

    def batch_distribution(self, batch: PolicyBatch) -> Distribution:
        """
        ``π_θ(·|s, mask)`` for the batch's states, through sb3-contrib's policy (its ``get_distribution`` applies the masks).

        :param batch: the states, with their masks if it is a :class:`MaskedPolicyBatch`
        :return: the masked distribution, as :mod:`sb3_trpo_plugin.common.distributions` reads it
        """
        masks = batch.action_masks if isinstance(batch, MaskedPolicyBatch) else None
        distribution = self.policy.get_distribution(batch.observations, action_masks=masks)  # type: ignore[call-arg]
        return as_trust_region_distribution(distribution)  # type: ignore[arg-type]
