"""
The ``OnPolicyAlgorithm`` parts that masks change: the model's setup and the rollouts, as sb3-contrib's ``MaskablePPO``.

:class:`MaskedOnPolicyAlgorithm` builds sb3-contrib's maskable policy (which takes no ``use_sde``) and rollout buffer.
Its ``collect_rollouts`` is sb3-contrib's ``MaskablePPO`` loop, SB3's ``OnPolicyAlgorithm.collect_rollouts`` (callbacks
with its locals, time-limit bootstrapping, the info buffer) plus masks: before each step it asks the environments
for their ``action_masks()`` (``get_action_masks``), samples from the masked policy and stores the masks in the
maskable rollout buffer, where ``train()`` finds them. It sits below the package's rollout classes in the method
resolution order of :class:`~sb3_trpo_plugin.masked.MaskableTRPO`, so the data-parallel wrapping
(:mod:`sb3_trpo_plugin.parallel`) runs around it unchanged. It collects for the maskable policies the lean rollout
(:mod:`sb3_trpo_plugin.rollout`, with the masked parts of :mod:`sb3_trpo_plugin.masked.inference`) does not
recognise, and with ``lean_rollout = False``: the lean rollout fills the buffer as this loop does.
"""

from __future__ import annotations

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer, MaskableRolloutBuffer
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.utils import obs_as_tensor
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
        Collect ``n_rollout_steps`` steps per environment into a maskable rollout buffer (SB3's semantics, plus masks).

        :param env: The training environment; with masking, it must expose ``action_masks()``
        :param callback: Callback called at each step (and at the beginning and end of the rollout)
        :param rollout_buffer: a ``MaskableRolloutBuffer`` or ``MaskableDictRolloutBuffer``
        :param n_rollout_steps: Number of experiences to collect per environment
        :return: True if all steps were collected, False if a callback stopped the rollout
        """
        assert isinstance(rollout_buffer, (MaskableRolloutBuffer, MaskableDictRolloutBuffer)), "checked by _setup_model"
        use_masking = self._use_masking
        if use_masking and not is_masking_supported(env):
            raise ValueError(NO_MASKS_MESSAGE)
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        n_steps = 0
        action_masks = None
        rollout_buffer.reset()
        callback.on_rollout_start()

        while n_steps < n_rollout_steps:
            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                if use_masking:
                    action_masks = get_action_masks(env)
                actions, values, log_probs = self.policy(obs_tensor, action_masks=action_masks)  # type: ignore[call-arg]
            actions = actions.cpu().numpy()
            new_obs, rewards, dones, infos = env.step(actions)
            self.num_timesteps += env.num_envs

            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            n_steps += 1

            if isinstance(self.action_space, spaces.Discrete):  # the buffer keeps one column
                actions = actions.reshape(-1, 1)
            self._bootstrap_truncated(rewards, dones, infos)
            rollout_buffer.add(
                self._last_obs,  # type: ignore[arg-type]
                actions,
                rewards,
                self._last_episode_starts,  # type: ignore[arg-type]
                values,
                log_probs,
                action_masks=action_masks,
            )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones

        with th.no_grad():
            values = self.policy.predict_values(obs_as_tensor(new_obs, self.device))  # type: ignore[arg-type]
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _bootstrap_truncated(self, rewards: np.ndarray, dones: np.ndarray, infos: list[dict]) -> None:
        """``r ← r + γ V(s_T)`` for episodes cut by a time limit (their last state is not terminal), in place."""
        for index, done in enumerate(dones):
            terminal_observation = infos[index].get("terminal_observation")
            if done and terminal_observation is not None and infos[index].get("TimeLimit.truncated", False):
                terminal_obs = self.policy.obs_to_tensor(terminal_observation)[0]
                with th.no_grad():
                    rewards[index] += self.gamma * self.policy.predict_values(terminal_obs)[0]  # type: ignore[arg-type]
