"""
Rollouts of a recurrent policy: SB3's on-policy loop, carrying the LSTM states from step to step.

The lean inference of :mod:`sb3_trpo_plugin.rollout` replicates feed-forward policies only; a recurrent policy
needs its states. :class:`RecurrentRollouts` keeps SB3's loop step for step (callbacks with the same calls and
locals, ``False`` from ``on_step`` stopping training, action clipping or unscaling, gSDE noise resampling,
time-limit bootstrapping, VecNormalize through the environment) and adds what sb3-contrib's ``RecurrentPPO``
stores: the LSTM states held before each step, which the update re-runs the sequences from. The state of an
environment is reset to zero before the first step of each of its episodes (inside the policy's forward, from
``episode_starts``); the states carry over from one rollout to the next.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_plugin.recurrent.inference import recurrent_policy_inference


def zero_lstm_states(policy: RecurrentActorCriticPolicy, n_envs: int) -> RNNStates:
    """
    Zero hidden and cell states for the actor's and the critic's LSTM (sb3-contrib's ``RNNStates``).

    :param policy: the recurrent policy (both LSTMs have the actor's shape, as sb3-contrib assumes)
    :param n_envs: the number of environments
    :return: ``RNNStates(pi=(h, c), vf=(h, c))``, each ``(n_layers, n_envs, hidden_size)``
    """
    lstm = policy.lstm_actor
    shape = (lstm.num_layers, n_envs, lstm.hidden_size)

    def zeros() -> torch.Tensor:
        return torch.zeros(shape, device=policy.device)

    return RNNStates((zeros(), zeros()), (zeros(), zeros()))


class RecurrentRollouts(OnPolicyAlgorithm):
    """
    ``OnPolicyAlgorithm`` whose ``collect_rollouts`` carries a recurrent policy's LSTM states and stores them in
    sb3-contrib's recurrent rollout buffers.

    :ivar _last_lstm_states: the LSTM states after the last step of the last rollout
    """

    policy: RecurrentActorCriticPolicy
    _last_lstm_states: RNNStates | None = None
    #: Act through the lean inference when the policy is recognised (:mod:`~sb3_trpo_plugin.recurrent.inference`);
    #: ``False`` (on the class or an instance) always calls the policy's own forward.
    lean_rollout: bool = True

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """
        Collect experiences using the current policy and fill a recurrent rollout buffer (SB3's semantics).

        :param env: The training environment
        :param callback: Callback that will be called at each step (and at the beginning and end of the rollout)
        :param rollout_buffer: Buffer to fill with rollouts (sb3-contrib's ``RecurrentRolloutBuffer`` or
            ``RecurrentDictRolloutBuffer``)
        :param n_rollout_steps: Number of experiences to collect per environment
        :return: True if function returned with at least `n_rollout_steps` collected, False if callback
            terminated rollout prematurely.
        """
        if not isinstance(rollout_buffer, (RecurrentRolloutBuffer, RecurrentDictRolloutBuffer)):
            raise TypeError(f"a recurrent policy needs a recurrent rollout buffer to store its states, got {rollout_buffer}")
        assert self._last_obs is not None, "No previous observation was provided"
        if self._last_lstm_states is None or self._last_lstm_states.pi[0].shape[1] != env.num_envs:
            self._last_lstm_states = zero_lstm_states(self.policy, env.num_envs)
        # Switch to eval mode (this affects batch norm / dropout)
        self.policy.set_training_mode(False)

        n_steps = 0
        rollout_buffer.reset()
        # Sample new weights for the state dependent exploration
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)

        callback.on_rollout_start()

        # The lean inference for sb3-contrib's recurrent policies (bit for bit their forward), else the forward itself
        inference = recurrent_policy_inference(self.policy) if self.lean_rollout else None
        lstm_states = self._last_lstm_states
        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                # Sample a new noise matrix
                self.policy.reset_noise(env.num_envs)

            with torch.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                episode_starts = torch.tensor(self._last_episode_starts, dtype=torch.float32, device=self.device)
                # The states are reset to zero where an episode starts, inside the forward.
                if inference is None:
                    actions_tensor, values, log_probs, lstm_states = self.policy(obs_tensor, lstm_states, episode_starts)
                    actions = actions_tensor.cpu().numpy()
                else:
                    any_start = bool(np.any(self._last_episode_starts))
                    actions, values, log_probs, lstm_states = inference(obs_tensor, lstm_states, episode_starts, any_start)

            # Rescale and perform action
            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:
                    # Unscale the actions to match env bounds if they were previously squashed (scaled in [-1, 1])
                    clipped_actions = self.policy.unscale_action(clipped_actions)
                else:
                    # Otherwise, clip the actions to avoid out of bound error
                    # as we are sampling from an unbounded Gaussian distribution
                    clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)

            new_obs, rewards, dones, infos = env.step(clipped_actions)

            self.num_timesteps += env.num_envs

            # Give access to local variables
            callback.update_locals(locals())
            if not callback.on_step():
                return False

            self._update_info_buffer(infos, dones)
            n_steps += 1

            if isinstance(self.action_space, spaces.Discrete):
                # Reshape in case of discrete action
                actions = actions.reshape(-1, 1)

            # Handle timeout by bootstrapping with the value function (SB3 GitHub issue #633), from the critic's
            # state after the step: the terminal observation continues the episode.
            for idx, done in enumerate(dones):
                if (
                    done
                    and infos[idx].get("terminal_observation") is not None
                    and infos[idx].get("TimeLimit.truncated", False)
                ):
                    terminal_obs = self.policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
                    terminal_lstm_state = (
                        lstm_states.vf[0][:, idx : idx + 1, :].contiguous(),
                        lstm_states.vf[1][:, idx : idx + 1, :].contiguous(),
                    )
                    with torch.no_grad():
                        no_start = torch.zeros(1, dtype=torch.float32, device=self.device)
                        terminal_value = self.policy.predict_values(
                            terminal_obs,  # type: ignore[arg-type]
                            terminal_lstm_state,
                            no_start,
                        )[0]
                    rewards[idx] += self.gamma * terminal_value

            # The states held before this step: the update re-runs each sequence from them.
            rollout_buffer.add(
                self._last_obs,  # type: ignore[arg-type]
                actions,
                rewards,
                self._last_episode_starts,  # type: ignore[arg-type]
                values,
                log_probs,
                lstm_states=self._last_lstm_states,
            )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones
            self._last_lstm_states = lstm_states

        with torch.no_grad():
            # Compute value for the last timestep
            episode_starts = torch.tensor(dones, dtype=torch.float32, device=self.device)
            last_obs_tensor = obs_as_tensor(new_obs, self.device)  # type: ignore[arg-type]
            values = self.policy.predict_values(last_obs_tensor, lstm_states.vf, episode_starts)  # type: ignore[arg-type]

        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)

        callback.update_locals(locals())

        callback.on_rollout_end()

        return True
