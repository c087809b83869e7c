"""
The ``OnPolicyAlgorithm`` parts that masks change: the model's setup and the rollouts, as sb3-contrib's ``MaskablePPO``.

:class:`MaskedOnPolicyAlgorithm` builds sb3-contrib's maskable policy (which takes no ``use_sde``) and rollout buffer.
Its ``collect_rollouts`` is sb3-contrib's ``MaskablePPO.collect_rollouts`` itself (called on this algorithm): SB3's
loop (callbacks with its locals, time-limit bootstrapping, the info buffer) plus masks, asked of the environments
before each step (``get_action_masks``), given to the masked policy and stored in the maskable rollout buffer, where
``train()`` finds them. It sits below the package's rollout classes in the method resolution order of
:class:`~sb3_trpo_plugin.masked.MaskableTRPO`, so the data-parallel wrapping (:mod:`sb3_trpo_plugin.parallel`) runs
around it unchanged. It collects for the maskable policies that the lean rollout (:mod:`sb3_trpo_plugin.rollout`,
with the masked parts of :mod:`sb3_trpo_plugin.masked.inference`) does not recognise, and with
``lean_rollout = False``; the lean rollout fills the buffer as this loop does (tested).
"""

from __future__ import annotations

from gymnasium import spaces
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer, MaskableRolloutBuffer
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from sb3_contrib.common.maskable.utils import is_masking_supported
from sb3_contrib.ppo_mask import MaskablePPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_plugin.masked.inference import NO_MASKS_MESSAGE


class MaskedOnPolicyAlgorithm(OnPolicyAlgorithm):
    """``OnPolicyAlgorithm`` with sb3-contrib's maskable policy and buffer; its rollouts act with the masks and store them."""

    #: Whether the current ``learn`` masks invalid actions (its ``use_masking`` argument).
    _use_masking: bool = True

    def _setup_model(self) -> None:
        """SB3's setup with sb3-contrib's maskable rollout buffer (unless one is given) and policy (checked)."""
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        if self.rollout_buffer_class is None:
            dict_observations = isinstance(self.observation_space, spaces.Dict)
            self.rollout_buffer_class = MaskableDictRolloutBuffer if dict_observations else MaskableRolloutBuffer
        if not issubclass(self.rollout_buffer_class, (MaskableRolloutBuffer, MaskableDictRolloutBuffer)):
            raise ValueError(
                f"{self.rollout_buffer_class.__name__} does not store action masks: use sb3-contrib's maskable buffers"
            )
        if not (isinstance(self.policy_class, type) and issubclass(self.policy_class, MaskableActorCriticPolicy)):
            raise ValueError(f"the policy must subclass sb3-contrib's MaskableActorCriticPolicy, got {self.policy_class}")
        self.rollout_buffer = self.rollout_buffer_class(
            self.n_steps,
            self.observation_space,  # type: ignore[arg-type]
            self.action_space,
            device=self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            **self.rollout_buffer_kwargs,
        )
        policy = self.policy_class(self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs)
        self.policy = policy.to(self.device)  # type: ignore[assignment]

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """
        Collect ``n_rollout_steps`` steps per environment into a maskable rollout buffer: ``MaskablePPO``'s own loop.

        :param env: The training environment; with masking, it must expose ``action_masks()``
        :param callback: Callback called at each step (and at the beginning and end of the rollout)
        :param rollout_buffer: a ``MaskableRolloutBuffer`` or ``MaskableDictRolloutBuffer``
        :param n_rollout_steps: Number of experiences to collect per environment
        :return: True if all steps were collected, False if a callback stopped the rollout
        """
        assert isinstance(rollout_buffer, (MaskableRolloutBuffer, MaskableDictRolloutBuffer)), "checked by _setup_model"
        if self._use_masking and not is_masking_supported(env):
            raise ValueError(NO_MASKS_MESSAGE)  # says more than sb3-contrib's message
        # The loop reads only OnPolicyAlgorithm's attributes: sb3-contrib's code itself, not a copy of it.
        return MaskablePPO.collect_rollouts(
            self,  # type: ignore[arg-type]
            env,
            callback,
            rollout_buffer,
            n_rollout_steps,
            use_masking=self._use_masking,
        )
