"""
ONNX export: every kind of policy's graph, run by onnxruntime, against ``predict(deterministic=True)`` (exactly for
integer actions, within float32 rounding for continuous ones), batched and single observations, VecNormalize folded
in, recurrent rollouts over episode boundaries, the distribution's parameters, refusals, ``sb3-trpo export``.

These tests compare the written graph with ``predict`` themselves, on their own observations: the exporter's own
check (:mod:`sb3_trpo_plugin.export.check`) is tested by the refusals.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import onnxruntime
import pytest
import torch
from gymnasium import spaces
from sb3_contrib.common.envs import InvalidActionEnvDiscrete, InvalidActionEnvMultiBinary, InvalidActionEnvMultiDiscrete
from sb3_contrib.common.maskable.distributions import make_masked_proba_distribution
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3 import SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from torch import nn

from sb3_trpo_plugin import TRPO, MaskableTRPO, RecurrentTRPO, export_onnx
from sb3_trpo_plugin.cli import main
from sb3_trpo_plugin.export import METADATA_KEY, ExportError
from sb3_trpo_plugin.export.check import GraphCheck
from sb3_trpo_plugin.export.exporter import reference_predict
from sb3_trpo_plugin.export.graph import exportable_policy
from sb3_trpo_plugin.export.observations import ObservationNormalization
from sb3_trpo_plugin.serialization.vec_normalize_statistics import write_vec_normalize_statistics
from tests.conftest import RandomEnv

REPO = Path(__file__).resolve().parents[1]
#: Float32 rounding: onnxruntime's kernels sum in another order than torch's.
RTOL, ATOL = 1e-5, 1e-6
N_OBSERVATIONS = 300


def onnx_policy(path: Path) -> Callable[..., dict[str, np.ndarray]]:
    """The graph as a deployment runs it: onnxruntime alone, inputs and outputs by name."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return lambda **inputs: dict(zip(names, session.run(None, inputs), strict=True))


def draw(space: spaces.Space, n: int, seed: int = 1) -> Any:
    """``n`` observations of ``space``, batched (a dict of batches for Dict spaces)."""
    space.seed(seed)
    samples = [space.sample() for _ in range(n)]
    if isinstance(space, spaces.Dict):
        return {key: np.stack([sample[key] for sample in samples]) for key in space.spaces}
    return np.stack(samples).astype(space.dtype)


def assert_same_actions(found: np.ndarray, expected: np.ndarray) -> None:
    """Exactly for integer actions, within float32 rounding for continuous ones."""
    expected = np.asarray(expected)
    assert found.shape == expected.shape
    if np.issubdtype(expected.dtype, np.floating) and not np.issubdtype(found.dtype, np.integer):
        np.testing.assert_allclose(found, expected, rtol=RTOL, atol=ATOL)
    else:
        np.testing.assert_array_equal(found, expected)


def spread(model: Any, factor: float = 300.0) -> Any:
    """Scale the action head (SB3 initialises it with gain 0.01): continuous actions leave their bounds, choices vary."""
    with torch.no_grad():
        model.policy.action_net.weight.mul_(factor)
    return model


def vec_env(action_space: spaces.Space, observation_space: spaces.Space | None = None, n_envs: int = 1, **kwargs: Any):
    return make_vec_env(lambda: RandomEnv(action_space, observation_space, **kwargs), n_envs=n_envs, seed=0)


BOX = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
TRPO_KINDS: dict[str, tuple[spaces.Space, dict[str, Any]]] = {
    "box": (BOX, {}),
    "box_2d": (spaces.Box(-2.0, 1.0, shape=(2, 2), dtype=np.float32), {}),
    "gsde": (BOX, {"use_sde": True}),
    "gsde_squashed": (spaces.Box(-2.0, 3.0, shape=(2,), dtype=np.float32), {"use_sde": True, "squash_output": True}),
    "discrete": (spaces.Discrete(4), {}),
    "multidiscrete": (spaces.MultiDiscrete([2, 3, 4]), {}),
    "multibinary": (spaces.MultiBinary(3), {}),
}


def trpo_model(kind: str) -> TRPO:
    action_space, settings = TRPO_KINDS[kind]
    settings = dict(settings)
    policy_kwargs = {"squash_output": settings.pop("squash_output")} if "squash_output" in settings else {}
    model = TRPO(
        "MlpPolicy", vec_env(action_space), n_steps=64, batch_size=64, seed=0, policy_kwargs=policy_kwargs, **settings
    )
    return spread(model)


