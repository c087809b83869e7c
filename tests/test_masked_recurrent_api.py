"""
MaskableRecurrentTRPO's API: no invalid action in training or ``predict`` (hypothesis), ``predict`` with LSTM states
and masks, save/load, sb3-contrib's ``ActionMasker``, ``get_action_masks``, maskable ``evaluate_policy`` and
``MaskableEvalCallback``, the evaluation and the evaluation callback that carry the states, ``use_masking``, dict and
image observations, the constructor's checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from sb3_contrib.common.maskable.evaluation import evaluate_policy
from sb3_contrib.common.maskable.utils import get_action_masks
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.wrappers import ActionMasker
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor

from sb3_trpo_plugin import HyperparameterError, MaskableRecurrentTRPO
from sb3_trpo_plugin.envs import CueWithForbiddenActionsEnv
from sb3_trpo_plugin.masked_recurrent import MaskableRecurrentEvalCallback
from sb3_trpo_plugin.masked_recurrent import evaluate_policy as masked_recurrent_evaluate
from sb3_trpo_plugin.masked_recurrent.policies import MaskableRecurrentActorCriticPolicy
from tests.conftest import RandomEnv
from tests.test_masked_recurrent import SPACES, TINY_LSTM, MaskedRandomEnv, components_of, masked_recurrent_model


def random_masks(action_space: spaces.Space, n_rows: int, generator: np.random.Generator) -> np.ndarray:
    """Random masks, each component with at least one valid choice."""
    blocks = []
    for size in components_of(action_space):
        block = generator.random((n_rows, size)) < 0.4
        block[np.arange(n_rows), generator.integers(size, size=n_rows)] = True
        blocks.append(block)
    return np.concatenate(blocks, axis=1)


def invalid_rows(action_space: spaces.Space, actions: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Which rows of ``actions`` take an invalid choice under ``masks``."""
    sizes = components_of(action_space)
    choices = actions.reshape(len(masks), -1).astype(int)
    offsets = np.cumsum([0, *sizes[:-1]])
    return ~np.take_along_axis(masks, offsets + choices, axis=1).all(axis=1)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(space=st.sampled_from(sorted(SPACES)), seed=st.integers(0, 2**16))
def test_training_and_predict_never_pick_an_invalid_action(space: str, seed: int) -> None:
    action_space = SPACES[space]
    env = make_vec_env(lambda: MaskedRandomEnv(action_space, episode_length=4), n_envs=2, seed=seed)
    model = MaskableRecurrentTRPO("MlpLstmPolicy", env, n_steps=8, batch_size=8, seed=seed, policy_kwargs=TINY_LSTM)
    model.learn(32)  # the environment raises on an invalid action
    assert model._n_updates == 2
    generator = np.random.default_rng(seed)
    observations = generator.uniform(-1, 1, size=(64, 4)).astype(np.float32)
    masks = random_masks(action_space, 64, generator)
    states = None
    for deterministic in (False, True):
        actions, states = model.predict(observations, states, np.zeros(64, dtype=bool), deterministic, action_masks=masks)
        assert not invalid_rows(action_space, actions, masks).any()


def test_predict_carries_the_lstm_states_and_resets_them_at_episode_starts() -> None:
    env = make_vec_env(lambda: MaskedRandomEnv(SPACES["discrete"]), n_envs=2, seed=0)
    model = MaskableRecurrentTRPO("MlpLstmPolicy", env, n_steps=8, batch_size=8, seed=0, policy_kwargs=TINY_LSTM)
    observations = np.random.default_rng(0).uniform(-1, 1, size=(2, 4)).astype(np.float32)
    masks = np.ones((2, 4), dtype=bool)
    _, first = model.predict(observations, None, np.ones(2, dtype=bool), action_masks=masks)
    assert first is not None and first[0].shape == (1, 2, 3)
    _, carried = model.predict(observations, first, np.zeros(2, dtype=bool), action_masks=masks)
    _, reset = model.predict(observations, first, np.ones(2, dtype=bool), action_masks=masks)
    assert reset is not None and carried is not None
    np.testing.assert_array_equal(reset[0], first[0])  # a start resets to zero states: the first call again
    assert not np.array_equal(carried[0], first[0])
    # The states are the policy's forward's: the step from them, with one valid action only, picks it.
    only = np.zeros((2, 4), dtype=bool)
    only[:, 2] = True
    actions, _ = model.predict(observations, carried, np.zeros(2, dtype=bool), action_masks=only)
    np.testing.assert_array_equal(actions, [2, 2])
    # One observation, not vectorised: one action.
    action, _ = model.predict(observations[0], None, None, deterministic=True, action_masks=only[0])
    assert action.shape == () and int(action) == 2


