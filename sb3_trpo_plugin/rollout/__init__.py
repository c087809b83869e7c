"""
Rollout collection: filling SB3's rollout buffer from the environments, and checking what the environments return.

- :mod:`.algorithm`: :class:`LeanRolloutAlgorithm`, the ``OnPolicyAlgorithm`` that owns ``collect_rollouts``: SB3's
  loop with a lean inference for SB3's standard policies (``lean_rollout = False`` forces SB3's own loop); the
  inference itself, the actions SB3 samples bit for bit without ``nn.Module.__call__`` or torch distribution objects,
  and which policies it recognises, are replicas of SB3's computation: :mod:`sb3_trpo_plugin.replicas`;
- :mod:`.batched_outputs`: the values and log-probabilities of a whole rollout in one batch at its end, when no
  callback can read them at each step;
- :mod:`.advantages`: SB3's λ-returns and GAE advantages, bit for bit, with the TD errors vectorised over the steps;
- :mod:`.checks`: non-finite environment data refused with an error that names it.
"""

from sb3_trpo_plugin.rollout.algorithm import LeanRolloutAlgorithm

__all__ = ["LeanRolloutAlgorithm"]
