"""
One inference per rollout step for SB3's standard actor-critic policies: what ``policy(obs_tensor)`` returns,
without ``nn.Module.__call__`` and without building ``torch.distributions`` objects.

SB3's ``ActorCriticPolicy.forward`` runs the features extractor and the MLP extractor through
``nn.Module.__call__``, then builds an SB3 distribution and a torch distribution (validating its
arguments), samples, and validates the sample again in ``log_prob``. :class:`PolicyInference` makes the
same calls to the same kernels on the modules' own parameters (``nn.Linear`` as the ``addmm`` that
``F.linear`` calls, activations as ``torch.tanh`` / ``torch.relu``, modules of other types through their
``forward``), and samples with the same torch random calls, in the same order and on tensors of the same
shape, so that a seed gives bit for bit SB3's actions:

* Categorical (and each part of a MultiCategorical, in order): the logits normalised by ``logsumexp``,
  their softmax, and one draw as ``torch.multinomial(probs, 1, True)`` makes it, ``argmax(probs / q)``
  with ``q = torch.empty_like(probs).exponential_()``, without multinomial's checks of ``probs``;
* Bernoulli: ``torch.bernoulli(torch.sigmoid(logits))``;
* diagonal Gaussian: ``mean + eps * exp(log_std)`` with ``eps = torch.empty(mean.shape).normal_()``
  (``Normal.rsample``); the product and the sum are IEEE-rounded alike in NumPy and torch;
* gSDE (with or without ``squash_output``): SB3's own ``get_std`` (once per version of ``log_std``), ``get_noise``'s
  products on the detached exploration matrices and ``TanhBijector`` (no random call: the matrices come from
  ``reset_noise``).

:meth:`PolicyInference.actions` samples the actions alone (the same actions from the same random calls), for the
loop that computes values and log-probabilities for a whole rollout at once (:mod:`.batched_outputs`).

When called (:meth:`PolicyInference.__call__`), the values and the log-probabilities are SB3's bit for bit too: the
critic runs the same kernels, and the log-probabilities are torch's formulas on the same elements, in the same order
of operations (a categorical one is a plain lookup of the normalised logits, which NumPy does at less cost). So a
rollout fills the buffer exactly as SB3's loop would, and training from it takes exactly the same steps.

Argument validation: where SB3's distributions would reject their parameters (NaN logits or means, a
standard deviation of 0), the lean computation gives a NaN log-probability (or, sampling alone, NaN
probabilities or actions) or a torch error; the step is then run again through the policy's own ``forward`` on a
copy of the generator state, so that SB3's error is the one raised; when SB3 raises none, the lean results stand
(they are what SB3 computes).

:func:`policy_inference` recognises a policy, or returns ``None`` (the caller then uses SB3's loop;
:func:`unrecognised_reason` says why): an ``ActorCriticPolicy`` on the CPU (``MlpPolicy``, ``CnnPolicy``,
``MultiInputPolicy``) whose class does not override how actions, values or features are computed, with
one of SB3's five action distributions, and without hooks (on a module, or global), compiled modules, or
methods replaced on an instance. Both take the policy class and the heads of its distributions as parameters:
:mod:`sb3_trpo_plugin.masked.inference` passes sb3-contrib's ``MaskableActorCriticPolicy`` (the same modules and
forward) and heads (:class:`ActionHead` subclasses) that sample with the step's action masks. The inference is built
at the start of each rollout: the modules and their parameters are looked up then (changes in place are seen;
parameters replaced during a rollout are not).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    MultiCategoricalDistribution,
    StateDependentNoiseDistribution,
    TanhBijector,
)
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import is_image_space, preprocess_obs
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor, MlpExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.common.utils import obs_as_tensor
from torch import nn
from torch.nn.modules import module as torch_module

from sb3_trpo_plugin.rollout.checks import SMALL_ARRAY

Layer = Callable[[Any], Any]

#: The ``ActorCriticPolicy`` methods whose standard implementation :class:`PolicyInference` replicates:
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

#: ``log(sqrt(2π))``, the constant of ``torch.distributions.Normal.log_prob``.
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))

#: Module-level hook registries of ``torch.nn.Module`` (global hooks run inside every ``__call__``).
_GLOBAL_HOOK_REGISTRIES = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


def _chain(layers: Sequence[Layer]) -> Layer:
    """The composition of ``layers``, applied first to last (a single layer is returned as it is)."""
    if len(layers) == 1:
        return layers[0]

    def run(x: Any) -> Any:
        for layer in layers:
            x = layer(x)
        return x

    return run


def _linear(module: nn.Linear) -> Layer:
    # Detached views of the module's own parameters: updates in place are seen, and no autograd graph is recorded.
    weight = module.weight.detach()
    if module.bias is None:
        return lambda x: F.linear(x, weight)
    bias, weight_t = module.bias.detach(), weight.t()
    # F.linear computes a batch of vectors with bias as addmm(bias, x, weightᵀ): the same call, without the detour.
    return lambda x: torch.addmm(bias, x, weight_t) if x.dim() == 2 else F.linear(x, weight, bias)


def _conv2d(module: nn.Conv2d) -> Layer:
    # Conv2d.forward with zero padding: F.conv2d on the module's parameters and settings (detached, as in _linear).
    weight = module.weight.detach()
    bias = None if module.bias is None else module.bias.detach()
    stride, padding, dilation, groups = module.stride, module.padding, module.dilation, module.groups
    return lambda x: F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _flatten(module: nn.Flatten) -> Layer:
    start_dim, end_dim = module.start_dim, module.end_dim
    if (start_dim, end_dim) == (1, -1):
        # torch returns a tensor of two dimensions as it is (e.g. a batch of vector observations): skip the call.
        return lambda x: x if x.dim() == 2 else x.flatten(1, -1)
    return lambda x: x.flatten(start_dim, end_dim)


def torch_layers(module: nn.Module) -> list[Layer]:
    """
    The calls that ``module(x)`` makes, in order, without ``nn.Module.__call__``.

    ``nn.Sequential`` is unrolled; ``nn.Linear``, ``nn.Tanh``, ``nn.ReLU``, ``nn.Flatten`` and ``nn.Identity``
    become the ``torch`` calls their ``forward`` makes; any other module is its own ``forward``, which is
    what ``__call__`` runs when the module has no hooks (the caller checks that).

    :param module: a module without hooks
    :return: functions of one tensor, to apply first to last
    """
    # Exact types: a subclass may compute something else in its forward.
    if type(module) is nn.Sequential:
        return [layer for child in module for layer in torch_layers(child)]
    if type(module) is nn.Linear:
        return [_linear(module)]
    if type(module) is nn.Conv2d and module.padding_mode == "zeros":
        return [_conv2d(module)]
    if type(module) is nn.Tanh:
        return [torch.tanh]
    if type(module) is nn.ReLU and not module.inplace:
        return [torch.relu]
    if type(module) is nn.Flatten:
        return [_flatten(module)]
    if type(module) is nn.Identity:
        return []
    return [module.forward]


#: Modules that :func:`torch_layers` and :func:`_features_extractor` turn into calls on detached parameters.
_WRITTEN_OUT = (nn.Sequential, nn.Linear, nn.Tanh, nn.Flatten, nn.Identity, MlpExtractor, FlattenExtractor, NatureCNN)


def _runs_without_graph(policy: ActorCriticPolicy) -> bool:
    """
    Whether every module of ``policy`` is written out on detached parameters (so its inference records no
    autograd graph even outside ``torch.no_grad()``); a module run through its own ``forward`` uses its parameters.
    """
    for module in policy.modules():
        if module is policy or type(module) in _WRITTEN_OUT or (type(module) is nn.ReLU and not module.inplace):
            continue
        if type(module) is nn.Conv2d and module.padding_mode == "zeros":
            continue
        if type(module) is CombinedExtractor:
            continue
        return False
    return True


def _preprocessor(space: spaces.Space, normalize_images: bool) -> Layer:
    """SB3's ``preprocess_obs`` for ``space``, its branch chosen once (the Box branches written out)."""
    if isinstance(space, spaces.Dict):
        parts = {key: _preprocessor(subspace, normalize_images) for key, subspace in space.spaces.items()}
        return lambda obs: {key: parts[key](value) for key, value in obs.items()}
    if isinstance(space, spaces.Box):
        if normalize_images and is_image_space(space):
            return lambda obs: obs.float() / 255.0
        # Tensor.float() returns a float32 tensor as it is: skip the call then.
        return lambda obs: obs if obs.dtype is torch.float32 else obs.float()
    return lambda obs: preprocess_obs(obs, space, normalize_images=normalize_images)


