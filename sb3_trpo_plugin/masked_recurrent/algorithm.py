"""
MaskableRecurrentTRPO: TRPO with LSTM policies and invalid-action masks together, on sb3-contrib's conventions for both.

It is :class:`~sb3_trpo_plugin.recurrent.RecurrentTRPO` (sequences, LSTM states, the critic's fit over sequence
minibatches) with the masked parts plugged into the same seams: a policy whose distributions apply masks
(:mod:`~sb3_trpo_plugin.masked_recurrent.policies`), a buffer storing each step's masks with its LSTM states
(:mod:`~sb3_trpo_plugin.masked_recurrent.buffers`), a rollout through the package's one loop carrying the states and
asking for the masks (:mod:`~sb3_trpo_plugin.masked_recurrent.rollout`), and a policy step on the masked distributions
of the re-run sequences (:mod:`~sb3_trpo_plugin.masked_recurrent.policy_step`).
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
from gymnasium import spaces
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_plugin.masked_recurrent.buffers import MaskableRecurrentDictRolloutBuffer, MaskableRecurrentRolloutBuffer
from sb3_trpo_plugin.masked_recurrent.policies import (
    MASKABLE_ACTION_SPACES,
    CnnLstmPolicy,
    MaskableRecurrentActorCriticPolicy,
    MlpLstmPolicy,
    MultiInputLstmPolicy,
)
from sb3_trpo_plugin.masked_recurrent.policy_step import MaskedRecurrentPolicyBatch, MaskedRecurrentPolicyStep
from sb3_trpo_plugin.masked_recurrent.rollout import masked_recurrent_rollout
from sb3_trpo_plugin.recurrent.algorithm import RecurrentTRPO
from sb3_trpo_plugin.recurrent.on_policy import RecurrentOnPolicyAlgorithm
from sb3_trpo_plugin.recurrent.sequences import RecurrentPolicyBatch
from sb3_trpo_plugin.rollout.algorithm import LeanRollout
from sb3_trpo_plugin.trpo.hyperparameters import HyperparameterError
from sb3_trpo_plugin.trpo.policy_step import PolicyBatch, PolicyStep

SelfMaskableRecurrentTRPO = TypeVar("SelfMaskableRecurrentTRPO", bound="MaskableRecurrentTRPO")


class MaskedRecurrentOnPolicyAlgorithm(RecurrentOnPolicyAlgorithm):
    """
    Below the package's rollout loop in :class:`MaskableRecurrentTRPO`'s method resolution order, where the variants
    have their own loop: sb3-contrib has none for masks with LSTM states, so reaching it (``lean_rollout = False``)
    is an error rather than ``RecurrentPPO``'s loop, which would act without the masks.
    """

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """
        Refuse: the masked recurrent policy collects through the package's rollout loop only.

        :param env: The training environment
        :param callback: Callback called at each step
        :param rollout_buffer: the buffer to fill
        :param n_rollout_steps: Number of experiences to collect per environment
        :raises NotImplementedError: always
        """
        raise NotImplementedError(
            f"{type(self).__name__} collects through the package's rollout loop only (lean_rollout = True): "
            "sb3-contrib has no rollout loop for action masks with LSTM states"
        )


class MaskableRecurrentTRPO(RecurrentTRPO, MaskedRecurrentOnPolicyAlgorithm):
    """
    Trust Region Policy Optimization with recurrent (LSTM) policies and invalid-action masking.

    :class:`~sb3_trpo_plugin.recurrent.RecurrentTRPO` (TRPO's constructor keywords and defaults, the LSTM policies'
    keywords) on the masked policy ``π(a_t | s_0..s_t, mask_t)``: invalid actions have probability zero when acting,
    in the surrogate's ratio, in the Fisher matrix and in the KL that ``target_kl`` bounds (the mean over the valid
    steps of the KL between the old and the new masked distributions of the re-run sequences, each step with its stored
    mask; per action dimension for MultiBinary actions, as TRPO's). Environments expose ``action_masks()`` (or are
    wrapped in sb3-contrib's ``ActionMasker``); masks are asked for before every step, as ``MaskablePPO`` does, and
    ``learn(..., use_masking=False)`` turns them off. ``predict(observation, state, episode_start, deterministic,
    action_masks)`` takes ``RecurrentPPO``'s and ``MaskablePPO``'s arguments together. Actions: Discrete, MultiDiscrete,
    MultiBinary. Policies: ``"MlpLstmPolicy"``, ``"CnnLstmPolicy"``, ``"MultiInputLstmPolicy"``
    (:class:`~sb3_trpo_plugin.masked_recurrent.policies.MaskableRecurrentActorCriticPolicy` and its variants).

    Every rollout step runs the policy's own ``forward`` (no lean replica covers this policy yet) inside the package's
    one rollout loop; ``lean_rollout = False`` is refused, since no other loop collects with masks and LSTM states.
    Data-parallel training (``torchrun``) is refused with an error: RecurrentTRPO's data-parallel update has not been
    tested with masks yet.

    See :class:`~sb3_trpo_plugin.recurrent.RecurrentTRPO` for the parameters.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpLstmPolicy": MlpLstmPolicy,
        "CnnLstmPolicy": CnnLstmPolicy,
        "MultiInputLstmPolicy": MultiInputLstmPolicy,
    }
    policy: MaskableRecurrentActorCriticPolicy
    policy_step_class: ClassVar[type[PolicyStep]] = MaskedRecurrentPolicyStep

    #: Whether the current ``learn`` masks invalid actions (its ``use_masking`` argument).
    _use_masking: bool = True

    def _setup_model(self) -> None:
        if self.collectives is not None:
            raise NotImplementedError(
                "MaskableRecurrentTRPO does not train data-parallel (torchrun) yet: RecurrentTRPO's data-parallel update "
                "has not been tested with action masks; train it in one process"
            )
        if not isinstance(self.action_space, MASKABLE_ACTION_SPACES):
            raise HyperparameterError(
                f"MaskableRecurrentTRPO masks Discrete, MultiDiscrete and MultiBinary actions, not "
                f"{type(self.action_space).__name__}; use RecurrentTRPO for other action spaces"
            )
        if not (isinstance(self.policy_class, type) and issubclass(self.policy_class, MaskableRecurrentActorCriticPolicy)):
            raise ValueError(
                "MaskableRecurrentTRPO needs a MaskableRecurrentActorCriticPolicy (e.g. 'MlpLstmPolicy'), "
                f"got {self.policy_class}"
            )
        if self.rollout_buffer_class is None:
            dict_observations = isinstance(self.observation_space, spaces.Dict)
            self.rollout_buffer_class = (
                MaskableRecurrentDictRolloutBuffer if dict_observations else MaskableRecurrentRolloutBuffer
            )
        if not issubclass(self.rollout_buffer_class, (MaskableRecurrentRolloutBuffer, MaskableRecurrentDictRolloutBuffer)):
            raise ValueError(
                f"{self.rollout_buffer_class.__name__} does not store action masks with the LSTM states: use "
                "MaskableRecurrentRolloutBuffer or MaskableRecurrentDictRolloutBuffer"
            )
        super()._setup_model()

    def _lean_rollout(self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer) -> LeanRollout | None:
        """
        The one loop's parts for the masked recurrent policy
        (:func:`~sb3_trpo_plugin.masked_recurrent.rollout.masked_recurrent_rollout`): never ``None``, since no other
        loop collects for it.
        """

        def keep(states: RNNStates) -> None:
            self._last_lstm_states = states

        states = self._lstm_states_for(env.num_envs)
        episode_starts = self._last_episode_starts
        assert episode_starts is not None, "set by _setup_learn"
        return masked_recurrent_rollout(self.policy, env, rollout_buffer, states, episode_starts, keep, self._use_masking)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_use_masking"]

    def _whole_policy_batch(self, rollout: Any) -> PolicyBatch:
        """RecurrentTRPO's sequences, each valid step with its stored mask."""
        plain = super()._whole_policy_batch(rollout)
        assert isinstance(plain, RecurrentPolicyBatch)
        return MaskedRecurrentPolicyBatch(
            observations=plain.observations,
            actions=plain.actions,
            old_log_prob=plain.old_log_prob,
            advantages=plain.advantages,
            initial_states=plain.initial_states,
            episode_starts=plain.episode_starts,
            mask=plain.mask,
            action_masks=rollout.action_masks[plain.mask],
        )

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        The policy's action among the valid ones, and the LSTM states to pass to the next call.

        :param observation: the input observation
        :param state: the LSTM states the last call returned (``None``: zero states)
        :param episode_start: whether each observation starts an episode (its states are reset)
        :param deterministic: the most likely valid action rather than a sample
        :param action_masks: true where an action is valid, one row per observation (``None``: every action)
        :return: the actions and the new LSTM states
        """
        return self.policy.predict(observation, state, episode_start, deterministic, action_masks=action_masks)

    def learn(  # type: ignore[override]
        self: SelfMaskableRecurrentTRPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "MaskableRecurrentTRPO",
        reset_num_timesteps: bool = True,
        use_masking: bool = True,
        progress_bar: bool = False,
    ) -> SelfMaskableRecurrentTRPO:
        """
        Train, as ``MaskablePPO.learn`` (same arguments, same order).

        :param use_masking: whether to act with the environments' action masks (then they must provide them)
        """
        self._use_masking = use_masking
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )


__all__ = [
    "CnnLstmPolicy",
    "MaskableRecurrentTRPO",
    "MaskedRecurrentOnPolicyAlgorithm",
    "MlpLstmPolicy",
    "MultiInputLstmPolicy",
]
