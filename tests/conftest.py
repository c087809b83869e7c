"""Shared test environments and helpers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.trpo.trpo import PolicyBatch, index_observations, normalize_advantages

ACTION_SPACES = {
    "discrete": spaces.Discrete(3),
    "box": spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
    "multidiscrete": spaces.MultiDiscrete([2, 3]),
    "multibinary": spaces.MultiBinary(3),
}


class RandomEnv(gym.Env):
    """
    Random observations, a reward that depends on observation and action, fixed-length episodes.

    :param action_space: any action space
    :param observation_space: defaults to a 4-D box
    :param episode_length: steps before truncation
    """

    def __init__(self, action_space: spaces.Space, observation_space: spaces.Space | None = None, episode_length: int = 16):
        self.action_space = action_space
        self.observation_space = observation_space or spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self.episode_length = episode_length
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self._t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self._t += 1
        reward = float(np.sum(np.asarray(action, dtype=np.float64))) * 0.1 - 0.05
        return self.observation_space.sample(), reward, False, self._t >= self.episode_length, {}


def load_benchmark(filename: str, module_name: str) -> ModuleType:
    """
    Import a script of ``benchmarks/`` (not a package) as ``module_name``, for testing its pure parts.

    :param filename: e.g. ``"distributed.py"``
    :param module_name: the name it is registered under in ``sys.modules``
    """
    path = Path(__file__).resolve().parent.parent / "benchmarks" / filename
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # the benchmark scripts import their sibling modules
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def filled_model(env, **kwargs) -> TRPO:
    """A TRPO model whose rollout buffer holds one full rollout of its current policy (no update yet)."""
    kwargs.setdefault("n_steps", 64)
    kwargs.setdefault("batch_size", 32)
    kwargs.setdefault("seed", 0)
    model = TRPO("MlpPolicy" if "policy" not in kwargs else kwargs.pop("policy"), env, **kwargs)
    _, callback = model._setup_learn(model.n_steps * model.n_envs, callback=None)
    callback.on_training_start(locals(), globals())
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)
    return model


def policy_batch(model: TRPO, dtype: torch.dtype = torch.float32) -> PolicyBatch:
    """The policy-step batch that ``train()`` would use, optionally cast."""
    rollout = next(model.rollout_buffer.get(batch_size=None))
    actions = rollout.actions.long().flatten() if isinstance(model.action_space, spaces.Discrete) else rollout.actions
    observations = index_observations(rollout.observations, slice(None))
    if isinstance(observations, dict):
        observations = {k: v.to(dtype) for k, v in observations.items()}
    else:
        observations = observations.to(dtype)
    return PolicyBatch(
        observations,
        actions if actions.dtype == torch.long else actions.to(dtype),
        rollout.old_log_prob.to(dtype),
        normalize_advantages(rollout.advantages).to(dtype),
    )


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)


# One intra-op thread per test process: pytest-xdist already runs one worker per core, and extra threads
# on tiny tensors only contend (measured 5-10x slower on a busy 2-core machine). Tests only, never the library.
torch.set_num_threads(1)
