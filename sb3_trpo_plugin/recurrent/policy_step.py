"""
The trust-region step of a recurrent policy: :class:`~sb3_trpo_plugin.trpo.policy_step.PolicyStep` with the action
distributions of a batch computed by re-running the actor's LSTM over the stored sequences.

The surrogate, the mean KL and both kinds of Fisher-vector products (closed form and double backpropagation) are
the feed-forward step's, unchanged: they see the distributions of the valid steps, and their gradients reach the
LSTM's weights through the re-run.
"""

from __future__ import annotations

from typing import cast

import torch
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import BaseModel
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_trpo_plugin.common.reductions import BatchReductions, weighted_by_rows
from sb3_trpo_plugin.recurrent.sequences import LSTMStates, RecurrentPolicyBatch, run_over_sequences
from sb3_trpo_plugin.trpo.policy_step import PolicyBatch, PolicyStep


def actor_distribution_over_sequences(
    policy: RecurrentActorCriticPolicy,
    observations: PyTorchObs,
    initial_states: LSTMStates,
    episode_starts: torch.Tensor,
    mask: torch.Tensor,
) -> Distribution:
    """
    ``π_θ(·|s_0..s_t)`` at the valid steps of padded sequences: features, the actor's LSTM from each sequence's
    stored initial state (reset at episode starts), the actor's MLP and action head on the valid steps only.

    :param policy: the recurrent policy
    :param observations: one row per padded step
    :param initial_states: the actor's LSTM states before each sequence
    :param episode_starts: 1 where an episode starts, per padded step
    :param mask: ``True`` at the valid steps
    :return: the distribution, one row per valid step
    """
    features = BaseModel.extract_features(policy, observations, policy.pi_features_extractor)
    # cuDNN's LSTM has no double backward, which the Fisher products need: torch's own kernels on a GPU.
    with torch.backends.cudnn.flags(enabled=False):
        latent = run_over_sequences(policy.lstm_actor, features, initial_states, episode_starts)
    return policy._get_action_dist_from_latent(policy.mlp_extractor.forward_actor(latent[mask]))


class RecurrentPolicyStep(PolicyStep):
    """
    The trust-region step on a recurrent actor, its LSTM included, over a :class:`RecurrentPolicyBatch`.

    The Fisher matrix is estimated on every ``fisher_sub_sampling_factor``-th whole sequence, by either kind of
    product (the closed form on the sub-batch :meth:`RecurrentPolicyBatch.every` selects, the double backpropagation on
    the same steps); in a data-parallel run each process's products are weighed by the steps it selected.
    """

    def batch_distribution(self, batch: PolicyBatch) -> Distribution:
        """
        ``π_θ`` at the batch's valid steps, the actor's LSTM re-run over each sequence from its stored initial state.

        :param batch: a :class:`~sb3_trpo_plugin.recurrent.sequences.RecurrentPolicyBatch`
        :return: the SB3 distribution of the current weights, one row per valid step
        """
        batch = _recurrent(batch)
        policy = cast(RecurrentActorCriticPolicy, self.policy)
        return actor_distribution_over_sequences(
            policy, batch.observations, batch.initial_states, batch.episode_starts, batch.mask
        )

    def fisher_rows(self, batch: PolicyBatch) -> torch.Tensor:
        """
        The valid steps of every ``fisher_sub_sampling_factor``-th whole sequence, as the closed form selects them.

        :param batch: a :class:`~sb3_trpo_plugin.recurrent.sequences.RecurrentPolicyBatch`
        """
        return _recurrent(batch).valid_steps_of_every(self.settings.fisher_sub_sampling_factor)

    def fisher_reductions(self, batch: PolicyBatch) -> BatchReductions:
        """
        The step's reductions, the Fisher products weighed by the valid steps each process selected for them (processes
        whose sequences differ select different numbers of steps).

        :param batch: a :class:`~sb3_trpo_plugin.recurrent.sequences.RecurrentPolicyBatch`
        """
        if self.settings.fisher_sub_sampling_factor == 1:
            return self.reductions
        return weighted_by_rows(self.reductions, int(self.fisher_rows(batch).sum()))


def _recurrent(batch: PolicyBatch) -> RecurrentPolicyBatch:
    if not isinstance(batch, RecurrentPolicyBatch):
        raise TypeError(f"a recurrent policy's step needs a RecurrentPolicyBatch, got {type(batch).__name__}")
    return batch