# --- every action space of TRPO ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(TRPO_KINDS))
def test_trpo_graph_acts_as_predict(tmp_path: Path, kind: str) -> None:
    model = trpo_model(kind)
    exported = export_onnx(model, tmp_path / "policy.onnx")
    assert exported.path.exists() and exported.size_bytes == exported.path.stat().st_size
    assert exported.check is not None and exported.check.observations > 256
    run = onnx_policy(exported.path)
    observations = draw(model.observation_space, N_OBSERVATIONS)
    expected, _ = model.predict(observations, deterministic=True)
    actions = run(observation=observations)["actions"]
    assert_same_actions(actions, expected)
    space = model.action_space
    if isinstance(space, spaces.Box):
        assert actions.dtype == np.float32 and actions.shape == (N_OBSERVATIONS, *space.shape)
        at_bounds = np.isclose(actions, space.low) | np.isclose(actions, space.high)
        if kind == "gsde_squashed":  # tanh keeps them inside, unscaled onto [low, high], the range covered
            fraction = (actions - space.low) / (space.high - space.low)
            assert 0 < fraction.min() < 0.1 and 0.9 < fraction.max() < 1
        else:  # the spread head's means leave the bounds: clipping happened, not everywhere
            assert 0.05 < at_bounds.mean() < 0.95
    else:
        assert actions.dtype == np.int64  # predict's MultiBinary float 0/1 come out as integers
        assert len(np.unique(actions.reshape(N_OBSERVATIONS, -1), axis=0)) > 1
    # A single observation: predict without a batch axis, the graph with a batch of one.
    for observation in observations[:5]:
        expected, _ = model.predict(observation, deterministic=True)
        assert_same_actions(run(observation=observation[None])["actions"][0], expected)


@pytest.mark.parametrize("algorithm", ["PPO", "A2C", "MaskablePPO", "RecurrentPPO"])
def test_other_actor_critic_algorithms(tmp_path: Path, algorithm: str) -> None:
    """SB3's and sb3-contrib's own algorithms share the policies, and export the same way."""
    import sb3_contrib
    import stable_baselines3

    algorithm_class = getattr(stable_baselines3, algorithm, None) or getattr(sb3_contrib, algorithm)
    policy = "MlpLstmPolicy" if algorithm == "RecurrentPPO" else "MlpPolicy"
    env = MASKED_ENVS["discrete"]() if algorithm == "MaskablePPO" else vec_env(spaces.Discrete(4), n_envs=2)
    settings = {} if algorithm == "A2C" else {"batch_size": 16}
    model = spread(algorithm_class(policy, env, n_steps=16, seed=0, **settings), 5.0)
    exported = export_onnx(model, tmp_path / "policy.onnx")
    assert exported.check is not None and exported.metadata["algorithm"] == algorithm
    observations = draw(model.observation_space, 64)
    inputs: dict[str, np.ndarray] = {"observation": observations}
    keywords: dict[str, Any] = {}
    if algorithm == "MaskablePPO":
        inputs["action_masks"] = keywords["action_masks"] = random_masks(np.random.default_rng(0), 64, [6])
    if algorithm == "RecurrentPPO":
        zeros = np.zeros((1, 64, model.policy.lstm_actor.hidden_size), np.float32)
        inputs.update(lstm_hidden=zeros, lstm_cell=zeros, episode_starts=np.ones(64, dtype=bool))
    expected, _ = model.predict(observations, deterministic=True, **keywords)
    assert_same_actions(onnx_policy(exported.path)(**inputs)["actions"], expected)


def test_export_leaves_the_model_as_it_was(tmp_path: Path) -> None:
    model = trpo_model("gsde")
    model.policy.set_training_mode(True)
    parameters = {name: value.clone() for name, value in model.policy.state_dict().items()}
    noise = model.policy.action_dist.exploration_mat.clone()
    export_onnx(model, tmp_path / "policy.onnx", stochastic=True)
    assert model.policy.training  # the exporter traced a copy, in evaluation mode
    assert all(torch.equal(value, parameters[name]) for name, value in model.policy.state_dict().items())
    assert torch.equal(model.policy.action_dist.exploration_mat, noise)


def test_a_model_on_another_device_is_checked_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """GPU convolutions (TF32) differ from the CPU's beyond float32 rounding: the check uses the policy's CPU copy."""
    model = trpo_model("discrete")
    copy = exportable_policy(model.policy)
    assert reference_predict(model, model.policy, copy) == model.predict
    monkeypatch.setattr(type(model.policy), "device", property(lambda _: torch.device("cuda", 0)))
    assert reference_predict(model, model.policy, copy) == copy.predict


def test_observation_spaces_dict_discrete_multibinary(tmp_path: Path) -> None:
    observation_space = spaces.Dict(
        {
            "vector": spaces.Box(-3.0, 3.0, shape=(5,), dtype=np.float32),
            "grid": spaces.MultiDiscrete([3, 5]),
            "mode": spaces.Discrete(4),
            "flags": spaces.MultiBinary(3),
            "wide": spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float64),
        }
    )
    model = spread(TRPO("MultiInputPolicy", vec_env(spaces.Discrete(5), observation_space), n_steps=32, batch_size=32))
    exported = export_onnx(model, tmp_path / "policy.onnx")
    assert {tensor.name: tensor.dtype for tensor in exported.inputs} == {
        "observation.flags": np.int8,
        "observation.grid": np.int64,
        "observation.mode": np.int64,
        "observation.vector": np.float32,
        "observation.wide": np.float64,
    }  # what the environment returns: one-hot encoding and casts happen in the graph
    observations = draw(observation_space, N_OBSERVATIONS)
    expected, _ = model.predict(observations, deterministic=True)
    run = onnx_policy(exported.path)
    assert_same_actions(run(**{f"observation.{key}": value for key, value in observations.items()})["actions"], expected)


