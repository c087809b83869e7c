"""
Rollout collection: filling SB3's rollout buffer from the environments, and checking what the environments return.

- :mod:`.algorithm`: :class:`LeanRolloutAlgorithm`, the ``OnPolicyAlgorithm`` that owns ``collect_rollouts``;
- :mod:`.checks`: non-finite environment data refused with an error that names it.
"""

from sb3_trpo_plugin.rollout.algorithm import LeanRolloutAlgorithm

__all__ = ["LeanRolloutAlgorithm"]
