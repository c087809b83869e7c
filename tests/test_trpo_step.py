"""The trust-region step on real SB3 policies: KL bound, improvement, exact restore, agreement with sb3-contrib."""

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import TRPO as ContribTRPO
from stable_baselines3.common.logger import Logger

from sb3_trpo_plugin.common.distributions import kl_per_state
from sb3_trpo_plugin.trpo.policy_step import PolicyStep, surrogate_objective
from sb3_trpo_plugin.trust_region import ConjugateGradientResult, ConjugateGradientStatus
from tests.conftest import ACTION_SPACES, RandomEnv, filled_model, policy_batch


def actor_snapshot(model):
    return [p.detach().clone() for p in model._actor_params]


def surrogate_and_kl(model, batch, old_distribution):
    with torch.no_grad():
        distribution = model.policy.get_distribution(batch.observations)
        objective = surrogate_objective(distribution.log_prob(batch.actions), batch.old_log_prob, batch.advantages)
        return float(objective), float(kl_per_state(old_distribution, distribution).mean())


@pytest.mark.parametrize("space", sorted(ACTION_SPACES))
@pytest.mark.parametrize("target_kl", [0.001, 0.05])
def test_accepted_step_is_within_kl_and_improves(space, target_kl):
    model = filled_model(RandomEnv(ACTION_SPACES[space]), n_steps=128, target_kl=target_kl)
    batch = policy_batch(model)
    old_distribution = model.make_policy_step().linearize(batch).old_distribution
    old_objective, _ = surrogate_and_kl(model, batch, old_distribution)
    before = actor_snapshot(model)
    stats = model.make_policy_step().take(batch)
    assert stats.accepted, stats
    objective, kl = surrogate_and_kl(model, batch, old_distribution)
    assert 0 < kl <= target_kl
    assert objective > old_objective
    assert kl == pytest.approx(stats.kl, rel=1e-4) and objective == pytest.approx(stats.objective, rel=1e-4, abs=1e-7)
    assert any(not torch.equal(a, b) for a, b in zip(before, model._actor_params, strict=True))


@pytest.mark.parametrize(
    "step_size",
    [1e2, 1e6],  # every trial breaks the KL bound / makes σ = exp(log σ) overflow (no valid distribution)
    ids=["over-the-bound", "invalid-distribution"],
)
def test_failed_line_search_restores_weights_bit_for_bit(monkeypatch, step_size):
    model = filled_model(RandomEnv(ACTION_SPACES["box"]), n_steps=128, line_search_max_iter=3)
    monkeypatch.setattr("sb3_trpo_plugin.trpo.policy_step.max_step_size", lambda curvature, max_kl: step_size)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    stats = model.make_policy_step().take(policy_batch(model))
    assert not stats.accepted and stats.line_search_steps == 3 and stats.kl == 0.0
    after = model.policy.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_non_finite_advantage_is_rejected_and_training_goes_on():
    model = filled_model(RandomEnv(ACTION_SPACES["discrete"]), n_steps=64)
    model.rollout_buffer.advantages[3, 0] = np.nan
    actor_before = actor_snapshot(model)
    critic_before = [p.detach().clone() for p in model._critic_params]
    model.train()
    assert all(torch.equal(a, b) for a, b in zip(actor_before, model._actor_params, strict=True))
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())
    # The critic regresses on the returns, which stayed finite, so it still learns.
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, model._critic_params, strict=True))
    logged = model.logger.name_to_value
    assert logged["train/is_step_non_finite"] == 1.0 and logged["train/is_line_search_success"] == 0.0


def test_non_finite_returns_never_reach_the_critic():
    model = filled_model(RandomEnv(ACTION_SPACES["discrete"]), n_steps=64)
    model.rollout_buffer.returns[5, 0] = np.inf
    model.train()
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())


