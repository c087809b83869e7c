"""
The promises of a trust-region step, as properties over random small policies, batches and distributions.

* An accepted step keeps the measured mean KL within δ and does not lower the surrogate.
* A rejected step leaves every weight bit-identical.
* The Fisher-vector product is symmetric and positive semi-definite.
* Conjugate gradient returns finite values, or a failure status that says why.

The TRPO properties go through ``TRPO.train()`` on a filled rollout buffer and measure KL and
surrogate independently (with ``torch.distributions``), so they hold whatever the step's internals.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from stable_baselines3.common.logger import configure
from torch.distributions import Bernoulli, Categorical, Normal, kl_divergence

import sb3_trpo_plugin.trpo.policy_step as policy_step_module
from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.trust_region import (
    ConjugateGradientStatus,
    Linearization,
    backtracking_line_search,
    bernoulli_fisher,
    block_diagonal,
    categorical_fisher,
    conjugate_gradient,
    gauss_newton_vector_product,
    kl_hessian_vector_product,
    normal_fisher,
)

# derandomize: the same examples on every run (a CI failure reproduces locally); the maths tests are cheap, so more.
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
MATHS_SETTINGS = settings(SETTINGS, max_examples=100)

ACTION_SPACES: dict[str, tuple[spaces.Space, dict[str, Any]]] = {
    "categorical": (spaces.Discrete(3), {}),
    "gaussian": (spaces.Box(-1.0, 1.0, (2,), np.float32), {}),
    "gsde": (spaces.Box(-1.0, 1.0, (2,), np.float32), {"use_sde": True}),
    "multi-categorical": (spaces.MultiDiscrete([2, 3]), {}),
    "bernoulli": (spaces.MultiBinary(2), {}),
}


class SpacesOnlyEnv(gym.Env):
    """Gives TRPO its spaces; the tests fill the rollout buffer themselves."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        return self.observation_space.sample(), 0.0, False, False, {}


def filled_model(
    kind: str, obs_dim: int, hidden: int, n_samples: int, seed: int, reward_scale: float, **kwargs: Any
) -> tuple[TRPO, torch.Tensor]:
    """A TRPO model whose buffer holds ``n_samples`` steps of its own policy on random observations and rewards."""
    action_space, extra = ACTION_SPACES[kind]
    observation_space = spaces.Box(-5.0, 5.0, (obs_dim,), np.float32)
    model = TRPO(
        "MlpPolicy",
        SpacesOnlyEnv(observation_space, action_space),
        n_steps=n_samples,
        batch_size=n_samples,
        n_critic_updates=0,  # the critic stays put, so a rejected step must leave every weight as it was
        policy_kwargs=dict(net_arch=[hidden]),
        seed=seed,
        **extra,
        **kwargs,
    )
    model.set_logger(configure(None, []))
    rng = np.random.default_rng(seed)
    observations = rng.uniform(-3, 3, size=(n_samples, obs_dim)).astype(np.float32)
    rewards = rng.normal(0.0, reward_scale, size=n_samples).astype(np.float32)
    buffer = model.rollout_buffer
    buffer.reset()
    if model.use_sde:
        model.policy.reset_noise(1)
    with torch.no_grad():
        for t in range(n_samples):
            actions, values, log_probs = model.policy(torch.as_tensor(observations[t : t + 1]))
            buffer.add(observations[t : t + 1], actions.numpy(), rewards[t : t + 1], np.array([t == 0]), values, log_probs)
        last_values = model.policy.predict_values(torch.as_tensor(observations[-1:]))
    buffer.compute_returns_and_advantage(last_values=last_values, dones=np.array([False]))
    return model, torch.as_tensor(observations)


