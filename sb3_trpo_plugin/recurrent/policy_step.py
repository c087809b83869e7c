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
    """The trust-region step on a recurrent actor, its LSTM included, over a :class:`RecurrentPolicyBatch`."""

    def batch_distribution(self, batch: PolicyBatch) -> Distribution:
        """
        ``π_θ`` at the batch's valid steps, the actor's LSTM re-run over each sequence from its stored initial state.

        :param batch: a :class:`~sb3_trpo_plugin.recurrent.sequences.RecurrentPolicyBatch`
        :return: the SB3 distribution of the current weights, one row per valid step
        """
        if not isinstance(batch, RecurrentPolicyBatch):
            raise TypeError(f"a recurrent policy's step needs a RecurrentPolicyBatch, got {type(batch).__name__}")
        policy = cast(RecurrentActorCriticPolicy, self.policy)
        return actor_distribution_over_sequences(
            policy, batch.observations, batch.initial_states, batch.episode_starts, batch.mask
        )
