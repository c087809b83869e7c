"""
The critic's gradient derived by hand, for SB3's plain MLP critic: which critics it serves, proved against autograd.

:class:`~sb3_trpo_plugin.critic.MLPRegression` (pure maths, nothing of SB3) writes out the gradient of
``mean (f(x) - y)²`` for a plain MLP of one output. :func:`plain_regression` recognises such an MLP in a sequence of
modules (:mod:`.plain`'s one rule); :func:`critic_head_regression` connects it to an SB3 policy's critic head,
``value_net(mlp_extractor.forward_critic(x))``, and proves it, before it first serves the policy (per device and
dtype), against autograd through the policy's own modules on the first rows of the regression's inputs, with targets
of a generator of its own: the loss and every trained parameter's gradient must agree to rounding
(:data:`CRITIC_GRADIENT` in the policy's :func:`~sb3_trpo_plugin.replicas.proofs.proofs_of`).

Both need the critic's values to be that head applied to the critic's features. SB3's
``ActorCriticPolicy.predict_values`` computes exactly this; another class's ``predict_values`` (sb3-contrib's
``MaskableActorCriticPolicy`` writes its own) is proved to compute the same on the first rows of the regression's
states before its features are computed once for the regression (:data:`CRITIC_FEATURES`, :func:`values_from_features`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import MlpExtractor
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn
from torch.nn import functional as F

from sb3_trpo_plugin.common.observations import index_observations
from sb3_trpo_plugin.critic import MLPRegression
from sb3_trpo_plugin.replicas.plain import plain_mlp
from sb3_trpo_plugin.replicas.proofs import (
    PROBE_ROWS,
    FastPath,
    probe_generator,
    proofs_of,
    relative_difference,
    upstream,
)

#: The critic's hand-derived gradient, as its proofs and warnings name it.
CRITIC_GRADIENT = FastPath("the critic's hand-derived gradient", "autograd's gradient")
#: The critic's values as its head applied to its features (computed once per regression), as proofs and warnings name it.
CRITIC_FEATURES = FastPath("the critic's values from its features", "the policy's predict_values")


def values_from_features(policy: ActorCriticPolicy, observations: PyTorchObs) -> bool:
    """
    Whether ``policy.predict_values(obs)`` is ``value_net(mlp_extractor.forward_critic(features))`` with
    ``features = extract_features(obs, vf_features_extractor)``: SB3's ``ActorCriticPolicy.predict_values`` is; another
    class's is proved equal (to rounding) on the first :data:`PROBE_ROWS` of ``observations``, once per policy.

    :param policy: the policy (an ``ActorCriticPolicy``, or a class with its modules, such as sb3-contrib's maskable one)
    :param observations: the regression's states
    """
    predict_values = getattr(type(policy), "predict_values", None)
    if predict_values is ActorCriticPolicy.predict_values:
        return True
    if predict_values is None or not all(
        hasattr(policy, name) for name in ("extract_features", "vf_features_extractor", "mlp_extractor", "value_net")
    ):
        return False
    return proofs_of(policy).serves(CRITIC_FEATURES, lambda: _values_mismatch(policy, observations))


def _values_mismatch(policy: ActorCriticPolicy, observations: PyTorchObs) -> str | None:
    """How the head on the critic's features differs from ``policy.predict_values`` on a probe (``None``: it does not)."""
    first = index_observations(observations, slice(0, PROBE_ROWS))
    with torch.no_grad():
        reference = upstream(lambda: policy.predict_values(first))
        features = policy.extract_features(first, policy.vf_features_extractor)
        values = policy.value_net(policy.mlp_extractor.forward_critic(features))  # type: ignore[arg-type]
    return relative_difference("the values", values, reference)


def plain_regression(layers: Sequence[nn.Module]) -> MLPRegression | None:
    """
    The hand-derived regression of the modules ``layers`` applied one after the other, or ``None`` when they are not a
    plain MLP (:func:`~.plain.plain_mlp`) of one output with its parameters of one dtype on one device.

    :param layers: the modules (``nn.Sequential`` containers are unrolled)
    """
    mlp = plain_mlp(layers)
    if mlp is None or mlp.linears[-1].out_features != 1:
        return None
    parameters = [p for linear in mlp.linears for p in linear.parameters()]
    if any(p.dtype != parameters[0].dtype or p.device != parameters[0].device for p in parameters):
        return None
    return MLPRegression(mlp.linears, mlp.activations)


def critic_head_regression(
    policy: ActorCriticPolicy, critic_parameters: Sequence[torch.nn.Parameter], inputs: torch.Tensor
) -> MLPRegression | None:
    """
    The hand-derived regression of ``policy``'s critic head (``mlp_extractor.forward_critic`` then ``value_net``) on
    ``inputs``, or ``None`` (then autograd): when the head is not SB3's plain MLP, does not hold exactly the parameters
    that move, or when the hand-derived gradient was disproved for this policy.

    :param policy: the actor-critic policy
    :param critic_parameters: the parameters the regression moves
    :param inputs: what the head is fed during the regression, one row per state
    """
    if type(policy.mlp_extractor).forward_critic is not MlpExtractor.forward_critic or inputs.dim() != 2:
        return None
    regression = plain_regression([policy.mlp_extractor.value_net, policy.value_net])
    if regression is None or {id(p) for p in regression.parameters() if p.requires_grad} != {id(p) for p in critic_parameters}:
        return None
    key = f"{inputs.device.type}, {inputs.dtype}"
    if not proofs_of(policy).serves(CRITIC_GRADIENT, lambda: _upstream_mismatch(policy, regression, inputs), key):
        return None
    return regression


def _upstream_mismatch(policy: ActorCriticPolicy, regression: MLPRegression, inputs: torch.Tensor) -> str | None:
    """
    How the hand-derived loss and gradient differ from autograd's through the policy's modules on the first
    :data:`PROBE_ROWS` inputs (``None``: they agree to rounding). The parameters' ``.grad`` are left as they were.

    :raises UpstreamFailed: when autograd's computation raises, or is not finite
    """
    probe = inputs[:PROBE_ROWS].detach()
    targets = torch.randn(probe.shape[0], generator=probe_generator(), dtype=probe.dtype).to(probe.device)
    trained = [p for p in regression.parameters() if p.requires_grad]
    saved = [p.grad for p in trained]
    try:
        hand_loss = regression.loss_and_gradients(probe, targets)
        hand_gradient = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in trained]
    finally:
        for parameter, grad in zip(trained, saved, strict=True):
            parameter.grad = grad

    def autograd_loss() -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        with torch.enable_grad():
            loss = F.mse_loss(policy.value_net(policy.mlp_extractor.forward_critic(probe)).flatten(), targets)
            return loss.detach(), torch.autograd.grad(loss, trained)

    loss, gradient = upstream(autograd_loss)
    return relative_difference("the loss", torch.tensor(hand_loss, dtype=loss.dtype), loss) or relative_difference(
        "the gradient", hand_gradient, list(gradient)
    )
