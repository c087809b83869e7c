"""The Gymnasium environments of ``sb3-trpo train`` and ``sb3-trpo eval``, with their failures as command-line errors."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_plugin.cli.arguments import CommandError


def check_env_id(env_id: str) -> None:
    """
    :param env_id: a Gymnasium environment id
    :raises CommandError: for an id that Gymnasium does not know, naming the closest one
    """
    if env_id in gym.envs.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.envs.registry), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise CommandError(f"unknown environment {env_id!r}{hint}")


def make_env(
    env_id: str, n_envs: int, seed: int, monitor_dir: Path | None = None, env_kwargs: dict[str, Any] | None = None
) -> VecEnv:
    """
    ``make_vec_env`` that reports a missing simulator (MuJoCo, Box2D) as a :class:`CommandError`.

    :param env_id: Gymnasium environment id
    :param n_envs: number of copies
    :param seed: seed of the first copy
    :param monitor_dir: where the ``Monitor`` CSV files go (none written when ``None``)
    :param env_kwargs: keyword arguments of ``gym.make``
    :return: the vectorised environment
    """
    try:
        return make_vec_env(
            env_id,
            n_envs=n_envs,
            seed=seed,
            monitor_dir=None if monitor_dir is None else str(monitor_dir),
            env_kwargs=env_kwargs,
        )
    except gym.error.DependencyNotInstalled as error:
        raise CommandError(f"{env_id} needs a package that is not installed: {error}") from error