def contrib_twin(ours, env, **kwargs):
    """sb3-contrib's TRPO with our weights and our rollout buffer."""
    theirs = ContribTRPO("MlpPolicy", env, seed=0, **kwargs)
    theirs.policy.load_state_dict(ours.policy.state_dict())
    theirs.rollout_buffer = ours.rollout_buffer
    theirs.set_logger(Logger(folder=None, output_formats=[]))
    return theirs


@pytest.mark.parametrize(
    ("env_factory", "extra"),
    [
        (lambda: gym.make("CartPole-v1"), {}),
        (lambda: gym.make("Pendulum-v1"), {}),
        (lambda: RandomEnv(ACTION_SPACES["multidiscrete"]), {}),
        # d > 1 dimensions: target_kl and cg_damping act on the KL averaged over dimensions, as in sb3-contrib
        (lambda: RandomEnv(spaces.Box(-1.0, 1.0, shape=(6,), dtype=np.float32)), {}),
        (lambda: RandomEnv(ACTION_SPACES["multibinary"]), {}),
        (lambda: RandomEnv(ACTION_SPACES["box"]), {"use_sde": True}),
    ],
    ids=["CartPole-Categorical", "Pendulum-Gaussian", "MultiDiscrete", "Box6-Gaussian", "MultiBinary", "Box2-gSDE"],
)
@pytest.mark.parametrize("sub_sampling_factor", [1, 4])
def test_step_agrees_with_sb3_contrib(env_factory, extra, sub_sampling_factor):
    """Same weights, same rollout buffer, same keywords: the same step, in direction and in length."""
    settings = dict(n_steps=512, n_critic_updates=0, cg_max_steps=15, cg_damping=0.1, target_kl=0.01, **extra)
    settings["sub_sampling_factor"] = sub_sampling_factor  # sub-sample, then normalise the advantages over it
    ours = filled_model(env_factory(), **settings)
    theirs = contrib_twin(ours, env_factory(), **settings)
    start = actor_snapshot(ours)
    np.random.seed(1)  # the same shuffle of the shared buffer, so the same sub-sample
    ours.train()
    np.random.seed(1)
    with pytest.warns(RuntimeWarning):  # sb3-contrib averages an empty list of critic losses
        theirs.train()
    names = {id(p): name for name, p in ours.policy.named_parameters()}
    their_params = dict(theirs.policy.named_parameters())
    our_delta = torch.cat([(p.detach() - s).flatten() for p, s in zip(ours._actor_params, start, strict=True)])
    their_delta = torch.cat(
        [(their_params[names[id(p)]].detach() - s).flatten() for p, s in zip(ours._actor_params, start, strict=True)]
    )
    assert our_delta.norm() > 0 and their_delta.norm() > 0
    cosine = float(torch.nn.functional.cosine_similarity(our_delta, their_delta, dim=0))
    assert cosine > 0.999
    assert float(our_delta.norm() / their_delta.norm()) == pytest.approx(1.0, abs=1e-3)
    ours_kl, their_kl = (model.logger.name_to_value["train/kl_divergence_loss"] for model in (ours, theirs))
    # KL(old‖new) here (the paper's), KL(new‖old) there: equal to second order, 7% apart on Pendulum at this step
    assert 0 < ours_kl <= 0.01 and ours_kl == pytest.approx(their_kl, rel=0.15)


def test_zero_gradient_takes_no_step_and_is_not_an_error():
    model = filled_model(RandomEnv(ACTION_SPACES["box"]), n_steps=64, normalize_advantage=False)
    model.rollout_buffer.advantages[:] = 0.0
    before = actor_snapshot(model)
    model.train()
    assert all(torch.equal(a, b) for a, b in zip(before, model._actor_params, strict=True))
    logged = model.logger.name_to_value
    assert logged["train/is_step_non_finite"] == 0.0 and logged["train/is_line_search_success"] == 0.0
    assert logged["train/policy_gradient_norm"] == 0.0


class Interrupted(BaseException):
    """Like ``KeyboardInterrupt``: not an ``Exception``."""


