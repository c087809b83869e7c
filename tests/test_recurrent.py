"""
RecurrentTRPO: the maths over sequences against a step-by-step unroll of the LSTM, the resets at episode starts,
the actor/critic split, the critic's regression, and the SB3 / sb3-contrib API (predict with states, save/load,
VecNormalize, callbacks, TensorBoard).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn
from torch.func import functional_call

from sb3_trpo_plugin import TRPO, RecurrentTRPO
from sb3_trpo_plugin.common.distributions import kl_per_state
from sb3_trpo_plugin.recurrent.sequences import RecurrentPolicyBatch, run_over_sequences
from sb3_trpo_plugin.trust_region import flatten, unflatten_like
from tests.conftest import ACTION_SPACES, RandomEnv, use_float64

REPO = Path(__file__).resolve().parents[1]
TINY_LSTM = dict(lstm_hidden_size=3, net_arch=dict(pi=[4], vf=[4]))
#: Small enough for an explicit Hessian over the actor's parameters (about 90 of them).
TINIER_LSTM = dict(lstm_hidden_size=2, net_arch=dict(pi=[3], vf=[3]))


def recurrent_model(action_space: spaces.Space, n_envs: int = 2, n_steps: int = 12, episode_length: int = 5, **kwargs):
    """A RecurrentTRPO model on short random episodes, its rollout buffer filled by two rollouts (states carried over)."""
    env = make_vec_env(lambda: RandomEnv(action_space, episode_length=episode_length), n_envs=n_envs, seed=0)
    kwargs.setdefault("policy_kwargs", TINY_LSTM)
    model = RecurrentTRPO("MlpLstmPolicy", env, n_steps=n_steps, batch_size=n_steps, seed=0, **kwargs)
    _, callback = model._setup_learn(2 * n_steps * n_envs, callback=None)
    callback.on_training_start(locals(), globals())
    for _ in range(2):  # the second rollout starts from the first one's last states, not from zeros
        assert model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=n_steps)
    return model


def raw_buffer(model: RecurrentTRPO) -> dict[str, np.ndarray]:
    """The buffer's arrays as the rollout wrote them, ``(n_steps, n_envs, ...)``, before ``get`` reorders them."""
    buffer = model.rollout_buffer
    assert not buffer.generator_ready
    names = ["observations", "actions", "episode_starts", "log_probs", "advantages", "hidden_states_pi", "cell_states_pi"]
    return {name: np.array(getattr(buffer, name)) for name in names}


def whole_batch(model: RecurrentTRPO) -> RecurrentPolicyBatch:
    batch = model._policy_batch(next(model.rollout_buffer.get(batch_size=None)))
    assert isinstance(batch, RecurrentPolicyBatch)
    return batch


class UnrolledActor(nn.Module):
    """
    The reference: each environment's steps in time order, one LSTM step at a time from the state the rollout held
    before its first step, reset to zero at each episode start; rows env after env, as the buffer orders them.
    """

    def __init__(self, policy, raw: dict[str, np.ndarray], dtype: torch.dtype):
        super().__init__()
        self.policy = policy
        self.observations = torch.as_tensor(raw["observations"], dtype=dtype)
        self.starts = raw["episode_starts"]
        self.hidden = torch.as_tensor(raw["hidden_states_pi"][0], dtype=dtype)  # (n_layers, n_envs, hidden)
        self.cell = torch.as_tensor(raw["cell_states_pi"][0], dtype=dtype)

    def forward(self):
        policy = self.policy
        n_steps, n_envs = self.starts.shape
        latents = []
        for env in range(n_envs):
            state = (self.hidden[:, env : env + 1], self.cell[:, env : env + 1])
            for t in range(n_steps):
                if self.starts[t, env]:
                    state = (torch.zeros_like(state[0]), torch.zeros_like(state[1]))
                features = policy.extract_features(self.observations[t, env : env + 1], policy.pi_features_extractor)
                output, state = policy.lstm_actor(features.unsqueeze(0), state)
                latents.append(output[0])
        return policy._get_action_dist_from_latent(policy.mlp_extractor.forward_actor(torch.cat(latents)))


