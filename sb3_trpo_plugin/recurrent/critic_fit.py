"""
The critic's regression to the λ-returns for a recurrent policy.

sb3-contrib's recurrent policies have three kinds of critic:

* its own LSTM (``enable_critic_lstm=True``, the default): the regression re-runs the critic's LSTM over sequence
  minibatches of the recurrent rollout buffer (``rollout_buffer.get(batch_size)``: contiguous runs of steps, cut at
  episode starts, padded) from their stored critic states, and averages the squared error over the valid steps;
* the actor's LSTM (``shared_lstm=True``): the critic reads the LSTM's output without moving it, so that output is
  computed once and the critic's MLP is regressed on it row by row, as a feed-forward critic;
* no LSTM: a linear layer on the features, then the critic's MLP, also row by row.

Only the critic's own parameters move (the actor's are frozen meanwhile), with the critic's optimiser.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RecurrentDictRolloutBufferSamples, RecurrentRolloutBufferSamples
from stable_baselines3.common.policies import BaseModel
from stable_baselines3.common.type_aliases import PyTorchObs
from torch.nn import functional as F

from sb3_trpo_plugin.common.parameters import frozen
from sb3_trpo_plugin.common.reductions import ONE_PROCESS, BatchReductions
from sb3_trpo_plugin.recurrent.minibatches import critic_minibatches
from sb3_trpo_plugin.recurrent.sequences import LSTMStates, run_over_sequences, valid_rows
from sb3_trpo_plugin.replicas.fused_adam import optimizer_step
from sb3_trpo_plugin.trpo.critic_fit import (
    CriticRegression,
    all_finite,
    autograd_loss_and_gradients,
    head_regression,
)

RecurrentSamples = RecurrentRolloutBufferSamples | RecurrentDictRolloutBufferSamples


def critic_values_over_sequences(
    policy: RecurrentActorCriticPolicy,
    observations: PyTorchObs,
    initial_states: LSTMStates,
    episode_starts: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """
    ``V(s_0..s_t)`` at the valid steps of padded sequences, through the critic's own LSTM.

    :param policy: a recurrent policy with ``lstm_critic``
    :param observations: one row per padded step
    :param initial_states: the critic's LSTM states before each sequence
    :param episode_starts: 1 where an episode starts, per padded step
    :param mask: ``True`` at the valid steps
    :return: the values, one per valid step
    """
    assert policy.lstm_critic is not None
    features = BaseModel.extract_features(policy, observations, policy.vf_features_extractor)
    latent = run_over_sequences(policy.lstm_critic, features, initial_states, episode_starts)[mask]
    return policy.value_net(policy.mlp_extractor.forward_critic(latent)).flatten()


def fit_critic_over_sequences(
    policy: RecurrentActorCriticPolicy,
    rollout_buffer: RecurrentRolloutBuffer | RecurrentDictRolloutBuffer,
    optimizer: torch.optim.Optimizer,
    critic_parameters: Sequence[torch.nn.Parameter],
    actor_parameters: Sequence[torch.nn.Parameter],
    n_epochs: int,
    batch_size: int,
    reductions: BatchReductions = ONE_PROCESS,
) -> float:
    """
    ``n_epochs`` epochs of ``min_φ mean_{valid t} (V_φ(s_0..s_t) - R̂_t)²`` over the buffer's sequence minibatches.

    Each epoch draws the buffer's minibatches afresh (sb3-contrib's ``get``: the steps rotated at a random index,
    split into runs of ``batch_size`` steps, cut into sequences; built by :func:`.minibatches.critic_minibatches`,
    the same minibatches at less cost); a non-finite loss or gradient skips its minibatch. In a data-parallel run each
    process draws its own minibatches from its own buffer, and each minibatch's loss and gradient are averaged over
    the processes before the step (each process's minibatch holds the same number of valid steps: the mean over the
    union of their steps), so every process takes the same step and skips the same minibatches.

    :param policy: a recurrent policy with its own critic LSTM
    :param rollout_buffer: the filled recurrent rollout buffer
    :param optimizer: the critic's optimiser (over ``critic_parameters`` only)
    :param critic_parameters: the parameters that move
    :param actor_parameters: frozen meanwhile
    :param n_epochs: passes over the buffer
    :param batch_size: steps per minibatch
    :param reductions: how a process's minibatch gradient becomes every process's (identity on one process)
    :return: mean loss over all minibatches (``nan`` when there were none)
    """
    step = optimizer_step(optimizer)
    losses = []
    with frozen(actor_parameters):
        for _ in range(n_epochs):
            for samples in critic_minibatches(rollout_buffer, batch_size):
                mask = samples.mask > 0.5
                values = critic_values_over_sequences(
                    policy, samples.observations, samples.lstm_states_vf, samples.episode_starts, mask
                )
                loss = F.mse_loss(values, samples.returns[mask])
                for parameter in critic_parameters:
                    parameter.grad = None
                loss.backward()
                losses.append(
                    loss.item() if reductions is ONE_PROCESS else _mean_over_processes(loss, critic_parameters, reductions)
                )
                if math.isfinite(losses[-1]) and all_finite(p.grad for p in critic_parameters):
                    step()
    return float(np.mean(losses)) if losses else float("nan")


def _mean_over_processes(
    loss: torch.Tensor, critic_parameters: Sequence[torch.nn.Parameter], reductions: BatchReductions
) -> float:
    """
    Every process's minibatch loss and gradient, averaged (one reduction): the gradients in place, the loss returned.
    A non-finite value on any process makes the mean non-finite everywhere: every process skips the minibatch.
    """
    with_gradient = [p for p in critic_parameters if p.grad is not None]
    gradients = [p.grad for p in with_gradient]
    flat = torch.cat([loss.detach().reshape(1), *(g.reshape(-1) for g in gradients if g is not None)])
    mean = reductions.mean(flat)
    chunks = torch.split(mean[1:], [p.numel() for p in with_gradient])
    for parameter, chunk in zip(with_gradient, chunks, strict=True):
        parameter.grad = chunk.view_as(parameter)
    return float(mean[0])


def feedforward_critic_regression(
    policy: RecurrentActorCriticPolicy, critic_parameters: Sequence[torch.nn.Parameter], rollout: RecurrentSamples
) -> CriticRegression:
    """
    The row-by-row regression of a critic without an LSTM of its own, on the valid steps of the whole batch.

    With ``shared_lstm=True`` its inputs are the actor's LSTM outputs (computed once: the actor does not move
    during the regression), and SB3's plain MLP critic gets its gradient by hand; without an LSTM they are the
    features (computed once when the critic's features extractor has no parameters of the critic), then
    ``policy.critic``, the critic's MLP and value head, by autograd.

    :param policy: a recurrent policy without ``lstm_critic``
    :param critic_parameters: the parameters the regression moves
    :param rollout: the whole batch, as padded sequences
    :return: the inputs (one row per valid step) and the minibatch loss-and-gradient function
    """
    mask = rollout.mask > 0.5
    if policy.shared_lstm:
        with torch.no_grad():
            features = BaseModel.extract_features(policy, rollout.observations, policy.pi_features_extractor)
            latent = run_over_sequences(policy.lstm_actor, features, rollout.lstm_states.pi, rollout.episode_starts)[mask]
        return head_regression(policy, critic_parameters, latent)

    assert policy.critic is not None
    critic_ids = {id(p) for p in critic_parameters}
    extractor = policy.vf_features_extractor
    inputs = valid_rows(rollout.observations, mask)
    extractor_is_constant = not any(id(p) in critic_ids for p in extractor.parameters())
    if extractor_is_constant:
        with torch.no_grad():
            inputs = BaseModel.extract_features(policy, inputs, extractor)

    def value_of(inputs: PyTorchObs) -> torch.Tensor:
        features = inputs if extractor_is_constant else BaseModel.extract_features(policy, inputs, extractor)
        assert policy.critic is not None
        return policy.value_net(policy.mlp_extractor.forward_critic(policy.critic(features)))

    return CriticRegression(inputs, autograd_loss_and_gradients(value_of, critic_parameters))
