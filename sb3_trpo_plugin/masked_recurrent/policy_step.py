"""
TRPO's policy step on a masked recurrent policy, through the step's seams: the recurrent step's re-run of the actor's
LSTM over the stored sequences, then the masked step's masks (nothing of either step is copied).

:class:`MaskedRecurrentPolicyBatch` is the recurrent batch (padded sequences, their initial LSTM states, episode
starts) with the action masks of its valid steps; :class:`MaskedRecurrentPolicyStep` computes the distributions of
the valid steps as :class:`~sb3_trpo_plugin.recurrent.policy_step.RecurrentPolicyStep` does and applies each step's
mask to them. The surrogate's ratio, both kinds of Fisher products and the KL that the line search bounds are then
those of the masked distributions of the re-run sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sb3_contrib.common.maskable.distributions import MaskableDistribution
from stable_baselines3.common.distributions import Distribution

from sb3_trpo_plugin.masked.distributions import as_trust_region_distribution
from sb3_trpo_plugin.recurrent.policy_step import RecurrentPolicyStep
from sb3_trpo_plugin.recurrent.sequences import RecurrentPolicyBatch
from sb3_trpo_plugin.trpo.policy_step import PolicyBatch


@dataclass(frozen=True)
class MaskedRecurrentPolicyBatch(RecurrentPolicyBatch):
    """
    A :class:`~sb3_trpo_plugin.recurrent.sequences.RecurrentPolicyBatch` with each valid step's action mask.

    :param action_masks: ``(n_valid_steps, mask_dims)``, one row per valid step (the rows of ``actions``), true (or 1)
        where an action is valid; ``None``: every action valid
    """

    action_masks: torch.Tensor | None = None

    def every(self, k: int) -> MaskedRecurrentPolicyBatch:
        """
        Every ``k``-th whole sequence, each valid step with its mask.

        :param k: the step between selected sequences
        :return: the selected sequences
        """
        plain = super().every(k)
        masks = None if self.action_masks is None else self.action_masks[self.valid_steps_of_every(k)]
        return MaskedRecurrentPolicyBatch(
            observations=plain.observations,
            actions=plain.actions,
            old_log_prob=plain.old_log_prob,
            advantages=plain.advantages,
            initial_states=plain.initial_states,
            episode_starts=plain.episode_starts,
            mask=plain.mask,
            action_masks=masks,
        )


class MaskedRecurrentPolicyStep(RecurrentPolicyStep):
    """
    The trust-region step of :class:`~sb3_trpo_plugin.recurrent.policy_step.RecurrentPolicyStep` on the masked policy
    ``π(·|s_0..s_t, mask_t)`` (Fisher sub-sampling by whole sequences, as the recurrent step's).
    """

    def batch_distribution(self, batch: PolicyBatch) -> Distribution:
        """
        ``π_θ(·|s_0..s_t, mask_t)`` at the batch's valid steps: the actor's LSTM re-run over each sequence, then each
        step's mask applied (sb3-contrib's ``apply_masking``).

        :param batch: a :class:`MaskedRecurrentPolicyBatch` (a plain recurrent batch: every action valid)
        :return: the masked distribution, as :mod:`sb3_trpo_plugin.common.distributions` reads it
        """
        distribution = super().batch_distribution(batch)
        if not isinstance(distribution, MaskableDistribution):
            raise TypeError(
                f"a masked recurrent step needs a policy with masked distributions, got {type(distribution).__name__}"
            )
        masks = batch.action_masks if isinstance(batch, MaskedRecurrentPolicyBatch) else None
        if masks is not None:
            distribution.apply_masking(masks)
        return as_trust_region_distribution(distribution)


__all__ = ["MaskedRecurrentPolicyBatch", "MaskedRecurrentPolicyStep"]