@pytest.mark.parametrize("error", [RuntimeError("out of memory"), KeyboardInterrupt(), Interrupted()], ids=type)
def test_exception_during_a_trial_puts_the_old_weights_back_and_propagates(error):
    model = filled_model(RandomEnv(ACTION_SPACES["box"]), n_steps=128)
    batch = policy_batch(model)
    step = model.make_policy_step()
    local = step.linearize(batch)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    trials = []

    def failing_second_trial(batch):
        trials.append(1)
        if len(trials) == 2:  # the weights of the second trial are in place by now
            raise error
        return PolicyStep.batch_distribution(step, batch)

    step.batch_distribution = failing_second_trial  # type: ignore[method-assign]
    full_step = 1e3 * local.gradient  # far beyond the bound: the first trial is rejected
    with pytest.raises(type(error)):
        step.line_search(batch, local, full_step)
    assert len(trials) == 2
    after = model.policy.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("space", ["box", "discrete"])
def test_step_does_not_depend_on_the_advantages_scale(space):
    """Without normalisation the advantages' scale scales g and x alike: β x, the step, is the same (relative CG stop)."""
    model = filled_model(RandomEnv(ACTION_SPACES[space]), n_steps=256, normalize_advantage=False)
    start = {k: v.clone() for k, v in model.policy.state_dict().items()}
    batch = policy_batch(model)
    steps, stats = [], []
    for scale in (1.0, 1e-2, 1e-4, 1e-6, 1e-8):
        model.policy.load_state_dict(start)
        scaled = dataclasses.replace(batch, advantages=batch.advantages * scale)
        stats.append(model.make_policy_step().take(scaled))
        steps.append(torch.cat([(p.detach() - start[n]).flatten() for n, p in model.policy.named_parameters()]))
    assert all(s.accepted for s in stats), stats
    reference = steps[0]
    assert reference.norm() > 0
    for step, stat in zip(steps[1:], stats[1:], strict=True):
        assert float(torch.nn.functional.cosine_similarity(step, reference, dim=0)) > 0.999
        assert float(step.norm() / reference.norm()) == pytest.approx(1.0, abs=1e-3)
        assert stat.cg_steps == stats[0].cg_steps and stat.kl == pytest.approx(stats[0].kl, rel=1e-3)


@pytest.mark.parametrize(
    "status, non_finite",
    [(ConjugateGradientStatus.NON_POSITIVE_CURVATURE, False), (ConjugateGradientStatus.NON_FINITE, True)],
)
def test_solver_breakdown_takes_no_step_and_says_so(monkeypatch, capsys, status, non_finite):
    model = filled_model(RandomEnv(ACTION_SPACES["discrete"]), n_steps=64, verbose=1)

    def breaking_down(product, b, max_steps, residual_tol):
        return ConjugateGradientResult(torch.zeros_like(b), b.clone(), 2, status)

    monkeypatch.setattr("sb3_trpo_plugin.trpo.policy_step.conjugate_gradient", breaking_down)
    before = actor_snapshot(model)
    model.train()
    assert all(torch.equal(a, b) for a, b in zip(before, model._actor_params, strict=True))
    logged = model.logger.name_to_value
    assert logged["train/cg_status"] == status.value and logged["train/is_cg_breakdown"] == 1.0
    assert logged["train/is_step_non_finite"] == float(non_finite) and logged["train/cg_steps"] == 2
    printed = capsys.readouterr().out
    assert ("non-finite" if non_finite else "conjugate gradient broke down (non_positive_curvature after 2 steps)") in printed


def test_cg_status_is_logged_for_a_usual_step():
    model = filled_model(RandomEnv(ACTION_SPACES["discrete"]), n_steps=64, cg_max_steps=2)
    model.train()
    logged = model.logger.name_to_value
    assert logged["train/cg_status"] == "max_steps" and logged["train/is_cg_breakdown"] == 0.0
    assert logged["train/is_line_search_success"] == 1.0
