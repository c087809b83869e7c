"""
A dummy environment for tests and benchmarks (as SB3 ships its own in ``stable_baselines3.common.envs``).

:class:`RandomEnv` draws its observations at random from any observation space and ends every episode
by truncation after a fixed number of steps: it exercises an algorithm on any pair of spaces without
the cost or the dynamics of a real environment.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import gymnasium as gym
import numpy as np
from gymnasium import spaces

#: The rewards :class:`RandomEnv` can give: ``"action_sum"`` is ``0.1 · sum(action) − 0.05`` (it depends on
#: the action, so that a policy has something to learn); ``"normal"`` is a standard normal draw from the
#: environment's ``np_random`` (zero-mean noise, for timing).
RewardKind = Literal["action_sum", "normal"]


class RandomEnv(gym.Env[Any, Any]):
    """
    Random observations of a given space, a reward of the chosen kind, episodes truncated after a fixed number of steps.

    The observations come from ``observation_space.sample()``; :meth:`reset` seeds the observation
    space with its ``seed`` (and, through gymnasium, ``np_random`` too), so a seeded reset fixes both the
    observations and the ``"normal"`` rewards that follow it.

    :param action_space: any action space
    :param observation_space: any observation space; ``None`` is a 4-D box in [-1, 1]
    :param episode_length: steps before truncation
    :param reward: the kind of reward, see :data:`RewardKind`
    """

    def __init__(
        self,
        action_space: spaces.Space[Any],
        observation_space: spaces.Space[Any] | None = None,
        episode_length: int = 16,
        reward: RewardKind = "action_sum",
    ) -> None:
        if reward not in get_args(RewardKind):
            raise ValueError(f"reward must be one of {get_args(RewardKind)}, not {reward!r}")
        if episode_length < 1:
            raise ValueError(f"episode_length must be at least 1, not {episode_length}")
        self.action_space = action_space
        if observation_space is None:
            observation_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self.observation_space = observation_space
        self.episode_length = episode_length
        self.reward = reward
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """
        Start an episode.

        :param seed: seeds ``np_random`` and the observation space; ``None`` continues their random streams, so
            a seeded environment is reproducible across the automatic resets of a VecEnv (as gymnasium's envs are)
        :param options: unused
        :return: a random observation and an empty info dict
        """
        super().reset(seed=seed)
        if seed is not None:
            self.observation_space.seed(seed)
        self._t = 0
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """
        Advance one step.

        :param action: an action of ``action_space`` (only the ``"action_sum"`` reward looks at it)
        :return: a random observation, the reward, ``terminated=False``, ``truncated`` once
            ``episode_length`` steps have passed since the reset, and an empty info dict
        """
        self._t += 1
        if self.reward == "action_sum":
            reward = float(np.sum(np.asarray(action, dtype=np.float64))) * 0.1 - 0.05
        else:
            reward = float(self.np_random.normal())
        return self.observation_space.sample(), reward, False, self._t >= self.episode_length, {}
