"""
The lean rollout of :mod:`sb3_trpo_plugin.rollout` for sb3-contrib's maskable policies: the same loop, acting with masks.

sb3-contrib's ``MaskableActorCriticPolicy`` has the modules and the forward of SB3's ``ActorCriticPolicy``; only its
distributions differ. :class:`MaskedCategoricalHead` samples what they sample, with the same torch random calls on
tensors of the same shapes, so that a seed gives ``MaskablePPO``'s actions bit for bit. For each categorical
component (one for Discrete actions, one per dimension for MultiDiscrete and MultiBinary ones, which sb3-contrib
writes as two-way categoricals), sb3-contrib's ``MaskableCategorical`` holds:

* ``n₁ = l - logsumexp(l)``, torch's ``Categorical(logits=l)``;
* with masks ``m``: ``n₂ = w - logsumexp(w)`` with ``w = where(m, n₁, -1e8)`` (``apply_masking``); without masks:
  ``n₂ = n₁ - logsumexp(n₁)`` (the constructor's ``apply_masking(None)`` normalises once more);
* probabilities ``softmax(n₂)``, one draw as ``torch.multinomial`` makes it (components in order), and the
  log-probability of an action its entry of ``n₂`` (components summed by torch, as sb3-contrib sums them).

NaN logits (``n₁`` with a NaN) are what sb3-contrib's validation refuses: the step is then run again through the
policy's own forward, which raises its error. :func:`masked_lean_rollout` gives the loop its parts: the inference, the
environments' masks before each step (``get_action_masks``, as ``MaskablePPO``'s loop asks for them), a writer that
stores them in sb3-contrib's maskable buffers, and the batched values and log-probabilities under the stored masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer, MaskableRolloutBuffer
from sb3_contrib.common.maskable.distributions import (
    MaskableBernoulliDistribution,
    MaskableCategoricalDistribution,
    MaskableMultiCategoricalDistribution,
)
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from sb3_trpo_plugin.replicas.eligibility import unrecognised_reason
from sb3_trpo_plugin.replicas.heads import ActionHead, RowIndex, categorical_sample
from sb3_trpo_plugin.replicas.inference import PolicyInference, policy_inference
from sb3_trpo_plugin.rollout.algorithm import LeanRollout
from sb3_trpo_plugin.rollout.batched_outputs import callbacks_may_read_step_outputs, fill_values_and_log_probs
from sb3_trpo_plugin.rollout.buffer_writers import BufferWriter, direct_buffer_writer, rollout_buffer_writer

#: The logit sb3-contrib's ``MaskableCategorical`` gives an invalid action (finite: its probability is then exactly 0).
MASKED_LOGIT = -1e8

#: The error of sb3-contrib's loop for environments without ``action_masks()``.
NO_MASKS_MESSAGE = (
    "Environment does not support action masking (no action_masks() method): wrap it in "
    "sb3_contrib.common.wrappers.ActionMasker, or learn(..., use_masking=False)"
)


class MaskedCategoricalHead(ActionHead):
    """
    sb3-contrib's ``MaskableCategoricalDistribution`` (one component), ``MaskableMultiCategoricalDistribution`` and
    ``MaskableBernoulliDistribution`` (one component per action dimension), masks applied as ``apply_masking`` does.

    :param action_dims: the number of choices of each component
    :param one_component: Discrete actions (sampled as ``(n,)``, not stacked into ``(n, 1)``)
    """

    masks_actions = True

    def __init__(self, action_dims: Sequence[int], one_component: bool) -> None:
        self.action_dims = [int(n) for n in action_dims]
        self.one_component = one_component
        self.row_index = RowIndex()
        self._masked_logit: dict[torch.dtype, torch.Tensor] = {}

    def _masked_logit_of(self, dtype: torch.dtype) -> torch.Tensor:
        """``torch.tensor(-1e8, dtype=dtype)``, as ``apply_masking`` builds it (once per dtype here)."""
        value = self._masked_logit.get(dtype)
        if value is None:
            value = self._masked_logit[dtype] = torch.tensor(MASKED_LOGIT, dtype=dtype)
        return value

    def normalized_logits(self, logits: torch.Tensor, masks: np.ndarray | None) -> tuple[list[torch.Tensor], bool]:
        """
        Each component's ``n₂`` (see the module's documentation), and whether sb3-contrib accepts the logits.

        :param logits: ``(n, Σ action_dims)``, the output of ``action_net``
        :param masks: ``(n, Σ action_dims)``, true (non-zero) where an action is valid; ``None``: no masking
        :return: one ``(n, action_dims[i])`` tensor per component; ``False`` when some ``n₁`` holds a NaN
        """
        if self.one_component:
            parts: Sequence[torch.Tensor] = [logits.view(-1, self.action_dims[0])]
        else:
            parts = torch.split(logits.view(-1, sum(self.action_dims)), self.action_dims, dim=1)
        mask_parts: Sequence[torch.Tensor | None] = [None] * len(parts)
        if masks is not None:
            mask_tensor = torch.as_tensor(masks, dtype=torch.bool)
            if self.one_component:
                mask_parts = [mask_tensor.reshape(parts[0].shape)]
            else:
                mask_parts = torch.split(mask_tensor.reshape(-1, sum(self.action_dims)), self.action_dims, dim=1)
        normalized, valid = [], True
        for part, mask in zip(parts, mask_parts, strict=True):
            first = part - part.logsumexp(-1, True)
            valid = valid and not bool(np.isnan(first.numpy()).any())
            masked = (
                first if mask is None else torch.where(mask.reshape(first.shape), first, self._masked_logit_of(first.dtype))
            )
            normalized.append(masked - masked.logsumexp(-1, True))
        return normalized, valid

    def probe_masks(self, n_rows: int) -> np.ndarray:
        """
        Masks for the proof of the inference: in row ``i``, choice ``i mod n`` of each component of ``n > 1`` choices
        masked, so that the probe meets masked and unmasked choices and every row keeps a valid one.

        :param n_rows: the rows of the probe
        """
        parts = []
        for n in self.action_dims:
            part = np.ones((n_rows, n), dtype=bool)
            if n > 1:
                part[np.arange(n_rows), np.arange(n_rows) % n] = False
            parts.append(part)
        return np.concatenate(parts, axis=1)

    def _draw(self, logits: torch.Tensor, masks: np.ndarray | None) -> tuple[list[torch.Tensor], list[torch.Tensor], bool]:
        normalized, valid = self.normalized_logits(logits, masks)
        return normalized, [categorical_sample(part) for part in normalized], valid

    def sample(
        self, params: torch.Tensor, latent_pi: torch.Tensor, masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, bool]:
        """The actions alone, and whether the logits were valid."""
        _, samples, valid = self._draw(params, masks)
        actions = samples[0] if self.one_component else torch.stack(samples, dim=1)
        return actions.numpy(), valid

    def __call__(
        self, params: torch.Tensor, latent_pi: torch.Tensor, masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        normalized, samples, valid = self._draw(params, masks)
        if self.one_component:
            actions = samples[0].numpy()
            log_probs = self.row_index.gather(normalized[0], actions)
        else:
            actions = torch.stack(samples, dim=1).numpy()
            # MaskableMultiCategoricalDistribution.log_prob: each component's entry, stacked and summed by torch.
            per_part = [part.gather(-1, sample[:, None])[:, 0] for part, sample in zip(normalized, samples, strict=True)]
            log_probs = torch.stack(per_part, dim=1).sum(dim=1).numpy()
        if not valid:
            log_probs = np.full_like(log_probs, np.nan)  # sends the step to sb3-contrib's validation
        return actions, log_probs


def masked_head(policy: Any) -> ActionHead | None:
    """The head of a maskable policy's action distribution, or ``None`` for a distribution of another class."""
    distribution = policy.action_dist
    kind = type(distribution)
    if kind is MaskableCategoricalDistribution:
        return MaskedCategoricalHead([distribution.action_dim], one_component=True)
    if kind is MaskableMultiCategoricalDistribution or kind is MaskableBernoulliDistribution:
        return MaskedCategoricalHead(distribution.action_dims, one_component=False)
    return None


