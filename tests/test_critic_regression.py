"""The critic's regression: hand-derived MLP gradients against autograd, and which critics take that path."""

import copy
import itertools

import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env
from torch import nn
from torch.nn import functional as F

from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.compat.torch_features import fused_adam_on_cpu
from sb3_trpo_plugin.critic import MLPRegression
from sb3_trpo_plugin.replicas import critic_gradient
from sb3_trpo_plugin.replicas.critic_gradient import plain_regression
from sb3_trpo_plugin.replicas.fused_adam import optimizer_step


def mlp(sizes: list[int], activation: type[nn.Module], dtype: torch.dtype, bias: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [nn.Linear(n_in, n_out, bias=bias, dtype=dtype), activation()]
    return nn.Sequential(*layers[:-1])


def autograd_loss_and_gradients(network: nn.Module, inputs: torch.Tensor, targets: torch.Tensor):
    network.zero_grad(set_to_none=True)
    loss = F.mse_loss(network(inputs).flatten(), targets)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in network.parameters()]


@pytest.mark.parametrize("activation", [nn.Tanh, nn.ReLU])
@pytest.mark.parametrize("sizes", [[5, 1], [3, 64, 1], [17, 64, 64, 1], [4, 7, 9, 5, 1]])
@pytest.mark.parametrize("bias", [True, False])
def test_loss_and_gradients_equal_autograd(activation, sizes, bias):
    torch.manual_seed(len(sizes))
    network = mlp(sizes, activation, torch.float64, bias)
    inputs, targets = torch.randn(33, sizes[0], dtype=torch.float64), torch.randn(33, dtype=torch.float64)
    expected_loss, expected_grads = autograd_loss_and_gradients(network, inputs, targets)
    regression = plain_regression([network])
    assert regression is not None
    network.zero_grad(set_to_none=True)
    loss = regression.loss_and_gradients(inputs, targets)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    for parameter, expected in zip(network.parameters(), expected_grads, strict=True):
        torch.testing.assert_close(parameter.grad, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(regression.values(inputs), network(inputs).flatten().detach(), rtol=1e-12, atol=1e-12)


def test_float32_matches_autograd_and_leaves_frozen_parameters_alone():
    torch.manual_seed(0)
    network = mlp([4, 64, 64, 1], nn.Tanh, torch.float32)
    inputs, targets = torch.randn(512, 4), torch.randn(512)
    expected_loss, expected_grads = autograd_loss_and_gradients(network, inputs, targets)
    network[0].weight.requires_grad_(False)
    network[0].weight.grad = None
    loss = plain_regression([network]).loss_and_gradients(inputs, targets)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    assert network[0].weight.grad is None  # frozen: untouched
    for parameter, expected in list(zip(network.parameters(), expected_grads, strict=True))[1:]:
        torch.testing.assert_close(parameter.grad, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "layers",
    [
        [nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)],  # two outputs
        [nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 1)],  # activation without a hand-written derivative
        [nn.Linear(3, 4), nn.Linear(4, 1)],  # not alternating
        [nn.Linear(3, 4), nn.Tanh()],  # ends with an activation
        [nn.Linear(3, 4), nn.Dropout(), nn.Linear(4, 1)],
        [],
    ],
)
def test_other_architectures_are_declined(layers):
    assert plain_regression(layers) is None


def test_hooks_are_declined():
    """Autograd would run a hook; the hand-derived path would not, so it must not be taken."""
    network = mlp([3, 4, 1], nn.Tanh, torch.float32)
    assert plain_regression([network]) is not None
    handle = network[2].weight.register_hook(lambda grad: grad * 2)
    assert plain_regression([network]) is None
    handle.remove()
    handle = network[1].register_forward_hook(lambda module, args, output: output)
    assert plain_regression([network]) is None


def critic_weights(model: TRPO) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model._critic_params]


