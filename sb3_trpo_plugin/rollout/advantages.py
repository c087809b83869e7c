"""
SB3's λ-returns and GAE advantages of a filled rollout buffer, computed with the same floating-point operations.

``RolloutBuffer.compute_returns_and_advantage`` runs one Python iteration of about ten NumPy calls per step.
Only the recursion over time needs a loop; the TD errors and the recursion's coefficients are elementwise, so
:func:`compute_returns_and_advantage` computes them for all steps at once, each element with SB3's operations in
SB3's order (the same float32 roundings), and leaves two NumPy calls per step::

    δ_t = r_t + γ V(s_{t+1}) (1 - d_{t+1}) - V(s_t)
    A_t = δ_t + γλ (1 - d_{t+1}) A_{t+1},      A_T = 0
    R_t = A_t + V(s_t)

with ``d_{t+1}`` the next step's episode start (for the last step, whether the episode ended then), and
``V(s_T)`` the value of the observation after the last step. The last step's ``1 - d`` has the float type the
installed SB3 gives it (float64 in SB3 2.3, which then carries the recursion in float64; float32 since SB3 2.4:
:func:`sb3_trpo_plugin.compat.advantages.gae_recursion_dtype`).
"""

from __future__ import annotations

import numpy as np
import torch as th
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer

from sb3_trpo_plugin.compat.advantages import gae_recursion_dtype


def compute_returns_and_advantage(rollout_buffer: RolloutBuffer, last_values: th.Tensor, dones: np.ndarray) -> None:
    """
    ``rollout_buffer.compute_returns_and_advantage(last_values, dones)``, bit for bit: for SB3's own buffers in
    float32, the TD errors vectorised over the steps; for any other buffer class or dtype, or an SB3 whose GAE
    computes otherwise than either known release, the buffer's own method.

    :param rollout_buffer: a full rollout buffer
    :param last_values: the values of the observations after the last step, ``(n_envs, 1)``
    :param dones: whether each env's episode ended at the last step
    """
    values = last_values.clone().cpu().numpy().flatten()
    buffer = rollout_buffer
    arrays = (buffer.rewards, buffer.values, buffer.episode_starts, buffer.advantages)
    last_dtype = gae_recursion_dtype()
    if (
        last_dtype is None
        or type(buffer) not in (RolloutBuffer, DictRolloutBuffer)
        or any(a.dtype != np.float32 for a in (*arrays, values))
    ):
        rollout_buffer.compute_returns_and_advantage(last_values, dones)
        return
    # Every step but the last, whose 1 - d and V' come from `dones` and `values` (below)
    next_non_terminal = 1.0 - buffer.episode_starts[1:]
    # SB3's expressions, elementwise: ((r + (γ·V') · (1 - d')) - V) and ((γλ) · (1 - d')) · A'
    deltas = buffer.rewards[:-1] + buffer.gamma * buffer.values[1:] * next_non_terminal - buffer.values[:-1]
    decays = buffer.gamma * buffer.gae_lambda * next_non_terminal
    # The last step apart, in the installed SB3's float type (float64 makes every later product float64 too)
    last_non_terminal = 1.0 - dones.astype(last_dtype)
    last_delta = buffer.rewards[-1] + buffer.gamma * values * last_non_terminal - buffer.values[-1]
    # SB3 starts from the integer 0: the same zeros after one product
    advantage = last_delta + buffer.gamma * buffer.gae_lambda * last_non_terminal * np.zeros_like(values)
    buffer.advantages[-1] = advantage
    for step in range(buffer.buffer_size - 2, -1, -1):
        advantage = deltas[step] + decays[step] * advantage
        buffer.advantages[step] = advantage
    buffer.returns = buffer.advantages + buffer.values
