"""The maximal step and the backtracking line search, on explicit quadratic and scripted models."""

import math

import pytest
import torch

from sb3_trpo_plugin.trust_region import backtracking_line_search, max_step_size


def test_max_step_reaches_the_kl_bound_of_the_quadratic_model():
    fisher = torch.tensor([[2.0, 0.3], [0.3, 1.0]], dtype=torch.float64)
    direction = torch.tensor([0.7, -1.2], dtype=torch.float64)
    beta = max_step_size(float(direction @ fisher @ direction), max_kl=0.01)
    step = beta * direction
    assert 0.5 * float(step @ fisher @ step) == pytest.approx(0.01, rel=1e-12)


@pytest.mark.parametrize("curvature", [0.0, -1.0, float("nan"), float("inf")])
def test_max_step_is_nan_for_unusable_curvature(curvature):
    assert math.isnan(max_step_size(curvature, 0.01))


def test_accepts_first_fraction_within_kl_that_improves():
    # KL grows like 0.02·f² and the objective like f: fraction 1 and 0.8 break KL ≤ 0.01, 0.64 passes.
    seen = []

    def evaluate(fraction):
        seen.append(fraction)
        return fraction, 0.02 * fraction**2

    result = backtracking_line_search(evaluate, old_objective=0.0, max_kl=0.01, shrinking_factor=0.8, max_iter=10)
    assert result.accepted and result.n_evaluations == 3
    assert seen == pytest.approx([1.0, 0.8, 0.64])
    assert result.step_fraction == pytest.approx(0.64) and result.kl == pytest.approx(0.02 * 0.64**2)


def test_never_accepts_kl_above_the_bound():
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        kls = torch.rand(6, generator=generator).tolist()
        objectives = torch.randn(6, generator=generator).tolist()
        trial = iter(zip(objectives, [0.05 * k for k in kls], strict=True))
        result = backtracking_line_search(lambda f, t=trial: next(t), old_objective=0.0, max_kl=0.02, max_iter=6)
        if result.accepted:
            assert result.kl <= 0.02 and result.objective > 0.0


def test_rejects_when_objective_never_improves():
    result = backtracking_line_search(lambda f: (-f, 0.0), old_objective=0.0, max_kl=0.01, max_iter=4)
    assert not result.accepted and result.n_evaluations == 4 and result.step_fraction == 0.0 and result.objective == 0.0


@pytest.mark.parametrize("bad", [(float("nan"), 0.0), (1.0, float("nan")), (float("inf"), 0.0)])
def test_rejects_non_finite_trials(bad):
    result = backtracking_line_search(lambda f: bad, old_objective=0.0, max_kl=0.01, max_iter=3)
    assert not result.accepted


@pytest.mark.parametrize("factor", [0.0, 1.0, 1.5])
def test_validates_shrinking_factor(factor):
    with pytest.raises(ValueError, match="shrinking_factor"):
        backtracking_line_search(lambda f: (1.0, 0.0), 0.0, 0.01, shrinking_factor=factor)