def _features_extractor(module: nn.Module) -> Layer:
    """``module(preprocessed_obs)`` for SB3's features extractors written out, or the module's own ``forward``."""
    if type(module) is FlattenExtractor:
        return _chain(torch_layers(module.flatten))
    if type(module) is NatureCNN:
        return _chain([*torch_layers(module.cnn), *torch_layers(module.linear)])
    if type(module) is CombinedExtractor:
        extractors = {key: _chain(torch_layers(extractor)) for key, extractor in module.extractors.items()}
        return lambda obs: torch.cat([extractor(obs[key]) for key, extractor in extractors.items()], dim=1)
    return module.forward


def _has_nan(values: np.ndarray) -> bool:
    """
    Whether ``values`` holds a NaN; for a few values, a finite Python sum of them answers first (infinities alone
    are not NaN: the sum then leaves the verdict to NumPy).
    """
    if values.size <= SMALL_ARRAY and math.isfinite(sum(values.ravel().tolist())):
        return False
    return bool(np.isnan(values).any())


def _only_flattens(extractor: nn.Module) -> bool:
    """Whether a features extractor only flattens (SB3's ``FlattenExtractor``, or a ``CombinedExtractor`` of flattenings)."""
    if type(extractor) is FlattenExtractor:
        return True
    if type(extractor) is CombinedExtractor:
        return all(type(part) is nn.Flatten for part in extractor.extractors.values())
    return False


