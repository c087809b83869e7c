"""Conjugate gradient for symmetric positive-definite systems given only as matrix-vector products."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import torch


class ConjugateGradientStatus(str, Enum):
    """Why the conjugate gradient iteration stopped."""

    CONVERGED = "converged"
    """The squared residual norm fell to the tolerance relative to the right-hand side's: ``‖r‖² <= tol·‖b‖²``."""
    MAX_STEPS = "max_steps"
    """The iteration budget ran out (the usual case in TRPO: a few steps are enough)."""
    NON_POSITIVE_CURVATURE = "non_positive_curvature"
    """A search direction ``p`` had ``pᵀAp <= 0``: ``A`` is not positive definite along it."""
    NON_FINITE = "non_finite"
    """A NaN or inf appeared; the returned solution is the last finite iterate."""


@dataclass(frozen=True)
class ConjugateGradientResult:
    """
    Outcome of :func:`conjugate_gradient`.

    :param solution: approximate ``x`` with ``A x ≈ b`` (the last finite iterate; zeros if none)
    :param residual: ``r = b - A x`` as tracked by the iteration (exact in exact arithmetic)
    :param n_steps: number of matrix-vector products spent
    :param status: why the iteration stopped
    """

    solution: torch.Tensor
    residual: torch.Tensor
    n_steps: int
    status: ConjugateGradientStatus

    @property
    def residual_norm(self) -> float:
        """Euclidean norm of the tracked residual ``‖b - A x‖``."""
        return float(torch.linalg.vector_norm(self.residual))

    @property
    def ok(self) -> bool:
        """Whether the solution is usable: finite and built only from positive-curvature directions."""
        return self.status in (ConjugateGradientStatus.CONVERGED, ConjugateGradientStatus.MAX_STEPS) and bool(
            torch.isfinite(self.solution).all()
        )

    def quadratic_form(self, b: torch.Tensor) -> torch.Tensor:
        """
        ``xᵀ A x`` without another product with ``A``.

        Since ``r = b - A x``, ``xᵀ A x = xᵀ b - xᵀ r``. TRPO needs this for its maximal step size,
        so reusing the residual saves one Fisher-vector product per update.

        :param b: the right-hand side the system was solved for
        :return: scalar tensor ``xᵀ A x``
        """
        return torch.dot(self.solution, b - self.residual)


def conjugate_gradient(
    matrix_vector_product: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    max_steps: int = 10,
    residual_tol: float = 1e-10,
) -> ConjugateGradientResult:
    """
    Solve ``A x = b`` for symmetric positive-definite ``A`` known only through ``v ↦ A v``.

    Standard conjugate gradient from ``x₀ = 0`` (Nocedal & Wright, Algorithm 5.2)::

        r₀ = p₀ = b
        αₖ = rₖᵀrₖ / pₖᵀApₖ
        xₖ₊₁ = xₖ + αₖ pₖ,   rₖ₊₁ = rₖ - αₖ Apₖ
        pₖ₊₁ = rₖ₊₁ + (rₖ₊₁ᵀrₖ₊₁ / rₖᵀrₖ) pₖ

    It stops when ``rᵀr <= residual_tol · bᵀb``, after ``max_steps`` products, when a direction has
    non-positive curvature ``pᵀAp <= 0`` (the iterate so far is kept) or when a value is not
    finite (the last finite iterate is kept). The status says which.

    The tolerance is relative to the right-hand side: scaling ``b`` by ``c`` scales every iterate
    ``x``, ``r`` and ``p`` by ``c`` and leaves ``α`` and the stopping decisions unchanged, so the
    solution is ``c`` times the same vector whatever the scale of ``b`` (an absolute bound would stop
    early, or before the first step, on a small ``b``). A zero ``b`` converges at ``x = 0``.

    :param matrix_vector_product: function computing ``A v`` for a vector ``v`` shaped like ``b``
    :param b: right-hand side, a 1-D tensor
    :param max_steps: maximum number of matrix-vector products (>= 1)
    :param residual_tol: tolerance on the squared residual norm relative to the right-hand side's,
        ``rᵀr / bᵀb`` (>= 0)
    :return: the solution with its residual, step count and status
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    r_dot_r = torch.dot(r, r)
    # One host synchronisation per step: the stopping tests need Python floats.
    r_dot_r_value = float(r_dot_r)
    if not torch.isfinite(r_dot_r):
        return ConjugateGradientResult(x, r, 0, ConjugateGradientStatus.NON_FINITE)
    tolerance = residual_tol * r_dot_r_value  # relative to ‖b‖² (r₀ = b)
    if r_dot_r_value <= tolerance:
        return ConjugateGradientResult(x, r, 0, ConjugateGradientStatus.CONVERGED)

    for step in range(1, max_steps + 1):
        a_p = matrix_vector_product(p)
        curvature = float(torch.dot(p, a_p))
        if not (curvature == curvature and abs(curvature) != float("inf")):  # NaN or inf
            return ConjugateGradientResult(x, r, step, ConjugateGradientStatus.NON_FINITE)
        if curvature <= 0.0:
            return ConjugateGradientResult(x, r, step, ConjugateGradientStatus.NON_POSITIVE_CURVATURE)
        alpha = r_dot_r_value / curvature
        x_next = x + alpha * p
        r_next = r - alpha * a_p
        new_r_dot_r = torch.dot(r_next, r_next)
        new_r_dot_r_value = float(new_r_dot_r)
        if not (new_r_dot_r_value == new_r_dot_r_value and new_r_dot_r_value != float("inf")):
            return ConjugateGradientResult(x, r, step, ConjugateGradientStatus.NON_FINITE)
        x, r = x_next, r_next
        if new_r_dot_r_value <= tolerance:
            return ConjugateGradientResult(x, r, step, ConjugateGradientStatus.CONVERGED)
        p = r + (new_r_dot_r_value / r_dot_r_value) * p
        r_dot_r_value = new_r_dot_r_value
    return ConjugateGradientResult(x, r, max_steps, ConjugateGradientStatus.MAX_STEPS)