def test_images_channels_last_as_the_environment_returns_them(tmp_path: Path) -> None:
    image = spaces.Box(0, 255, shape=(36, 36, 3), dtype=np.uint8)  # channels last: SB3 adds VecTransposeImage
    model = spread(TRPO("CnnPolicy", vec_env(spaces.Discrete(4), image), n_steps=16, batch_size=16, seed=0))
    assert model.observation_space.shape == (3, 36, 36)
    observations = draw(image, 64)
    expected, _ = model.predict(observations, deterministic=True)  # predict transposes channel-last images itself
    exported = export_onnx(model, tmp_path / "hwc.onnx")
    assert exported.inputs[0].shape == ("batch", 36, 36, 3) and exported.inputs[0].dtype == np.uint8
    assert_same_actions(onnx_policy(exported.path)(observation=observations)["actions"], expected)
    assert len(np.unique(expected)) > 1
    # Asked for the model's own layout (channels first), as a graph for an environment that returns it.
    exported = export_onnx(model, tmp_path / "chw.onnx", channels_last=False)
    assert exported.inputs[0].shape == ("batch", 3, 36, 36)
    first = np.ascontiguousarray(observations.transpose(0, 3, 1, 2))
    assert_same_actions(onnx_policy(exported.path)(observation=first)["actions"], expected)


def test_dict_with_image_and_vector(tmp_path: Path) -> None:
    observation_space = spaces.Dict(
        {"camera": spaces.Box(0, 255, shape=(36, 36, 1), dtype=np.uint8), "speed": spaces.Box(-1.0, 1.0, shape=(3,))}
    )
    model = spread(TRPO("MultiInputPolicy", vec_env(BOX, observation_space), n_steps=16, batch_size=16, seed=0))
    exported = export_onnx(model, tmp_path / "policy.onnx")
    assert [tensor.shape for tensor in exported.inputs] == [("batch", 36, 36, 1), ("batch", 3)]
    observations = draw(observation_space, 64)
    expected, _ = model.predict(observations, deterministic=True)
    found = onnx_policy(exported.path)(**{f"observation.{key}": value for key, value in observations.items()})["actions"]
    assert_same_actions(found, expected)


# --- VecNormalize folded in ----------------------------------------------------------------------------------------


def normalized_env(clip_obs: float = 1.0, **kwargs: Any) -> VecNormalize:
    """Pendulum under VecNormalize with statistics from 100 random steps, and a small clip so that clipping happens."""
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0), clip_obs=clip_obs, **kwargs)
    env.reset()
    env.action_space.seed(0)
    for _ in range(100):
        env.step(np.stack([env.action_space.sample() for _ in range(2)]))
    return env


def test_vec_normalize_folded_in(tmp_path: Path) -> None:
    env = normalized_env()
    model = spread(TRPO("MlpPolicy", env, n_steps=32, batch_size=32, seed=0))
    raw = draw(env.observation_space, N_OBSERVATIONS)
    normalized = env.normalize_obs(raw)
    assert (np.abs(normalized) == 1.0).any() and (np.abs(normalized) < 1.0).any()  # clipped, and not all of it
    expected, _ = model.predict(normalized, deterministic=True)
    # By default, the model's own VecNormalize: raw observations in.
    exported = export_onnx(model, tmp_path / "auto.onnx")
    assert exported.metadata["vec_normalize"] == {"clip_obs": 1.0}
    found = onnx_policy(exported.path)(observation=raw)["actions"]
    assert_same_actions(found, expected)
    assert len(np.unique(found)) > 10
    # The same statistics from either file (SB3's pickle read without unpickling code), or the wrapper itself.
    write_vec_normalize_statistics(env, tmp_path / "vecnormalize.npz")
    env.save(str(tmp_path / "vecnormalize.pkl"))
    for source in (tmp_path / "vecnormalize.npz", tmp_path / "vecnormalize.pkl", env):
        path = tmp_path / "from_source.onnx"
        export_onnx(model, path, vec_normalize=source)
        np.testing.assert_array_equal(onnx_policy(path)(observation=raw)["actions"], found)
    # Left out: the graph takes normalised observations, as predict does.
    exported = export_onnx(model, tmp_path / "normalized_in.onnx", vec_normalize=False)
    assert exported.metadata["vec_normalize"] is None
    assert_same_actions(onnx_policy(exported.path)(observation=normalized)["actions"], expected)


def test_vec_normalize_of_some_dict_keys(tmp_path: Path) -> None:
    observation_space = spaces.Dict(
        {"a": spaces.Box(-5.0, 5.0, shape=(3,), dtype=np.float32), "b": spaces.Box(-5.0, 5.0, shape=(2,), dtype=np.float32)}
    )
    env = VecNormalize(vec_env(BOX, observation_space, n_envs=2), norm_obs_keys=["b"], clip_obs=2.0)
    env.reset()
    for _ in range(50):
        env.step(np.zeros((2, 2), dtype=np.float32))
    model = spread(TRPO("MultiInputPolicy", env, n_steps=32, batch_size=32, seed=0))
    raw = draw(observation_space, N_OBSERVATIONS)
    expected, _ = model.predict(env.normalize_obs(raw), deterministic=True)
    exported = export_onnx(model, tmp_path / "policy.onnx")
    assert [entry["vec_normalize"] for entry in exported.metadata["observations"]] == [False, True]
    assert_same_actions(onnx_policy(exported.path)(**{f"observation.{k}": v for k, v in raw.items()})["actions"], expected)


