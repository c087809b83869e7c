"""
One inference per rollout step for SB3's standard actor-critic policies: what ``policy(obs_tensor)`` returns,
without ``nn.Module.__call__`` and without building ``torch.distributions`` objects.

SB3's ``ActorCriticPolicy.forward`` runs the features extractor and the MLP extractor through
``nn.Module.__call__``, then builds an SB3 distribution and a torch distribution (validating its
arguments), samples, and validates the sample again in ``log_prob``. :class:`PolicyInference` makes the
same calls to the same kernels on the modules' own parameters (:mod:`.layers`), and samples with the same torch
random calls, in the same order and on tensors of the same shape (:mod:`.heads`), so that a seed gives bit for bit
SB3's actions. :meth:`PolicyInference.actions` samples the actions alone (the same actions from the same random
calls), for the loop that computes values and log-probabilities for a whole rollout at once
(:mod:`sb3_trpo_plugin.rollout.batched_outputs`).

When called (:meth:`PolicyInference.__call__`), the values and the log-probabilities are SB3's bit for bit too: the
critic runs the same kernels, and the log-probabilities are torch's formulas on the same elements, in the same order
of operations. So a rollout fills the buffer exactly as SB3's loop would, and training from it takes exactly the same
steps.

Argument validation: where SB3's distributions would reject their parameters (NaN logits or means, a
standard deviation of 0), the lean computation gives a NaN log-probability (or, sampling alone, NaN
probabilities or actions) or a torch error; the step is then run again through the policy's own ``forward`` on a
copy of the generator state, so that SB3's error is the one raised; when SB3 raises none, the lean results stand
(they are what SB3 computes).

:func:`policy_inference` recognises a policy (:mod:`.eligibility`), or returns ``None`` (the caller then uses SB3's
loop). Recognised is not proved: before the inference first serves a policy, the rollout loop proves it against the
policy's own ``forward`` on the rollout's first observations (:meth:`PolicyInference.upstream_mismatch`, under
:data:`LEAN_INFERENCE` in the policy's :func:`~.proofs.proofs_of`). Both take the policy class and the heads of its
distributions as parameters: :mod:`sb3_trpo_plugin.masked.inference` passes sb3-contrib's ``MaskableActorCriticPolicy``
(the same modules and forward) and heads that sample with the step's action masks. The inference is built at the
start of each rollout: the modules and their parameters are looked up then (changes in place are seen; parameters
replaced during a rollout are not).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import MlpExtractor
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from sb3_trpo_plugin.replicas.eligibility import REPLICATED_METHODS, unrecognised_reason
from sb3_trpo_plugin.replicas.heads import ActionHead, HeadFactory, sb3_head
from sb3_trpo_plugin.replicas.layers import (
    chain,
    features_extractor,
    only_flattens,
    preprocessor,
    runs_without_graph,
    torch_layers,
)
from sb3_trpo_plugin.replicas.proofs import FastPath, array_difference, proofs_of, state_restored, upstream

#: The lean rollout inference, as its proofs and warnings name it.
LEAN_INFERENCE = FastPath("the lean rollout inference", "the policy's own forward in SB3's rollout loop")


def policy_inference(
    policy: nn.Module,
    base: type[nn.Module] = ActorCriticPolicy,
    head_of: HeadFactory | None = None,
    methods: Sequence[str] = REPLICATED_METHODS,
) -> PolicyInference | None:
    """
    The lean inference of ``policy``, or ``None`` when it cannot be proved exact (see :func:`unrecognised_reason`) or
    was disproved (:meth:`PolicyInference.upstream_mismatch`; building it failed, which counts as disproved).

    Build it at the start of each rollout: hooks, the policy's modules and its parameters are looked up then.

    :param policy: the algorithm's policy
    :param base: the policy class whose forward is replicated (see :func:`unrecognised_reason`)
    :param head_of: the heads of ``base``'s action distributions (default: SB3's five)
    :param methods: the methods of ``base`` whose computation is replicated (see :func:`unrecognised_reason`)
    """
    heads: HeadFactory = sb3_head if head_of is None else head_of
    proofs = proofs_of(policy)
    if proofs.verdict(LEAN_INFERENCE) is False or unrecognised_reason(policy, base, heads, methods) is not None:
        return None
    head = heads(policy)
    assert head is not None, "unrecognised_reason() checked it"
    try:
        return PolicyInference(policy, head)  # type: ignore[arg-type]
    except Exception as error:  # e.g. an attribute of SB3's modules that this release does not have
        proofs.refuse(LEAN_INFERENCE, f"building it raised {type(error).__name__}: {error}")
        return None


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
        self.preprocess = preprocessor(policy.observation_space, policy.normalize_images)
        self.share_features_extractor = policy.share_features_extractor
        self.pi_features = features_extractor(policy.pi_features_extractor)
        self.vf_features = features_extractor(policy.vf_features_extractor)
        mlp_extractor = policy.mlp_extractor
        self.mlp_extractor_is_standard = type(mlp_extractor) is MlpExtractor
        if self.mlp_extractor_is_standard:
            self.actor_latent = chain(torch_layers(mlp_extractor.policy_net))
            self.critic_latent = chain(torch_layers(mlp_extractor.value_net))
        else:
            self.actor_latent, self.critic_latent = mlp_extractor.forward_actor, mlp_extractor.forward_critic
        self.value_net = chain(torch_layers(policy.value_net))
        self.action_net = chain(torch_layers(policy.action_net))
        self.head = head
        self.action_shape = (-1, *policy.action_space.shape)  # type: ignore[misc]
        self.runs_without_graph = runs_without_graph(policy)
        #: Whether :meth:`actions` may run the actor alone: the critic's modules have no effect on the actions or on
        #: the random stream, and features are only flattened, so that recomputing them for a whole rollout is cheap.
        self.acts_without_critic = self.mlp_extractor_is_standard and all(
            only_flattens(extractor) for extractor in (policy.pi_features_extractor, policy.vf_features_extractor)
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

    def upstream_mismatch(self, obs_tensor: PyTorchObs, masked: bool = False) -> str | None:
        """
        How this inference differs from the policy's own ``forward`` on ``obs_tensor``, or ``None`` when it does not:
        the proof of :data:`LEAN_INFERENCE` (see :meth:`~.proofs.FastPathProofs.serves`).

        Both run from the same state of torch's generator, in evaluation mode (as the rollout acts), and must agree
        bit for bit: the actions (also those of :meth:`actions`, when the rollout may sample them alone), the values
        and the log-probabilities. With gSDE, both act on exploration matrices drawn for the probe's rows. Afterwards
        the generator, the modules' modes and the action distribution's state (its exploration matrices) are what
        they were: the rollout then draws exactly what it would have drawn without the proof.

        :param obs_tensor: the probe, e.g. the observations the rollout starts from
        :param masked: whether the rollout acts with action masks (the head's :meth:`~.heads.ActionHead.probe_masks`)
        :raises UpstreamFailed: when the policy's own ``forward`` raises (e.g. NaN weights)
        """
        policy = self.policy
        first = next(iter(obs_tensor.values())) if isinstance(obs_tensor, dict) else obs_tensor
        n_rows = int(first.shape[0])
        masks = self.head.probe_masks(n_rows) if masked else None
        modes = [(module, module.training) for module in policy.modules()]
        try:
            with torch.random.fork_rng(devices=[]), state_restored(policy.action_dist):
                policy.set_training_mode(False)
                if getattr(policy, "use_sde", False):
                    policy.reset_noise(n_rows)
                start = torch.get_rng_state()
                try:
                    fast = self(obs_tensor, masks)
                    fast_actions = None
                    if self.acts_without_critic:
                        torch.set_rng_state(start)
                        fast_actions = self.actions(obs_tensor, masks)
                except Exception as error:  # SB3's validation (then the upstream raises too), or the fast path failing
                    fast_error: Exception | None = error
                else:
                    fast_error = None
                torch.set_rng_state(start)
                masks_keyword = {} if masks is None else {"action_masks": masks}
                with torch.no_grad():
                    actions, values, log_probs = upstream(lambda: policy(obs_tensor, **masks_keyword))
        finally:
            for module, training in modes:
                module.training = training
        if fast_error is not None:
            return f"it raised {type(fast_error).__name__}: {fast_error}, where the policy's forward did not"
        sb3_actions = actions.cpu().numpy()
        differences = [
            array_difference("the actions", fast[0], sb3_actions),
            array_difference("the values", fast[1], values),
            array_difference("the log-probabilities", fast[2], log_probs),
            None if fast_actions is None else array_difference("the actions sampled alone", fast_actions, sb3_actions),
        ]
        found = [difference for difference in differences if difference is not None]
        return "; ".join(found) if found else None

    def _raise_sb3_error(self, obs_tensor: PyTorchObs, action_masks: np.ndarray | None) -> None:
        """Run the policy's own ``forward`` (which validates its distributions) on a copy of the generator state."""
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            if action_masks is None:
                self.policy(obs_tensor)
            else:
                self.policy(obs_tensor, action_masks=action_masks)
