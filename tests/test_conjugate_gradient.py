"""Conjugate gradient against explicit linear algebra."""

import math

import pytest
import torch

from sb3_trpo_plugin.trust_region import ConjugateGradientStatus, conjugate_gradient


def random_spd(n: int, condition: float, generator: torch.Generator) -> torch.Tensor:
    """A random symmetric positive-definite matrix with eigenvalues spread over [1, condition]."""
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    eigenvalues = torch.logspace(0, math.log10(condition), n, dtype=torch.float64)
    return q @ torch.diag(eigenvalues) @ q.T


@pytest.mark.parametrize("n, condition", [(5, 10.0), (20, 100.0), (50, 1e3)])
def test_solves_random_spd_systems_like_linalg_solve(n, condition):
    generator = torch.Generator().manual_seed(n)
    matrix = random_spd(n, condition, generator)
    b = torch.randn(n, generator=generator, dtype=torch.float64)
    result = conjugate_gradient(lambda v: matrix @ v, b, max_steps=10 * n, residual_tol=1e-24)
    expected = torch.linalg.solve(matrix, b)
    assert result.status is ConjugateGradientStatus.CONVERGED
    torch.testing.assert_close(result.solution, expected, rtol=1e-8, atol=1e-10)
    # The tracked residual is the true residual, and xᵀAx comes from it without another product.
    torch.testing.assert_close(result.residual, b - matrix @ result.solution, rtol=0, atol=1e-8)
    torch.testing.assert_close(result.quadratic_form(b), result.solution @ matrix @ result.solution, rtol=1e-10, atol=0)


def test_exact_in_n_steps_and_counts_products():
    generator = torch.Generator().manual_seed(0)
    matrix = random_spd(6, 10.0, generator)
    b = torch.randn(6, generator=generator, dtype=torch.float64)
    calls = []

    def product(v):
        calls.append(1)
        return matrix @ v

    result = conjugate_gradient(product, b, max_steps=6, residual_tol=1e-20)
    assert result.n_steps == len(calls) <= 6
    assert result.residual_norm < 1e-8


def test_stops_at_max_steps_with_a_descent_iterate():
    generator = torch.Generator().manual_seed(1)
    matrix = random_spd(40, 1e4, generator)
    b = torch.randn(40, generator=generator, dtype=torch.float64)
    result = conjugate_gradient(lambda v: matrix @ v, b, max_steps=3)
    assert result.status is ConjugateGradientStatus.MAX_STEPS and result.n_steps == 3 and result.ok
    # CG iterates minimise the quadratic model ½xᵀAx - bᵀx, so it must be below its value at 0.
    x = result.solution
    assert 0.5 * x @ matrix @ x - b @ x < 0


def test_zero_right_hand_side_returns_zero_without_products():
    result = conjugate_gradient(lambda v: pytest.fail("no product expected"), torch.zeros(4), max_steps=5)
    assert result.status is ConjugateGradientStatus.CONVERGED and result.n_steps == 0
    assert torch.equal(result.solution, torch.zeros(4))


def test_reports_non_positive_curvature_and_keeps_last_iterate():
    matrix = torch.diag(torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64))
    b = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)  # bᵀAb = 0: the first direction is flat
    result = conjugate_gradient(lambda v: matrix @ v, b, max_steps=5)
    assert result.status is ConjugateGradientStatus.NON_POSITIVE_CURVATURE
    assert not result.ok
    assert torch.equal(result.solution, torch.zeros(3))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_reports_non_finite_products(bad):
    result = conjugate_gradient(lambda v: torch.full_like(v, bad), torch.ones(3), max_steps=5)
    assert result.status is ConjugateGradientStatus.NON_FINITE and not result.ok
    assert torch.isfinite(result.solution).all()


def test_reports_non_finite_right_hand_side():
    result = conjugate_gradient(lambda v: v, torch.tensor([1.0, float("nan")]), max_steps=5)
    assert result.status is ConjugateGradientStatus.NON_FINITE and not result.ok


def test_rejects_zero_steps():
    with pytest.raises(ValueError, match="max_steps"):
        conjugate_gradient(lambda v: v, torch.ones(2), max_steps=0)


def test_stops_once_the_residual_is_small_relative_to_the_right_hand_side():
    """``‖r‖² <= tol·‖b‖²``: the first iterate that satisfies it ends the iteration, and none before it did."""
    generator = torch.Generator().manual_seed(2)
    matrix = random_spd(30, 1e3, generator)
    b = 1e3 * torch.randn(30, generator=generator, dtype=torch.float64)
    tol = 1e-8
    result = conjugate_gradient(lambda v: matrix @ v, b, max_steps=100, residual_tol=tol)
    assert result.status is ConjugateGradientStatus.CONVERGED and result.n_steps > 1
    assert float(result.residual @ result.residual) <= tol * float(b @ b)
    shorter = conjugate_gradient(lambda v: matrix @ v, b, max_steps=result.n_steps - 1, residual_tol=tol)
    assert shorter.status is ConjugateGradientStatus.MAX_STEPS
    assert float(shorter.residual @ shorter.residual) > tol * float(b @ b)


@pytest.mark.parametrize("scale", [1e-2, 1e-5, 1e-8, 1e4])
def test_solution_scales_with_the_right_hand_side(scale):
    """The stopping rule is relative: a scaled ``b`` takes the same steps to the same solution, scaled."""
    generator = torch.Generator().manual_seed(3)
    matrix = random_spd(25, 10.0, generator)  # well conditioned: converged before rounding decides the step count
    b = torch.randn(25, generator=generator, dtype=torch.float64)
    for max_steps, status in ((100, ConjugateGradientStatus.CONVERGED), (6, ConjugateGradientStatus.MAX_STEPS)):
        reference = conjugate_gradient(lambda v: matrix @ v, b, max_steps=max_steps, residual_tol=1e-12)
        assert reference.status is status
        scaled = conjugate_gradient(lambda v: matrix @ v, scale * b, max_steps=max_steps, residual_tol=1e-12)
        assert (scaled.status, scaled.n_steps) == (reference.status, reference.n_steps)
        torch.testing.assert_close(scaled.solution / scale, reference.solution, rtol=1e-9, atol=0)