def categorical_sample(normalized_logits: torch.Tensor) -> torch.Tensor:
    """
    ``Categorical(logits=...).sample()`` from the normalised logits (``logits - logits.logsumexp(-1)``).

    ``torch.multinomial(probs, 1, True)`` computes its one sample as ``argmax(probs / q)`` with
    ``q = empty_like(probs).exponential_(1)`` (λ = 1, the default): the same random call on a tensor of the same shape gives
    the same sample. Its checks of ``probs`` (NaN, inf, negative, zero sum) are left out: invalid logits
    give NaN log-probabilities, which :class:`PolicyInference` hands to SB3's own validation.

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
        return actions, not _has_nan(log_probs)


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
        return scores.argmax(-1), not _has_nan(scores)


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
        return actions, not _has_nan(actions)

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
        return actions_np, self._finite_std and not _has_nan(actions_np)

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


def _head(policy: ActorCriticPolicy) -> ActionHead | None:
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


def unrecognised_reason(
    policy: nn.Module,
    base: type[nn.Module] = ActorCriticPolicy,
    head_of: HeadFactory | None = None,
    methods: Sequence[str] = REPLICATED_METHODS,
) -> str | None:
    """
    Why :class:`PolicyInference` cannot replicate ``policy``'s forward exactly, or ``None`` when it can.

    :param policy: the algorithm's policy
    :param base: the policy class whose forward is replicated (SB3's ``ActorCriticPolicy``; sb3-contrib's
        ``MaskableActorCriticPolicy`` has the same modules and the same forward, with masks)
    :param head_of: the heads of ``base``'s action distributions (default: SB3's five)
    :param methods: the methods of ``base`` whose computation is replicated (a subclass must not override them)
    :return: e.g. ``"MyPolicy overrides forward"``; ``None`` for a recognised policy
    """
    heads: HeadFactory = _head if head_of is None else head_of
    if not isinstance(policy, base):
        return f"{type(policy).__name__} is not an {base.__name__}"
    if policy.device.type != "cpu":  # type: ignore[attr-defined]
        # Rollouts of small networks are bound by per-call overhead on the CPU; elsewhere SB3's loop is kept.
        return f"the policy is on {policy.device}, the lean inference runs on the CPU only"  # type: ignore[attr-defined]
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
        if obj is not None and _instance_overrides(obj):
            return f"{label} has methods replaced on the instance: {', '.join(_instance_overrides(obj))}"
    if any(getattr(torch_module, name, None) for name in _GLOBAL_HOOK_REGISTRIES):
        return "a global module hook is registered"
    for name, module in policy.named_modules():
        label = f"module {name!r}" if name else "the policy"
        if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks:
            return f"{label} has hooks"
        if type(module).__call__ is not nn.Module.__call__ or getattr(module, "_compiled_call_impl", None) is not None:
            return f"{label} is called another way than through its forward (compiled, or __call__ overridden)"
        if _instance_overrides(module):
            return f"{label} has methods replaced on the instance: {', '.join(_instance_overrides(module))}"
    return None


def _instance_overrides(obj: object) -> list[str]:
    """The methods of ``obj``'s class that ``obj`` shadows with an instance attribute (e.g. ``module.forward = f``)."""
    return [name for name, value in vars(obj).items() if callable(value) and callable(getattr(type(obj), name, None))]


