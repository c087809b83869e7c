"""The Fisher-vector products TRPO builds for SB3 policies, against the explicit Hessian of the mean KL."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from sb3_trpo_plugin.common.distributions import kl_per_state
from sb3_trpo_plugin.trust_region import flatten, unflatten_like
from tests.conftest import ACTION_SPACES, RandomEnv, filled_model, policy_batch, use_float64

CASES = {
    "categorical": dict(space="discrete"),
    "diag_gaussian": dict(space="box"),
    "multicategorical": dict(space="multidiscrete"),
    "bernoulli": dict(space="multibinary"),
    "gsde": dict(space="box", use_sde=True),
}


class DistributionOf(nn.Module):
    """Wraps ``policy.get_distribution`` so ``functional_call`` can substitute parameters."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def forward(self, observations):
        return self.policy.get_distribution(observations)


@pytest.fixture(params=sorted(CASES))
def case(request, monkeypatch):
    spec = CASES[request.param]
    env = RandomEnv(ACTION_SPACES[spec["space"]])
    model = filled_model(
        env,
        n_steps=24,
        batch_size=24,
        use_sde=spec.get("use_sde", False),
        cg_damping=0.0,
        policy_kwargs=dict(net_arch=dict(pi=[6], vf=[6])),
    )
    use_float64(model, monkeypatch)
    batch = policy_batch(model, torch.float64)
    wrapper = DistributionOf(model.policy)
    names = {id(p): "policy." + name for name, p in model.policy.named_parameters()}
    actor_names = [names[id(p)] for p in model._actor_params]
    theta = flatten([p.detach() for p in model._actor_params])

    def hessian_with(old_distribution, rows=slice(None)):
        def mean_kl(flat):
            new = functional_call(
                wrapper, dict(zip(actor_names, unflatten_like(flat, model._actor_params), strict=True)), (batch.observations,)
            )
            return kl_per_state(old_distribution, new)[rows].mean()

        return torch.autograd.functional.hessian(mean_kl, theta)

    return model, batch, hessian_with


@pytest.mark.parametrize("method", ["gauss_newton", "kl_hessian"])
def test_fisher_product_equals_explicit_hessian(case, method):
    model, batch, hessian_with = case
    model.fisher_product = method
    linearized = model.make_policy_step().linearize(batch)
    hessian = hessian_with(linearized.old_distribution)
    assert hessian.abs().max() > 0
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(hessian.shape[0], generator=generator, dtype=torch.float64)
        torch.testing.assert_close(linearized.fisher_product(v), hessian @ v, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("method", ["gauss_newton", "kl_hessian"])
def test_fisher_sub_sampling_uses_every_kth_state_for_f_and_all_for_g(case, method):
    model, batch, hessian_with = case
    model.fisher_product = method
    full = model.make_policy_step().linearize(batch)
    model.fisher_sub_sampling_factor = 3
    sub_sampled = model.make_policy_step().linearize(batch)
    hessian = hessian_with(sub_sampled.old_distribution, rows=slice(None, None, 3))
    v = torch.randn(hessian.shape[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(sub_sampled.fisher_product(v), hessian @ v, rtol=1e-5, atol=1e-10)
    assert not torch.allclose(sub_sampled.fisher_product(v), full.fisher_product(v))
    torch.testing.assert_close(sub_sampled.gradient, full.gradient)


def test_gradient_is_the_surrogate_gradient(case):
    model, batch, _ = case
    linearized = model.make_policy_step().linearize(batch)
    distribution = model.policy.get_distribution(batch.observations)
    ratio = torch.exp(distribution.log_prob(batch.actions) - batch.old_log_prob)
    expected = flatten(torch.autograd.grad((ratio * batch.advantages).mean(), model._actor_params))
    torch.testing.assert_close(linearized.gradient, expected, rtol=1e-6, atol=1e-12)
    assert linearized.objective == pytest.approx(float(batch.advantages.mean()), abs=1e-6)


def test_damping_adds_lambda_times_v():
    model = filled_model(RandomEnv(ACTION_SPACES["discrete"]), n_steps=24, batch_size=24)
    batch = policy_batch(model)
    v = torch.randn(sum(p.numel() for p in model._actor_params))
    model.cg_damping = 0.0
    undamped = model.make_policy_step().linearize(batch).fisher_product(v)
    model.cg_damping = 0.3
    torch.testing.assert_close(model.make_policy_step().linearize(batch).fisher_product(v), undamped + 0.3 * v)


def test_gauss_newton_requested_for_unknown_distribution_is_a_clear_error(monkeypatch):
    model = filled_model(RandomEnv(ACTION_SPACES["discrete"]), n_steps=24, batch_size=24, fisher_product="gauss_newton")
    monkeypatch.setattr("sb3_trpo_plugin.trpo.policy_step.fisher_metric", lambda distribution, scale: None)
    with pytest.raises(ValueError, match="gauss_newton"):
        model.make_policy_step().linearize(policy_batch(model))


def test_unknown_distribution_falls_back_to_double_backprop(monkeypatch):
    model = filled_model(RandomEnv(ACTION_SPACES["box"]), n_steps=24, batch_size=24)
    batch = policy_batch(model)
    expected = model.make_policy_step().linearize(batch)
    monkeypatch.setattr("sb3_trpo_plugin.trpo.policy_step.distribution_parameters", lambda distribution: None)
    fallback = model.make_policy_step().linearize(batch)
    v = torch.from_numpy(np.random.default_rng(0).standard_normal(expected.gradient.shape[0]).astype(np.float32))
    torch.testing.assert_close(fallback.gradient, expected.gradient)
    torch.testing.assert_close(fallback.fisher_product(v), expected.fisher_product(v), rtol=1e-4, atol=1e-6)
