"""
The sampling heads of the lean rollout inference: from the output of ``action_net`` to actions and their
log-probabilities, with SB3's random calls, in the same order, on tensors of the same shape, so that a seed gives bit
for bit SB3's actions:

* Categorical (and each part of a MultiCategorical, in order): the logits normalised by ``logsumexp``,
  their softmax, and one draw as ``torch.multinomial(probs, 1, True)`` makes it, ``argmax(probs / q)``
  with ``q = torch.empty_like(probs).exponential_()``, without multinomial's checks of ``probs``;
* Bernoulli: ``torch.bernoulli(torch.sigmoid(logits))``;
* diagonal Gaussian: ``mean + eps * exp(log_std)`` with ``eps = torch.empty(mean.shape).normal_()``
  (``Normal.rsample``); the product and the sum are IEEE-rounded alike in NumPy and torch;
* gSDE (with or without ``squash_output``): SB3's own ``get_std`` (once per version of ``log_std``), ``get_noise``'s
  products on the detached exploration matrices and ``TanhBijector`` (no random call: the matrices come from
  ``reset_noise``).

The log-probabilities are torch's formulas on the same elements, in the same order of operations (a categorical one
is a plain lookup of the normalised logits, which NumPy does at less cost). :func:`sb3_head` gives the head of SB3's
five action distributions; :mod:`sb3_trpo_plugin.masked.inference` adds sb3-contrib's masked ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    MultiCategoricalDistribution,
    StateDependentNoiseDistribution,
)
from stable_baselines3.common.policies import ActorCriticPolicy

#: ``log(sqrt(2π))``, the constant of ``torch.distributions.Normal.log_prob``.
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))

#: Up to this many values, a Python sum is cheaper than a NumPy reduction (the rows of one rollout step).
SMALL_ARRAY = 64


def has_nan(values: np.ndarray) -> bool:
    """
    Whether ``values`` holds a NaN; for a few values, a finite Python sum of them answers first (infinities alone
    are not NaN: the sum then leaves the verdict to NumPy).
    """
    if values.size <= SMALL_ARRAY and math.isfinite(sum(values.ravel().tolist())):
        return False
    return bool(np.isnan(values).any())


def categorical_sample(normalized_logits: torch.Tensor) -> torch.Tensor:
    """
    ``Categorical(logits=...).sample()`` from the normalised logits (``logits - logits.logsumexp(-1)``).

    ``torch.multinomial(probs, 1, True)`` computes its one sample as ``argmax(probs / q)`` with
    ``q = empty_like(probs).exponential_(1)`` (λ = 1, the default): the same random call on a tensor of the same shape gives
    the same sample. Its checks of ``probs`` (NaN, inf, negative, zero sum) are left out: invalid logits
    give NaN log-probabilities, which :class:`~.inference.PolicyInference` hands to SB3's own validation.

    :param normalized_logits: ``(n, k)``, the logits less their ``logsumexp`` over the last dimension
    :return: ``(n,)``, one category per row
    """
    probs = normalized_logits.softmax(-1)
    return (probs / torch.empty_like(probs).exponential_()).argmax(-1)


class RowIndex:
    """``np.arange(n)`` for the batch sizes seen so far (the row index of ``Categorical.log_prob``'s ``gather``)."""

    def __init__(self) -> None:
        self._rows: dict[int, np.ndarray] = {}

    def gather(self, values: torch.Tensor, indices: np.ndarray) -> np.ndarray:
        """``values[i, indices[i]]`` for every row ``i``, in NumPy."""
        n = len(indices)
        rows = self._rows.get(n)
        if rows is None:
            rows = self._rows[n] = np.arange(n)
        return values.numpy()[rows, indices]


class ActionHead:
    """
    A head: from the output of ``action_net`` (and the actor's latent) to actions and their log-probabilities.

    ``head(params, latent_pi, masks)`` returns both (NumPy); :meth:`sample` the actions alone, with whether the
    policy's distribution would have accepted its parameters (``False`` sends the step to the policy's own
    validation). ``masks`` are the step's action masks, for heads that mask (:attr:`masks_actions`; sb3-contrib's
    masked distributions, in :mod:`sb3_trpo_plugin.masked.inference`), else ``None``.
    """

    #: Whether the head samples with action masks (the inference refuses masks for a head that does not).
    masks_actions: bool = False

    def __call__(
        self, params: torch.Tensor, latent_pi: torch.Tensor, masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def sample(
        self, params: torch.Tensor, latent_pi: torch.Tensor, masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, bool]:
        """The actions, and whether the parameters were valid (here: the log-probabilities hold no NaN)."""
        actions, log_probs = self(params, latent_pi, masks)
        return actions, not has_nan(log_probs)

    def probe_masks(self, n_rows: int) -> np.ndarray | None:
        """
        Action masks for the proof of a masking head (:meth:`~.inference.PolicyInference.upstream_mismatch`): some
        actions masked in some rows, every row with a valid action; ``None`` for a head that does not mask.

        :param n_rows: the rows of the probe
        """
        return None


class _CategoricalHead(ActionHead):
    """Discrete actions: SB3's ``CategoricalDistribution``."""

    def __init__(self) -> None:
        self.row_index = RowIndex()
        self._draws = torch.empty(0)  # reused: exponential_ draws the same numbers into any tensor of the same layout

    def _draw(self, logits: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """The normalised logits, and ``probs / q`` (whose argmax is the sample)."""
        normalized = logits - logits.logsumexp(-1, True)  # Categorical(logits=...)
        probs = normalized.softmax(-1)
        if self._draws.shape != probs.shape or self._draws.dtype != probs.dtype:
            self._draws = torch.empty_like(probs)
        # categorical_sample's argmax(probs / q), in place
        return normalized, probs.div_(self._draws.exponential_()).numpy()

    def __call__(
        self, logits: torch.Tensor, latent_pi: torch.Tensor, masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        normalized, scores = self._draw(logits)
        # NumPy's argmax takes the first maximum (or NaN) as torch's does.
        actions = scores.argmax(-1)
        return actions, self.row_index.gather(normalized, actions)

    def sample(
        self, logits: torch.Tensor, latent_pi: torch.Tensor, masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, bool]:
        """The actions alone, and whether the probabilities were valid (NaN ones mean invalid logits)."""
        _, scores = self._draw(logits)
        return scores.argmax(-1), not has_nan(scores)


class _MultiCategoricalHead(ActionHead):
    """MultiDiscrete actions: SB3's ``MultiCategoricalDistribution``, one categorical per part, sampled in order."""

    def __init__(self, distribution: MultiCategoricalDistribution) -> None:
        self.action_dims = list(distribution.action_dims)

    def __call__(
        self, logits: torch.Tensor, latent_pi: torch.Tensor, masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        parts = [split - split.logsumexp(-1, True) for split in torch.split(logits, self.action_dims, dim=1)]
        actions = torch.stack([categorical_sample(part) for part in parts], dim=1)
        # MultiCategoricalDistribution.log_prob: each part's Categorical.log_prob (a gather), stacked and summed.
        per_part = [part.gather(-1, action[:, None])[:, 0] for part, action in zip(parts, actions.T, strict=True)]
        log_probs = torch.stack(per_part, dim=1)
        return actions.numpy(), log_probs.sum(dim=1).numpy()


class _BernoulliHead(ActionHead):
    """MultiBinary actions: SB3's ``BernoulliDistribution`` (``torch.bernoulli`` of the sigmoid of the logits)."""

    def __call__(
        self, logits: torch.Tensor, latent_pi: torch.Tensor, masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        actions = torch.bernoulli(torch.sigmoid(logits))
        log_probs = -F.binary_cross_entropy_with_logits(logits, actions, reduction="none").sum(dim=1)
        return actions.numpy(), log_probs.numpy()


class _DiagGaussianHead(ActionHead):
    """Box actions: SB3's ``DiagGaussianDistribution`` (``Normal(mean, exp(log_std)).rsample()`` and its ``log_prob``)."""

    def __init__(self, log_std: torch.Tensor) -> None:
        self.log_std = log_std
        self._version = -1  # of log_std when the quantities below were computed from it

    def _update_std(self) -> None:
        """The standard deviation and the log-density's terms that depend on it alone, computed by torch."""
        self._version = self.log_std._version  # changes in place (an optimiser step, load_state_dict) change it
        std = self.log_std.detach().exp()
        # Normal.log_prob's terms of scale = ones * std, elementwise: the same bits on every row, computed once.
        self._std, self._two_var, self._log_std = std.numpy(), (2 * std**2).numpy(), std.log().numpy()
        # A standard deviation that under- or overflows makes NumPy warn where torch is silent.
        self._degenerate = not (
            np.isfinite(self._log_std).all() and (self._two_var > 0).all() and np.isfinite(self._two_var).all()
        )

    def _noise(self, mean: torch.Tensor) -> np.ndarray:
        """Normal.rsample's draw, ``torch.empty(mean.shape).normal_()``: as randn_like, on a new tensor of the same layout."""
        if self.log_std._version != self._version:
            self._update_std()
        return (
            torch.randn_like(mean) if mean.is_contiguous() else torch.empty(mean.shape, dtype=mean.dtype).normal_()
        ).numpy()

    def __call__(
        self, mean: torch.Tensor, latent_pi: torch.Tensor, masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        noise = self._noise(mean)
        if self._degenerate:
            with np.errstate(all="ignore"):
                return self._sample(noise, mean)
        return self._sample(noise, mean)

    def sample(self, mean: torch.Tensor, latent_pi: torch.Tensor, masks: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
        """The actions alone, and whether the distribution was valid (finite means, a positive finite deviation)."""
        noise = self._noise(mean)
        if self._degenerate:
            with np.errstate(all="ignore"):
                return self._actions(noise, mean.numpy()), False
        actions = self._actions(noise, mean.numpy())
        return actions, not has_nan(actions)

    def _actions(self, noise: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """rsample's ``loc + eps * scale`` (``scale = ones * std``: ``eps * std``); IEEE-rounded alike in NumPy and torch."""
        actions = noise * self._std
        actions += mean
        return actions

    def _sample(self, noise: np.ndarray, mean: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        # IEEE elementwise operations round alike in NumPy and torch; the sum over the action dimensions stays torch's.
        mean_np = mean.numpy()
        actions = self._actions(noise, mean_np)
        # Normal.log_prob, -((a - mean)²) / (2 std²) - log(std) - log(√(2π)), in torch's order of operations.
        deviations = actions - mean_np
        terms = -(deviations * deviations) / self._two_var - self._log_std - np.float32(_LOG_SQRT_2PI)
        return actions, torch.from_numpy(terms).sum(dim=1).numpy()


class _StateDependentNoiseHead(ActionHead):
    """
    Box actions with gSDE: SB3's ``StateDependentNoiseDistribution`` (``learn_features=False``), on the same tensors.

    ``get_std(log_std) ** 2`` is computed once per version of ``log_std`` (it changes in place); the noise is
    ``get_noise``'s product with the current exploration matrices, detached (the features are detached too), so the
    step records no graph; the log-density's IEEE elementwise terms run in NumPy, as for the plain Gaussian.
    """

    def __init__(self, distribution: StateDependentNoiseDistribution, log_std: torch.Tensor) -> None:
        self.distribution = distribution
        self.log_std = log_std
        self._version = -1  # of log_std when the squared standard deviations were computed from it
        self._std_squared = torch.empty(0)
        self._finite_std = True

    def _update_std(self) -> None:
        with torch.no_grad():
            self._std_squared = self.distribution.get_std(self.log_std) ** 2
        self._version = self.log_std._version
        self._finite_std = bool(torch.isfinite(self._std_squared).all())

    def sample(self, mean: torch.Tensor, latent_pi: torch.Tensor, masks: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
        """
        The actions alone (their standard deviations are not needed: the noise comes from the exploration matrices),
        and whether the distribution was valid (finite means and standard deviations).
        """
        if self.log_std._version != self._version:
            self._update_std()
        actions = mean + self._noise(latent_pi)
        if self.distribution.bijector is not None:
            actions = self.distribution.bijector.forward(actions)
        actions_np = actions.numpy()
        return actions_np, self._finite_std and not has_nan(actions_np)

    def __call__(
        self, mean: torch.Tensor, latent_pi: torch.Tensor, masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        distribution = self.distribution
        if self.log_std._version != self._version:
            self._update_std()
        # proba_distribution: the standard deviation of each action, from the features (torch's kernels: its sqrt and
        # log are not NumPy's to the last bit)
        scale = torch.sqrt(torch.mm(latent_pi**2, self._std_squared) + distribution.epsilon)
        scales = scale.numpy(), scale.log().numpy()
        actions = mean + self._noise(latent_pi)
        if distribution.bijector is not None:
            actions = distribution.bijector.forward(actions)
            gaussian_actions = distribution.bijector.inverse(actions)
            log_probs = torch.from_numpy(self._log_density(gaussian_actions.numpy(), mean.numpy(), *scales)).sum(dim=1)
            log_probs -= torch.sum(distribution.bijector.log_prob_correction(gaussian_actions), dim=1)
            return actions.numpy(), log_probs.numpy()
        actions_np = actions.numpy()
        return actions_np, torch.from_numpy(self._log_density(actions_np, mean.numpy(), *scales)).sum(dim=1).numpy()

    def _noise(self, latent_sde: torch.Tensor) -> torch.Tensor:
        """``get_noise``: one exploration matrix for a single state or a batch of another size, else one per state."""
        matrices = self.distribution.exploration_matrices
        if len(latent_sde) == 1 or len(latent_sde) != len(matrices):
            return torch.mm(latent_sde, self.distribution.exploration_mat.detach())
        return torch.bmm(latent_sde.unsqueeze(dim=1), matrices.detach()).squeeze(dim=1)

    @staticmethod
    def _log_density(value: np.ndarray, loc: np.ndarray, scale: np.ndarray, log_scale: np.ndarray) -> np.ndarray:
        """``Normal(loc, scale).log_prob(value)`` elementwise: its IEEE operations in torch's order, ``log(scale)`` given."""
        deviations = value - loc
        return -(deviations * deviations) / (2 * (scale * scale)) - log_scale - np.float32(_LOG_SQRT_2PI)


def sb3_head(policy: ActorCriticPolicy) -> ActionHead | None:
    """The head for the policy's action distribution, or ``None`` for a distribution of another class."""
    distribution = policy.action_dist
    kind = type(distribution)
    if kind is CategoricalDistribution:
        return _CategoricalHead()
    if kind is MultiCategoricalDistribution:
        return _MultiCategoricalHead(distribution)  # type: ignore[arg-type]
    if kind is BernoulliDistribution:
        return _BernoulliHead()
    if kind is DiagGaussianDistribution:
        return _DiagGaussianHead(policy.log_std)
    if kind is StateDependentNoiseDistribution and not distribution.learn_features:  # type: ignore[attr-defined]
        return _StateDependentNoiseHead(distribution, policy.log_std)  # type: ignore[arg-type]
    return None


#: The head of a policy's action distribution, or ``None`` for a distribution the head factory does not know.
HeadFactory = Callable[[Any], "ActionHead | None"]