def torch_distributions(model: TRPO, observations: torch.Tensor) -> list[torch.distributions.Distribution]:
    """The policy's action distribution as plain, detached torch distributions (one per independent part)."""
    with torch.no_grad():
        inner = model.policy.get_distribution(observations).distribution
    parts = inner if isinstance(inner, list) else [inner]
    rebuilt: list[torch.distributions.Distribution] = []
    for part in parts:
        if isinstance(part, Categorical):
            rebuilt.append(Categorical(logits=part.logits.clone()))
        elif isinstance(part, Bernoulli):
            rebuilt.append(Bernoulli(logits=part.logits.clone()))
        elif isinstance(part, Normal):
            rebuilt.append(Normal(part.loc.clone(), part.scale.clone()))
        else:
            raise TypeError(type(part))
    return rebuilt


def measured_mean_kl(old: list[torch.distributions.Distribution], new: list[torch.distributions.Distribution]) -> float:
    """
    Mean over states of the KL that ``target_kl`` bounds, as sb3-contrib measures it: summed over independent
    categoricals, averaged over the dimensions of a Gaussian or of Bernoulli variables.
    """
    total = 0
    for old_part, new_part in zip(old, new, strict=True):
        kl = kl_divergence(old_part, new_part)
        total = total + (kl.mean(dim=-1) if kl.dim() > 1 else kl)
    return float(total.mean())  # type: ignore[union-attr]


def measured_surrogate(model: TRPO, observations: torch.Tensor, advantages: torch.Tensor) -> float:
    """``mean(π(a|s) / π_old(a|s) · Â)`` with the buffer's actions and old log-probabilities."""
    buffer = model.rollout_buffer
    actions = torch.as_tensor(buffer.actions.reshape(len(observations), -1)).float()
    if isinstance(model.action_space, spaces.Discrete):
        actions = actions.long().flatten()
    old_log_prob = torch.as_tensor(buffer.log_probs.flatten())
    with torch.no_grad():
        log_prob = model.policy.get_distribution(observations).log_prob(actions)
    return float((torch.exp(log_prob - old_log_prob) * advantages).mean())


def weights(model: TRPO) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.policy.state_dict().items()}


@SETTINGS
@given(
    kind=st.sampled_from(list(ACTION_SPACES)),
    obs_dim=st.integers(1, 3),
    hidden=st.integers(1, 6),
    n_samples=st.integers(4, 24),
    seed=st.integers(0, 2**16),
    reward_scale=st.sampled_from([1e-3, 1.0, 1e3]),
    target_kl=st.sampled_from([1e-4, 1e-2, 0.1]),
    line_search_max_iter=st.sampled_from([1, 3, 10, 10]),
    fisher_product=st.sampled_from(["auto", "kl_hessian"]),
    cg_damping=st.sampled_from([0.0, 0.1, 0.1]),  # undamped Fisher matrices of tiny batches are singular: more rejections
    force_rejection=st.sampled_from([False, False, False, True]),
)
def test_trust_region_step_invariants(
    kind: str,
    obs_dim: int,
    hidden: int,
    n_samples: int,
    seed: int,
    reward_scale: float,
    target_kl: float,
    line_search_max_iter: int,
    fisher_product: str,
    cg_damping: float,
    force_rejection: bool,
) -> None:
    model, observations = filled_model(
        kind,
        obs_dim,
        hidden,
        n_samples,
        seed,
        reward_scale,
        target_kl=target_kl,
        line_search_max_iter=line_search_max_iter,
        fisher_product=fisher_product,
        cg_damping=cg_damping,
    )
    advantages = torch.as_tensor(model.rollout_buffer.advantages.flatten())
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    old_distributions = torch_distributions(model, observations)
    old_surrogate = measured_surrogate(model, observations, advantages)
    before = weights(model)

    with pytest.MonkeyPatch.context() as patch:
        if force_rejection:
            # Every trial step (written into the weights in place) is reported over the KL bound.
            def over_the_bound(evaluate: Callable[[float], tuple[float, float]], *args: Any, **kwargs: Any) -> Any:
                return backtracking_line_search(lambda fraction: (evaluate(fraction)[0], math.inf), *args, **kwargs)

            patch.setattr(policy_step_module, "backtracking_line_search", over_the_bound)
        model.train()

    after = weights(model)
    accepted = model.logger.name_to_value["train/is_line_search_success"] == 1.0
    event(f"accepted={accepted}")
    assert all(torch.isfinite(value).all() for value in after.values())
    if accepted:
        assert not force_rejection
        kl = measured_mean_kl(old_distributions, torch_distributions(model, observations))
        assert kl <= target_kl * (1 + 1e-3) + 1e-7, f"mean KL {kl} over the bound {target_kl}"
        surrogate = measured_surrogate(model, observations, advantages)
        assert surrogate >= old_surrogate - 1e-6 * max(1.0, abs(old_surrogate)), (surrogate, old_surrogate)
    else:
        for name in before:
            assert torch.equal(before[name], after[name]), f"{name} changed by a rejected step"


