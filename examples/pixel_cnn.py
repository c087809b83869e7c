"""
TRPO with ``CnnPolicy`` on pixel observations.

The environment is a small image task defined here, so that the example needs no Atari ROMs or game
renderer: a 36x36 grayscale picture of a 4x4 grid shows the agent (white) and a target (gray); the agent moves
one cell per step and is rewarded for getting closer to the target and for reaching it quickly. SB3's
``check_env`` validates it first. ``CnnPolicy`` is SB3's NatureCNN feature extractor (36x36 is the smallest image
it accepts); SB3 transposes the channel-last image and scales it to [0, 1] by itself. With the default 50k steps
(several minutes on a CPU) the return climbs from about -0.2 (random moves) towards 1.1 (shortest paths).

For Atari, the same model takes ``make_atari_env(...)`` wrapped in ``VecFrameStack(env, 4)``.

Shortened run: ``python examples/pixel_cnn.py --timesteps 256 --n-steps 64 --output /tmp/pixels``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_trpo_plugin import TRPO


class GridTargetPixels(gym.Env):
    """
    Reach the target on a 4x4 grid, seen as a 36x36x1 image. Actions: 0 up, 1 down, 2 left, 3 right.
    Reward: -0.05 per step, +0.1 per cell closer to the target (-0.1 per cell further), +1 on reaching it (which
    ends the episode); at most 30 steps.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"]}
    GRID = 4
    CELL = 9  # pixels per cell: 4 * 9 = 36 pixels a side
    MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])

    def __init__(self, render_mode: str | None = None, max_steps: int = 30):
        self.observation_space = spaces.Box(0, 255, (self.GRID * self.CELL, self.GRID * self.CELL, 1), np.uint8)
        self.action_space = spaces.Discrete(4)
        self.render_mode = render_mode
        self.max_steps = max_steps
        self._agent = np.zeros(2, dtype=int)
        self._target = np.zeros(2, dtype=int)
        self._steps = 0

    def _image(self) -> np.ndarray:
        image = np.zeros(self.observation_space.shape, dtype=np.uint8)
        for (row, col), brightness in ((self._target, 128), (self._agent, 255)):
            image[row * self.CELL : (row + 1) * self.CELL, col * self.CELL : (col + 1) * self.CELL] = brightness
        return image

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._agent = self.np_random.integers(0, self.GRID, size=2)
        self._target = self._agent
        while np.array_equal(self._target, self._agent):
            self._target = self.np_random.integers(0, self.GRID, size=2)
        self._steps = 0
        return self._image(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        distance_before = np.abs(self._agent - self._target).sum()
        self._agent = np.clip(self._agent + self.MOVES[int(action)], 0, self.GRID - 1)
        self._steps += 1
        distance = np.abs(self._agent - self._target).sum()
        reached = bool(distance == 0)
        # The distance term guides learning step by step; over an episode it adds 0.1 x (cells gained), whatever the path.
        reward = float(reached) - 0.05 + 0.1 * float(distance_before - distance)
        return self._image(), reward, reached, self._steps >= self.max_steps, {}

    def render(self) -> np.ndarray:
        return np.repeat(self._image(), 3, axis=-1)


def main(argv: Sequence[str] | None = None) -> float:
    """
    :param argv: command line arguments (default: ``sys.argv[1:]``)
    :return: mean return of the trained policy over 20 deterministic episodes
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=50_000, help="training budget in environment steps")
    parser.add_argument("--n-steps", type=int, default=256, help="steps per environment and update (4 environments)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/pixel_cnn"), help="folder for the model and logs")
    parser.add_argument("--no-progress-bar", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    # SB3's checker: spaces, dtypes, reset/step signatures, and whether the image suits CnnPolicy.
    check_env(GridTargetPixels())

    env = make_vec_env(GridTargetPixels, n_envs=4, seed=args.seed)
    model = TRPO(
        "CnnPolicy",
        env,
        n_steps=args.n_steps,
        batch_size=min(256, args.n_steps * 4),
        n_critic_updates=5,  # each critic epoch runs the CNN over the whole batch: fewer than for small MLPs
        seed=args.seed,
        tensorboard_log=str(args.output / "tensorboard"),
    )
    model.learn(args.timesteps, progress_bar=not args.no_progress_bar)
    model.save(args.output / "trpo_pixels")

    eval_env = make_vec_env(GridTargetPixels, n_envs=1, seed=args.seed + 1000)
    mean_return, std_return = evaluate_policy(model, eval_env, n_eval_episodes=20, deterministic=True)
    print(f"GridTargetPixels with CnnPolicy: mean return {mean_return:.2f} ± {std_return:.2f}")
    print("(random actions score about -0.2, shortest paths about 1.1)")
    return float(mean_return)


if __name__ == "__main__":
    main()
