"""Shared test environments and helpers."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from types import ModuleType

import numpy as np
import pytest
import torch
from gymnasium import spaces

from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.envs import RandomEnv  # noqa: F401  (the tests import it from here)
from sb3_trpo_plugin.trpo.policy_step import PolicyBatch

ACTION_SPACES = {
    "discrete": spaces.Discrete(3),
    "box": spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
    "multidiscrete": spaces.MultiDiscrete([2, 3]),
    "multibinary": spaces.MultiBinary(3),
}


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


def use_float64(model, monkeypatch):
    """Cast the policy to float64; SB3 casts observations to float32 in preprocessing, so patch that too."""
    from stable_baselines3.common import policies, preprocessing

    def preprocess_as_float64(*args, **kwargs):
        return preprocessing.preprocess_obs(*args, **kwargs).double()

    monkeypatch.setattr(policies, "preprocess_obs", preprocess_as_float64)
    model.policy.double()


def policy_batch(model: TRPO, dtype: torch.dtype = torch.float32) -> PolicyBatch:
    """The policy-step batch that ``train()`` would use (``TRPO._policy_batch``), floating-point tensors cast to ``dtype``."""
    batch = model._policy_batch(next(model.rollout_buffer.get(batch_size=None)))

    def cast(tensor: torch.Tensor) -> torch.Tensor:
        return tensor if tensor.dtype == torch.long else tensor.to(dtype)

    observations = batch.observations
    observations = {k: cast(v) for k, v in observations.items()} if isinstance(observations, dict) else cast(observations)
    return PolicyBatch(observations, cast(batch.actions), cast(batch.old_log_prob), cast(batch.advantages))


#: Where rl_zoo3.gym_patches writes its TimeLimit, by attribute path from ``gymnasium`` (the last one has none of its
#: own): ``wrappers.common`` since gymnasium 1.0, ``wrappers.time_limit`` before; the installed release's ones are used.
TIME_LIMIT_HOMES = ("wrappers", "wrappers.common", "wrappers.time_limit", "envs.registration")


def time_limit_homes() -> list[ModuleType]:
    """The modules of :data:`TIME_LIMIT_HOMES` that the installed gymnasium has."""
    homes = []
    for path in TIME_LIMIT_HOMES:
        try:
            homes.append(importlib.import_module(f"gymnasium.{path}"))
        except ModuleNotFoundError:  # wrappers.common before gymnasium 1.0, wrappers.time_limit since
            continue
    return homes


@pytest.fixture(autouse=True)
def gymnasium_restored() -> Iterator[list[ModuleType]]:
    """
    Importing rl-zoo3 swaps Gymnasium's TimeLimit for its own (on its first import only): Gymnasium's is put back
    after every test, whichever imported rl-zoo3 (the zoo's tests, the benchmarks' presets), so the tests that share
    this process see Gymnasium as it was. Yields the modules it restores.
    """
    homes = time_limit_homes()
    originals = [vars(home).get("TimeLimit") for home in homes]
    yield homes
    for home, time_limit in zip(homes, originals, strict=True):
        if time_limit is None:
            vars(home).pop("TimeLimit", None)
        else:
            home.TimeLimit = time_limit


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)


# One intra-op thread per test process: pytest-xdist already runs one worker per core, and extra threads
# on tiny tensors only contend (measured 5-10x slower on a busy 2-core machine). Tests only, never the library.
torch.set_num_threads(1)
