"""The entropy bonus ``L(θ) + c·H̄(π_θ)`` (``ent_coef``): its gradient, its line search, its logs, and ``c = 0`` unchanged."""

import dataclasses

import pytest
import torch

from sb3_trpo_plugin import TRPO, HyperparameterError
from sb3_trpo_plugin.trpo.policy_step import PolicyStep, mean_entropy, surrogate_objective
from tests.conftest import ACTION_SPACES, RandomEnv, filled_model, policy_batch, use_float64

CASES = {
    "categorical": dict(space="discrete"),
    "diag_gaussian": dict(space="box"),
    "multicategorical": dict(space="multidiscrete"),
    "bernoulli": dict(space="multibinary"),
    "gsde": dict(space="box", use_sde=True),
}


def full_objective(model, batch, ent_coef):
    distribution = model.policy.get_distribution(batch.observations)
    surrogate = surrogate_objective(distribution.log_prob(batch.actions), batch.old_log_prob, batch.advantages)
    return surrogate + ent_coef * distribution.entropy().mean()


@pytest.mark.parametrize("fisher_product", ["auto", "kl_hessian"])
@pytest.mark.parametrize("fisher_sub_sampling_factor", [1, 3])
@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_is_autograds_gradient_of_the_full_objective(monkeypatch, case, fisher_product, fisher_sub_sampling_factor):
    """Closed form (∂/∂η, then Jᵀ, hand-derived or autograd) and double backprop: ∇(L + c·H̄) in float64."""
    spec = CASES[case]
    model = filled_model(
        RandomEnv(ACTION_SPACES[spec["space"]]),
        n_steps=48,
        use_sde=spec.get("use_sde", False),
        ent_coef=0.3,
        fisher_product=fisher_product,
        fisher_sub_sampling_factor=fisher_sub_sampling_factor,
        policy_kwargs=dict(net_arch=dict(pi=[8], vf=[8])),
    )
    use_float64(model, monkeypatch)
    batch = policy_batch(model, torch.float64)
    local = model.make_policy_step().linearize(batch)
    objective = full_objective(model, batch, 0.3)
    expected = torch.cat([g.flatten() for g in torch.autograd.grad(objective, model._actor_params)])
    torch.testing.assert_close(local.gradient, expected, rtol=1e-9, atol=1e-12)
    assert local.objective == pytest.approx(float(objective), rel=1e-12)
    # The bonus is really in there: the surrogate's gradient alone is another vector.
    surrogate_only = torch.autograd.grad(full_objective(model, batch, 0.0), model._actor_params)
    assert not torch.allclose(torch.cat([g.flatten() for g in surrogate_only]), expected, rtol=1e-3, atol=0)


@pytest.mark.parametrize("space", sorted(ACTION_SPACES))
def test_zero_ent_coef_is_the_plain_surrogate_step_bit_for_bit(monkeypatch, space):
    """``ent_coef=0`` computes nothing of the entropy into the step: the same weights as an objective without it."""
    model = filled_model(RandomEnv(ACTION_SPACES[space]), n_steps=64, ent_coef=0.0)
    batch = policy_batch(model)
    start = {k: v.clone() for k, v in model.policy.state_dict().items()}
    results = []
    for plain in (False, True):
        model.policy.load_state_dict(start)
        if plain:
            monkeypatch.setattr(
                PolicyStep,
                "objective",
                lambda self, d, b: surrogate_objective(d.log_prob(b.actions), b.old_log_prob, b.advantages),
            )
        stats = model.make_policy_step().take(batch)
        results.append((stats, [p.detach().clone() for p in model.policy.parameters()]))
    (stats, weights), (plain_stats, plain_weights) = results
    assert stats.accepted and all(torch.equal(a, b) for a, b in zip(weights, plain_weights, strict=True))
    assert dataclasses.astuple(stats) == pytest.approx(dataclasses.astuple(plain_stats), rel=0, abs=0, nan_ok=True)


@pytest.mark.parametrize("space", ["discrete", "box"])
def test_line_search_accepts_on_the_full_objective_and_the_bonus_raises_entropy(space):
    model = filled_model(RandomEnv(ACTION_SPACES[space]), n_steps=128, target_kl=0.05)
    batch = policy_batch(model)
    start = {k: v.clone() for k, v in model.policy.state_dict().items()}
    entropies = {}
    for ent_coef in (0.0, 5.0):
        model.policy.load_state_dict(start)
        model.ent_coef = ent_coef
        stats = model.make_policy_step().take(batch)
        assert stats.accepted
        with torch.no_grad():
            entropies[ent_coef] = float(mean_entropy(model.policy.get_distribution(batch.observations)))
            objective = float(full_objective(model, batch, ent_coef))
        # What the line search accepted is the full objective at the new weights.
        assert stats.objective == pytest.approx(objective, rel=1e-5)
    # Random advantages, a large bonus: the step with it ends at a higher entropy than the one without.
    assert entropies[5.0] > entropies[0.0] + 1e-3


def test_entropy_loss_is_logged_with_sb3s_key_and_sign():
    for ent_coef in (0.0, 0.1):
        model = filled_model(RandomEnv(ACTION_SPACES["box"]), n_steps=64, ent_coef=ent_coef)
        batch = policy_batch(model)
        with torch.no_grad():
            entropy_before = float(model.policy.get_distribution(batch.observations).entropy().mean())
        model.train()
        assert model.logger.name_to_value["train/entropy_loss"] == pytest.approx(-entropy_before, rel=1e-5)


def test_bonus_without_closed_form_entropy_is_refused():
    with pytest.raises(HyperparameterError, match="ent_coef"):
        TRPO(
            "MlpPolicy",
            RandomEnv(ACTION_SPACES["box"]),
            use_sde=True,
            ent_coef=0.01,
            policy_kwargs=dict(squash_output=True),
        )
