"""
Evaluation of a masked recurrent policy with its LSTM states carried from step to step.

sb3-contrib's maskable ``evaluate_policy`` calls ``predict`` with masks but, when it masks, does not pass the returned
LSTM states to the next call (it keeps them under another name): every step then starts from zero states, and a policy
with memory is evaluated without it (and so is ``MaskableEvalCallback``, which calls that function).
:func:`evaluate_policy` takes the same arguments and carries the states, reset where an episode starts.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv


def evaluate_policy(
    model: Any,
    env: gym.Env | VecEnv,
    n_eval_episodes: int = 10,
    deterministic: bool = True,
    return_episode_rewards: bool = False,
    use_masking: bool = True,
) -> tuple[float, float] | tuple[list[float], list[int]]:
    """
    Run ``n_eval_episodes`` episodes (shared evenly among the environments, as SB3 shares them) with the model's
    ``predict(observation, state, episode_start, deterministic, action_masks)``, the LSTM states carried.

    :param model: a model with that ``predict`` (``MaskableRecurrentTRPO``; without masking, any model whose
        ``predict`` takes the states, e.g. ``RecurrentTRPO``)
    :param env: the environment, or a vectorised one; with masking it must expose ``action_masks()``
    :param n_eval_episodes: the number of episodes
    :param deterministic: the most likely valid actions rather than samples
    :param return_episode_rewards: return every episode's return and length rather than the mean and standard deviation
    :param use_masking: act among the valid actions
    :return: the mean and the standard deviation of the returns, or the lists of returns and lengths
    :raises ValueError: with masking, for environments without ``action_masks()``
    """
    vec_env = env if isinstance(env, VecEnv) else DummyVecEnv([lambda: env])
    if use_masking and not is_masking_supported(vec_env):
        raise ValueError("the environment has no action_masks() method: wrap it in sb3-contrib's ActionMasker")
    n_envs = vec_env.num_envs
    targets = np.array([(n_eval_episodes + i) // n_envs for i in range(n_envs)], dtype=int)
    counts = np.zeros(n_envs, dtype=int)
    current_returns, current_lengths = np.zeros(n_envs), np.zeros(n_envs, dtype=int)
    returns: list[float] = []
    lengths: list[int] = []
    observations = vec_env.reset()
    states = None
    episode_starts = np.ones(n_envs, dtype=bool)
    while (counts < targets).any():
        if use_masking:
            masks = get_action_masks(vec_env)
            actions, states = model.predict(observations, states, episode_starts, deterministic, action_masks=masks)
        else:  # also for models whose predict takes no masks (RecurrentTRPO)
            actions, states = model.predict(observations, states, episode_starts, deterministic)
        observations, rewards, dones, _ = vec_env.step(actions)
        current_returns += rewards
        current_lengths += 1
        for i in np.flatnonzero(dones):
            if counts[i] < targets[i]:
                returns.append(float(current_returns[i]))
                lengths.append(int(current_lengths[i]))
                counts[i] += 1
            current_returns[i], current_lengths[i] = 0.0, 0
        episode_starts = dones
    if return_episode_rewards:
        return returns, lengths
    return float(np.mean(returns)), float(np.std(returns))


__all__ = ["evaluate_policy"]
