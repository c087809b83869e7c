"""
The split update: with a critic that does not depend on the actor's parameters, the trust-region step and the
critic's regression are independent given the rollout, so they run at the same time on different ranks.

The union of all ranks' rollouts is gathered once (:func:`gather_rollout`); rank 0 fits the critic to it while
the other ranks take the policy step on it, each with the same single-process code the algorithm runs alone
(handed the :class:`~sb3_trpo_plugin.parallel.reductions.WholeBatchOnThisRank` reductions); one more
collective then hands every rank the new actor and the step's statistics (from rank 1) and the new critic
(from rank 0). Two collectives per update instead of one per Fisher-vector product, line-search trial and
critic minibatch, and the same update as one process on the union. The critic's optimiser state is kept on
rank 0, which saves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import torch
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples, RolloutBufferSamples

from sb3_trpo_plugin.parallel.collectives import Collectives
from sb3_trpo_plugin.parallel.reductions import WholeBatchOnThisRank
from sb3_trpo_plugin.trust_region import unflatten_like

Samples = RolloutBufferSamples | DictRolloutBufferSamples


class FloatRecord(Protocol):
    """Statistics that travel between ranks as a list of floats."""

    def to_floats(self) -> list[float]: ...


StepStatistics = TypeVar("StepStatistics", bound=FloatRecord)


def gather_rollout(collectives: Collectives, rollout: Samples) -> Samples:
    """
    The union of every rank's rollout samples, rank by rank, on every rank, in one collective; every field exactly,
    in its own dtype (the observations and actions of discrete spaces are integers). Every tensor field of the samples
    travels, so a buffer's extra fields (sb3-contrib's action masks) come along with their rows.

    :param collectives: the process group's collectives
    :param rollout: this rank's samples (same shapes on every rank)
    :return: the same fields with every rank's rows
    """
    blocks: list[torch.Tensor] = []
    layout: list[tuple[str, list[str] | None]] = []  # each field, with its keys when it is a dict of tensors
    for name, value in zip(rollout._fields, rollout, strict=True):
        if isinstance(value, dict):
            keys = sorted(value)
            blocks += [value[key] for key in keys]
            layout.append((name, keys))
        elif isinstance(value, torch.Tensor):
            blocks.append(value)
            layout.append((name, None))
    gathered = iter(collectives.gather_row_blocks(blocks))
    union = {name: next(gathered) if keys is None else {key: next(gathered) for key in keys} for name, keys in layout}
    return rollout._replace(**union)  # type: ignore[arg-type]


def split_update(
    collectives: Collectives,
    rollout: Samples,
    actor: Sequence[torch.nn.Parameter],
    critic: Sequence[torch.nn.Parameter],
    take_policy_step: Callable[[Samples, WholeBatchOnThisRank], StepStatistics],
    fit_critic: Callable[[Samples, WholeBatchOnThisRank], float],
    decode_statistics: Callable[[list[float]], StepStatistics],
    n_statistics: int,
) -> tuple[StepStatistics, float]:
    """
    One update split over the ranks (see the module's docstring); every rank ends with the same weights.

    :param collectives: the process group's collectives (at least 2 ranks)
    :param rollout: this rank's rollout samples
    :param actor: the parameters the policy step moves
    :param critic: the parameters the critic's regression moves
    :param take_policy_step: the single-process policy step on the given samples, moving ``actor`` in place
    :param fit_critic: the single-process critic regression on the given samples, moving ``critic``; its mean loss
    :param decode_statistics: the inverse of the step statistics' ``to_floats``
    :param n_statistics: how many floats the step statistics take
    :return: the policy step's statistics and the critic's mean loss, on every rank
    """
    union = gather_rollout(collectives, rollout)
    whole_batch = WholeBatchOnThisRank(collectives.world_size)
    if collectives.rank == 0:
        value_loss = fit_critic(union, whole_batch)
        parts = [*(torch.zeros_like(p) for p in actor), *critic, torch.zeros(n_statistics), value_loss]
    else:
        statistics = take_policy_step(union, whole_batch)
        mine = collectives.rank == 1  # policy ranks compute the same step; one of them hands it over
        parts = [*(p if mine else torch.zeros_like(p) for p in actor), *(torch.zeros_like(p) for p in critic)]
        parts += [statistics.to_floats() if mine else torch.zeros(n_statistics), 0.0]
    device = actor[0].device
    # Float64 in transit: float32 weights come back exactly, and adding the other ranks' zeros is exact.
    exchange = torch.cat([torch.as_tensor(part, dtype=torch.float64, device=device).detach().reshape(-1) for part in parts])
    exchange = collectives.sum(exchange)
    weights, tail = exchange[: -n_statistics - 1], exchange[-n_statistics - 1 :].tolist()
    with torch.no_grad():
        torch._foreach_copy_([*actor, *critic], unflatten_like(weights, [*actor, *critic]))
    return decode_statistics(tail[:-1]), tail[-1]
