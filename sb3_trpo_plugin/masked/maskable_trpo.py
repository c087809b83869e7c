"""
``MaskableTRPO``: TRPO on sb3-contrib's masking API, so that a ``MaskablePPO`` script needs only its import changed.

The policies (``MaskableActorCriticPolicy`` and its CNN and multi-input variants), rollout buffers, ``action_masks()``
environments, ``ActionMasker``, ``MaskableEvalCallback`` and the maskable ``evaluate_policy`` are sb3-contrib's.
What is TRPO's is reused through its seams: the constructor, ``train()`` and the policy step, with
:class:`~sb3_trpo_plugin.masked.policy_step.MaskedPolicyStep` computing the batch's masked distributions.
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

import numpy as np
from gymnasium import spaces
from sb3_contrib.common.maskable.buffers import (
    MaskableDictRolloutBuffer,
    MaskableDictRolloutBufferSamples,
    MaskableRolloutBuffer,
    MaskableRolloutBufferSamples,
)
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from sb3_contrib.ppo_mask.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_plugin.masked.inference import masked_lean_rollout
from sb3_trpo_plugin.masked.on_policy import MaskedOnPolicyAlgorithm
from sb3_trpo_plugin.masked.policy_step import MaskedPolicyBatch, MaskedPolicyStep
from sb3_trpo_plugin.rollout.algorithm import LeanRollout
from sb3_trpo_plugin.trpo import TRPO, HyperparameterError
from sb3_trpo_plugin.trpo.policy_step import PolicyStep

SelfMaskableTRPO = TypeVar("SelfMaskableTRPO", bound="MaskableTRPO")
MaskedRollout = MaskableRolloutBufferSamples | MaskableDictRolloutBufferSamples

#: The action spaces sb3-contrib's masked distributions cover.
MASKABLE_ACTION_SPACES = (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


class MaskableTRPO(TRPO, MaskedOnPolicyAlgorithm):  # below TRPO's rollout classes in the MRO: see masked/on_policy.py
    """
    Trust Region Policy Optimization with invalid-action masking.

    TRPO (:class:`~sb3_trpo_plugin.TRPO`, same constructor keywords and defaults) on the masked policy
    ``π(a|s, mask)``: invalid actions have probability zero when acting, in the surrogate's ratio, in the Fisher
    matrix and in the KL that ``target_kl`` bounds (the mean over states of ``KL(π_old(·|s, m) ‖ π_θ(·|s, m))``
    with each state's stored mask ``m``; for MultiBinary actions divided by the number of dimensions, as TRPO's).
    Environments expose ``action_masks()`` (or are wrapped in sb3-contrib's ``ActionMasker``); masks are
    collected with every step, as ``MaskablePPO`` does, and ``learn(..., use_masking=False)`` turns them off.
    Actions: Discrete, MultiDiscrete, MultiBinary. Policies: sb3-contrib's ``MaskableActorCriticPolicy`` family
    (``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"``).

    See :class:`~sb3_trpo_plugin.TRPO` for the parameters.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: MaskableActorCriticPolicy  # type: ignore[assignment]
    rollout_buffer: MaskableRolloutBuffer | MaskableDictRolloutBuffer
    policy_step_class: ClassVar[type[PolicyStep]] = MaskedPolicyStep

    def _lean_rollout(self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer) -> LeanRollout | None:
        """The lean loop's parts with masks (:func:`~sb3_trpo_plugin.masked.inference.masked_lean_rollout`)."""
        return masked_lean_rollout(self.policy, env, callback, rollout_buffer, self._use_masking)

    def _setup_model(self) -> None:
        if not isinstance(self.action_space, MASKABLE_ACTION_SPACES):
            # A ValueError and an AssertionError: sb3-contrib's MaskablePPO refuses these spaces with an assertion.
            raise HyperparameterError(
                f"MaskableTRPO masks Discrete, MultiDiscrete and MultiBinary actions, not {type(self.action_space).__name__}; "
                "use TRPO for other action spaces"
            )
        super()._setup_model()

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_use_masking"]

    def _whole_policy_batch(self, rollout: MaskedRollout) -> MaskedPolicyBatch:  # type: ignore[override]
        """TRPO's policy batch with each state's mask (``MaskedPolicyBatch.every`` sub-samples them alike)."""
        plain = super()._whole_policy_batch(rollout)  # type: ignore[arg-type]
        return MaskedPolicyBatch(plain.observations, plain.actions, plain.old_log_prob, plain.advantages, rollout.action_masks)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        The policy's action for an observation, among the valid ones when ``action_masks`` is given.

        :param observation: the input observation
        :param state: the last hidden states (unused: not a recurrent policy)
        :param episode_start: the last episode starts (unused)
        :param deterministic: whether to return the most likely valid action rather than a sample
        :param action_masks: true where an action is valid, one row per observation (``None``: no masking)
        :return: the action and the (unchanged) state
        """
        return self.policy.predict(observation, state, episode_start, deterministic, action_masks=action_masks)

    def learn(  # type: ignore[override]
        self: SelfMaskableTRPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "MaskableTRPO",
        reset_num_timesteps: bool = True,
        use_masking: bool = True,
        progress_bar: bool = False,
    ) -> SelfMaskableTRPO:
        """
        Train, as ``MaskablePPO.learn`` (same arguments, same order).

        :param use_masking: whether to sample with the environments' action masks (then they must provide them)
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


__all__ = ["MASKABLE_ACTION_SPACES", "CnnPolicy", "MaskableTRPO", "MlpPolicy", "MultiInputPolicy"]