@pytest.fixture
def no_rotation(monkeypatch):
    """
    sb3-contrib's buffer rotates the steps at a random index, which cuts one more sequence there (its gradient
    stops at the stored state): without the rotation the sequences are cut only at episode starts and between
    environments, where the unrolled reference is cut too.
    """
    monkeypatch.setattr(np.random, "randint", lambda high: 0)


@pytest.fixture(params=["discrete", "box", "box_gsde"])
def unrolled_case(request, monkeypatch, no_rotation):
    space, use_sde = request.param.removesuffix("_gsde"), request.param.endswith("_gsde")
    model = recurrent_model(
        ACTION_SPACES[space], n_steps=8, episode_length=3, cg_damping=0.0, use_sde=use_sde, policy_kwargs=TINIER_LSTM
    )
    raw = raw_buffer(model)
    assert raw["episode_starts"][1:].any() and model.n_envs > 1  # episode starts inside the batch
    use_float64(model, monkeypatch)
    batch = whole_batch(model)
    batch = RecurrentPolicyBatch(
        batch.observations.double(),
        batch.actions if batch.actions.dtype == torch.long else batch.actions.double(),
        batch.old_log_prob.double(),
        batch.advantages.double(),
        tuple(state.double() for state in batch.initial_states),
        batch.episode_starts.double(),
        batch.mask,
    )
    reference = UnrolledActor(model.policy, raw, torch.float64)
    names = {id(p): "policy." + name for name, p in model.policy.named_parameters()}
    actor_names = [names[id(p)] for p in model._actor_params]

    def reference_at(flat: torch.Tensor):
        return functional_call(reference, dict(zip(actor_names, unflatten_like(flat, model._actor_params), strict=True)), ())

    return model, batch, reference_at


def theta(model) -> torch.Tensor:
    return flatten([p.detach() for p in model._actor_params])


def test_the_actors_lstm_is_in_the_step(unrolled_case):
    model, _, _ = unrolled_case
    actor = {id(p) for p in model._actor_params}
    assert all(id(p) in actor for p in model.policy.lstm_actor.parameters())
    assert not any(id(p) in actor for p in model.policy.lstm_critic.parameters())


