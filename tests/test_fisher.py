"""Fisher-vector products of the mean KL against the explicit Hessian, on plain torch networks."""

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Categorical, Normal, kl_divergence
from torch.func import functional_call

from sb3_trpo_plugin.trust_region import (
    Linearization,
    bernoulli_fisher,
    block_diagonal,
    categorical_fisher,
    flatten,
    gauss_newton_vector_product,
    kl_hessian_vector_product,
    normal_fisher,
    unflatten_like,
)

N_STATES = 7


class GaussianPolicy(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
        self.log_std = nn.Parameter(torch.tensor([-0.3, 0.4]))

    def forward(self, x):
        mean = self.net(x)
        return [mean, torch.ones_like(mean) * self.log_std.exp()]


class LogitPolicy(nn.Module):
    def __init__(self, n_out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, n_out))

    def forward(self, x):
        return [self.net(x)]


class MultiCategoricalPolicy(LogitPolicy):
    def forward(self, x):
        return list(torch.split(self.net(x), [2, 3], dim=1))


def make_distribution(kind, outputs):
    if kind == "categorical":
        return [Categorical(logits=outputs[0])]
    if kind == "bernoulli":
        return [Bernoulli(logits=outputs[0])]
    if kind == "normal":
        return [Normal(outputs[0], outputs[1])]
    return [Categorical(logits=o) for o in outputs]


def make_metric(kind, outputs, scale):
    if kind == "categorical":
        return categorical_fisher(torch.softmax(outputs[0], -1), scale)
    if kind == "bernoulli":
        return bernoulli_fisher(torch.sigmoid(outputs[0]), scale)
    if kind == "normal":
        return normal_fisher(outputs[1], scale)
    return block_diagonal([categorical_fisher(torch.softmax(o, -1), scale) for o in outputs], [1, 1])


def mean_kl(old, new):
    total = sum(kl_divergence(p, q).reshape(N_STATES, -1).sum(-1) for p, q in zip(old, new, strict=True))
    return total.mean()


POLICIES = {
    "categorical": lambda: LogitPolicy(4),
    "bernoulli": lambda: LogitPolicy(3),
    "normal": GaussianPolicy,
    "multicategorical": lambda: MultiCategoricalPolicy(5),
}


@pytest.fixture(params=sorted(POLICIES))
def setup(request):
    torch.manual_seed(0)
    kind = request.param
    policy = POLICIES[kind]().double()
    x = torch.randn(N_STATES, 3, dtype=torch.float64)
    params = list(policy.parameters())
    names = [name for name, _ in policy.named_parameters()]
    theta = flatten([p.detach() for p in params])
    with torch.no_grad():
        old = make_distribution(kind, policy(x))

    def kl_at(flat):
        outputs = functional_call(policy, dict(zip(names, unflatten_like(flat, params), strict=True)), (x,))
        return mean_kl(old, make_distribution(kind, outputs))

    hessian = torch.autograd.functional.hessian(kl_at, theta)
    return kind, policy, x, params, old, hessian


def test_gauss_newton_equals_explicit_kl_hessian(setup):
    kind, policy, x, params, _, hessian = setup
    outputs = policy(x)
    linearization = Linearization(outputs, params)
    product = gauss_newton_vector_product(linearization, make_metric(kind, outputs, 1.0 / N_STATES))
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(hessian.shape[0], generator=generator, dtype=torch.float64)
        torch.testing.assert_close(product(v), hessian @ v, rtol=1e-5, atol=1e-12)


def test_double_backprop_equals_explicit_kl_hessian_with_damping(setup):
    kind, policy, x, params, old, hessian = setup
    product = kl_hessian_vector_product(mean_kl(old, make_distribution(kind, policy(x))), params, damping=0.1)
    v = torch.randn(hessian.shape[0], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(product(v), hessian @ v + 0.1 * v, rtol=1e-5, atol=1e-12)


def test_fisher_is_symmetric_positive_semidefinite(setup):
    kind, policy, x, params, _, hessian = setup
    outputs = policy(x)
    product = gauss_newton_vector_product(Linearization(outputs, params), make_metric(kind, outputs, 1.0 / N_STATES))
    n = hessian.shape[0]
    explicit = torch.stack([product(e) for e in torch.eye(n, dtype=torch.float64)], dim=1)
    torch.testing.assert_close(explicit, explicit.T, rtol=1e-8, atol=1e-12)
    assert torch.linalg.eigvalsh(explicit).min() > -1e-10


def test_linearization_products_match_explicit_jacobian():
    torch.manual_seed(3)
    policy = GaussianPolicy().double()
    x = torch.randn(N_STATES, 3, dtype=torch.float64)
    params = list(policy.parameters())
    names = [name for name, _ in policy.named_parameters()]
    theta = flatten([p.detach() for p in params])

    def outputs_at(flat):
        outputs = functional_call(policy, dict(zip(names, unflatten_like(flat, params), strict=True)), (x,))
        return flatten(outputs)

    jacobian = torch.autograd.functional.jacobian(outputs_at, theta)
    outputs = policy(x)
    cotangent = [torch.randn_like(o) for o in outputs]
    linearization = Linearization(outputs, params, cotangent=cotangent)
    v = torch.randn(theta.shape[0], dtype=torch.float64)
    torch.testing.assert_close(flatten(linearization.jvp(v)), jacobian @ v)
    torch.testing.assert_close(linearization.transposed_product_at_cotangent, jacobian.T @ flatten(cotangent))
    u = [torch.randn_like(o) for o in outputs]
    torch.testing.assert_close(linearization.vjp(u), jacobian.T @ flatten(u))


def test_flatten_and_unflatten_round_trip_as_views():
    tensors = [torch.randn(2, 3), torch.randn(4), torch.randn(1, 1, 2)]
    flat = flatten(tensors)
    views = unflatten_like(flat, tensors)
    for view, tensor in zip(views, tensors, strict=True):
        assert torch.equal(view, tensor)
    views[1].zero_()
    assert torch.equal(flat[6:10], torch.zeros(4))
