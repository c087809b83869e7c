"""
LSTM policies whose action distributions apply invalid-action masks: sb3-contrib's recurrent actor-critic policies
with sb3-contrib's masked distributions.

:class:`MaskableRecurrentActorCriticPolicy` is sb3-contrib's ``RecurrentActorCriticPolicy`` (the same modules, built in
the same order, so that a seed gives the same initial weights) whose action head is sb3-contrib's masked distribution
for the action space (``make_masked_proba_distribution``). Every method that returns actions or a distribution takes
``action_masks`` (true where an action is valid, one row per observation), as ``MaskableActorCriticPolicy``'s do:
``forward``, ``get_distribution``, ``evaluate_actions``, ``predict``. Without masks (``None``) the distribution is the
masked distribution with every action valid. Continuous actions and gSDE have no masks and are refused.
"""

from __future__ import annotations

from functools import partial
from typing import Any, cast

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.distributions import MaskableDistribution, make_masked_proba_distribution
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule

#: The action spaces sb3-contrib's masked distributions cover.
MASKABLE_ACTION_SPACES = (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)

PairOfStates = tuple[torch.Tensor, torch.Tensor]  # sb3-contrib's annotation of an LSTM's (hidden, cell) states


class MaskableRecurrentActorCriticPolicy(RecurrentActorCriticPolicy):
    """
    sb3-contrib's ``RecurrentActorCriticPolicy`` acting through a masked action distribution.

    Takes the keywords of ``RecurrentActorCriticPolicy`` (``lstm_hidden_size``, ``n_lstm_layers``, ``shared_lstm``,
    ``enable_critic_lstm``, ...); ``use_sde`` must stay ``False``.

    :param observation_space: Observation space
    :param action_space: Discrete, MultiDiscrete or MultiBinary action space
    :param lr_schedule: Learning rate schedule (could be constant)
    :param kwargs: the other keywords of ``RecurrentActorCriticPolicy``
    """

    action_dist: MaskableDistribution

    def __init__(
        self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any
    ) -> None:
        if not isinstance(action_space, MASKABLE_ACTION_SPACES):
            raise ValueError(
                f"a maskable recurrent policy needs Discrete, MultiDiscrete or MultiBinary actions, not {action_space}"
            )
        if kwargs.get("use_sde", False):
            raise ValueError("gSDE applies to continuous actions, which have no masks: use_sde must be False")
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        # SB3 builds its modules for its own distribution (the same action head for Discrete and MultiDiscrete actions,
        # so a seed gives RecurrentActorCriticPolicy's weights); the masked distribution then takes its place.
        super()._build(lr_schedule)
        self.action_dist = make_masked_proba_distribution(self.action_space)
        if isinstance(self.action_space, spaces.MultiBinary):  # two logits per dimension, where SB3's Bernoulli has one
            self.action_net = self.action_dist.proba_distribution_net(latent_dim=self.mlp_extractor.latent_dim_pi)
            if self.ortho_init:
                self.action_net.apply(partial(self.init_weights, gain=0.01))

    def _get_action_dist_from_latent(self, latent_pi: torch.Tensor) -> MaskableDistribution:
        """The masked distribution of the actor's latent (every action valid until ``apply_masking``)."""
        return self.action_dist.proba_distribution(action_logits=self.action_net(latent_pi))

    def _latents(
        self, obs: PyTorchObs, lstm_states: RNNStates, episode_starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, RNNStates]:
        """The actor's and the critic's latents after their LSTMs and MLPs, and both LSTMs' new states (as ``forward``)."""
        features = self.extract_features(obs)
        pi_features, vf_features = (features, features) if self.share_features_extractor else features
        actor_states, critic_states = cast(PairOfStates, lstm_states.pi), cast(PairOfStates, lstm_states.vf)
        # sb3-contrib annotates _process_sequence's new states as one tensor: they are the LSTM's (hidden, cell) pair
        latent_pi, new_pi = self._process_sequence(
            cast(torch.Tensor, pi_features), actor_states, episode_starts, self.lstm_actor
        )
        states_pi = cast(PairOfStates, new_pi)
        states_vf: tuple[torch.Tensor, ...]
        if self.lstm_critic is not None:
            latent_vf, new_vf = self._process_sequence(
                cast(torch.Tensor, vf_features), critic_states, episode_starts, self.lstm_critic
            )
            states_vf = cast(PairOfStates, new_vf)
        elif self.shared_lstm:  # the actor's LSTM, read without gradient
            latent_vf, states_vf = latent_pi.detach(), (states_pi[0].detach(), states_pi[1].detach())
        else:  # a linear layer in place of the critic's LSTM
            assert self.critic is not None
            latent_vf, states_vf = self.critic(vf_features), states_pi
        latents = self.mlp_extractor.forward_actor(latent_pi), self.mlp_extractor.forward_critic(latent_vf)
        return latents[0], latents[1], RNNStates(states_pi, states_vf)

    def forward(  # type: ignore[override]
        self,
        obs: torch.Tensor,
        lstm_states: RNNStates,
        episode_starts: torch.Tensor,
        deterministic: bool = False,
        action_masks: np.ndarray | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, RNNStates]:
        """
        Actions, values and log-probabilities for one step of each sequence, and the new LSTM states.

        :param obs: the observations
        :param lstm_states: the actor's and the critic's LSTM states before the step
        :param episode_starts: 1 where an episode starts (the states are reset there)
        :param deterministic: the most likely valid action rather than a sample
        :param action_masks: true where an action is valid, one row per observation; ``None``: every action
        :return: actions, values, log-probabilities, new states
        """
        latent_pi, latent_vf, new_states = self._latents(obs, lstm_states, episode_starts)
        values = self.value_net(latent_vf)
        distribution = self._get_action_dist_from_latent(latent_pi)
        if action_masks is not None:
            distribution.apply_masking(action_masks)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob, new_states  # type: ignore[misc]

    def get_distribution(  # type: ignore[override]
        self,
        obs: PyTorchObs,
        lstm_states: tuple[torch.Tensor, torch.Tensor],
        episode_starts: torch.Tensor,
        action_masks: np.ndarray | torch.Tensor | None = None,
    ) -> tuple[MaskableDistribution, tuple[torch.Tensor, ...]]:
        """
        The masked action distribution from the actor's LSTM states, and its new states.

        :param obs: the observations
        :param lstm_states: the actor's LSTM states
        :param episode_starts: 1 where an episode starts
        :param action_masks: true where an action is valid; ``None``: every action
        """
        distribution, new_states = super().get_distribution(obs, lstm_states, episode_starts)  # type: ignore[arg-type]
        if action_masks is not None:
            distribution.apply_masking(action_masks)  # type: ignore[attr-defined]
        return distribution, new_states  # type: ignore[return-value]

    def evaluate_actions(  # type: ignore[override]
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        lstm_states: RNNStates,
        episode_starts: torch.Tensor,
        action_masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """
        Values, log-probabilities and entropies of the actions under the masked distribution, along the sequences.

        :param obs: the observations (padded sequences)
        :param actions: the actions taken
        :param lstm_states: the states before each sequence
        :param episode_starts: 1 where an episode starts
        :param action_masks: true where an action is valid; ``None``: every action
        """
        latent_pi, latent_vf, _ = self._latents(obs, lstm_states, episode_starts)
        distribution = self._get_action_dist_from_latent(latent_pi)
        if action_masks is not None:
            distribution.apply_masking(action_masks)
        return self.value_net(latent_vf), distribution.log_prob(actions), distribution.entropy()

    def _predict(  # type: ignore[override]
        self,
        observation: torch.Tensor,
        lstm_states: tuple[torch.Tensor, torch.Tensor],
        episode_starts: torch.Tensor,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        distribution, new_states = self.get_distribution(observation, lstm_states, episode_starts, action_masks)
        return distribution.get_actions(deterministic=deterministic), new_states

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        The policy's action for an observation among the valid ones, and the actor's LSTM states after it.

        :param observation: the input observation (one, or one per environment)
        :param state: the LSTM states the last call returned; ``None``: zero states
        :param episode_start: whether each observation starts an episode (its states are reset); ``None``: none does
        :param deterministic: the most likely valid action rather than a sample
        :param action_masks: true where an action is valid, one row per observation; ``None``: every action
        :return: the actions and the new states ``(hidden, cell)``, each ``(n_layers, n_envs, hidden_size)``
        """
        self.set_training_mode(False)
        obs_tensor, vectorized_env = self.obs_to_tensor(observation)
        first = next(iter(obs_tensor.values())) if isinstance(obs_tensor, dict) else obs_tensor
        n_envs = int(first.shape[0])
        if state is None:
            zeros = np.zeros((self.lstm_hidden_state_shape[0], n_envs, self.lstm_hidden_state_shape[2]), dtype=np.float32)
            state = (zeros, zeros)
        starts = np.zeros(n_envs, dtype=bool) if episode_start is None else episode_start
        with torch.no_grad():
            states = (
                torch.tensor(state[0], dtype=torch.float32, device=self.device),
                torch.tensor(state[1], dtype=torch.float32, device=self.device),
            )
            starts_tensor = torch.tensor(starts, dtype=torch.float32, device=self.device)
            actions, new_states = self._predict(obs_tensor, states, starts_tensor, deterministic, action_masks)  # type: ignore[arg-type]
        actions_array = actions.cpu().numpy().reshape((-1, *self.action_space.shape))  # type: ignore[arg-type, misc]
        if not vectorized_env:
            actions_array = actions_array.squeeze(axis=0)
        return actions_array, (new_states[0].cpu().numpy(), new_states[1].cpu().numpy())


class MaskableRecurrentActorCriticCnnPolicy(MaskableRecurrentActorCriticPolicy):
    """
    :class:`MaskableRecurrentActorCriticPolicy` with SB3's ``NatureCNN`` features extractor by default (image observations).

    :param observation_space: Observation space (images)
    :param action_space: Discrete, MultiDiscrete or MultiBinary action space
    :param lr_schedule: Learning rate schedule (could be constant)
    :param features_extractor_class: Features extractor to use
    :param kwargs: the other keywords of ``RecurrentActorCriticPolicy``
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            observation_space, action_space, lr_schedule, features_extractor_class=features_extractor_class, **kwargs
        )


class MaskableRecurrentMultiInputActorCriticPolicy(MaskableRecurrentActorCriticPolicy):
    """
    :class:`MaskableRecurrentActorCriticPolicy` with SB3's ``CombinedExtractor`` by default (``Dict`` observations).

    :param observation_space: Observation space (a ``Dict``)
    :param action_space: Discrete, MultiDiscrete or MultiBinary action space
    :param lr_schedule: Learning rate schedule (could be constant)
    :param features_extractor_class: Features extractor to use
    :param kwargs: the other keywords of ``RecurrentActorCriticPolicy``
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            observation_space, action_space, lr_schedule, features_extractor_class=features_extractor_class, **kwargs
        )


MlpLstmPolicy = MaskableRecurrentActorCriticPolicy
CnnLstmPolicy = MaskableRecurrentActorCriticCnnPolicy
MultiInputLstmPolicy = MaskableRecurrentMultiInputActorCriticPolicy

__all__ = [
    "MASKABLE_ACTION_SPACES",
    "CnnLstmPolicy",
    "MaskableRecurrentActorCriticCnnPolicy",
    "MaskableRecurrentActorCriticPolicy",
    "MaskableRecurrentMultiInputActorCriticPolicy",
    "MlpLstmPolicy",
    "MultiInputLstmPolicy",
]