# Fisher-vector products on a small double-precision network, for each distribution family.


def random_network(seed: int, obs_dim: int, hidden: int, n_outputs: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(obs_dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, n_outputs)).double()


def distribution_and_metric(
    kind: str, outputs: torch.Tensor, log_std: torch.Tensor, scale: float
) -> tuple[list[torch.Tensor], Callable[[list[torch.Tensor]], Any], Any]:
    """Distribution parameters, a builder of the distribution(s) from them, and the Fisher metric ``M`` at them."""
    if kind == "categorical":
        return [outputs], lambda p: [Categorical(logits=p[0])], categorical_fisher(torch.softmax(outputs, -1), scale)
    if kind == "bernoulli":
        return [outputs], lambda p: [Bernoulli(logits=p[0])], bernoulli_fisher(torch.sigmoid(outputs), scale)
    if kind == "gaussian":
        std = torch.exp(log_std).expand_as(outputs)
        return [outputs, std], lambda p: [Normal(p[0], p[1])], normal_fisher(std, scale)
    # two independent categoricals, on the two halves of the outputs
    first, second = outputs[:, :2], outputs[:, 2:]
    metric = block_diagonal(
        [categorical_fisher(torch.softmax(first, -1), scale), categorical_fisher(torch.softmax(second, -1), scale)], [1, 1]
    )
    return [first, second], lambda p: [Categorical(logits=p[0]), Categorical(logits=p[1])], metric


@MATHS_SETTINGS
@given(
    kind=st.sampled_from(["categorical", "bernoulli", "gaussian", "multi-categorical"]),
    seed=st.integers(0, 2**16),
    obs_dim=st.integers(1, 3),
    hidden=st.integers(1, 5),
    n_states=st.integers(1, 12),
    damping=st.sampled_from([0.0, 0.01]),
)
def test_fisher_vector_product_is_symmetric_and_positive_semidefinite(
    kind: str, seed: int, obs_dim: int, hidden: int, n_states: int, damping: float
) -> None:
    network = random_network(seed, obs_dim, hidden, 5)
    log_std = torch.nn.Parameter(torch.linspace(-1.0, 0.5, 5, dtype=torch.float64))
    params = [*network.parameters(), *([log_std] if kind == "gaussian" else [])]
    generator = torch.Generator().manual_seed(seed)
    observations = torch.randn(n_states, obs_dim, generator=generator, dtype=torch.float64) * 2
    outputs = network(observations)
    distribution_params, build, metric = distribution_and_metric(kind, outputs, log_std, 1.0 / n_states)

    gauss_newton = gauss_newton_vector_product(Linearization(distribution_params, params), metric, damping)
    old = build([p.detach() for p in distribution_params])
    mean_kl = sum(
        (kl.sum(-1) if kl.dim() > 1 else kl)
        for kl in (kl_divergence(o, n) for o, n in zip(old, build(distribution_params), strict=True))
    ).mean()  # type: ignore[union-attr]
    kl_hessian = kl_hessian_vector_product(mean_kl, params, damping)

    n_params = sum(p.numel() for p in params)
    u, v = torch.randn(2, n_params, generator=generator, dtype=torch.float64)
    for product in (gauss_newton, kl_hessian):
        fu, fv = product(u), product(v)
        assert torch.isfinite(fu).all() and torch.isfinite(fv).all()
        scale = float(u.norm() * fv.norm() + v.norm() * fu.norm()) + 1e-30
        assert abs(float(u @ fv) - float(v @ fu)) <= 1e-9 * scale, "F is not symmetric"
        for w, fw in ((u, fu), (v, fv)):
            assert float(w @ fw) >= damping * float(w @ w) - 1e-9 * float(w.norm() * fw.norm()), "wᵀFw < 0"
    # Both ways compute the same matrix (the closed form is the exact Hessian at θ_old).
    torch.testing.assert_close(gauss_newton(u), kl_hessian(u), rtol=1e-7, atol=1e-10)