def test_normalization_is_vec_normalize_bit_for_bit() -> None:
    env = normalized_env(clip_obs=1.5)
    raw = draw(env.observation_space, 500)
    normalization = ObservationNormalization.from_vec_normalize(env)
    assert normalization is not None
    np.testing.assert_array_equal(normalization.normalize(raw), env.normalize_obs(raw))
    env.norm_obs = False
    assert ObservationNormalization.from_vec_normalize(env) is None


# --- MaskableTRPO --------------------------------------------------------------------------------------------------

MASKED_ENVS = {
    "discrete": lambda: InvalidActionEnvDiscrete(dim=6, n_invalid_actions=3),
    "multidiscrete": lambda: InvalidActionEnvMultiDiscrete(dims=[3, 4], n_invalid_actions=3),
    "multibinary": lambda: InvalidActionEnvMultiBinary(dims=4, n_invalid_actions=3),
}


def random_masks(rng: np.random.Generator, n: int, groups: list[int]) -> np.ndarray:
    """Masks with about half the choices valid, at least one per sub-action."""
    masks = rng.random((n, sum(groups))) < 0.5
    start = 0
    for size in groups:
        masks[np.arange(n), start + rng.integers(size, size=n)] = True
        start += size
    return masks


@pytest.mark.parametrize("kind", list(MASKED_ENVS))
def test_maskable_graph_takes_action_masks(tmp_path: Path, kind: str) -> None:
    model = spread(MaskableTRPO("MlpPolicy", MASKED_ENVS[kind](), n_steps=64, batch_size=64, seed=0), factor=3.0)
    exported = export_onnx(model, tmp_path / "policy.onnx")
    groups = exported.metadata["action_masks"]["groups"]
    assert [tensor.name for tensor in exported.inputs] == ["observation", "action_masks"]
    assert exported.inputs[1].dtype == np.bool_ and exported.inputs[1].shape == ("batch", sum(groups))
    run = onnx_policy(exported.path)
    observations = draw(model.observation_space, N_OBSERVATIONS)
    masks = random_masks(np.random.default_rng(0), N_OBSERVATIONS, groups)
    expected, _ = model.predict(observations, deterministic=True, action_masks=masks)
    actions = run(observation=observations, action_masks=masks)["actions"]
    assert_same_actions(actions, expected)
    # Never an invalid action: the chosen choice of every sub-action is valid in its group of the mask.
    offsets = np.cumsum([0, *groups[:-1]])
    chosen = offsets + actions.reshape(N_OBSERVATIONS, -1)
    assert masks[np.arange(N_OBSERVATIONS)[:, None], chosen].all()
    # All valid: the unmasked policy's mode, which the masks did change.
    every = np.ones_like(masks)
    unmasked = run(observation=observations, action_masks=every)["actions"]
    assert_same_actions(unmasked, model.predict(observations, deterministic=True)[0])
    assert (unmasked != actions).any()
    for observation, mask in zip(observations[:5], masks[:5], strict=True):
        expected, _ = model.predict(observation, deterministic=True, action_masks=mask)
        assert_same_actions(run(observation=observation[None], action_masks=mask[None])["actions"][0], expected)


