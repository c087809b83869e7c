"""
The graph's action outputs: ``predict(deterministic=True)``'s actions, and the distribution's parameters.

``predict`` takes the mode of the policy's action distribution (``get_actions(deterministic=True)``), reshapes it
to the action space's shape and, for Box spaces, maps it into the bounds: ``unscale_action``
(``low + 0.5 · (a + 1) · (high - low)``) when the policy squashes its actions (gSDE with ``squash_output``), else
``clip(a, low, high)``. :class:`ActionOutputs` does the same on tensors, in the same float32 operations. Discrete,
MultiDiscrete and MultiBinary actions come out as int64 (``predict`` returns MultiBinary's 0/1 as float32).

With ``stochastic=True`` the graph also returns what sampling outside needs (:func:`distribution_parameters`):

* Box: ``action_mean`` and ``action_std``, the Gaussian's parameters, flat ``(batch, n)``; a sample is
  ``mean + std · ε`` then, as ``predict`` does, ``clip`` (or ``tanh`` then ``unscale`` for squashed gSDE
  policies). For gSDE this is the per-step marginal ``N(μ(s), σ(s))`` with ``σ(s)² = (latent(s)²) · exp(log_std)²``,
  i.e. gSDE with its noise matrix drawn afresh at every step;
* Discrete, MultiDiscrete, MultiBinary: ``action_logits``; Categorical logits normalised (log-probabilities), per
  sub-action concatenated for MultiDiscrete (masked entries at about ``-1e8`` when the graph takes masks),
  Bernoulli logits for MultiBinary (two masked logits per action when masked, as sb3-contrib models it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution, StateDependentNoiseDistribution
from torch.distributions import Bernoulli, Categorical, Normal

from sb3_trpo_plugin.export.tensors import ExportError

ACTIONS = "actions"
ACTION_MEAN, ACTION_STD, ACTION_LOGITS = "action_mean", "action_std", "action_logits"


def torch_distributions(distribution: Distribution) -> list[torch.distributions.Distribution]:
    """
    The torch distributions an SB3 (or sb3-contrib) distribution holds for the batch, in the actions' order.

    :param distribution: the policy's action distribution, parameterised for the batch
    :return: one distribution, or one per sub-action (MultiDiscrete)
    """
    inner = getattr(distribution, "distributions", None) or getattr(distribution, "distribution", None)
    if inner is None:
        raise ExportError(f"{type(distribution).__name__} holds no torch distribution after proba_distribution()")
    return list(inner) if isinstance(inner, (list, tuple)) else [inner]


def distribution_parameters(distribution: Distribution) -> dict[str, torch.Tensor]:
    """
    :param distribution: the policy's action distribution, parameterised (and masked) for the batch
    :return: its parameters by output name, see the module's docstring
    """
    parts = torch_distributions(distribution)
    if len(parts) == 1 and isinstance(parts[0], Normal):
        return {ACTION_MEAN: parts[0].loc, ACTION_STD: parts[0].scale}
    logits = []
    for part in parts:
        if not isinstance(part, (Categorical, Bernoulli)):
            raise ExportError(f"the stochastic option does not know the parameters of {type(distribution).__name__}")
        logits.append(part.logits)
    return {ACTION_LOGITS: torch.cat(logits, dim=1)}


class ActionOutputs:
    """
    ``predict(deterministic=True)``'s actions from the policy's distribution, and its parameters.

    :param policy: the policy (its action space, ``squash_output``, ``action_dist``)
    :param stochastic: also output the distribution's parameters
    """

    def __init__(self, policy: Any, stochastic: bool) -> None:
        space = policy.action_space
        if not isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
            raise ExportError(f"actions of {space} cannot be exported (Box, Discrete, MultiDiscrete, MultiBinary can)")
        self.space = space
        self.shape = tuple(space.shape or ())
        self.squash = isinstance(space, spaces.Box) and bool(policy.squash_output)
        self.gsde = isinstance(policy.action_dist, StateDependentNoiseDistribution)
        if isinstance(space, spaces.Box):
            self.low, self.high = torch.as_tensor(space.low), torch.as_tensor(space.high)
            self.span = torch.as_tensor(space.high - space.low)  # NumPy's float32 subtraction, as unscale_action's
        self.stochastic = stochastic
        parameters = [ACTION_MEAN, ACTION_STD] if isinstance(space, spaces.Box) else [ACTION_LOGITS]
        #: The outputs, in the graph's order (their shapes are read off the traced module's outputs).
        self.names = [ACTIONS, *(parameters if stochastic else [])]

    def actions(self, distribution: Distribution) -> torch.Tensor:
        """
        :param distribution: the policy's action distribution for the batch
        :return: what ``predict(deterministic=True)`` returns for a batch
        """
        actions = distribution.get_actions(deterministic=True).reshape(-1, *self.shape)
        if not isinstance(self.space, spaces.Box):
            return actions.to(torch.int64)
        if self.squash:
            return self.low + 0.5 * (actions + 1.0) * self.span
        return torch.minimum(torch.maximum(actions, self.low), self.high)

    def outputs(self, distribution: Distribution) -> dict[str, torch.Tensor]:
        """:return: the action outputs by name (the actions, and the parameters when stochastic)"""
        found = {ACTIONS: self.actions(distribution)}
        if self.stochastic:
            found.update(distribution_parameters(distribution))
        return found

    def describe(self) -> dict[str, Any]:
        """:return: the action space, how ``predict`` maps the mode into it, and the outputs, as JSON"""
        space: dict[str, Any] = {"type": type(self.space).__name__, "shape": list(self.shape)}
        if isinstance(self.space, spaces.Box):
            space.update(low=self.space.low.tolist(), high=self.space.high.tolist())
        elif isinstance(self.space, spaces.Discrete):
            space.update(n=int(self.space.n))
        elif isinstance(self.space, spaces.MultiDiscrete):
            space.update(nvec=np.asarray(self.space.nvec).tolist())
        into_bounds = ("tanh then unscale" if self.squash else "clip") if isinstance(self.space, spaces.Box) else None
        return {"space": space, "into_bounds": into_bounds, "gsde": self.gsde, "stochastic": self.stochastic}
