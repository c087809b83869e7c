"""
Policies with layers whose forward depends on the mode (BatchNorm, Dropout): construction without side effects,
rollouts and ``predict`` in evaluation mode, statistics refreshed from the batch, and a trust-region step that is one
deterministic function of the weights (the KL the line search accepted is the KL of the resulting policy).
"""

from __future__ import annotations

from unittest import mock

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.common.distributions import distribution_parameters, kl_per_state, with_parameters
from sb3_trpo_plugin.common.modes import modules_called, training_mode
from sb3_trpo_plugin.replicas.inference import policy_inference
from tests.conftest import ACTION_SPACES, RandomEnv, filled_model, policy_batch
from tests.test_rollout import compare, make_model


class BatchNormExtractor(BaseFeaturesExtractor):
    """Linear → BatchNorm1d → Tanh → Dropout: running statistics and a random mask in training mode."""

    def __init__(self, observation_space: spaces.Box, dropout: float = 0.2) -> None:
        super().__init__(observation_space, features_dim=16)
        self.net = nn.Sequential(
            nn.Linear(int(np.prod(observation_space.shape)), 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Dropout(dropout)
        )

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(observations.flatten(1))


class DropoutExtractor(BaseFeaturesExtractor):
    """Dropout only: no statistics, a random mask in training mode."""

    def __init__(self, observation_space: spaces.Box) -> None:
        super().__init__(observation_space, features_dim=16)
        self.net = nn.Sequential(nn.Linear(int(np.prod(observation_space.shape)), 16), nn.Tanh(), nn.Dropout(0.5))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(observations.flatten(1))


BATCH_NORM = dict(features_extractor_class=BatchNormExtractor, net_arch=dict(pi=[16], vf=[16]))
SEPARATE_BATCH_NORM = dict(BATCH_NORM, share_features_extractor=False)
DROPOUT = dict(features_extractor_class=DropoutExtractor, net_arch=dict(pi=[16], vf=[16]))


def batch_norm_of(extractor: nn.Module) -> nn.BatchNorm1d:
    return extractor.net[1]


def frozen_distribution(model: TRPO, observations: torch.Tensor):
    """The policy's distribution on ``observations`` as it is now (SB3 reuses one distribution object per call)."""
    distribution = model.policy.get_distribution(observations)
    return with_parameters(distribution, [p.clone() for p in distribution_parameters(distribution)])


def test_construction_traces_in_evaluation_mode_without_side_effects():
    """The issue's example: it used to fail with a one-sample batch in training mode."""
    model = TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, policy_kwargs=dict(BATCH_NORM))
    norm = batch_norm_of(model.policy.features_extractor)
    assert int(norm.num_batches_tracked) == 0
    assert torch.equal(norm.running_mean, torch.zeros(16)) and torch.equal(norm.running_var, torch.ones(16))
    assert model.policy.training  # the modes are given back as they were
    actor = {id(p) for p in model._actor_params}
    assert all(id(p) in actor for p in model.policy.features_extractor.parameters())  # shared: the actor's
    assert model._critic_depends_on_actor
    assert model.policy.features_extractor.net[1] in model._actor_modules


@pytest.mark.parametrize("policy_kwargs", [BATCH_NORM, SEPARATE_BATCH_NORM, DROPOUT], ids=["shared", "separate", "dropout"])
def test_rollouts_run_in_evaluation_mode_the_same_as_sb3s_loop(policy_kwargs):
    """The lean rollout runs these modules through their forward, in evaluation mode: SB3's buffer, bit for bit."""

    def make():
        return make_model(ACTION_SPACES["box"], policy_kwargs=dict(policy_kwargs))

    assert policy_inference(make().policy) is not None
    compare(make, n_rollouts=2)
    model = make()
    _, callback = model._setup_learn(10**6, callback=None)
    with mock.patch.object(torch.nn.Dropout, "forward", autospec=True, side_effect=torch.nn.Dropout.forward) as dropout:
        model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    assert all(not call.args[0].training for call in dropout.call_args_list)