@pytest.mark.parametrize(
    "env_id, policy_kwargs",
    [
        ("CartPole-v1", None),
        ("Pendulum-v1", dict(net_arch=dict(pi=[32], vf=[32, 16]), activation_fn=nn.ReLU)),
        ("CartPole-v1", dict(net_arch=dict(pi=[8], vf=[]))),  # the value head alone
    ],
)
def test_trpo_critic_regression_equals_autograd_path(env_id, policy_kwargs, monkeypatch):
    """TRPO's whole critic regression, hand-derived against autograd, from the same weights, buffer and shuffles."""
    model = TRPO(
        "MlpPolicy",
        make_vec_env(env_id, n_envs=2, seed=0),
        n_steps=64,
        batch_size=32,
        n_critic_updates=3,
        policy_kwargs=policy_kwargs,
        seed=0,
    )
    model.learn(128)
    rollout = next(model.rollout_buffer.get(batch_size=None))
    start = {name: t.clone() for name, t in model.policy.state_dict().items()}
    optimizer_state = copy.deepcopy(model.policy.optimizer.state_dict())  # state_dict() holds references
    calls = []
    hand_derived = MLPRegression.loss_and_gradients
    monkeypatch.setattr(MLPRegression, "loss_and_gradients", lambda self, *a: calls.append(1) or hand_derived(self, *a))

    def regression() -> tuple[float, list[torch.Tensor]]:
        model.policy.load_state_dict(start)
        model.policy.optimizer.load_state_dict(copy.deepcopy(optimizer_state))
        torch.manual_seed(123)
        loss = model._fit_critic(rollout)
        return loss, critic_weights(model)

    hand_loss, hand_weights = regression()
    assert len(calls) == 3 * 4  # epochs × minibatches: every step took the hand-derived path
    monkeypatch.setattr(critic_gradient, "plain_regression", lambda layers: None)
    auto_loss, auto_weights = regression()
    assert len(calls) == 12
    assert hand_loss == pytest.approx(auto_loss, rel=1e-5)
    assert not all(torch.equal(w, start_w) for w, start_w in zip(hand_weights, critic_weights_of(start, model), strict=True))
    for hand, auto in zip(hand_weights, auto_weights, strict=True):
        torch.testing.assert_close(hand, auto, rtol=1e-4, atol=1e-5)


def critic_weights_of(state: dict[str, torch.Tensor], model: TRPO) -> list[torch.Tensor]:
    names = {id(p): name for name, p in model.policy.named_parameters()}
    return [state[names[id(p)]] for p in model._critic_params]


def test_overflowing_critic_loss_skips_the_minibatch():
    """Values so large that the squared error overflows float32: every step is skipped, nothing becomes NaN."""
    model = TRPO(
        "MlpPolicy", make_vec_env("CartPole-v1", n_envs=1, seed=0), n_steps=32, batch_size=16, n_critic_updates=2, seed=0
    )
    model.learn(32)
    rollout = next(model.rollout_buffer.get(batch_size=None))
    with torch.no_grad():
        model.policy.value_net.weight.mul_(1e25)
    before = critic_weights(model)
    loss = model._fit_critic(rollout)
    assert loss == float("inf")
    for after, expected in zip(critic_weights(model), before, strict=True):
        assert torch.equal(after, expected)


@pytest.mark.parametrize(
    "settings",
    [dict(), dict(amsgrad=True), dict(weight_decay=0.01, maximize=True, betas=(0.8, 0.95), eps=1e-6)],
    ids=["defaults", "amsgrad", "other-settings"],
)
def test_direct_fused_adam_step_is_adams_step_bit_for_bit(settings):
    """The critic's shortcut around Adam.step's bookkeeping takes exactly Adam's step, state included."""
    if not callable(getattr(torch, "_fused_adam_", None)):
        pytest.skip("this torch has no fused Adam kernel")
    if not fused_adam_on_cpu():
        pytest.skip("this torch has no fused Adam on the CPU (torch < 2.4): the critic's optimiser is Adam.step")
    generator = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (4,), (1, 4), (1,)]
    start = [torch.randn(shape, generator=generator) for shape in shapes]
    gradients = [[torch.randn(shape, generator=generator) for shape in shapes] for _ in range(6)]
    results = []
    for direct in (True, False):
        params = [nn.Parameter(value.clone()) for value in start]
        optimizer = torch.optim.Adam(params, lr=1e-2, fused=True, **settings)
        step = optimizer_step(optimizer) if direct else optimizer.step
        assert (step == optimizer.step) is not direct
        for k, step_gradients in enumerate(gradients):
            for param, gradient in zip(params, step_gradients, strict=True):
                param.grad = gradient.clone()
            optimizer.param_groups[0]["lr"] = 1e-2 / (k + 1)  # a schedule changes it between steps
            step()
        results.append((params, optimizer.state_dict()["state"]))
    (direct_params, direct_state), (adam_params, adam_state) = results
    for direct_param, adam_param in zip(direct_params, adam_params, strict=True):
        assert torch.equal(direct_param, adam_param)
    for index, state in adam_state.items():
        assert state.keys() == direct_state[index].keys()
        for key, value in state.items():
            assert torch.equal(direct_state[index][key], value), (index, key)
    assert float(adam_state[0]["step"]) == len(gradients)


def test_other_optimizers_take_their_own_step():
    params = [nn.Parameter(torch.zeros(3))]
    for optimizer in (
        torch.optim.SGD(params, lr=0.1),
        torch.optim.Adam(params, lr=0.1),  # not fused
        *([torch.optim.AdamW(params, lr=0.1, fused=True)] if fused_adam_on_cpu() else []),
    ):
        assert optimizer_step(optimizer) == optimizer.step
    if not fused_adam_on_cpu():  # torch < 2.4: no fused optimiser to hook on the CPU
        return
    hooked = torch.optim.Adam(params, lr=0.1, fused=True)
    hooked.register_step_post_hook(lambda optimizer, args, kwargs: None)
    assert optimizer_step(hooked) == hooked.step