# --- RecurrentTRPO -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action_space", [BOX, spaces.Discrete(3)], ids=["box", "discrete"])
def test_recurrent_rollout_over_episode_boundaries(tmp_path: Path, action_space: spaces.Space) -> None:
    """
    Drive vectorised environments with ``predict`` as RecurrentPPO's users do (``episode_starts = dones``), states
    carried by ``predict``; the graph steps along on the same observations and starts, carrying its own states.
    """
    n_envs, steps = 3, 60
    env = vec_env(action_space, n_envs=n_envs, episode_length=7)
    policy_kwargs = {"lstm_hidden_size": 16, "n_lstm_layers": 2}
    model = spread(RecurrentTRPO("MlpLstmPolicy", env, n_steps=16, batch_size=16, seed=0, policy_kwargs=policy_kwargs), 5.0)
    exported = export_onnx(model, tmp_path / "policy.onnx")
    assert [tensor.name for tensor in exported.inputs] == ["observation", "lstm_hidden", "lstm_cell", "episode_starts"]
    assert [tensor.name for tensor in exported.outputs] == ["actions", "next_lstm_hidden", "next_lstm_cell"]
    assert exported.inputs[1].shape == (2, "batch", 16)
    run = onnx_policy(exported.path)
    observations = env.reset()
    predict_states = None
    hidden = cell = np.zeros((2, n_envs, 16), dtype=np.float32)
    episode_starts = np.ones(n_envs, dtype=bool)
    boundaries = 0
    for _ in range(steps):
        expected, predict_states = model.predict(
            observations, state=predict_states, episode_start=episode_starts, deterministic=True
        )
        outputs = run(observation=observations, lstm_hidden=hidden, lstm_cell=cell, episode_starts=episode_starts)
        assert_same_actions(outputs["actions"], expected)
        np.testing.assert_allclose(outputs["next_lstm_hidden"], predict_states[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(outputs["next_lstm_cell"], predict_states[1], rtol=1e-4, atol=1e-5)
        hidden, cell = outputs["next_lstm_hidden"], outputs["next_lstm_cell"]
        observations, _, episode_starts, _ = env.step(expected)
        boundaries += int(episode_starts[0])
    assert boundaries >= 7  # episodes of 7 steps: the states were reset mid-rollout


def test_recurrent_episode_start_resets_the_states(tmp_path: Path) -> None:
    model = RecurrentTRPO("MlpLstmPolicy", vec_env(BOX, n_envs=2), n_steps=16, batch_size=16, seed=0)
    run = onnx_policy(export_onnx(model, tmp_path / "policy.onnx").path)
    observations = draw(model.observation_space, 4)
    shape = (1, 4, model.policy.lstm_actor.hidden_size)
    busy = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    zeros = np.zeros(shape, dtype=np.float32)
    starts = np.array([True, False, True, False])
    after_start = run(observation=observations, lstm_hidden=busy, lstm_cell=busy, episode_starts=starts)
    from_zero = run(observation=observations, lstm_hidden=zeros, lstm_cell=zeros, episode_starts=np.zeros(4, dtype=bool))
    carried = run(observation=observations, lstm_hidden=busy, lstm_cell=busy, episode_starts=np.zeros(4, dtype=bool))
    for name in ("actions", "next_lstm_hidden", "next_lstm_cell"):
        axis = 1 if name.startswith("next") else 0
        np.testing.assert_array_equal(np.compress(starts, after_start[name], axis), np.compress(starts, from_zero[name], axis))
        np.testing.assert_array_equal(np.compress(~starts, after_start[name], axis), np.compress(~starts, carried[name], axis))
    assert not np.allclose(carried["next_lstm_hidden"], from_zero["next_lstm_hidden"])  # the states do matter


def test_recurrent_with_vec_normalize_and_dict_observations(tmp_path: Path) -> None:
    observation_space = spaces.Dict({"a": spaces.Box(-4.0, 4.0, shape=(3,)), "b": spaces.Discrete(3)})
    env = VecNormalize(vec_env(spaces.Discrete(3), observation_space, n_envs=2), norm_obs_keys=["a"], clip_obs=1.5)
    env.reset()
    for _ in range(20):
        env.step(np.zeros(2, dtype=np.int64))
    model = spread(RecurrentTRPO("MultiInputLstmPolicy", env, n_steps=16, batch_size=16, seed=0), 5.0)
    exported = export_onnx(model, tmp_path / "policy.onnx")
    run = onnx_policy(exported.path)
    raw = draw(observation_space, 8)
    states = None
    hidden = cell = np.zeros((1, 8, model.policy.lstm_actor.hidden_size), dtype=np.float32)
    starts = np.ones(8, dtype=bool)
    for step in range(5):
        expected, states = model.predict(env.normalize_obs(raw), state=states, episode_start=starts, deterministic=True)
        outputs = run(
            **{f"observation.{k}": v for k, v in raw.items()}, lstm_hidden=hidden, lstm_cell=cell, episode_starts=starts
        )
        assert_same_actions(outputs["actions"], expected)
        hidden, cell = outputs["next_lstm_hidden"], outputs["next_lstm_cell"]
        raw, starts = draw(observation_space, 8, seed=step + 2), np.arange(8) % 3 == step % 3


# --- a masked recurrent policy: both parts, nothing else ---------------------------------------------------------


class MaskedLstmPolicy(RecurrentActorCriticPolicy):
    """
    A stand-in for a masked recurrent policy (sb3-contrib has none): sb3-contrib's LSTM policy with its maskable
    distribution, ``predict(..., action_masks=...)`` masking as ``MaskableActorCriticPolicy`` does. The exporter
    knows neither class: it sees an ``lstm_actor`` and a distribution with ``apply_masking``.
    """

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        self.action_dist = make_masked_proba_distribution(self.action_space)  # the same logits layer for Discrete

    def _get_action_dist_from_latent(self, latent_pi: torch.Tensor) -> Any:
        return self.action_dist.proba_distribution(action_logits=self.action_net(latent_pi))

    def get_distribution(self, obs: Any, lstm_states: Any, episode_starts: Any) -> Any:
        distribution, lstm_states = super().get_distribution(obs, lstm_states, episode_starts)
        distribution.apply_masking(self.masks)
        return distribution, lstm_states

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False,
                action_masks: Any = None) -> Any:  # fmt: skip
        self.masks = action_masks  # read by get_distribution, which RecurrentActorCriticPolicy.predict reaches
        return super().predict(observation, state, episode_start, deterministic)


def test_masked_recurrent_policy_is_both_parts(tmp_path: Path) -> None:
    observation_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
    policy = MaskedLstmPolicy(observation_space, spaces.Discrete(5), lambda _: 3e-4, lstm_hidden_size=8)
    spread(SimpleNamespace(policy=policy), 5.0)
    exported = export_onnx(policy, tmp_path / "policy.onnx")  # the exporter's check drives predict with masks and states
    assert [tensor.name for tensor in exported.inputs] == [
        "observation", "action_masks", "lstm_hidden", "lstm_cell", "episode_starts"
    ]  # fmt: skip
    assert exported.check is not None and exported.check.steps > 1
    run = onnx_policy(exported.path)
    rng = np.random.default_rng(3)
    states, hidden, cell, starts = None, np.zeros((1, 6, 8), np.float32), np.zeros((1, 6, 8), np.float32), np.ones(6, bool)
    for step in range(20):
        observations = draw(observation_space, 6, seed=step)
        masks = random_masks(rng, 6, [5])
        expected, states = policy.predict(observations, states, starts, deterministic=True, action_masks=masks)
        outputs = run(observation=observations, action_masks=masks, lstm_hidden=hidden, lstm_cell=cell, episode_starts=starts)
        assert_same_actions(outputs["actions"], expected)
        assert masks[np.arange(6), outputs["actions"]].all()
        hidden, cell, starts = outputs["next_lstm_hidden"], outputs["next_lstm_cell"], rng.random(6) < 0.3


# --- the stochastic option: the distribution's parameters ----------------------------------------------------------


def torch_parameters(distribution: Any) -> dict[str, np.ndarray]:
    """The parameters of a policy's distribution, read off torch's distribution objects."""
    inner = getattr(distribution, "distributions", None) or distribution.distribution
    parts = inner if isinstance(inner, list) else [inner]
    if isinstance(parts[0], torch.distributions.Normal):
        return {"action_mean": parts[0].mean.numpy(), "action_std": parts[0].stddev.numpy()}
    return {"action_logits": torch.cat([part.logits for part in parts], dim=1).numpy()}


@pytest.mark.parametrize("kind", ["box", "gsde", "gsde_squashed", "discrete", "multidiscrete", "multibinary"])
def test_stochastic_outputs_the_distribution_parameters(tmp_path: Path, kind: str) -> None:
    model = trpo_model(kind)
    exported = export_onnx(model, tmp_path / "policy.onnx", stochastic=True)
    observations = draw(model.observation_space, N_OBSERVATIONS)
    outputs = onnx_policy(exported.path)(observation=observations)
    with torch.no_grad():
        expected = torch_parameters(model.policy.get_distribution(torch.as_tensor(observations)))
    assert set(outputs) == {"actions", *expected}
    for name, value in expected.items():
        np.testing.assert_allclose(outputs[name], value, rtol=RTOL, atol=ATOL)
    if kind.startswith("gsde"):  # the state-dependent exploration: a standard deviation per observation
        assert np.ptp(outputs["action_std"], axis=0).min() > 0
    if kind == "discrete":  # sampling outside from the logits: Categorical probabilities summing to one
        np.testing.assert_allclose(np.exp(outputs["action_logits"]).sum(axis=1), 1.0, rtol=1e-5)


def test_stochastic_masked_and_recurrent(tmp_path: Path) -> None:
    model = MaskableTRPO("MlpPolicy", MASKED_ENVS["multidiscrete"](), n_steps=64, batch_size=64, seed=0)
    outputs_path = export_onnx(model, tmp_path / "masked.onnx", stochastic=True).path
    observations = draw(model.observation_space, 50)
    masks = random_masks(np.random.default_rng(1), 50, [3, 4])
    logits = onnx_policy(outputs_path)(observation=observations, action_masks=masks)["action_logits"]
    with torch.no_grad():
        expected = torch_parameters(model.policy.get_distribution(torch.as_tensor(observations), action_masks=masks))
    np.testing.assert_allclose(logits, expected["action_logits"], rtol=RTOL, atol=ATOL)
    assert (logits[~masks] < -1e7).all() and (logits[masks] > -100).all()  # sb3-contrib's -1e8 for invalid actions

    model = RecurrentTRPO("MlpLstmPolicy", vec_env(BOX, n_envs=2), n_steps=16, batch_size=16, seed=0)
    exported = export_onnx(model, tmp_path / "recurrent.onnx", stochastic=True)
    assert [tensor.name for tensor in exported.outputs] == [
        "actions", "action_mean", "action_std", "next_lstm_hidden", "next_lstm_cell"
    ]  # fmt: skip


# --- the graph's description ---------------------------------------------------------------------------------------


def test_metadata_describes_the_graph(tmp_path: Path) -> None:
    model = MaskableTRPO("MlpPolicy", MASKED_ENVS["discrete"](), n_steps=64, batch_size=64, seed=0)
    exported = export_onnx(model, tmp_path / "policy.onnx", stochastic=True)
    session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    metadata = json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    assert metadata == json.loads(json.dumps(exported.metadata))
    assert metadata["algorithm"] == "MaskableTRPO" and metadata["action_masks"]["groups"] == [6]
    assert [entry["name"] for entry in metadata["inputs"]] == [tensor.name for tensor in session.get_inputs()]
    assert [entry["name"] for entry in metadata["outputs"]] == [tensor.name for tensor in session.get_outputs()]
    assert metadata["actions"]["space"] == {"type": "Discrete", "shape": [], "n": 6}
    box = export_onnx(trpo_model("gsde_squashed"), tmp_path / "box.onnx").metadata["actions"]
    assert box["space"]["low"] == [-2.0, -2.0] and box["into_bounds"] == "tanh then unscale" and box["gsde"]


# --- refusals ------------------------------------------------------------------------------------------------------


class BranchingExtractor(BaseFeaturesExtractor):
    """Branches in Python on its input: a trace freezes the branch it took."""

    def __init__(self, observation_space: spaces.Box) -> None:
        super().__init__(observation_space, features_dim=4)
        self.linear = nn.Linear(observation_space.shape[0], 4)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        squashed = torch.tanh(observations)  # finite features for any probe observation (see SvdExtractor)
        if observations[:, 0].mean() > 0:
            return self.linear(squashed)
        return -self.linear(squashed)


class NumpyExtractor(BaseFeaturesExtractor):
    """Computes through NumPy: a trace keeps the example's result as a constant."""

    def __init__(self, observation_space: spaces.Box) -> None:
        super().__init__(observation_space, features_dim=4)
        self.linear = nn.Linear(observation_space.shape[0], 4)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.as_tensor(np.tanh(observations.numpy())))


