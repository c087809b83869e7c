"""Step length of the trust-region update: the maximal step and the backtracking line search."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


def max_step_size(curvature: float, max_kl: float) -> float:
    """
    Largest step along a direction ``x`` allowed by the quadratic model of the KL.

    With ``KL(θ + βx) ≈ ½ β² xᵀFx``, setting it equal to ``δ`` gives ``β = sqrt(2δ / xᵀFx)``.

    :param curvature: ``xᵀFx`` (must be > 0 and finite)
    :param max_kl: the trust-region radius ``δ > 0``
    :return: ``β``, or ``nan`` when the curvature is not positive and finite (the caller rejects the step)
    """
    if not (curvature > 0.0 and math.isfinite(curvature)):
        return math.nan
    return math.sqrt(2.0 * max_kl / curvature)


@dataclass(frozen=True)
class LineSearchResult:
    """
    Outcome of :func:`backtracking_line_search`.

    :param accepted: whether a step satisfied both conditions
    :param step_fraction: ``sⁱ`` of the accepted step (``0.0`` when rejected)
    :param n_evaluations: how many trial steps were evaluated
    :param objective: surrogate at the accepted step, or the old surrogate when rejected
    :param kl: mean KL at the accepted step, ``0.0`` when rejected
    """

    accepted: bool
    step_fraction: float
    n_evaluations: int
    objective: float
    kl: float


def backtracking_line_search(
    evaluate: Callable[[float], tuple[float, float]],
    old_objective: float,
    max_kl: float,
    shrinking_factor: float = 0.8,
    max_iter: int = 10,
) -> LineSearchResult:
    """
    Backtrack along the full step until the trust-region conditions hold.

    Trial ``i = 0, 1, …, max_iter - 1`` evaluates the step fraction ``sⁱ`` (``s`` the shrinking
    factor) and accepts the first one with::

        KL̄(θ_old ‖ θ_i) <= δ   and   L(θ_i) > L(θ_old)

    where both values are finite. The caller's ``evaluate`` puts the trial parameters in place;
    restoring the old parameters after a rejection is the caller's job.

    :param evaluate: maps a step fraction to ``(surrogate, mean KL)`` at that step
    :param old_objective: surrogate ``L(θ_old)``
    :param max_kl: the trust-region radius ``δ``
    :param shrinking_factor: ``s`` in (0, 1)
    :param max_iter: maximum number of trial steps (>= 1)
    :return: what was accepted, if anything
    """
    if not 0.0 < shrinking_factor < 1.0:
        raise ValueError(f"shrinking_factor must be in (0, 1), got {shrinking_factor}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    fraction = 1.0
    for trial in range(1, max_iter + 1):
        objective, kl = evaluate(fraction)
        if math.isfinite(objective) and math.isfinite(kl) and kl <= max_kl and objective > old_objective:
            return LineSearchResult(True, fraction, trial, objective, kl)
        fraction *= shrinking_factor
    return LineSearchResult(False, 0.0, max_iter, old_objective, 0.0)
