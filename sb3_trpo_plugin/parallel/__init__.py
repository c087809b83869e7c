"""
Data-parallel training over ``torch.distributed``: several processes (ranks) that act as one algorithm.

- :mod:`.process_group`: joining the process group from ``torchrun``'s environment, and this process's rank (the one
  module that changes process-wide state: torch's default group, the CUDA device, an ``atexit`` handler);
- :mod:`.collectives`: the process group's collectives (:class:`~.collectives.Collectives`), each failure turned into
  a :class:`~sb3_trpo_plugin.parallel.CollectiveError` in one place;
- :mod:`.agreement`: what the ranks agree on besides the batch (identical weights, merged running statistics);
- :mod:`.algorithm`: :class:`DataParallelOnPolicyAlgorithm`, the rollout side (global step count, rank-0
  logging and callbacks, merged VecNormalize and episode statistics, weight synchronisation);
- :mod:`.reductions`: the batch reductions injected into the single-process update (over all ranks, or for a
  rank that computes alone on the gathered batch), with the critic's interleaved shuffles;
- :mod:`.split_update`: the update split over the ranks (critic on rank 0, policy step on the others);
- :mod:`.rendezvous`: joining the group at every (re)start of ``torchrun``, and the timeout of every collective;
- :mod:`.elastic`: checkpoints between updates, and every rank resuming from the same newest one;
- :mod:`.communication`: the names of the module the first three were split from, for imports written against it.

Nothing outside this package issues a collective.
"""

from sb3_trpo_plugin.parallel.algorithm import DataParallelOnPolicyAlgorithm
from sb3_trpo_plugin.parallel.collectives import Collectives
from sb3_trpo_plugin.parallel.elastic import UpdateCheckpointCallback, latest_checkpoint_on_every_rank
from sb3_trpo_plugin.parallel.process_group import init_from_environment, is_distributed, is_main_process, rank, world_size
from sb3_trpo_plugin.parallel.rendezvous import CollectiveError, collective_timeout

__all__ = [
    "CollectiveError",
    "Collectives",
    "DataParallelOnPolicyAlgorithm",
    "UpdateCheckpointCallback",
    "collective_timeout",
    "init_from_environment",
    "is_distributed",
    "is_main_process",
    "latest_checkpoint_on_every_rank",
    "rank",
    "world_size",
]