@pytest.mark.parametrize("policy_kwargs", [BATCH_NORM, SEPARATE_BATCH_NORM], ids=["shared", "separate"])
def test_statistics_learn_from_the_batch_and_the_accepted_kl_is_the_resulting_policys(policy_kwargs):
    model = filled_model(RandomEnv(ACTION_SPACES["box"]), n_steps=128, batch_size=64, policy_kwargs=dict(policy_kwargs))
    actor_norm = batch_norm_of(model.policy.pi_features_extractor)
    critic_norm = batch_norm_of(model.policy.vf_features_extractor)
    rollout = next(model.rollout_buffer.get(batch_size=None))
    parameters_before = [p.detach().clone() for p in model.policy.parameters()]
    model.train()
    logged = model.logger.name_to_value
    assert logged["train/is_line_search_success"] == 1.0
    # One training-mode pass over the batch for the policy step: the actor's statistics moved, once.
    assert int(actor_norm.num_batches_tracked) == 1
    assert not torch.equal(actor_norm.running_mean, torch.zeros(16))
    if critic_norm is not actor_norm:  # the critic's own extractor learns in training mode, as in SB3
        assert int(critic_norm.num_batches_tracked) == 2 * model.n_critic_updates  # 128 rows, minibatches of 64
    # π_old as the step saw it: the old parameters with the refreshed statistics. Its KL to the policy that
    # train() leaves behind (after the critic's regression too) is the KL the line search accepted.
    with torch.no_grad():
        model.policy.set_training_mode(False)
        new = frozen_distribution(model, rollout.observations)
        torch._foreach_copy_(list(model.policy.parameters()), parameters_before)  # the statistics stay refreshed
        old = frozen_distribution(model, rollout.observations)
    kl = float(kl_per_state(old, new).mean())
    assert kl == pytest.approx(logged["train/kl_divergence_loss"], rel=1e-5)


def test_dropout_policy_step_is_deterministic_and_predict_too():
    model = filled_model(RandomEnv(ACTION_SPACES["discrete"]), n_steps=128, policy_kwargs=dict(DROPOUT))
    batch = policy_batch(model)
    start = {k: v.clone() for k, v in model.policy.state_dict().items()}
    results = []
    for seed in (0, 1):  # another random stream: Dropout in training mode would draw other masks
        model.policy.load_state_dict(start)
        torch.manual_seed(seed)
        stats = model.make_policy_step().take(batch)
        results.append((stats, [p.detach().clone() for p in model.policy.parameters()]))
    (stats, weights), (other_stats, other_weights) = results
    assert stats.accepted and stats.to_floats() == pytest.approx(other_stats.to_floats(), rel=0, abs=0, nan_ok=True)
    assert all(torch.equal(a, b) for a, b in zip(weights, other_weights, strict=True))
    observations = np.stack([model.observation_space.sample() for _ in range(32)])
    model.policy.set_training_mode(True)  # predict switches to evaluation mode itself, as SB3's does
    first, _ = model.predict(observations, deterministic=True)
    torch.manual_seed(123)
    second, _ = model.predict(observations, deterministic=True)
    np.testing.assert_array_equal(first, second)
    assert not model.policy.training


def test_batch_norm_policy_learns_cartpole_a_little():
    """A short run: it trains without error and its deterministic policy beats a random one (about 22)."""
    model = TRPO(
        "MlpPolicy",
        "CartPole-v1",
        n_steps=512,
        batch_size=128,
        n_critic_updates=5,
        target_kl=0.02,
        policy_kwargs=dict(BATCH_NORM),
        seed=0,
    )
    model.learn(6144)
    env = gym.make("CartPole-v1")
    returns = []
    for episode in range(5):
        obs, _ = env.reset(seed=episode)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    assert np.mean(returns) > 60, returns
    assert int(batch_norm_of(model.policy.features_extractor).num_batches_tracked) == 12


def test_data_parallel_training_of_running_statistics_is_refused():
    model = TRPO(
        "MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, policy_kwargs=dict(BATCH_NORM), _init_setup_model=False
    )
    model.collectives = mock.MagicMock()  # as if launched on several processes
    with pytest.raises(NotImplementedError, match="BatchNorm"):
        model._setup_model()


def test_modes_are_given_back_per_module_and_the_trace_leaves_no_hooks():
    network = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2)))
    network[1].eval()  # a mixed setting that network.train() would overwrite
    flags = [m.training for m in network.modules()]
    with training_mode(network, False):
        assert not any(m.training for m in network.modules())
    assert [m.training for m in network.modules()] == flags
    unused = nn.Linear(2, 2)
    network.add_module("unused", unused)
    called = modules_called(network, lambda: network[2](network[0](torch.zeros(5, 3))))
    assert called == [network[0], network[2], network[2][0], network[2][1]]
    assert not any(m._forward_pre_hooks for m in network.modules())
