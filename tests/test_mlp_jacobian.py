"""
The hand-derived Jacobian of plain MLPs (trust_region/mlp_jacobian.py) against autograd, and its use for SB3 actors
(replicas/actor_jacobian.py): the same products as autograd's Linearization, and the cases it declines.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn
from torch.func import jvp as forward_jvp

from sb3_trpo_plugin.common.distributions import distribution_parameters
from sb3_trpo_plugin.replicas.actor_jacobian import actor_jacobian
from sb3_trpo_plugin.trust_region import Linearization
from sb3_trpo_plugin.trust_region.mlp_jacobian import MLPJacobian
from tests.conftest import ACTION_SPACES, RandomEnv, filled_model, policy_batch, use_float64


def random_mlp(sizes: list[int], activation: str, bias: bool, generator: torch.Generator):
    weights = [torch.randn(n_out, n_in, generator=generator, dtype=torch.float64) for n_in, n_out in itertools.pairwise(sizes)]
    biases = [torch.randn(n_out, generator=generator, dtype=torch.float64) if bias else None for n_out in sizes[1:]]
    return weights, biases, [activation] * (len(sizes) - 2)


def forward(weights, biases, activations, inputs):
    hidden = inputs
    for k, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
        hidden = hidden @ weight.t() + (0 if bias is None else bias)
        if k < len(activations):
            hidden = torch.tanh(hidden) if activations[k] == "tanh" else torch.relu(hidden)
    return hidden


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("sizes", [[3, 2], [3, 5, 2], [4, 6, 5, 3]], ids=["linear", "one-hidden", "two-hidden"])
def test_products_equal_autograd(activation: str, bias: bool, sizes: list[int]) -> None:
    generator = torch.Generator().manual_seed(0)
    weights, biases, activations = random_mlp(sizes, activation, bias, generator)
    inputs = torch.randn(7, sizes[0], generator=generator, dtype=torch.float64)
    jacobian = MLPJacobian(weights, biases, activations, inputs)
    torch.testing.assert_close(jacobian.outputs, forward(weights, biases, activations, inputs))
    params = [*weights, *(b for b in biases if b is not None)]
    tangents = [torch.randn_like(p) for p in params]

    def of_params(*values):
        n = len(weights)
        return forward(list(values[:n]), list(values[n:]) if bias else biases, activations, inputs)

    _, expected_jvp = forward_jvp(of_params, tuple(params), tuple(tangents))
    weight_tangents = tangents[: len(weights)]
    bias_tangents = tangents[len(weights) :] if bias else [None] * len(weights)
    torch.testing.assert_close(jacobian.jvp(weight_tangents, bias_tangents), expected_jvp, rtol=1e-10, atol=1e-12)

    cotangent = torch.randn_like(jacobian.outputs)
    leaves = [p.clone().requires_grad_(True) for p in params]
    expected_vjp = torch.autograd.grad(of_params(*leaves), leaves, grad_outputs=cotangent)
    weight_grads, bias_grads = jacobian.vjp(cotangent)
    got = [*weight_grads, *(g for g in bias_grads if g is not None)]
    assert len(got) == len(expected_vjp)
    for g, e in zip(got, expected_vjp, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
    assert all(g is None for g in bias_grads) is not bias


@pytest.mark.parametrize("space", sorted(ACTION_SPACES))
def test_sb3_actor_products_equal_autograd_linearization(space: str, monkeypatch) -> None:
    """SB3's MlpPolicy on every action space: J v and Jᵀ u as autograd's Linearization computes them (float64)."""
    model = filled_model(RandomEnv(ACTION_SPACES[space]), n_steps=24, batch_size=24, policy_kwargs=dict(net_arch=[8, 8]))
    use_float64(model, monkeypatch)
    batch = policy_batch(model, torch.float64)
    distribution = model.policy.get_distribution(batch.observations)
    parameters = distribution_parameters(distribution)
    assert parameters is not None
    hand = actor_jacobian(model.policy, model._actor_params, batch.observations, distribution)
    assert hand is not None, "SB3's MlpPolicy takes the hand-derived path"
    graph = Linearization(parameters, model._actor_params)
    generator = torch.Generator().manual_seed(1)
    vector = torch.randn(sum(p.numel() for p in model._actor_params), generator=generator, dtype=torch.float64)
    for got, expected in zip(hand.jvp(vector), graph.jvp(vector), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    cotangent = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in parameters]
    torch.testing.assert_close(hand.vjp(cotangent), graph.vjp(cotangent), rtol=1e-10, atol=1e-12)


def test_policy_step_takes_the_hand_derived_path_with_the_same_step(monkeypatch) -> None:
    model = filled_model(RandomEnv(ACTION_SPACES["box"]), n_steps=64, batch_size=64)
    batch = policy_batch(model)
    calls = []
    original = actor_jacobian

    def counted(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(result is not None)
        return result

    monkeypatch.setattr("sb3_trpo_plugin.trpo.policy_step.actor_jacobian", counted)
    hand = model.make_policy_step().linearize(batch)
    assert calls == [True]
    monkeypatch.setattr("sb3_trpo_plugin.trpo.policy_step.actor_jacobian", lambda *args, **kwargs: None)
    graph = model.make_policy_step().linearize(batch)
    torch.testing.assert_close(hand.gradient, graph.gradient, rtol=1e-5, atol=1e-7)
    vector = torch.randn(hand.gradient.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(hand.fisher_product(vector), graph.fisher_product(vector), rtol=1e-4, atol=1e-6)


def test_other_actors_are_left_to_autograd() -> None:
    image = ACTION_SPACES["discrete"]
    cases = {
        "gsde": filled_model(RandomEnv(ACTION_SPACES["box"]), n_steps=16, batch_size=16, use_sde=True),
        "cnn": filled_model(
            RandomEnv(image, observation_space=spaces.Box(0, 255, (36, 36, 1), dtype=np.uint8)),
            policy="CnnPolicy",
            n_steps=16,
            batch_size=16,
        ),
    }
    hooked = filled_model(RandomEnv(image), n_steps=16, batch_size=16)
    hooked.policy.mlp_extractor.policy_net[0].register_forward_hook(lambda module, args, output: output)
    cases["hook"] = hooked
    frozen = filled_model(RandomEnv(image), n_steps=16, batch_size=16)
    frozen.policy.action_net.bias.requires_grad_(False)
    cases["frozen bias"] = frozen
    for name, model in cases.items():
        actor = [p for p in model._actor_params if p.requires_grad]
        batch = policy_batch(model)
        distribution = model.policy.get_distribution(batch.observations)
        assert actor_jacobian(model.policy, actor, batch.observations, distribution) is None, name


def test_relu_actors_take_the_hand_derived_path() -> None:
    model = filled_model(
        RandomEnv(ACTION_SPACES["discrete"]), n_steps=16, batch_size=16, policy_kwargs=dict(activation_fn=nn.ReLU)
    )
    batch = policy_batch(model)
    distribution = model.policy.get_distribution(batch.observations)
    assert actor_jacobian(model.policy, model._actor_params, batch.observations, distribution) is not None
