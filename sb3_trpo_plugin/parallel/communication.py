"""
The names this module held before it was split into rooms of one concern each, so that imports written against it
still resolve: :mod:`.process_group` (joining the group, the rank queries: the package's process-wide state),
:mod:`.collectives` (:class:`~.collectives.Collectives`) and :mod:`.agreement` (weight checksums, the merge of
running statistics). The package itself imports from those modules.
"""

from sb3_trpo_plugin.parallel.agreement import checksum, running_mean_std_state
from sb3_trpo_plugin.parallel.collectives import CollectiveObserver, Collectives
from sb3_trpo_plugin.parallel.process_group import (
    init_from_environment,
    is_distributed,
    is_main_process,
    launched_by_torchrun,
    rank,
    world_size,
)

__all__ = [
    "CollectiveObserver",
    "Collectives",
    "checksum",
    "init_from_environment",
    "is_distributed",
    "is_main_process",
    "launched_by_torchrun",
    "rank",
    "running_mean_std_state",
    "world_size",
]