class SvdExtractor(BaseFeaturesExtractor):
    """Uses an operation that ONNX's opset 17 cannot express."""

    def __init__(self, observation_space: spaces.Box) -> None:
        super().__init__(observation_space, features_dim=4)
        self.linear = nn.Linear(observation_space.shape[0], 4)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        # tanh first: gymnasium 0.29's CartPole bounds its velocities by float32's largest value, and the export's
        # probe observations drawn from such a space would overflow the linear layer into NaN logits. (NumpyExtractor
        # squashes through NumPy's tanh; the MLP extractor's own tanh layers saturate.)
        squashed = torch.tanh(observations)
        return self.linear(squashed) + torch.linalg.svdvals(squashed.unsqueeze(-1))


class NoisyPredictPolicy(ActorCriticPolicy):
    """Overrides ``_predict``: its actions are not the ones the exporter traces."""

    def _predict(self, observation: Any, deterministic: bool = False) -> torch.Tensor:
        return (super()._predict(observation, deterministic) + 1) % 2


@pytest.mark.parametrize(
    ("policy", "extractor", "reason"),
    [
        ("MlpPolicy", BranchingExtractor, "branches on its inputs in Python"),
        ("MlpPolicy", NumpyExtractor, "Converting a tensor to a NumPy array"),
        ("MlpPolicy", SvdExtractor, "'aten::linalg_svdvals' to ONNX opset version 17 is not supported"),
        (NoisyPredictPolicy, None, "overriding predict, _predict or get_distribution"),
    ],
    ids=["python_branch", "numpy", "unsupported_operation", "own_predict"],
)
def test_refuses_what_it_cannot_trace(tmp_path: Path, policy: Any, extractor: type | None, reason: str) -> None:
    policy_kwargs = {"features_extractor_class": extractor} if extractor is not None else {}
    model = TRPO(policy, "CartPole-v1", n_steps=64, batch_size=64, seed=0, policy_kwargs=policy_kwargs)
    with pytest.raises(ExportError, match="ONNX") as refusal:
        export_onnx(model, tmp_path / "policy.onnx")
    assert reason in str(refusal.value)
    if extractor in (BranchingExtractor, NumpyExtractor):  # the tracer's warning points at the policy's line
        assert f"{Path(__file__).name}:" in str(refusal.value)
    assert not (tmp_path / "policy.onnx").exists()  # nothing written


