"""The ``OnPolicyAlgorithm`` that owns rollout collection (placeholder: SB3's loop, unchanged)."""

from __future__ import annotations

from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv


class LeanRolloutAlgorithm(OnPolicyAlgorithm):
    """``OnPolicyAlgorithm`` whose ``collect_rollouts`` is the one rollout loop of the package."""

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