def obs_as_cpu_tensor(obs: np.ndarray | dict[str, np.ndarray]) -> PyTorchObs:
    """
    SB3's ``obs_as_tensor(obs, "cpu")``: for NumPy arrays ``torch.from_numpy`` makes the same tensor (sharing the
    array's memory, as ``torch.as_tensor`` does on the CPU) at a fraction of ``as_tensor``'s cost.

    :param obs: the observations of a VecEnv, an array or a dict of arrays (Dict spaces)
    """
    if type(obs) is np.ndarray:
        return torch.from_numpy(obs)
    if isinstance(obs, dict):
        return {
            key: torch.from_numpy(value) if type(value) is np.ndarray else torch.as_tensor(value) for key, value in obs.items()
        }
    return obs_as_tensor(obs, torch.device("cpu"))


def policy_inference(
    policy: nn.Module,
    base: type[nn.Module] = ActorCriticPolicy,
    head_of: HeadFactory | None = None,
    methods: Sequence[str] = REPLICATED_METHODS,
) -> PolicyInference | None:
    """
    The lean inference of ``policy``, or ``None`` when it cannot be proved exact (see :func:`unrecognised_reason`).

    Build it at the start of each rollout: hooks, the policy's modules and its parameters are looked up then.

    :param policy: the algorithm's policy
    :param base: the policy class whose forward is replicated (see :func:`unrecognised_reason`)
    :param head_of: the heads of ``base``'s action distributions (default: SB3's five)
    :param methods: the methods of ``base`` whose computation is replicated (see :func:`unrecognised_reason`)
    """
    heads: HeadFactory = _head if head_of is None else head_of
    if unrecognised_reason(policy, base, heads, methods) is not None:
        return None
    head = heads(policy)
    assert head is not None, "unrecognised_reason() checked it"
    return PolicyInference(policy, head)  # type: ignore[arg-type]