def test_the_check_compares_integers_exactly_and_floats_within_rounding() -> None:
    check = GraphCheck(None, None, None, tracer_warnings=["policy.py:3: a frozen branch"])  # type: ignore[arg-type]
    check.compare("actions", np.array([[0.5, 1.0]], np.float32), np.array([[0.5 + 3e-8, 1.0]], np.float32))
    assert 0 < check.max_difference < 1e-7
    with pytest.raises(ExportError, match=r"actions differ from predict\(deterministic=True\)'s on 1 of 2 observations"):
        check.compare("actions", np.array([[0.5], [1.0]], np.float32), np.array([[0.5], [1.001]], np.float32))
    with pytest.raises(ExportError, match="on 1 of 3 observations"):
        check.compare("actions", np.array([0, 1, 2]), np.array([0, 1, 1]))
    with pytest.raises(ExportError, match=r"action_std outputs differ from the traced module's.*ONNX translation.*frozen"):
        check.compare("action_std outputs", np.ones((2, 1), np.float32), np.zeros((2, 1), np.float32), against_predict=False)
    with pytest.raises(ExportError, match=r"have shape \(2,\) where predict\(deterministic=True\)'s have \(3,\)"):
        check.compare("actions", np.zeros(2), np.zeros(3))


def test_refuses_other_policies_and_mismatched_statistics(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"actor-critic policies.*not SACPolicy"):
        export_onnx(SAC("MlpPolicy", "Pendulum-v1", buffer_size=100), tmp_path / "sac.onnx")
    env = normalized_env()
    write_vec_normalize_statistics(env, tmp_path / "pendulum.npz")
    model = TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64)
    with pytest.raises(ExportError, match=r"statistics have shape \(3,\), the observations \(4,\)"):
        export_onnx(model, tmp_path / "policy.onnx", vec_normalize=tmp_path / "pendulum.npz")
    with pytest.raises(ExportError, match="has no VecNormalize"):
        export_onnx(model, tmp_path / "policy.onnx", vec_normalize=True)
    with pytest.raises(TypeError, match="vec_normalize must be"):
        export_onnx(model, tmp_path / "policy.onnx", vec_normalize=3)
    assert not (tmp_path / "policy.onnx").exists()


def test_without_onnx_the_error_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx then raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'sb3-trpo-plugin\[export\]'"):
        export_onnx(TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64), tmp_path / "policy.onnx")


