"""
A rank that ends right after its last all-reduce: ``tests/test_distributed_elastic.py`` runs it on 2 ranks under
``torchrun`` and checks that both end. Up to torch 2.7, destroying the group at once hung (most tries) when a gloo
thread was left to free the all-reduce's tensors (:mod:`sb3_trpo_plugin.parallel.collectives`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from sb3_trpo_plugin.parallel import init_from_environment
from sb3_trpo_plugin.parallel.collectives import Collectives


def main() -> None:
    assert init_from_environment()
    collectives = Collectives()
    for k in range(20):  # each result dropped at once, as the algorithm drops its reductions' buffers
        collectives.all_reduce(torch.full((1000,), float(k)), "sum")
    dist.destroy_process_group()
    print(f"rank {collectives.rank} ended", flush=True)


if __name__ == "__main__":
    main()
