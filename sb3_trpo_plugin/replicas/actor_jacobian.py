"""
The Jacobian of an SB3 policy's action-distribution parameters in the actor's weights, by hand for plain MLP actors.

For SB3's ``MlpPolicy`` (any plain ``Linear``/``Tanh``/``ReLU`` actor network, features that do not depend on the
actor's parameters), with ``y = action_net(policy_net(features))``, the distribution parameters are the Bernoulli
logits ``η = y``; the normalised logits ``η = y - logsumexp(y)`` of a Categorical (of each part of ``y`` for
MultiCategorical), whose Jacobian is ``(I - 1 pᵀ) ∂y/∂θ``; and ``(y, σ)`` with ``σ = 1 · exp(log_std)`` for a
diagonal Gaussian. :func:`actor_jacobian` gives products with ``J = ∂η/∂θ`` from
:class:`~sb3_trpo_plugin.trust_region.mlp_jacobian.MLPJacobian`, in the layout of
:func:`~sb3_trpo_plugin.common.distributions.distribution_parameters` and of the flat actor parameters; any other
policy gets ``None`` (the caller then differentiates through autograd, which works for every network).

Before the hand-derived Jacobian first serves a policy (per device and dtype), its products ``J v`` and ``Jᵀ u`` are
proved against autograd's (:class:`~sb3_trpo_plugin.trust_region.fisher.Linearization` of the distribution that
``policy.get_distribution`` builds, as the policy step would otherwise use) on the first rows of the batch, for
random ``v`` and ``u`` of a generator of its own: :data:`ACTOR_JACOBIAN` in the policy's
:func:`~sb3_trpo_plugin.replicas.proofs.proofs_of`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
)
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import MlpExtractor
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from sb3_trpo_plugin.common.distributions import distribution_parameters
from sb3_trpo_plugin.common.observations import index_observations
from sb3_trpo_plugin.replicas.plain import all_plain, plain_mlp
from sb3_trpo_plugin.replicas.proofs import (
    PROBE_ROWS,
    FastPath,
    UpstreamFailed,
    probe_generator,
    proofs_of,
    relative_difference,
    state_restored,
    upstream,
)
from sb3_trpo_plugin.trust_region.fisher import Linearization, flatten, unflatten_like
from sb3_trpo_plugin.trust_region.mlp_jacobian import MLPJacobian

#: ``ActorCriticPolicy`` methods whose standard implementation the hand-derived Jacobian assumes.
_ASSUMED_METHODS = ("get_distribution", "extract_features", "_get_action_dist_from_latent")
_DISTRIBUTIONS = (CategoricalDistribution, MultiCategoricalDistribution, BernoulliDistribution, DiagGaussianDistribution)

#: The hand-derived actor Jacobian, as its proofs and warnings name it.
ACTOR_JACOBIAN = FastPath("the hand-derived actor Jacobian", "autograd's Jacobian products")


class ActorJacobian:
    """
    Products with ``J = ∂η/∂θ`` for a plain MLP actor (see the module's documentation); the interface of
    :class:`~sb3_trpo_plugin.trust_region.fisher.Linearization`.

    :param mlp: the actor network's forward pass on the batch's features
    :param linears: its linear layers, first to last (``action_net`` last)
    :param log_std: the Gaussian's ``log_std`` parameter, or ``None`` for the other distributions
    :param categorical_probs: the probabilities of each categorical part of ``y`` (Categorical: one; MultiCategorical:
        one per part), whose logits are normalised; ``None`` for Bernoulli and Gaussian
    :param actor_parameters: the flat layout of ``θ`` (every parameter of ``linears`` and ``log_std``, in some order)
    """

    def __init__(
        self,
        mlp: MLPJacobian,
        linears: Sequence[nn.Linear],
        log_std: torch.Tensor | None,
        categorical_probs: Sequence[torch.Tensor] | None,
        actor_parameters: Sequence[torch.Tensor],
    ) -> None:
        self.mlp = mlp
        self.actor_parameters = list(actor_parameters)
        position = {id(p): i for i, p in enumerate(self.actor_parameters)}
        self._weights = [position[id(linear.weight)] for linear in linears]
        self._biases = [None if linear.bias is None else position[id(linear.bias)] for linear in linears]
        self._log_std = None if log_std is None else position[id(log_std)]
        self._std = None if log_std is None else torch.ones_like(mlp.outputs) * log_std.detach().exp()
        self._probs = None if categorical_probs is None else [p.detach() for p in categorical_probs]
        self._split_sizes = None if categorical_probs is None else [p.shape[-1] for p in categorical_probs]

    def jvp(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """
        ``J v``, one tensor per distribution parameter.

        :param vector: flat tangent in the actor's parameters
        """
        tangents = unflatten_like(vector, self.actor_parameters)
        dy = self.mlp.jvp([tangents[i] for i in self._weights], [None if i is None else tangents[i] for i in self._biases])
        if self._probs is not None and self._split_sizes is not None:  # d(y - logsumexp y) = dy - 1 pᵀdy, per part
            parts = dy.split(self._split_sizes, dim=1)
            return [part - (probs * part).sum(-1, keepdim=True) for part, probs in zip(parts, self._probs, strict=True)]
        if self._std is None or self._log_std is None:
            return [dy]
        return [dy, self._std * tangents[self._log_std]]  # dσ = σ ⊙ d log_std on every row

    def vjp(self, cotangent: Sequence[torch.Tensor]) -> torch.Tensor:
        """
        ``Jᵀ u``, flat in the actor's parameters.

        :param cotangent: one tensor per distribution parameter
        """
        if self._probs is not None:  # (I - 1 pᵀ)ᵀ u = u - p 1ᵀu, per part
            parts = [u - probs * u.sum(-1, keepdim=True) for u, probs in zip(cotangent, self._probs, strict=True)]
            dy = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        else:
            dy = cotangent[0]
        weight_grads, bias_grads = self.mlp.vjp(dy)
        grads: list[torch.Tensor | None] = [None] * len(self.actor_parameters)
        for i, grad in zip(self._weights, weight_grads, strict=True):
            grads[i] = grad
        for i, bias_grad in zip(self._biases, bias_grads, strict=True):
            if i is not None:
                grads[i] = bias_grad
        if self._log_std is not None and self._std is not None:
            grads[self._log_std] = (cotangent[1] * self._std).sum(0)
        parameters = self.actor_parameters
        return flatten([grad if grad is not None else torch.zeros_like(p) for grad, p in zip(grads, parameters, strict=True)])


def actor_jacobian(
    policy: ActorCriticPolicy, actor_parameters: Sequence[torch.Tensor], observations: PyTorchObs, distribution: Distribution
) -> ActorJacobian | None:
    """
    The hand-derived Jacobian of ``policy``'s distribution parameters on ``observations``, or ``None`` when the actor
    is not a plain MLP on constant features, or when the hand-derived products were disproved for this policy (then
    autograd is the way).

    :param policy: the actor-critic policy
    :param actor_parameters: the parameters that shape the action distribution, in the flat layout
    :param observations: the batch's states
    :param distribution: the policy's distribution on them (its kind decides the parameters' layout)
    """
    jacobian = _hand_derived(policy, actor_parameters, observations, distribution)
    if jacobian is None:
        return None
    key = f"{jacobian.mlp.outputs.device.type}, {jacobian.mlp.outputs.dtype}"
    if not proofs_of(policy).serves(ACTOR_JACOBIAN, lambda: _upstream_mismatch(policy, actor_parameters, observations), key):
        return None
    return jacobian


def _upstream_mismatch(
    policy: ActorCriticPolicy, actor_parameters: Sequence[torch.Tensor], observations: PyTorchObs
) -> str | None:
    """
    How the hand-derived products differ from autograd's on the first :data:`PROBE_ROWS` states (``None``: they
    agree to rounding), for random tangents and cotangents. The policy's action distribution is left as it was.

    :raises UpstreamFailed: when autograd's products cannot be built on the probe
    """
    probe = index_observations(observations, slice(0, PROBE_ROWS))
    with state_restored(policy.action_dist), torch.enable_grad():
        distribution = upstream(lambda: policy.get_distribution(probe))
        parameters = distribution_parameters(distribution)
        if parameters is None:
            raise UpstreamFailed(f"{type(distribution).__name__} has no parameters to differentiate")
        reference = upstream(lambda: Linearization(parameters, actor_parameters))
        hand = _hand_derived(policy, actor_parameters, probe, distribution)
        if hand is None:
            return "it declined the probe"
        generator = probe_generator()
        like = parameters[0]
        vector = torch.randn(sum(p.numel() for p in actor_parameters), generator=generator, dtype=like.dtype).to(like.device)
        cotangent = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in parameters]
        return relative_difference("J v", hand.jvp(vector), reference.jvp(vector)) or relative_difference(
            "Jᵀ u", hand.vjp(cotangent), reference.vjp(cotangent)
        )


def _hand_derived(
    policy: ActorCriticPolicy, actor_parameters: Sequence[torch.Tensor], observations: PyTorchObs, distribution: Distribution
) -> ActorJacobian | None:
    """:func:`actor_jacobian` before its proof: the hand-derived products wherever the actor is recognised."""
    if type(distribution) not in _DISTRIBUTIONS or any(
        getattr(type(policy), name) is not getattr(ActorCriticPolicy, name) for name in _ASSUMED_METHODS
    ):
        return None
    if (
        type(policy.mlp_extractor) is not MlpExtractor
        or type(policy.mlp_extractor).forward_actor is not MlpExtractor.forward_actor
    ):
        return None
    layers = plain_mlp([*policy.mlp_extractor.policy_net, policy.action_net])
    if layers is None:
        return None
    linears, activations = layers.linears, layers.activations
    log_std = policy.log_std if isinstance(distribution, DiagGaussianDistribution) else None
    expected = {id(p) for linear in linears for p in linear.parameters()} | ({id(log_std)} if log_std is not None else set())
    if {id(p) for p in actor_parameters} != expected or len(actor_parameters) != len(expected):
        return None  # e.g. a features extractor with parameters of its own, frozen layers, a non-standard split
    extractor = policy.pi_features_extractor
    if not all_plain([extractor, policy.mlp_extractor]):
        return None
    with torch.no_grad():
        features = policy.extract_features(observations, extractor)
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        return None
    mlp = MLPJacobian(
        [linear.weight for linear in linears],
        [linear.bias for linear in linears],
        activations,
        features,
    )
    inner = distribution.distribution
    categorical_probs = None
    if isinstance(distribution, MultiCategoricalDistribution):
        categorical_probs = [part.probs for part in inner]  # type: ignore[union-attr]
    elif isinstance(distribution, CategoricalDistribution):
        categorical_probs = [inner.probs]  # type: ignore[union-attr]
    return ActorJacobian(mlp, linears, log_std, categorical_probs, actor_parameters)
