"""
The ``OnPolicyAlgorithm`` parts that a recurrent policy changes: the model's setup and the rollouts, as sb3-contrib's
``RecurrentPPO``.

:class:`RecurrentOnPolicyAlgorithm` builds sb3-contrib's recurrent policy, its recurrent rollout buffer (which stores
the LSTM states) and the zero states the first rollout starts from. Its ``collect_rollouts`` is sb3-contrib's
``RecurrentPPO.collect_rollouts`` itself (called on this algorithm, not a copy). It sits below the package's rollout
classes in the method resolution order of :class:`~sb3_trpo_plugin.recurrent.RecurrentTRPO`, so the lean loop
(:mod:`sb3_trpo_plugin.rollout`, with the parts of :mod:`sb3_trpo_plugin.recurrent.rollout`) and the data-parallel
wrapping (:mod:`sb3_trpo_plugin.parallel`) run around it; it collects for the recurrent policies that the lean
inference does not recognise, or that its proof disproved, and with ``lean_rollout = False``.
"""

from __future__ import annotations

from gymnasium import spaces
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from sb3_contrib.ppo_recurrent import RecurrentPPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_plugin.recurrent.rollout import check_recurrent_buffer, zero_lstm_states


class RecurrentOnPolicyAlgorithm(OnPolicyAlgorithm):
    """
    ``OnPolicyAlgorithm`` with sb3-contrib's recurrent policy and buffer; its rollouts carry the LSTM states.

    :ivar _last_lstm_states: the LSTM states after the last step of the last rollout (sb3-contrib's name)
    """

    policy: RecurrentActorCriticPolicy
    _last_lstm_states: RNNStates | None = None

    def _setup_model(self) -> None:
        """SB3's setup with sb3-contrib's recurrent policy (checked) and rollout buffer (unless one is given)."""
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        if self.rollout_buffer_class is None:
            dict_observations = isinstance(self.observation_space, spaces.Dict)
            self.rollout_buffer_class = RecurrentDictRolloutBuffer if dict_observations else RecurrentRolloutBuffer
        if not issubclass(self.rollout_buffer_class, (RecurrentRolloutBuffer, RecurrentDictRolloutBuffer)):
            raise ValueError(
                "rollout_buffer_class must be sb3-contrib's RecurrentRolloutBuffer or RecurrentDictRolloutBuffer "
                f"(or a subclass), which store the LSTM states; got {self.rollout_buffer_class.__name__}"
            )
        policy = self.policy_class(
            self.observation_space, self.action_space, self.lr_schedule, use_sde=self.use_sde, **self.policy_kwargs
        )
        if not isinstance(policy, RecurrentActorCriticPolicy):
            raise ValueError(
                f"{type(self).__name__} needs a RecurrentActorCriticPolicy (e.g. 'MlpLstmPolicy'), got {type(policy).__name__}"
            )
        self.policy = policy.to(self.device)
        lstm = self.policy.lstm_actor
        self.rollout_buffer = self.rollout_buffer_class(
            self.n_steps,
            self.observation_space,
            self.action_space,
            device=self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            hidden_state_shape=(self.n_steps, lstm.num_layers, self.n_envs, lstm.hidden_size),
            **self.rollout_buffer_kwargs,
        )
        self._last_lstm_states = zero_lstm_states(self.policy, self.n_envs)

    def _lstm_states_for(self, n_envs: int) -> RNNStates:
        """
        The states the next rollout starts from: those the last one left, or zeros for environments of another number.

        :param n_envs: the number of environments of the rollout
        """
        if self._last_lstm_states is None or self._last_lstm_states.pi[0].shape[1] != n_envs:
            self._last_lstm_states = zero_lstm_states(self.policy, n_envs)
        return self._last_lstm_states

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """
        Collect ``n_rollout_steps`` steps per environment into a recurrent rollout buffer: ``RecurrentPPO``'s own loop.

        :param env: The training environment
        :param callback: Callback called at each step (and at the beginning and end of the rollout)
        :param rollout_buffer: a ``RecurrentRolloutBuffer`` or ``RecurrentDictRolloutBuffer``
        :param n_rollout_steps: Number of experiences to collect per environment
        :return: True if all steps were collected, False if a callback stopped the rollout
        """
        check_recurrent_buffer(rollout_buffer)
        self._lstm_states_for(env.num_envs)
        # The loop reads only OnPolicyAlgorithm's attributes and _last_lstm_states: sb3-contrib's code, not a copy of it.
        return RecurrentPPO.collect_rollouts(self, env, callback, rollout_buffer, n_rollout_steps)  # type: ignore[arg-type]