def test_fisher_products_equal_explicit_hessian_of_the_unrolled_mean_kl(unrolled_case):
    """Closed form (Jacobian-vector products through the LSTM) and double backpropagation, against one explicit Hessian."""
    model, batch, reference_at = unrolled_case
    old_distribution = model.make_policy_step().linearize(batch).old_distribution

    def mean_kl(flat: torch.Tensor) -> torch.Tensor:
        return kl_per_state(old_distribution, reference_at(flat)).mean()

    hessian = torch.autograd.functional.hessian(mean_kl, theta(model))
    assert hessian.abs().max() > 0
    for method in ("gauss_newton", "kl_hessian"):
        model.fisher_product = method
        linearized = model.make_policy_step().linearize(batch)
        generator = torch.Generator().manual_seed(0)
        for _ in range(3):
            v = torch.randn(hessian.shape[0], generator=generator, dtype=torch.float64)
            torch.testing.assert_close(linearized.fisher_product(v), hessian @ v, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("k", [2, 3])
def test_fisher_sub_sampling_takes_whole_sequences_by_either_product(unrolled_case, k):
    """
    ``fisher_sub_sampling_factor=k``: both kinds of product estimate the Fisher matrix on the valid steps of every k-th
    whole sequence (one rule), the explicit Hessian of the mean KL over those steps; not on every k-th step.
    """
    model, batch, reference_at = unrolled_case
    model.fisher_sub_sampling_factor = k
    selected = batch.valid_steps_of_every(k)
    every_kth_step = torch.arange(selected.numel()) % k == 0
    assert 0 < int(selected.sum()) < selected.numel() and not torch.equal(selected, every_kth_step)
    old_distribution = model.make_policy_step().linearize(batch).old_distribution

    def mean_kl(flat: torch.Tensor) -> torch.Tensor:
        return kl_per_state(old_distribution, reference_at(flat))[selected].mean()

    hessian = torch.autograd.functional.hessian(mean_kl, theta(model))
    assert hessian.abs().max() > 0
    for method in ("gauss_newton", "kl_hessian"):
        model.fisher_product = method
        linearized = model.make_policy_step().linearize(batch)
        generator = torch.Generator().manual_seed(0)
        for _ in range(3):
            v = torch.randn(hessian.shape[0], generator=generator, dtype=torch.float64)
            torch.testing.assert_close(linearized.fisher_product(v), hessian @ v, rtol=1e-6, atol=1e-10, msg=method)


def test_gradient_objective_and_kl_equal_the_unrolled_ones(unrolled_case):
    model, batch, reference_at = unrolled_case
    step = model.make_policy_step()
    linearized = step.linearize(batch)

    def surrogate(flat: torch.Tensor) -> torch.Tensor:
        ratio = torch.exp(reference_at(flat).log_prob(batch.actions) - batch.old_log_prob)
        return (ratio * batch.advantages).mean()

    torch.testing.assert_close(linearized.gradient, torch.func.grad(surrogate)(theta(model)), rtol=1e-7, atol=1e-12)
    assert linearized.objective == pytest.approx(float(surrogate(theta(model))), abs=1e-12)
    # Away from θ_old (as in the line search): the KL over the re-run sequences is the unrolled one.
    shifted = theta(model) + 0.1 * torch.randn(
        theta(model).shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    with torch.no_grad():
        for parameter, value in zip(model._actor_params, unflatten_like(shifted, model._actor_params), strict=True):
            parameter.copy_(value)
        kl = kl_per_state(linearized.old_distribution, step.batch_distribution(batch)).mean()
        expected = kl_per_state(linearized.old_distribution, reference_at(shifted)).mean()
    assert float(kl) > 1e-4
    torch.testing.assert_close(kl, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("space", ["discrete", "box"])
def test_hidden_state_is_reset_exactly_at_episode_starts_in_rollout_and_update(space):
    """
    The rollout's stored log-probabilities equal the unrolled reference's (reset at episode starts, nowhere else),
    and the update's, over the buffer's sequences (rotated at a random index: one more cut from a stored state).
    """
    model = recurrent_model(ACTION_SPACES[space], n_envs=3, n_steps=16, episode_length=6)
    raw = raw_buffer(model)
    assert raw["episode_starts"][1:].any()
    reference = UnrolledActor(model.policy, raw, torch.float32)
    actions = torch.as_tensor(raw["actions"]).transpose(0, 1).reshape(-1, *raw["actions"].shape[2:])
    actions = actions.long().flatten() if space == "discrete" else actions
    stored = torch.as_tensor(raw["log_probs"]).transpose(0, 1).flatten()
    with torch.no_grad():
        torch.testing.assert_close(reference().log_prob(actions), stored, rtol=1e-5, atol=1e-5)
        # Without the resets the reference would not match: the test can tell.
        reference.starts = np.zeros_like(reference.starts)
        assert float((reference().log_prob(actions) - stored).abs().max()) > 1e-4  # 10x the tolerance above
        batch = whole_batch(model)
        torch.testing.assert_close(
            model.make_policy_step().batch_distribution(batch).log_prob(batch.actions),
            batch.old_log_prob,
            rtol=1e-5,
            atol=1e-5,
        )


def test_padded_steps_contribute_nothing():
    model = recurrent_model(ACTION_SPACES["box"], n_envs=3, n_steps=16, episode_length=6)
    batch = whole_batch(model)
    assert not bool(batch.mask.all())  # some padding
    garbage = batch.observations.clone()
    garbage[~batch.mask] = 1e3
    padded_differently = RecurrentPolicyBatch(
        garbage, batch.actions, batch.old_log_prob, batch.advantages, batch.initial_states, batch.episode_starts, batch.mask
    )
    step = model.make_policy_step()
    reference, perturbed = step.linearize(batch), step.linearize(padded_differently)
    assert perturbed.objective == reference.objective
    torch.testing.assert_close(perturbed.gradient, reference.gradient, rtol=0, atol=0)
    v = torch.randn(reference.gradient.shape[0])
    torch.testing.assert_close(perturbed.fisher_product(v), reference.fisher_product(v), rtol=0, atol=0)


def test_every_selects_whole_sequences():
    model = recurrent_model(ACTION_SPACES["discrete"], n_envs=3, n_steps=16, episode_length=6)
    batch = whole_batch(model)
    step = model.make_policy_step()
    with torch.no_grad():
        full = step.batch_distribution(batch).distribution.logits
        every_other = batch.every(2)
        selected = step.batch_distribution(every_other).distribution.logits
    lengths = batch.mask.reshape(batch.n_sequences, -1).sum(dim=1)
    sequence_of_row = torch.repeat_interleave(torch.arange(batch.n_sequences), lengths)
    keep = sequence_of_row % 2 == 0
    assert every_other.n_sequences == (batch.n_sequences + 1) // 2 and 0 < int(keep.sum()) < len(keep)
    torch.testing.assert_close(selected, full[keep])
    torch.testing.assert_close(every_other.actions, batch.actions[keep])
    torch.testing.assert_close(every_other.advantages, batch.advantages[keep])


def test_run_over_sequences_resets_inside_a_sequence_like_one_sequence_per_episode():
    """The step-by-step path (episode starts inside sequences) equals cutting the sequence at the start."""
    torch.manual_seed(0)
    lstm = nn.LSTM(2, 3)
    features = torch.randn(6, 2)
    state = (torch.randn(1, 1, 3), torch.randn(1, 1, 3))
    starts = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    joined = run_over_sequences(lstm, features, state, starts)
    first = run_over_sequences(lstm, features[:3], state, starts[:3])
    second = run_over_sequences(lstm, features[3:], (torch.zeros(1, 1, 3), torch.zeros(1, 1, 3)), torch.zeros(3))
    torch.testing.assert_close(joined, torch.cat([first, second]))


@pytest.mark.parametrize(
    "lstm_kwargs, critic_modules",
    [
        (dict(), ["lstm_critic", "mlp_extractor.value_net", "value_net"]),
        (dict(shared_lstm=True, enable_critic_lstm=False), ["mlp_extractor.value_net", "value_net"]),
        (dict(enable_critic_lstm=False), ["critic", "mlp_extractor.value_net", "value_net"]),
    ],
    ids=["critic_lstm", "shared_lstm", "no_critic_lstm"],
)
def test_split_and_critic_regression(lstm_kwargs, critic_modules):
    model = recurrent_model(ACTION_SPACES["discrete"], n_envs=2, n_steps=16, policy_kwargs={**TINY_LSTM, **lstm_kwargs})
    named = dict(model.policy.named_parameters())
    expected_critic = {name for name in named if any(name.startswith(module + ".") for module in critic_modules)}
    critic = {name for name, p in named.items() if any(p is q for q in model._critic_params)}
    assert critic == expected_critic
    assert {name for name in named if name.startswith("lstm_actor.")} <= set(named) - critic
    rollout = next(model.rollout_buffer.get(batch_size=None))
    actor_before = [p.detach().clone() for p in model._actor_params]
    critic_before = [p.detach().clone() for p in model._critic_params]
    first_loss = model._fit_critic(rollout)
    last_loss = model._fit_critic(rollout)
    assert all(torch.equal(p, q) for p, q in zip(model._actor_params, actor_before, strict=True))
    assert all(not torch.equal(p, q) for p, q in zip(model._critic_params, critic_before, strict=True))
    assert last_loss < first_loss


def test_a_feed_forward_policy_is_refused():
    from stable_baselines3.common.policies import ActorCriticPolicy

    with pytest.raises(ValueError, match="RecurrentActorCriticPolicy"):
        RecurrentTRPO(ActorCriticPolicy, "CartPole-v1")


def test_a_feed_forward_buffer_is_refused():
    from stable_baselines3.common.buffers import RolloutBuffer

    with pytest.raises(ValueError, match="RecurrentRolloutBuffer"):
        RecurrentTRPO("MlpLstmPolicy", "CartPole-v1", rollout_buffer_class=RolloutBuffer)


def test_constructor_takes_trpos_keywords_and_explains_ppos():
    import inspect

    ours = inspect.signature(RecurrentTRPO.__init__).parameters
    trpo = inspect.signature(TRPO.__init__).parameters
    assert list(ours) == list(trpo)  # same keywords, same order
    assert {name: p.default for name, p in ours.items() if name != "policy"} == {
        name: p.default for name, p in trpo.items() if name != "policy"
    }
    with pytest.raises(TypeError, match=r"'n_epochs': it is PPO's.*n_critic_updates"):
        RecurrentTRPO("MlpLstmPolicy", "CartPole-v1", n_epochs=4)


def test_entropy_bonus_raises_the_entropy_of_the_step():
    entropies = []
    for ent_coef in (0.0, 5.0):
        env = make_vec_env(lambda: RandomEnv(ACTION_SPACES["discrete"], episode_length=5), n_envs=2, seed=0)
        kwargs = dict(n_steps=16, batch_size=32, seed=0, ent_coef=ent_coef, policy_kwargs=TINY_LSTM)
        model = RecurrentTRPO("MlpLstmPolicy", env, **kwargs)
        model.learn(64)
        assert model.logger.name_to_value["train/entropy_loss"] < 0  # minus the mean entropy of the last batch
        batch = whole_batch(recurrent_model_from(model))
        with torch.no_grad():
            entropies.append(float(model.make_policy_step().batch_distribution(batch).entropy().mean()))
    assert entropies[1] > entropies[0]


class CountSteps(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.n_calls_seen = 0
        self.saw_lstm_states = False

    def _on_step(self) -> bool:
        self.n_calls_seen += 1
        self.saw_lstm_states |= "lstm_states" in self.locals
        return True


def test_learn_with_vecnormalize_callbacks_tensorboard_then_predict_save_load(tmp_path):
    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=2, seed=0))
    model = RecurrentTRPO(
        "MlpLstmPolicy", env, n_steps=32, batch_size=32, seed=0, tensorboard_log=str(tmp_path), policy_kwargs=TINY_LSTM
    )
    callback = CountSteps()
    model.learn(128, callback=callback)
    assert callback.n_calls_seen == 64 and callback.saw_lstm_states
    assert model.num_timesteps == 128 and model._n_updates == 2
    assert list(tmp_path.glob("RecurrentTRPO_1/events.out.tfevents.*"))
    assert model.logger.name_to_value["train/is_line_search_success"] in (0.0, 1.0)

    observations = env.reset()
    actions, states = model.predict(observations, deterministic=True)
    assert actions.shape == (2,) and states[0].shape == (1, 2, 3)
    actions_next, states_next = model.predict(observations, state=states, episode_start=np.zeros(2), deterministic=True)
    assert not np.allclose(states_next[0], states[0])  # the state moves with each step
    model.save(tmp_path / "model")
    loaded = RecurrentTRPO.load(tmp_path / "model.zip")
    assert type(loaded.policy).__name__ == "RecurrentActorCriticPolicy"
    loaded_actions, loaded_states = loaded.predict(observations, state=states, episode_start=np.zeros(2), deterministic=True)
    np.testing.assert_array_equal(loaded_actions, actions_next)
    np.testing.assert_allclose(loaded_states[0], states_next[0])
    for name, value in model.get_parameters()["policy"].items():
        torch.testing.assert_close(loaded.get_parameters()["policy"][name], value)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_importing_the_package_does_not_import_sb3_contrib():
    result = run_python("import sys, sb3_trpo_plugin; print('sb3_contrib' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_without_sb3_contrib_the_import_names_the_extra():
    code = (
        "import sys; sys.modules['sb3_contrib'] = None\n"  # as if not installed
        "import sb3_trpo_plugin\n"
        "from sb3_trpo_plugin import *\n"  # star imports need no sb3-contrib either
        "try:\n    from sb3_trpo_plugin import RecurrentTRPO\nexcept ImportError as error:\n    print(error)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "pip install 'sb3-trpo-plugin[contrib]'" in result.stdout


class RecallEnv(gym.Env):
    """
    A memory task: the first observation shows a cue (-1 or +1), then ``delay`` blank observations, then a query;
    the action at the query earns 1 if it names the cue (0 for -1, 1 for +1), else 0, and ends the episode. Without
    memory the query carries no information about the cue: a feed-forward policy earns 0.5 on average, at best.
    """

    observation_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, delay: int = 2) -> None:
        self.delay = delay
        self.cue = self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cue, self.t = int(self.np_random.integers(2)), 0
        return np.array([2.0 * self.cue - 1.0, 0.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t <= self.delay:
            return np.zeros(2, dtype=np.float32), 0.0, False, False, {}
        if self.t == self.delay + 1:
            return np.array([0.0, 1.0], dtype=np.float32), 0.0, False, False, {}
        return np.zeros(2, dtype=np.float32), float(int(action) == self.cue), True, False, {}


@pytest.mark.slow
def test_memory_task_is_solved_by_recurrent_trpo_and_not_by_a_feed_forward_policy():
    settings = dict(n_steps=32, batch_size=64, target_kl=0.05, seed=0)
    recurrent = RecurrentTRPO(
        "MlpLstmPolicy",
        make_vec_env(RecallEnv, n_envs=8, seed=0),
        policy_kwargs=dict(lstm_hidden_size=16, net_arch=[16]),
        **settings,
    )
    feed_forward = TRPO("MlpPolicy", make_vec_env(RecallEnv, n_envs=8, seed=0), policy_kwargs=dict(net_arch=[16]), **settings)
    for model in (recurrent, feed_forward):
        model.learn(10_000)
    evaluation_env = make_vec_env(RecallEnv, n_envs=4, seed=100)
    recurrent_return, _ = evaluate_policy(recurrent, evaluation_env, n_eval_episodes=200, deterministic=True)
    feed_forward_return, _ = evaluate_policy(feed_forward, evaluation_env, n_eval_episodes=200, deterministic=True)
    assert recurrent_return >= 0.95
    assert feed_forward_return <= 0.65  # chance is 0.5; 200 episodes: standard deviation 0.035


@pytest.mark.parametrize(
    "policy, observation_space",
    [
        ("MultiInputLstmPolicy", spaces.Dict({"a": spaces.Box(-1, 1, (3,), np.float32), "b": spaces.Discrete(4)})),
        ("CnnLstmPolicy", spaces.Box(0, 255, (36, 36, 1), np.uint8)),
    ],
    ids=["dict", "image"],
)
def test_dict_and_image_observations(policy, observation_space):
    env = make_vec_env(lambda: RandomEnv(ACTION_SPACES["discrete"], observation_space, episode_length=5), n_envs=2, seed=0)
    kwargs = dict(features_extractor_kwargs=dict(features_dim=8)) if policy == "CnnLstmPolicy" else {}
    model = RecurrentTRPO(
        policy, env, n_steps=8, batch_size=8, seed=0, sub_sampling_factor=2, policy_kwargs={**TINY_LSTM, **kwargs}
    )
    model.learn(32)  # two updates, the policy step on every other sequence
    assert model._n_updates == 2
    collected = recurrent_model_from(model)
    batch = whole_batch(collected)
    assert batch.n_sequences > 2
    with torch.no_grad():
        log_prob = collected.make_policy_step().batch_distribution(batch).log_prob(batch.actions)
    torch.testing.assert_close(log_prob, batch.old_log_prob, rtol=1e-5, atol=1e-5)
    # Sub-sampled first, then the advantages z-scored over the sub-sample (sb3-contrib's order, as TRPO's).
    subsampled = whole_batch(collected)
    assert subsampled.advantages.shape[0] < int(subsampled.mask.numel())
    assert abs(float(subsampled.advantages.mean())) < 1e-5 and abs(float(subsampled.advantages.std()) - 1) < 1e-3


def recurrent_model_from(model: RecurrentTRPO) -> RecurrentTRPO:
    """``model`` with a fresh rollout of its current weights in its buffer (no update after it)."""
    _, callback = model._setup_learn(model.n_steps * model.n_envs, callback=None, reset_num_timesteps=False)
    callback.on_training_start(locals(), globals())
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)
    return model
