"""
One inference per rollout step for sb3-contrib's recurrent policies: what ``policy(obs, lstm_states, episode_starts)``
returns, without ``nn.Module.__call__`` and without building distribution objects.

``RecurrentActorCriticPolicy.forward`` is ``ActorCriticPolicy.forward`` with an LSTM between the features and the MLP
extractor (``_process_sequence``): the actor's LSTM, and the critic's own LSTM, the actor's (``shared_lstm``) or a
linear layer. :class:`RecurrentPolicyInference` runs the features, the MLP extractor, the heads and the action
distributions through :class:`~sb3_trpo_plugin.replicas.inference.PolicyInference`'s parts (the same kernels, SB3's
random calls: SB3's actions, values and log-probabilities bit for bit), and each LSTM through its own ``forward`` as
``_process_sequence`` calls it for one step of ``n_envs`` sequences: directly from the states when no episode starts,
else from the states multiplied by ``1 - episode_start``.

Before it first serves a policy, the inference is proved against the policy's own forward on the observations, LSTM
states and episode starts the rollout starts from (:meth:`RecurrentPolicyInference.upstream_mismatch`, under
:data:`RECURRENT_LEAN_INFERENCE` in the policy's :func:`~sb3_trpo_plugin.replicas.proofs.proofs_of`); a mismatch
leaves the policy to sb3-contrib's ``RecurrentPPO`` loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from sb3_trpo_plugin.replicas.eligibility import REPLICATED_METHODS, unrecognised_reason
from sb3_trpo_plugin.replicas.inference import PolicyInference, policy_inference
from sb3_trpo_plugin.replicas.proofs import FastPath, array_difference, proofs_of, state_restored, upstream

#: The methods of ``RecurrentActorCriticPolicy`` whose computation the inference replicates.
RECURRENT_METHODS = (*REPLICATED_METHODS, "_process_sequence", "_build_mlp_extractor")

#: The lean inference of recurrent policies, as its proofs and warnings name it.
RECURRENT_LEAN_INFERENCE = FastPath(
    "the lean recurrent rollout inference", "the policy's own forward in sb3-contrib's RecurrentPPO rollout loop"
)


def recurrent_unrecognised_reason(policy: nn.Module) -> str | None:
    """
    Why :class:`RecurrentPolicyInference` cannot replicate ``policy``'s forward exactly, or ``None`` when it can.

    :param policy: the algorithm's policy (sb3-contrib's ``RecurrentActorCriticPolicy`` family)
    """
    reason = unrecognised_reason(policy, RecurrentActorCriticPolicy, methods=RECURRENT_METHODS)
    if reason is not None:
        return reason
    for label in ("lstm_actor", "lstm_critic"):
        lstm = getattr(policy, label)
        if lstm is not None and type(lstm) is not nn.LSTM:
            return f"{label} is a {type(lstm).__name__}, not torch's LSTM"
    return None


def recurrent_policy_inference(policy: nn.Module) -> RecurrentPolicyInference | None:
    """
    The lean inference of a recurrent policy, or ``None`` when it cannot be proved exact or was disproved
    (:meth:`RecurrentPolicyInference.upstream_mismatch`).

    Build it at the start of each rollout: hooks, the policy's modules and its parameters are looked up then.

    :param policy: the algorithm's policy
    """
    if proofs_of(policy).verdict(RECURRENT_LEAN_INFERENCE) is False or recurrent_unrecognised_reason(policy) is not None:
        return None
    parts = policy_inference(policy, RecurrentActorCriticPolicy, methods=RECURRENT_METHODS)
    assert parts is not None, "recurrent_unrecognised_reason() checked it"
    return RecurrentPolicyInference(policy, parts)  # type: ignore[arg-type]


def _lstm_step(
    lstm: nn.LSTM,
    features: torch.Tensor,
    states: tuple[torch.Tensor, torch.Tensor],
    episode_starts: torch.Tensor,
    any_start: bool,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """
    ``RecurrentActorCriticPolicy._process_sequence`` for one step of ``n`` sequences (a rollout step of ``n`` envs).

    :param lstm: the LSTM (without hooks: its ``forward`` is what calling it runs)
    :param features: ``(n, input_size)``
    :param states: its ``(hidden, cell)`` states, each ``(n_layers, n, hidden_size)``
    :param episode_starts: ``(n,)``, 1.0 where an episode starts
    :param any_start: whether any of ``episode_starts`` is non-zero (``_process_sequence``'s branch)
    :return: the output ``(n, hidden_size)`` and the new states
    """
    n_sequences = states[0].shape[1]
    sequence = features.reshape((n_sequences, -1, lstm.input_size)).swapaxes(0, 1)
    if not any_start:
        output, new_states = lstm.forward(sequence, states)
        return torch.flatten(output.transpose(0, 1), start_dim=0, end_dim=1), new_states
    starts = episode_starts.reshape((n_sequences, -1)).swapaxes(0, 1)
    outputs = []
    for step_features, step_starts in zip(sequence, starts, strict=True):
        keep = (1.0 - step_starts).view(1, n_sequences, 1)
        hidden, states = lstm.forward(step_features.unsqueeze(dim=0), (keep * states[0], keep * states[1]))
        outputs.append(hidden)
    return torch.flatten(torch.cat(outputs).transpose(0, 1), start_dim=0, end_dim=1), states


class RecurrentPolicyInference:
    """
    ``policy(obs_tensor, lstm_states, episode_starts)`` of a recognised recurrent policy, bit for bit (see the module's
    documentation). Build it with :func:`recurrent_policy_inference`.

    :param policy: a policy for which :func:`recurrent_unrecognised_reason` is ``None``
    :param parts: its :class:`~sb3_trpo_plugin.replicas.inference.PolicyInference` (features, MLP, heads)
    """

    def __init__(self, policy: RecurrentActorCriticPolicy, parts: PolicyInference) -> None:
        self.policy = policy
        self.parts = parts
        self.lstm_actor = policy.lstm_actor
        self.lstm_critic = policy.lstm_critic
        self.shared_lstm = policy.shared_lstm
        # A critic without an LSTM is a linear layer: its own forward, as the policy calls it (no hooks: recognised)
        self.critic: Callable[[Any], Any] | None = None if policy.critic is None else policy.critic.forward

    def __call__(
        self, obs_tensor: PyTorchObs, lstm_states: RNNStates, episode_starts: torch.Tensor, any_start: bool
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, RNNStates]:
        """
        Sample actions for a batch of observations, with their values, log-probabilities and the new LSTM states.

        :param obs_tensor: the observations as tensors
        :param lstm_states: the LSTM states before this step
        :param episode_starts: ``(n_envs,)`` float32, 1.0 where an episode starts (the states are reset there)
        :param any_start: whether any environment starts an episode at this step
        :return: the actions as a NumPy array of shape ``(n_envs, *action_space.shape)``, the values ``(n_envs, 1)``,
            the log-probabilities ``(n_envs,)`` and the new states, as the policy's forward returns them
        """
        try:
            with torch.no_grad():
                actions, values, log_probs, new_states = self._infer(obs_tensor, lstm_states, episode_starts, any_start)
        except RuntimeError:
            self._raise_sb3_error(obs_tensor, lstm_states, episode_starts)
            raise
        if np.isnan(log_probs).any():
            self._raise_sb3_error(obs_tensor, lstm_states, episode_starts)
        return actions.reshape(self.parts.action_shape), values, torch.from_numpy(log_probs), new_states

    def _infer(
        self, obs_tensor: PyTorchObs, lstm_states: RNNStates, episode_starts: torch.Tensor, any_start: bool
    ) -> tuple[np.ndarray, torch.Tensor, np.ndarray, RNNStates]:
        parts = self.parts
        preprocessed = parts.preprocess(obs_tensor)
        pi_features = parts.pi_features(preprocessed)
        vf_features = pi_features if parts.share_features_extractor else parts.vf_features(preprocessed)
        # sb3-contrib's RNNStates holds (hidden, cell) pairs, typed as tuples of any length
        pi_states, vf_states = (lstm_states.pi[0], lstm_states.pi[1]), (lstm_states.vf[0], lstm_states.vf[1])
        latent_pi, states_pi = _lstm_step(self.lstm_actor, pi_features, pi_states, episode_starts, any_start)
        if self.lstm_critic is not None:
            latent_vf, states_vf = _lstm_step(self.lstm_critic, vf_features, vf_states, episode_starts, any_start)
        elif self.shared_lstm:
            latent_vf, states_vf = latent_pi.detach(), (states_pi[0].detach(), states_pi[1].detach())
        else:
            assert self.critic is not None
            latent_vf, states_vf = self.critic(vf_features), states_pi
        latent_pi = parts.actor_latent(latent_pi)
        values = parts.value_net(parts.critic_latent(latent_vf))
        actions, log_probs = parts.head(parts.action_net(latent_pi), latent_pi)
        return actions, values, log_probs, RNNStates(states_pi, states_vf)

    def upstream_mismatch(self, obs_tensor: PyTorchObs, lstm_states: RNNStates, episode_starts: np.ndarray) -> str | None:
        """
        How this inference differs from the policy's own ``forward`` from ``lstm_states``, or ``None`` when it does not:
        the proof of :data:`RECURRENT_LEAN_INFERENCE` (see :meth:`~sb3_trpo_plugin.replicas.proofs.FastPathProofs.serves`).

        Two probes, each from the same state of torch's generator and in evaluation mode: with ``episode_starts`` (the
        rollout's first step: the states reset where an episode starts) and with no episode start (the states carried
        into the LSTM as they are). The actions, values, log-probabilities and new LSTM states must agree bit for bit.
        Afterwards the generator, the modules' modes and the action distribution's state are what they were.

        :param obs_tensor: the probe's observations, e.g. those the rollout starts from
        :param lstm_states: the LSTM states before them
        :param episode_starts: whether each environment starts an episode there
        :raises UpstreamFailed: when the policy's own ``forward`` raises (e.g. NaN weights)
        """
        policy = self.policy
        first = next(iter(obs_tensor.values())) if isinstance(obs_tensor, dict) else obs_tensor
        n_rows = int(first.shape[0])
        probes = [episode_starts.astype(np.float32), np.zeros(n_rows, dtype=np.float32)]
        found: list[str] = []
        modes = [(module, module.training) for module in policy.modules()]
        try:
            with torch.random.fork_rng(devices=[]), state_restored(policy.action_dist):
                policy.set_training_mode(False)
                if policy.use_sde:
                    policy.reset_noise(n_rows)
                for starts in probes:
                    starts_tensor = torch.tensor(starts, dtype=torch.float32, device=policy.device)
                    start = torch.get_rng_state()
                    try:
                        fast = self(obs_tensor, lstm_states, starts_tensor, bool(starts.any()))
                    except Exception as error:  # SB3's validation (then the upstream raises too), or the fast path failing
                        fast_error: Exception | None = error
                    else:
                        fast_error = None
                    torch.set_rng_state(start)
                    with torch.no_grad():
                        forward = functools.partial(policy, obs_tensor, lstm_states, starts_tensor)
                        actions, values, log_probs, states = upstream(forward)
                    if fast_error is not None:
                        return f"it raised {type(fast_error).__name__}: {fast_error}, where the policy's forward did not"
                    label = "with episode starts" if starts.any() else "without episode starts"
                    differences = [
                        array_difference(f"the actions {label}", fast[0], actions.cpu().numpy()),
                        array_difference(f"the values {label}", fast[1], values),
                        array_difference(f"the log-probabilities {label}", fast[2], log_probs),
                        *(
                            array_difference(f"the new LSTM states {label}", ours, theirs)
                            for ours, theirs in zip((*fast[3].pi, *fast[3].vf), (*states.pi, *states.vf), strict=True)
                        ),
                    ]
                    found += [difference for difference in differences if difference is not None]
        finally:
            for module, training in modes:
                module.training = training
        return "; ".join(found) if found else None

    def _raise_sb3_error(self, obs_tensor: PyTorchObs, lstm_states: RNNStates, episode_starts: torch.Tensor) -> None:
        """Run the policy's own ``forward`` (which validates its distributions) on a copy of the generator state."""
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            self.policy(obs_tensor, lstm_states, episode_starts)