class PolicyInference:
    """
    ``policy(obs_tensor)`` of a recognised ``ActorCriticPolicy``, bit for bit: actions, values and log-probabilities
    (see the module's documentation). Build it with :func:`policy_inference`. With a masking head, ``policy(obs_tensor,
    action_masks=masks)`` of sb3-contrib's ``MaskableActorCriticPolicy`` (:mod:`sb3_trpo_plugin.masked.inference`).

    :param policy: a policy for which :func:`unrecognised_reason` is ``None``
    :param head: the head of its action distribution
    """

    def __init__(self, policy: ActorCriticPolicy, head: ActionHead) -> None:
        self.policy = policy
        self.preprocess = _preprocessor(policy.observation_space, policy.normalize_images)
        self.share_features_extractor = policy.share_features_extractor
        self.pi_features = _features_extractor(policy.pi_features_extractor)
        self.vf_features = _features_extractor(policy.vf_features_extractor)
        mlp_extractor = policy.mlp_extractor
        self.mlp_extractor_is_standard = type(mlp_extractor) is MlpExtractor
        if self.mlp_extractor_is_standard:
            self.actor_latent = _chain(torch_layers(mlp_extractor.policy_net))
            self.critic_latent = _chain(torch_layers(mlp_extractor.value_net))
        else:
            self.actor_latent, self.critic_latent = mlp_extractor.forward_actor, mlp_extractor.forward_critic
        self.value_net = _chain(torch_layers(policy.value_net))
        self.action_net = _chain(torch_layers(policy.action_net))
        self.head = head
        self.action_shape = (-1, *policy.action_space.shape)  # type: ignore[misc]
        self.runs_without_graph = _runs_without_graph(policy)
        #: Whether :meth:`actions` may run the actor alone: the critic's modules have no effect on the actions or on
        #: the random stream, and features are only flattened, so that recomputing them for a whole rollout is cheap.
        self.acts_without_critic = self.mlp_extractor_is_standard and all(
            _only_flattens(extractor) for extractor in (policy.pi_features_extractor, policy.vf_features_extractor)
        )

    def __call__(
        self, obs_tensor: PyTorchObs, action_masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """
        Sample actions for a batch of observations, with their values and log-probabilities.

        :param obs_tensor: the observations as tensors (``obs_as_tensor`` of the environment's observations)
        :param action_masks: the step's action masks (a masking head only; ``None``: no masking)
        :return: what SB3's loop makes of ``policy(obs_tensor)``: the actions as a NumPy array of shape
            ``(n, *action_space.shape)``, the values ``(n, 1)`` and the log-probabilities ``(n,)`` as CPU tensors
        """
        if action_masks is not None and not self.head.masks_actions:
            raise ValueError(f"{type(self.policy).__name__} does not take action masks")
        try:
            if self.runs_without_graph:
                actions, values, log_probs = self._infer(obs_tensor, action_masks)
            else:
                with torch.no_grad():
                    actions, values, log_probs = self._infer(obs_tensor, action_masks)
        except RuntimeError:
            self._raise_sb3_error(obs_tensor, action_masks)  # SB3's error if its validation refuses these parameters
            raise
        if np.isnan(log_probs).any():
            # NaN distribution parameters, or a standard deviation of 0: SB3's validation may refuse them.
            self._raise_sb3_error(obs_tensor, action_masks)
        return actions.reshape(self.action_shape), values, torch.from_numpy(log_probs)

    def actions(self, obs_tensor: PyTorchObs, action_masks: np.ndarray | None = None) -> np.ndarray:
        """
        Sample actions alone: the actor's part of :meth:`__call__`, the same actions from the same random calls, for
        policies with :attr:`acts_without_critic` (the caller computes values and log-probabilities later, batched).

        :param obs_tensor: the observations as tensors
        :param action_masks: the step's action masks (a masking head only; ``None``: no masking)
        :return: the actions as a NumPy array of shape ``(n, *action_space.shape)``
        """
        if action_masks is not None and not self.head.masks_actions:
            raise ValueError(f"{type(self.policy).__name__} does not take action masks")
        try:
            if self.runs_without_graph:
                actions, valid = self._sample(obs_tensor, action_masks)
            else:
                with torch.no_grad():
                    actions, valid = self._sample(obs_tensor, action_masks)
        except RuntimeError:
            self._raise_sb3_error(obs_tensor, action_masks)
            raise
        if not valid:
            self._raise_sb3_error(obs_tensor, action_masks)
        return actions.reshape(self.action_shape)

    def _sample(self, obs_tensor: PyTorchObs, action_masks: np.ndarray | None) -> tuple[np.ndarray, bool]:
        """The actor's part of ``ActorCriticPolicy.forward``: features, the actor's latent, the actions."""
        latent_pi = self.actor_latent(self.pi_features(self.preprocess(obs_tensor)))
        return self.head.sample(self.action_net(latent_pi), latent_pi, action_masks)

    def _infer(self, obs_tensor: PyTorchObs, action_masks: np.ndarray | None) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
        """``ActorCriticPolicy.forward``: features, latents, values, then the actions."""
        preprocessed = self.preprocess(obs_tensor)
        pi_features = self.pi_features(preprocessed)
        vf_features = pi_features if self.share_features_extractor else self.vf_features(preprocessed)
        # SB3's order of calls: a module of unknown type may draw random numbers.
        if self.mlp_extractor_is_standard or not self.share_features_extractor:
            latent_pi, latent_vf = self.actor_latent(pi_features), self.critic_latent(vf_features)
        else:
            latent_pi, latent_vf = self.policy.mlp_extractor.forward(pi_features)
        values = self.value_net(latent_vf)
        actions, log_probs = self.head(self.action_net(latent_pi), latent_pi, action_masks)
        return actions, values, log_probs

    def _raise_sb3_error(self, obs_tensor: PyTorchObs, action_masks: np.ndarray | None) -> None:
        """Run the policy's own ``forward`` (which validates its distributions) on a copy of the generator state."""
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            if action_masks is None:
                self.policy(obs_tensor)
            else:
                self.policy(obs_tensor, action_masks=action_masks)  # type: ignore[call-arg]
