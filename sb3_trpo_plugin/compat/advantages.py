"""
The float type of the last step of SB3's GAE recursion, which differs between SB3 releases.

``RolloutBuffer.compute_returns_and_advantage`` forms the last step's ``1 - done`` from the boolean ``dones``:
SB3 2.3 writes ``1.0 - dones`` (float64, so the last step's TD error and, through it, the whole backward
recursion run in float64 before each advantage is stored as float32); SB3 2.4 and later write
``1.0 - dones.astype(np.float32)`` (float32 throughout). The results differ in the last bits. No attribute tells
the two apart, so :func:`gae_recursion_dtype` finds it by running the installed SB3's own method on a fixed
probe buffer and comparing it with both computations; ``None`` when neither matches (an SB3 that computes
otherwise), for which the buffer's own method is to be used.
"""

from __future__ import annotations

import functools

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer

_PROBE_STEPS, _PROBE_ENVS = 32, 3
_PROBE_GAMMA, _PROBE_LAMBDA = 0.99, 0.95


def _probe_buffer() -> tuple[RolloutBuffer, th.Tensor, np.ndarray]:
    """A filled float32 buffer of fixed pseudo-random rewards, values and episode starts."""
    generator = np.random.default_rng(20250)
    space = spaces.Box(-1.0, 1.0, (1,), np.float32)
    buffer = RolloutBuffer(
        _PROBE_STEPS, space, spaces.Discrete(2), device="cpu", gae_lambda=_PROBE_LAMBDA, gamma=_PROBE_GAMMA, n_envs=_PROBE_ENVS
    )
    shape = (_PROBE_STEPS, _PROBE_ENVS)
    buffer.rewards[:] = generator.normal(size=shape).astype(np.float32)
    buffer.values[:] = generator.normal(size=shape).astype(np.float32)
    buffer.episode_starts[:] = (generator.random(shape) < 0.1).astype(np.float32)
    last_values = th.as_tensor(generator.normal(size=(_PROBE_ENVS, 1)).astype(np.float32))
    dones = generator.random(_PROBE_ENVS) < 0.5
    return buffer, last_values, dones


def _advantages(buffer: RolloutBuffer, last_values: np.ndarray, dones: np.ndarray, dtype: type) -> np.ndarray:
    """SB3's loop with the last step's ``1 - done`` in ``dtype``, advantages stored as float32."""
    advantages = np.zeros_like(buffer.advantages)
    last_gae_lam: np.ndarray | int = 0
    for step in reversed(range(buffer.buffer_size)):
        if step == buffer.buffer_size - 1:
            next_non_terminal, next_values = 1.0 - dones.astype(dtype), last_values
        else:
            next_non_terminal, next_values = 1.0 - buffer.episode_starts[step + 1], buffer.values[step + 1]
        delta = buffer.rewards[step] + buffer.gamma * next_values * next_non_terminal - buffer.values[step]
        last_gae_lam = delta + buffer.gamma * buffer.gae_lambda * next_non_terminal * last_gae_lam
        advantages[step] = last_gae_lam
    return advantages


@functools.cache
def gae_recursion_dtype() -> type | None:
    """
    The float type of the installed SB3's last-step ``1 - done``: ``np.float32`` (SB3 ≥ 2.4), ``np.float64``
    (SB3 2.3), or ``None`` when its advantages match neither (use its own method). A constant of the installed
    SB3, found once per process on a 32×3 probe.

    :return: the dtype, or ``None``
    """
    buffer, last_values, dones = _probe_buffer()
    buffer.compute_returns_and_advantage(last_values, dones)
    values = last_values.numpy().flatten()
    for dtype in (np.float32, np.float64):
        if np.array_equal(_advantages(buffer, values, dones, dtype), buffer.advantages):
            return dtype
    return None