# Conjugate gradient: finite values, or a clearly reported failure.

MATRIX_KINDS = ["spd", "ill-conditioned", "indefinite", "nan-after", "inf-after", "zero"]


@MATHS_SETTINGS
@given(
    kind=st.sampled_from(MATRIX_KINDS),
    n=st.integers(1, 8),
    seed=st.integers(0, 2**16),
    max_steps=st.integers(1, 12),
    fail_after=st.integers(0, 5),
)
def test_conjugate_gradient_is_finite_or_reports_failure(
    kind: str, n: int, seed: int, max_steps: int, fail_after: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(n, n, generator=generator, dtype=torch.float64)
    b = torch.randn(n, generator=generator, dtype=torch.float64)
    if kind == "spd":
        matrix = base @ base.T + torch.eye(n, dtype=torch.float64)
    elif kind == "ill-conditioned":
        q, _ = torch.linalg.qr(base)
        matrix = q @ torch.diag(torch.logspace(-8, 4, n, dtype=torch.float64)) @ q.T
    elif kind == "indefinite":
        matrix = base + base.T
    elif kind == "zero":
        matrix = torch.zeros(n, n, dtype=torch.float64)
    else:
        matrix = base @ base.T + torch.eye(n, dtype=torch.float64)
    calls = 0

    def product(vector: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        result = matrix @ vector
        if kind in ("nan-after", "inf-after") and calls > fail_after:
            result = result * (math.nan if kind == "nan-after" else math.inf)
        return result

    result = conjugate_gradient(product, b, max_steps=max_steps, residual_tol=1e-20)
    assert torch.isfinite(result.solution).all(), "the returned solution must always be finite"
    assert 0 <= result.n_steps <= max_steps and calls <= max_steps
    failures = {ConjugateGradientStatus.NON_FINITE, ConjugateGradientStatus.NON_POSITIVE_CURVATURE}
    assert result.ok == (result.status not in failures)
    if kind in ("nan-after", "inf-after") and calls > fail_after:
        assert result.status == ConjugateGradientStatus.NON_FINITE
    if kind == "zero":
        assert result.status == ConjugateGradientStatus.NON_POSITIVE_CURVATURE and not result.ok
    if kind == "spd" and max_steps >= n and result.ok:
        # Exact arithmetic converges in n steps; allow for rounding on these well-conditioned systems.
        assert float(torch.linalg.vector_norm(matrix @ result.solution - b)) <= 1e-6 * float(b.norm()) * float(
            torch.linalg.matrix_norm(matrix, ord=2)
        )
    if result.ok and kind != "ill-conditioned":
        # The quadratic form TRPO uses for its step size is that of the returned solution.
        assert float(result.quadratic_form(b)) == pytest.approx(
            float(result.solution @ matrix @ result.solution), rel=1e-6, abs=1e-9
        )
