"""
Environments for tests and benchmarks (as SB3 ships its own in ``stable_baselines3.common.envs``).

:class:`RandomEnv` draws its observations at random from any observation space and ends every episode
by truncation after a fixed number of steps: it exercises an algorithm on any pair of spaces without
the cost or the dynamics of a real environment. :class:`CueWithForbiddenActionsEnv` is a task that needs both
memory and action masks (``MaskableRecurrentTRPO``).
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


class CueWithForbiddenActionsEnv(gym.Env[np.ndarray, np.int64]):
    """
    A task that needs memory and action masks together: a cue, shown only at the first step, names the action that
    pays at the last step, and at every step a different random set of actions is forbidden.

    Each episode has ``episode_length`` steps. The observation is ``n_actions + 1`` numbers: the cue's one-hot code at
    the first step (zeros afterwards), and a last entry that is 1 at the last step. At every step ``n_forbidden``
    actions, drawn anew, are forbidden (the cued action is never forbidden at the last step); ``action_masks()`` says
    which (sb3-contrib's convention), the observation does not. A forbidden action ends the episode with a reward of
    -1; the cued action at the last step earns 1, any other allowed action 0. So the best return is 1; a policy with
    masks but no memory earns ``1 / (n_actions - n_forbidden)`` on average at best, and a policy with memory but no
    masks meets a forbidden action with probability ``n_forbidden / n_actions`` at each step, unseen.

    :param n_actions: the number of actions (and of cues)
    :param n_forbidden: how many actions are forbidden at each step (fewer than ``n_actions``)
    :param episode_length: steps per episode (at least 2: the cue, then the answer)
    """

    def __init__(self, n_actions: int = 4, n_forbidden: int = 2, episode_length: int = 4) -> None:
        if not 0 <= n_forbidden < n_actions:
            raise ValueError(f"n_forbidden must be in [0, n_actions), got {n_forbidden} of {n_actions}")
        if episode_length < 2:
            raise ValueError(f"episode_length must be at least 2, not {episode_length}")
        self.n_actions, self.n_forbidden, self.episode_length = n_actions, n_forbidden, episode_length
        self.action_space = spaces.Discrete(n_actions)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(n_actions + 1,), dtype=np.float32)
        self.cue = self._t = 0
        self._allowed = np.ones(n_actions, dtype=bool)

    def _draw_allowed(self) -> None:
        """The actions allowed at the current step: ``n_forbidden`` others than the cue's at the last step."""
        candidates = np.arange(self.n_actions)
        if self._t == self.episode_length - 1:
            candidates = candidates[candidates != self.cue]
        forbidden = self.np_random.choice(candidates, size=self.n_forbidden, replace=False)
        self._allowed = np.ones(self.n_actions, dtype=bool)
        self._allowed[forbidden] = False

    def _observation(self) -> np.ndarray:
        observation = np.zeros(self.n_actions + 1, dtype=np.float32)
        if self._t == 0:
            observation[self.cue] = 1.0
        if self._t == self.episode_length - 1:
            observation[-1] = 1.0
        return observation

    def action_masks(self) -> np.ndarray:
        """True where an action is allowed at the current step (sb3-contrib's ``action_masks()``)."""
        return self._allowed.copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """
        Start an episode: draw the cue and the first step's forbidden actions.

        :param seed: seeds ``np_random`` (``None`` continues its stream)
        :param options: unused
        :return: the cue's observation and an empty info dict
        """
        super().reset(seed=seed)
        self.cue, self._t = int(self.np_random.integers(self.n_actions)), 0
        self._draw_allowed()
        return self._observation(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """
        Take an action.

        :param action: an action of ``action_space``
        :return: the next observation, the reward (-1 for a forbidden action, 1 for the cued action at the last step,
            else 0), whether the episode ended, ``truncated=False`` and an empty info dict
        """
        action = int(action)
        if not self._allowed[action]:
            return self._observation(), -1.0, True, False, {}
        if self._t == self.episode_length - 1:
            return self._observation(), float(action == self.cue), True, False, {}
        self._t += 1
        self._draw_allowed()
        return self._observation(), 0.0, False, False, {}