def test_save_load_and_predict(tmp_path: Path) -> None:
    env = make_vec_env(lambda: MaskedRandomEnv(SPACES["multidiscrete"]), n_envs=2, seed=0)
    model = MaskableRecurrentTRPO("MlpLstmPolicy", env, n_steps=8, batch_size=8, seed=0, policy_kwargs=TINY_LSTM)
    model.learn(16, use_masking=True)
    model.save(tmp_path / "model.zip")
    loaded = MaskableRecurrentTRPO.load(tmp_path / "model.zip", env=env)
    assert isinstance(loaded.policy, MaskableRecurrentActorCriticPolicy)
    for ours, theirs in zip(model.policy.parameters(), loaded.policy.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    generator = np.random.default_rng(1)
    observations = generator.uniform(-1, 1, size=(5, 4)).astype(np.float32)
    masks = random_masks(SPACES["multidiscrete"], 5, generator)
    starts = np.zeros(5, dtype=bool)
    expected, expected_states = model.predict(observations, None, starts, deterministic=True, action_masks=masks)
    actions, states = loaded.predict(observations, None, starts, deterministic=True, action_masks=masks)
    np.testing.assert_array_equal(actions, expected)
    assert states is not None and expected_states is not None
    np.testing.assert_array_equal(states[0], expected_states[0])
    loaded.learn(16)  # and training goes on


def never_the_last_action(env) -> np.ndarray:
    masks = np.ones(3, dtype=bool)
    masks[-1] = False
    return masks


def test_action_masker_get_action_masks_evaluate_policy_and_eval_callback() -> None:
    def masked_env():
        return ActionMasker(Monitor(RandomEnv(spaces.Discrete(3), episode_length=4)), never_the_last_action)

    env = make_vec_env(masked_env, n_envs=2, seed=0)
    np.testing.assert_array_equal(get_action_masks(env), [[True, True, False]] * 2)
    eval_env = make_vec_env(masked_env, n_envs=1, seed=1)
    callback = MaskableEvalCallback(eval_env, n_eval_episodes=3, eval_freq=8, warn=False)
    model = MaskableRecurrentTRPO("MlpLstmPolicy", env, n_steps=8, batch_size=8, seed=0, policy_kwargs=TINY_LSTM)
    model.learn(32, callback=callback)
    assert model.rollout_buffer.actions.max() < 2  # the masked action never taken
    assert callback.n_calls == 16 and np.isfinite(callback.last_mean_reward)  # evaluated every 8 calls
    returns, lengths = evaluate_policy(model, eval_env, n_eval_episodes=4, return_episode_rewards=True, warn=False)
    assert len(returns) == 4 and all(length == 4 for length in lengths)  # type: ignore[arg-type]
    # Action sum reward 0.1·a - 0.05, a in {0, 1}: four steps give at most 0.2.
    assert all(-0.2 - 1e-6 <= r <= 0.2 + 1e-6 for r in returns)  # type: ignore[union-attr]


def test_masking_can_be_turned_off_and_is_required_otherwise() -> None:
    env = make_vec_env(lambda: RandomEnv(spaces.Discrete(3), episode_length=4), n_envs=2, seed=0)
    model = MaskableRecurrentTRPO("MlpLstmPolicy", env, n_steps=8, batch_size=8, seed=0, policy_kwargs=TINY_LSTM)
    with pytest.raises(ValueError, match="action_masks"):
        model.learn(16)
    model.learn(16, use_masking=False)
    assert model._n_updates == 1
    assert model.rollout_buffer.action_masks.all()  # stored as every action valid


@pytest.mark.parametrize(
    "policy, observation_space",
    [
        ("MultiInputLstmPolicy", spaces.Dict({"a": spaces.Box(-1, 1, (3,), np.float32), "b": spaces.Discrete(4)})),
        ("CnnLstmPolicy", spaces.Box(0, 255, (36, 36, 1), np.uint8)),
    ],
    ids=["dict", "image"],
)
def test_dict_and_image_observations(policy: str, observation_space: spaces.Space) -> None:
    env = make_vec_env(
        lambda: MaskedRandomEnv(SPACES["discrete"], observation_space=observation_space, episode_length=5), n_envs=2, seed=0
    )
    kwargs = dict(features_extractor_kwargs=dict(features_dim=8)) if policy == "CnnLstmPolicy" else {}
    model = MaskableRecurrentTRPO(
        policy, env, n_steps=8, batch_size=8, seed=0, sub_sampling_factor=2, policy_kwargs={**TINY_LSTM, **kwargs}
    )
    model.learn(32)  # the environment raises on an invalid action
    assert model._n_updates == 2
    batch = model._policy_batch(next(model.rollout_buffer.get(batch_size=None)))
    with torch.no_grad():
        log_prob = model.make_policy_step().batch_distribution(batch).log_prob(batch.actions)
    assert torch.isfinite(log_prob).all()


def test_constructor_checks() -> None:
    box_env = make_vec_env(lambda: RandomEnv(spaces.Box(-1, 1, (2,), np.float32)), n_envs=1)
    with pytest.raises(HyperparameterError, match="Discrete, MultiDiscrete and MultiBinary"):
        MaskableRecurrentTRPO("MlpLstmPolicy", box_env)
    env = make_vec_env(lambda: MaskedRandomEnv(SPACES["discrete"]), n_envs=1)
    with pytest.raises(ValueError, match="MaskableRecurrentActorCriticPolicy"):
        MaskableRecurrentTRPO(RecurrentActorCriticPolicy, env)  # sb3-contrib's, without masks
    with pytest.raises(ValueError, match="gSDE"):
        MaskableRecurrentTRPO("MlpLstmPolicy", env, use_sde=True)
    with pytest.raises(TypeError, match="clip_range"):
        MaskableRecurrentTRPO("MlpLstmPolicy", env, clip_range=0.2)


def test_the_cue_task_needs_memory_and_masks() -> None:
    """The task's rules: the cue only at the first step, the cued action allowed at the last, forbidden actions end it."""
    env = CueWithForbiddenActionsEnv(n_actions=4, n_forbidden=2, episode_length=3)
    for seed in range(20):
        observation, _ = env.reset(seed=seed)
        assert observation[env.cue] == 1.0 and observation.sum() == 1.0
        assert env.action_masks().sum() == 2
        observation, reward, terminated, _, _ = env.step(int(np.flatnonzero(env.action_masks())[0]))
        assert observation.sum() == 0.0 and reward == 0.0 and not terminated
        observation, _, _, _, _ = env.step(int(np.flatnonzero(env.action_masks())[0]))
        assert observation[-1] == 1.0 and observation[:-1].sum() == 0.0 and env.action_masks()[env.cue]
        _, reward, terminated, _, _ = env.step(env.cue)
        assert reward == 1.0 and terminated
    env.reset(seed=0)
    _, reward, terminated, _, _ = env.step(int(np.flatnonzero(~env.action_masks())[0]))
    assert reward == -1.0 and terminated


def test_evaluation_carries_the_lstm_states() -> None:
    """
    On the cue task, a policy that answers the cue it remembers wins every episode when its states are carried; from
    zero states at every step (sb3-contrib's maskable evaluate_policy) it cannot know the cue at the last step.
    """
    env = make_vec_env(CueWithForbiddenActionsEnv, n_envs=2, seed=0)
    model = MaskableRecurrentTRPO("MlpLstmPolicy", env, n_steps=8, batch_size=8, seed=0, policy_kwargs=TINY_LSTM)

    class Oracle:
        """Remembers the cue in its "state" (as an LSTM would) and answers it at the last step."""

        def predict(self, observation, state, episode_start, deterministic, action_masks):
            cue = np.where(observation[:, :-1].any(axis=1), observation[:, :-1].argmax(axis=1), -1 if state is None else state)
            last = observation[:, -1] > 0
            allowed_first = action_masks.argmax(axis=1)
            return np.where(last, cue, allowed_first), cue

    oracle_returns, _ = masked_recurrent_evaluate(Oracle(), env, n_eval_episodes=20, return_episode_rewards=True)
    assert oracle_returns == [1.0] * 20
    sb3_contrib_returns, _ = evaluate_policy(Oracle(), env, n_eval_episodes=20, return_episode_rewards=True, warn=False)
    assert max(sb3_contrib_returns) < 1.0  # type: ignore[arg-type]  (no state: the cue is -1 at the last step)
    mean, _ = masked_recurrent_evaluate(model, env, n_eval_episodes=10)
    assert -1.0 <= mean <= 1.0


def test_eval_callback_carries_the_lstm_states(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    During ``learn()`` on the cue task, the callback's mean return is ``masked_recurrent.evaluate_policy``'s on the same
    model at the same moment (on a twin of the evaluation environment, kept in step with it), ``predict`` receives the
    states it returned (sb3-contrib's stateless evaluation passes none), and the log, the best model and the file follow.
    """
    env = make_vec_env(CueWithForbiddenActionsEnv, n_envs=2, seed=0)
    model = MaskableRecurrentTRPO("MlpLstmPolicy", env, n_steps=8, batch_size=8, seed=0, policy_kwargs=TINY_LSTM)
    model.set_logger(configure(str(tmp_path / "log"), ["csv"]))
    states_seen: list[bool] = []  # per predict call: were the states of the previous call passed in?
    predict = model.predict

    def spy(observation, state=None, episode_start=None, deterministic=False, action_masks=None):
        states_seen.append(state is not None)
        return predict(observation, state, episode_start, deterministic, action_masks=action_masks)

    monkeypatch.setattr(model, "predict", spy)
    twin = make_vec_env(CueWithForbiddenActionsEnv, n_envs=1, seed=1)
    stateless = make_vec_env(CueWithForbiddenActionsEnv, n_envs=1, seed=1)

    class Compare(BaseCallback):
        """After each evaluation: the package's evaluate_policy on the twin, then sb3-contrib's stateless one."""

        def __init__(self) -> None:
            super().__init__()
            self.pairs: list[tuple[float, float]] = []
            self.callback_states: list[bool] = []
            self.stateless_states: list[bool] = []

        def _on_step(self) -> bool:
            self.callback_states = list(states_seen)  # the callback's own evaluations so far
            mean, _ = masked_recurrent_evaluate(model, twin, n_eval_episodes=6)
            self.pairs.append((evaluation.last_mean_reward, mean))
            states_seen.clear()
            evaluate_policy(model, stateless, n_eval_episodes=6, warn=False)
            self.stateless_states += states_seen
            states_seen.clear()
            return True

    class CountNewBests(BaseCallback):
        def _on_step(self) -> bool:
            return True

    compare, new_bests = Compare(), CountNewBests()
    evaluation = MaskableRecurrentEvalCallback(
        make_vec_env(CueWithForbiddenActionsEnv, n_envs=1, seed=1),
        callback_on_new_best=new_bests,
        callback_after_eval=compare,
        n_eval_episodes=6,
        eval_freq=8,
        log_path=str(tmp_path),
        best_model_save_path=str(tmp_path),
        verbose=0,
    )
    model.learn(64, callback=evaluation)
    assert len(compare.pairs) == 4  # 32 calls, one evaluation every 8
    for callback_mean, package_mean in compare.pairs:
        assert callback_mean == package_mean
    # The last evaluation: 6 episodes of 4 steps, 24 calls; all but the first get the states the previous call returned.
    assert compare.callback_states.count(True) == 6 * 4 - 1 and not compare.callback_states[0]
    assert compare.stateless_states and not any(compare.stateless_states)  # sb3-contrib: zero states at every step
    means = [mean for mean, _ in compare.pairs]
    assert evaluation.best_mean_reward == max(means)
    assert new_bests.n_calls == sum(mean > max(means[:i], default=-np.inf) for i, mean in enumerate(means))
    assert (tmp_path / "best_model.zip").is_file()
    saved = np.load(tmp_path / "evaluations.npz")
    np.testing.assert_array_equal(saved["timesteps"], [16, 32, 48, 64])
    np.testing.assert_allclose(saved["results"].mean(axis=1), means)
    progress = np.genfromtxt(tmp_path / "log" / "progress.csv", delimiter=",", names=True)
    logged = progress["evalmean_reward"][np.isfinite(progress["evalmean_reward"])]
    np.testing.assert_allclose(logged, means)


def test_safe_load_restores_the_model_without_unpickling(tmp_path: Path) -> None:
    from sb3_trpo_plugin import safe_load

    env = make_vec_env(lambda: MaskedRandomEnv(SPACES["multibinary"]), n_envs=2, seed=0)
    model = MaskableRecurrentTRPO(
        "MlpLstmPolicy", env, n_steps=8, batch_size=8, seed=0, target_kl=0.02, policy_kwargs=TINY_LSTM
    )
    model.learn(16)
    model.save(tmp_path / "model.zip")
    restored = safe_load(tmp_path / "model.zip", env=env)
    assert type(restored) is MaskableRecurrentTRPO and type(restored.policy) is type(model.policy)
    assert (restored.num_timesteps, restored.target_kl, restored.n_steps) == (16, 0.02, 8)
    for ours, theirs in zip(model.policy.state_dict().values(), restored.policy.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs)
    generator = np.random.default_rng(2)
    observations = generator.uniform(-1, 1, size=(6, 4)).astype(np.float32)
    masks = random_masks(SPACES["multibinary"], 6, generator)
    expected, _ = model.predict(observations, None, None, deterministic=True, action_masks=masks)
    actions, _ = restored.predict(observations, None, None, deterministic=True, action_masks=masks)  # type: ignore[call-arg]
    np.testing.assert_array_equal(actions, expected)
    restored.learn(16, reset_num_timesteps=False)
    assert restored.num_timesteps == 32


def test_without_the_package_loop_collection_is_refused_not_unmasked() -> None:
    env = make_vec_env(lambda: MaskedRandomEnv(SPACES["discrete"]), n_envs=2, seed=0)
    model = MaskableRecurrentTRPO("MlpLstmPolicy", env, n_steps=8, batch_size=8, seed=0, policy_kwargs=TINY_LSTM)
    model.lean_rollout = False
    with pytest.raises(NotImplementedError, match="no rollout loop for action masks with LSTM states"):
        model.learn(16)


def test_without_sb3_contrib_the_import_names_the_extra() -> None:
    import os
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['sb3_contrib'] = None\n"  # as if not installed
        "import sb3_trpo_plugin\n"
        "try:\n    from sb3_trpo_plugin import MaskableRecurrentTRPO\nexcept ImportError as error:\n    print(error)\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "MaskableRecurrentTRPO needs sb3-contrib" in result.stdout
    assert "pip install 'sb3-trpo-plugin[contrib]'" in result.stdout


def test_evaluate_actions_is_the_steps_masked_distribution() -> None:
    """The policy's own evaluate_actions (values, log-probabilities, entropies with masks) agrees with the step's re-run."""
    model = masked_recurrent_model("multibinary", n_envs=3, n_steps=16, episode_length=5)  # rollouts, no update
    samples = next(model.rollout_buffer.get(batch_size=None))
    batch = model._whole_policy_batch(samples)
    with torch.no_grad():
        values, log_prob, entropy = model.policy.evaluate_actions(
            samples.observations, samples.actions, samples.lstm_states, samples.episode_starts, samples.action_masks
        )
        distribution = model.make_policy_step().batch_distribution(batch)
    valid = samples.mask > 0.5
    torch.testing.assert_close(log_prob[valid], distribution.log_prob(batch.actions), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(log_prob[valid], samples.old_log_prob[valid], rtol=1e-5, atol=1e-5)  # the rollout's
    assert entropy is not None and torch.isfinite(entropy).all() and values.shape == (valid.numel(), 1)


@pytest.mark.parametrize("space", sorted(SPACES))
def test_onnx_export_takes_masks_and_lstm_states(tmp_path: Path, space: str) -> None:
    """``export_onnx``: the graph, run by onnxruntime with masks and carried states, acts as ``predict`` does."""
    import onnxruntime

    from sb3_trpo_plugin import export_onnx

    action_space = SPACES[space]
    env = make_vec_env(lambda: MaskedRandomEnv(action_space), n_envs=2, seed=0)
    model = MaskableRecurrentTRPO("MlpLstmPolicy", env, n_steps=8, batch_size=8, seed=0, policy_kwargs=TINY_LSTM)
    model.learn(16)
    exported = export_onnx(model, tmp_path / "policy.onnx")
    assert [tensor.name for tensor in exported.inputs] == [
        "observation", "action_masks", "lstm_hidden", "lstm_cell", "episode_starts"
    ]  # fmt: skip
    session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    generator = np.random.default_rng(4)
    states, hidden, cell = None, np.zeros((1, 6, 3), np.float32), np.zeros((1, 6, 3), np.float32)
    starts = np.ones(6, dtype=bool)
    for _ in range(12):
        observations = generator.uniform(-1, 1, size=(6, 4)).astype(np.float32)
        masks = random_masks(action_space, 6, generator)
        expected, states = model.predict(observations, states, starts, deterministic=True, action_masks=masks)
        inputs = dict(observation=observations, action_masks=masks, lstm_hidden=hidden, lstm_cell=cell, episode_starts=starts)
        outputs = dict(zip(names, session.run(None, inputs), strict=True))
        np.testing.assert_array_equal(outputs["actions"].reshape(expected.shape), expected)
        assert not invalid_rows(action_space, outputs["actions"], masks).any()
        assert states is not None
        np.testing.assert_allclose(outputs["next_lstm_hidden"], states[0], rtol=1e-5, atol=1e-6)
        hidden, cell, starts = outputs["next_lstm_hidden"], outputs["next_lstm_cell"], generator.random(6) < 0.3


def test_data_parallel_training_is_refused_with_the_reason(monkeypatch):
    """Under torchrun (simulated: a process group said to exist), the constructor refuses before building anything."""
    from types import SimpleNamespace

    import sb3_trpo_plugin.parallel.algorithm as data_parallel

    monkeypatch.setattr(data_parallel, "init_from_environment", lambda device: True)
    monkeypatch.setattr(data_parallel, "Collectives", lambda: SimpleNamespace(world_size=2, rank=0))
    from sb3_contrib.common.envs import InvalidActionEnvDiscrete

    with pytest.raises(NotImplementedError, match="does not train data-parallel"):
        MaskableRecurrentTRPO("MlpLstmPolicy", InvalidActionEnvDiscrete(dim=4, n_invalid_actions=1), n_steps=8, batch_size=8)