def test_importing_the_package_imports_no_onnx() -> None:
    code = (
        "import sys, sb3_trpo_plugin, sb3_trpo_plugin.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime')))\n"
        "from sb3_trpo_plugin import *\n"
        "print(export_onnx.__module__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.split("\n")[:2] == ["[]", "sb3_trpo_plugin.export.exporter"]


# --- sb3-trpo export -----------------------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = main(list(argv))
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def normalized_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny sb3-trpo train run on Pendulum with VecNormalize."""
    folder = tmp_path_factory.mktemp("run") / "pendulum"
    argv = ["train", "--env", "Pendulum-v1", "--log-folder", str(folder), "--n-timesteps", "256", "--eval-freq", "128"]
    argv += ["--save-freq", "0", "--no-progress-bar", "--hyperparams", "n_steps=64", "batch_size=64", "normalize=True"]
    assert main(argv) == 0
    return folder


def test_cli_exports_a_run_with_its_statistics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], normalized_run: Path
) -> None:
    capsys.readouterr()
    status, out, _ = run_cli(capsys, "export", str(normalized_run), "--onnx", str(tmp_path / "run.onnx"))
    assert status == 0
    assert "VecNormalize statistics are folded in" in out and "checked: the same actions as predict" in out
    model = TRPO.load(normalized_run / "model.zip")
    env = VecNormalize.load(str(normalized_run / "vecnormalize.pkl"), DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    raw = draw(env.observation_space, N_OBSERVATIONS)
    expected, _ = model.predict(env.normalize_obs(raw), deterministic=True)
    assert_same_actions(onnx_policy(tmp_path / "run.onnx")(observation=raw)["actions"], expected)
    # The best model, the model file with the statistics given, and without statistics.
    assert run_cli(capsys, "export", str(normalized_run), "--best", "--onnx", str(tmp_path / "best.onnx"))[0] == 0
    statistics = str(normalized_run / "vecnormalize.npz")
    argv = ["export", str(normalized_run / "model.zip"), "--onnx", str(tmp_path / "file.onnx"), "--vecnormalize", statistics]
    assert run_cli(capsys, *argv)[0] == 0
    assert_same_actions(onnx_policy(tmp_path / "file.onnx")(observation=raw)["actions"], expected)
    status, out, _ = run_cli(
        capsys, "export", str(normalized_run), "--no-vecnormalize", "--stochastic", "--onnx", str(tmp_path / "n.onnx")
    )
    assert status == 0 and "folded in" not in out and "action_std" in out
    normalized = env.normalize_obs(raw)
    assert_same_actions(onnx_policy(tmp_path / "n.onnx")(observation=normalized)["actions"], expected)


def image_env() -> RandomEnv:
    return RandomEnv(spaces.Discrete(3), spaces.Box(0, 255, shape=(36, 36, 3), dtype=np.uint8), episode_length=8)


def test_cli_run_with_images_takes_them_as_the_environment_returns_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gym.register("ExportTestImages-v0", entry_point=image_env)
    try:
        folder = tmp_path / "run"
        argv = ["train", "--env", "ExportTestImages-v0", "--log-folder", str(folder), "--n-timesteps", "64", "--n-envs", "1"]
        argv += ["--eval-freq", "0", "--save-freq", "0", "--no-progress-bar"]
        argv += ["--hyperparams", "policy=CnnPolicy", "n_steps=32", "batch_size=32", "n_critic_updates=1"]
        assert main(argv) == 0
        capsys.readouterr()
        assert run_cli(capsys, "export", str(folder), "--onnx", str(tmp_path / "hwc.onnx"))[0] == 0
        assert run_cli(capsys, "export", str(folder / "model.zip"), "--onnx", str(tmp_path / "chw.onnx"))[0] == 0
        assert (
            run_cli(capsys, "export", str(folder / "model.zip"), "--channels-last", "--onnx", str(tmp_path / "l.onnx"))[0] == 0
        )
    finally:
        gym.envs.registry.pop("ExportTestImages-v0")
    shapes = {
        name: onnxruntime.InferenceSession(str(tmp_path / name)).get_inputs()[0].shape
        for name in ("hwc.onnx", "chw.onnx", "l.onnx")
    }
    assert shapes == {"hwc.onnx": ["batch", 36, 36, 3], "chw.onnx": ["batch", 3, 36, 36], "l.onnx": ["batch", 36, 36, 3]}


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], normalized_run: Path) -> None:
    def one_line_error(*argv: str) -> str:
        status, _, err = run_cli(capsys, "export", *argv)
        assert status == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        return err

    out = str(tmp_path / "x.onnx")
    assert "does not exist" in one_line_error(str(tmp_path / "missing"), "--onnx", out)
    assert "holds no sb3-trpo run" in one_line_error(str(tmp_path), "--onnx", out)
    assert "--best takes a run folder" in one_line_error(str(normalized_run / "model.zip"), "--best", "--onnx", out)
    argv = [str(normalized_run), "--vecnormalize", "a.npz", "--no-vecnormalize", "--onnx", out]
    assert "contradict" in one_line_error(*argv)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    assert "safe_load refuses" in one_line_error(str(tmp_path / "junk.zip"), "--onnx", out)
    # Operator sets too old for the graph: refused by ONNX's checker, by onnxruntime (no Clip of doubles before 12).
    assert "the traced graph is not valid ONNX" in one_line_error(str(normalized_run), "--opset", "7", "--onnx", out)
    assert "onnxruntime cannot load the graph" in one_line_error(str(normalized_run), "--opset", "9", "--onnx", out)
    assert not Path(out).exists()