def masked_unrecognised_reason(policy: nn.Module) -> str | None:
    """
    Why the lean inference cannot replicate a maskable policy's forward exactly, or ``None`` when it can.

    :param policy: the algorithm's policy (sb3-contrib's ``MaskableActorCriticPolicy`` family)
    """
    return unrecognised_reason(policy, MaskableActorCriticPolicy, masked_head)


def masked_policy_inference(policy: nn.Module) -> PolicyInference | None:
    """
    The lean inference of a maskable policy (actions sampled with the step's masks), or ``None`` when it cannot be
    proved exact (see :func:`masked_unrecognised_reason`).

    :param policy: the algorithm's policy
    """
    return policy_inference(policy, MaskableActorCriticPolicy, masked_head)


def masked_buffer_writer(rollout_buffer: MaskableRolloutBuffer | MaskableDictRolloutBuffer) -> BufferWriter:
    """
    ``add`` of sb3-contrib's maskable buffers as direct writes: the step's masks (``(n_envs, mask_dims)``, kept as they
    are without masks), then SB3's fields (:func:`~sb3_trpo_plugin.rollout.buffer_writers.direct_buffer_writer`).

    :param rollout_buffer: a ``MaskableRolloutBuffer`` or ``MaskableDictRolloutBuffer``
    """
    write_sb3_fields = direct_buffer_writer(rollout_buffer)
    mask_shape = (rollout_buffer.n_envs, rollout_buffer.mask_dims)

    def add(
        obs: Any,
        actions: np.ndarray,
        rewards: np.ndarray,
        episode_starts: np.ndarray,
        values: Any,
        log_probs: Any,
        action_masks: np.ndarray | None,
    ) -> None:
        if action_masks is not None:
            rollout_buffer.action_masks[rollout_buffer.pos] = action_masks.reshape(mask_shape)
        write_sb3_fields(obs, actions, rewards, episode_starts, values, log_probs, None)

    return add


