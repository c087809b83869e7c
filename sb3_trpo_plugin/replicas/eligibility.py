"""
Which policies the lean rollout inference replicates exactly: :func:`unrecognised_reason` says why one is not.

A policy is recognised when it is an instance of the replicated class (SB3's ``ActorCriticPolicy``, or a variant's:
sb3-contrib's ``MaskableActorCriticPolicy``, ``RecurrentActorCriticPolicy``) on the CPU, whose class overrides none of
the methods whose computation is replicated, with an action distribution that has a head (:mod:`.heads`), and whose
modules are all plain (:mod:`.plain`: no hooks, compiled modules, or methods replaced on an instance). Recognised, it
is still proved against its own ``forward`` before the inference first serves it (:mod:`.proofs`).
"""

from __future__ import annotations

from collections.abc import Sequence

from stable_baselines3.common.distributions import TanhBijector
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from sb3_trpo_plugin.replicas.heads import HeadFactory, sb3_head
from sb3_trpo_plugin.replicas.plain import global_hooks_registered, instance_overrides, not_plain_reason

#: The ``ActorCriticPolicy`` methods whose standard implementation :class:`~.inference.PolicyInference` replicates:
#: a policy class that overrides any of them computes something else, and keeps SB3's loop.
REPLICATED_METHODS = (
    "forward",
    "_predict",
    "get_distribution",
    "extract_features",
    "predict_values",
    "_get_action_dist_from_latent",
    "evaluate_actions",
)


def unrecognised_reason(
    policy: nn.Module,
    base: type[nn.Module] = ActorCriticPolicy,
    head_of: HeadFactory | None = None,
    methods: Sequence[str] = REPLICATED_METHODS,
) -> str | None:
    """
    Why :class:`~.inference.PolicyInference` cannot replicate ``policy``'s forward exactly, or ``None`` when it can.

    :param policy: the algorithm's policy
    :param base: the policy class whose forward is replicated (SB3's ``ActorCriticPolicy``; sb3-contrib's
        ``MaskableActorCriticPolicy`` has the same modules and the same forward, with masks)
    :param head_of: the heads of ``base``'s action distributions (default: SB3's five)
    :param methods: the methods of ``base`` whose computation is replicated (a subclass must not override them)
    :return: e.g. ``"MyPolicy overrides forward"``; ``None`` for a recognised policy
    """
    heads: HeadFactory = sb3_head if head_of is None else head_of
    if not isinstance(policy, base):
        return f"{type(policy).__name__} is not an {base.__name__}"
    if policy.device.type != "cpu":
        # Rollouts of small networks are bound by per-call overhead on the CPU; elsewhere SB3's loop is kept.
        return f"the policy is on {policy.device}, the lean inference runs on the CPU only"
    mro = type(policy).__mro__
    base_index = mro.index(base)
    if mro[base_index:] != base.__mro__:
        return f"{type(policy).__name__} mixes a class into {base.__name__}'s bases"
    for cls in mro[:base_index]:
        overridden = [name for name in methods if name in vars(cls)]
        if overridden:
            return f"{cls.__name__} overrides {', '.join(overridden)}"
    distribution = policy.action_dist
    if heads(policy) is None:
        return f"the action distribution {type(distribution).__name__} is not one the lean inference replicates"
    bijector = getattr(distribution, "bijector", None)
    if bijector is not None and type(bijector) is not TanhBijector:
        return f"the bijector {type(bijector).__name__} is not SB3's TanhBijector"
    for label, obj in (("the action distribution", distribution), ("the bijector", bijector)):
        if obj is not None and instance_overrides(obj):
            return f"{label} has methods replaced on the instance: {', '.join(instance_overrides(obj))}"
    if global_hooks_registered():
        return "a global module hook is registered"
    for name, module in policy.named_modules():
        reason = not_plain_reason(module)
        if reason is not None:
            return f"{f'module {name!r}' if name else 'the policy'} {reason}"
    return None
