"""
What one trust-region step did: :class:`PolicyStepStats`, the record :class:`~.policy_step.PolicyStep` returns, which
``TRPO`` logs (``train/...``) and the split data-parallel update sends from the ranks that took the step to the
others (:meth:`PolicyStepStats.to_floats`, :meth:`PolicyStepStats.from_floats`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from sb3_trpo_plugin.trust_region import ConjugateGradientStatus


@dataclass(frozen=True)
class PolicyStepStats:
    """
    What one trust-region step did, for the logs.

    ``objective`` is what the line search maximises (the surrogate, plus ``c·H̄`` with an entropy bonus) at the
    accepted step, or at ``θ_old`` when no step was taken; ``entropy`` is ``H̄(π_old)``; ``cg_status`` is the
    position of the conjugate gradient's :class:`~sb3_trpo_plugin.trust_region.ConjugateGradientStatus` in
    :data:`CG_STATUSES` (``-1`` when it did not run: a non-finite objective or gradient); ``target_kl`` is the radius
    ``δ`` the step was bounded by (a scheduled ``target_kl``'s value at this update).
    """

    objective: float
    kl: float
    accepted: bool
    non_finite: bool = False
    line_search_steps: int = 0
    step_fraction: float = 0.0
    cg_steps: int = 0
    cg_residual: float = float("nan")
    gradient_norm: float = float("nan")
    max_step_size: float = float("nan")
    expected_improvement: float = 0.0
    actual_improvement: float = 0.0
    action_std: float = float("nan")
    cg_status: int = -1
    entropy: float = float("nan")
    target_kl: float = float("nan")

    @property
    def cg_status_name(self) -> str:
        """The conjugate gradient's status as its name (``"not_run"`` when it did not run)."""
        return CG_STATUSES[self.cg_status].value if self.cg_status >= 0 else "not_run"

    @property
    def is_cg_breakdown(self) -> bool:
        """Whether the conjugate gradient broke down (non-positive curvature or a non-finite value): no step then."""
        return self.cg_status >= 0 and CG_STATUSES[self.cg_status] in _BREAKDOWNS

    def to_floats(self) -> list[float]:
        """The statistics as floats, in field order (to send them to another process)."""
        return [float(getattr(self, f.name)) for f in dataclasses.fields(self)]

    @classmethod
    def from_floats(cls, values: Sequence[float]) -> PolicyStepStats:
        """The inverse of :meth:`to_floats`."""
        kinds = {"float": float, "bool": bool, "int": int}
        return cls(**{f.name: kinds[str(f.type)](v) for f, v in zip(dataclasses.fields(cls), values, strict=True)})


#: The conjugate gradient's statuses, in the order ``PolicyStepStats.cg_status`` numbers them.
CG_STATUSES: tuple[ConjugateGradientStatus, ...] = tuple(ConjugateGradientStatus)
_BREAKDOWNS = (ConjugateGradientStatus.NON_POSITIVE_CURVATURE, ConjugateGradientStatus.NON_FINITE)