def masked_lean_rollout(
    policy: MaskableActorCriticPolicy,
    env: VecEnv,
    callback: BaseCallback,
    rollout_buffer: RolloutBuffer,
    use_masking: bool,
) -> LeanRollout | None:
    """
    The lean loop's parts for a rollout of a maskable policy, or ``None`` for sb3-contrib's loop (policy not recognised).

    :param policy: the algorithm's policy
    :param env: the training environment; with masking, it must expose ``action_masks()``
    :param callback: the rollout's callback (may it read the step's values and log-probabilities?)
    :param rollout_buffer: the buffer to fill
    :param use_masking: whether to act with the environments' masks (``learn(..., use_masking=...)``)
    """
    if use_masking and not is_masking_supported(env):
        raise ValueError(NO_MASKS_MESSAGE)
    inference = masked_policy_inference(policy)
    if inference is None:
        return None
    direct = type(rollout_buffer) in (MaskableRolloutBuffer, MaskableDictRolloutBuffer)
    batched = inference.acts_without_critic and direct and not callbacks_may_read_step_outputs(callback)

    def fill() -> None:
        masks = rollout_buffer.action_masks if use_masking else None  # type: ignore[attr-defined]
        fill_values_and_log_probs(policy, rollout_buffer, action_masks=masks)  # type: ignore[arg-type]

    return LeanRollout(
        inference,
        masked_buffer_writer(rollout_buffer) if direct else rollout_buffer_writer(rollout_buffer),  # type: ignore[arg-type]
        fill if batched else None,
        (lambda: get_action_masks(env)) if use_masking else None,
    )
