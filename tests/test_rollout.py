"""
The lean rollout loop fills the rollout buffer as SB3's loop does, calls the callbacks alike, and leaves
policies it does not recognise to SB3's loop.

Each comparison builds two identical models (same seed, same environments) and collects several
consecutive rollouts, one model with ``lean_rollout=False`` (SB3's ``OnPolicyAlgorithm.collect_rollouts``):
every array of the buffer (observations, actions, rewards, episode starts, values, log-probabilities,
returns and advantages) must be equal, bit for bit: the lean loop computes what SB3's computes.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CallbackList,
    ConvertCallback,
    EvalCallback,
    EveryNTimesteps,
    ProgressBarCallback,
    StopTrainingOnMaxEpisodes,
    StopTrainingOnNoModelImprovement,
    StopTrainingOnRewardThreshold,
)
from stable_baselines3.common.callbacks import CheckpointCallback as SB3CheckpointCallback
from stable_baselines3.common.distributions import (
    CategoricalDistribution,
    DiagGaussianDistribution,
    StateDependentNoiseDistribution,
)
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, MlpExtractor
from stable_baselines3.common.vec_env import VecNormalize

from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.cli.train import SaveVecNormalizeOnBest
from sb3_trpo_plugin.parallel.elastic import UpdateCheckpointCallback
from sb3_trpo_plugin.replicas import heads, layers
from sb3_trpo_plugin.replicas import inference as inference_module
from sb3_trpo_plugin.replicas.eligibility import unrecognised_reason
from sb3_trpo_plugin.replicas.inference import policy_inference
from sb3_trpo_plugin.rollout import algorithm as rollout_algorithm
from sb3_trpo_plugin.rollout.advantages import compute_returns_and_advantage
from sb3_trpo_plugin.rollout.batched_outputs import (
    CALLBACKS_BLIND_TO_STEP_OUTPUTS,
    callbacks_may_read_step_outputs,
    fill_values_and_log_probs,
)
from sb3_trpo_plugin.rollout.checks import EnvironmentDataCheck, NonFiniteEnvironmentDataError
from sb3_trpo_plugin.serialization.checkpoints import CheckpointCallback
from tests.conftest import ACTION_SPACES, RandomEnv

BUFFER_FIELDS = ("observations", "actions", "rewards", "episode_starts", "values", "log_probs", "returns", "advantages")
#: The local variables of SB3's loop that callbacks see at every step.
SB3_STEP_LOCALS = {
    "self",
    "env",
    "callback",
    "rollout_buffer",
    "n_rollout_steps",
    "n_steps",
    "obs_tensor",
    "actions",
    "values",
    "log_probs",
    "clipped_actions",
    "new_obs",
    "rewards",
    "dones",
    "infos",
}


def make_model(
    action_space: spaces.Space,
    observation_space: spaces.Space | None = None,
    n_envs: int = 2,
    normalize: bool = False,
    episode_length: int = 10,
    **kwargs: Any,
) -> TRPO:
    """A TRPO model on ``n_envs`` seeded random environments whose episodes are truncated every ``episode_length`` steps."""
    env = make_vec_env(
        lambda: RandomEnv(action_space, observation_space, episode_length=episode_length), n_envs=n_envs, seed=1
    )
    if normalize:
        env = VecNormalize(env)
    kwargs.setdefault("n_steps", 16)
    kwargs.setdefault("policy_kwargs", dict(net_arch=[16, 16]))
    policy = kwargs.pop("policy", "MultiInputPolicy" if isinstance(observation_space, spaces.Dict) else "MlpPolicy")
    return TRPO(policy, env, batch_size=kwargs["n_steps"] * n_envs, seed=0, **kwargs)


def collect(model: TRPO, lean: bool, n_rollouts: int = 3, callback: BaseCallback | None = None) -> list[dict[str, Any]]:
    """Copies of the rollout buffer after each of ``n_rollouts`` consecutive rollouts with one of the loops."""
    model.lean_rollout = lean
    _, callback_list = model._setup_learn(10**6, callback=callback)
    callback_list.on_training_start({}, {})
    snapshots = []
    for _ in range(n_rollouts):
        completed = model.collect_rollouts(model.env, callback_list, model.rollout_buffer, model.n_steps)
        buffer = model.rollout_buffer
        snapshot: dict[str, Any] = {"completed": completed, "pos": buffer.pos, "num_timesteps": model.num_timesteps}
        for name in BUFFER_FIELDS:
            value = getattr(buffer, name)
            snapshot[name] = {k: v.copy() for k, v in value.items()} if isinstance(value, dict) else value.copy()
        snapshots.append(snapshot)
        if not completed:
            break
    return snapshots


#: What the policy computes from the data: with the batched values and log-probabilities equal to float32 rounding.
DERIVED_FIELDS = ("values", "log_probs", "returns", "advantages")


def assert_same_rollouts(lean: list[dict[str, Any]], sb3: list[dict[str, Any]], exact: bool = True) -> None:
    """The same buffers: bit for bit, or (``exact=False``) with :data:`DERIVED_FIELDS` equal to float32 rounding."""
    assert len(lean) == len(sb3)
    for lean_rollout, sb3_rollout in zip(lean, sb3, strict=True):
        assert (lean_rollout["completed"], lean_rollout["pos"], lean_rollout["num_timesteps"]) == (
            sb3_rollout["completed"],
            sb3_rollout["pos"],
            sb3_rollout["num_timesteps"],
        )
        for name in BUFFER_FIELDS:  # (zeros from the buffer's reset where a stopped rollout did not get to)
            lean_value, sb3_value = lean_rollout[name], sb3_rollout[name]
            if isinstance(sb3_value, dict):
                assert lean_value.keys() == sb3_value.keys()
                for key in sb3_value:
                    np.testing.assert_array_equal(lean_value[key], sb3_value[key], err_msg=f"{name}[{key!r}]")
            else:
                assert lean_value.dtype == sb3_value.dtype
                if exact or name not in DERIVED_FIELDS:
                    np.testing.assert_array_equal(lean_value, sb3_value, err_msg=name)
                else:  # finite where SB3's are (a degenerate distribution may give -inf for NaN), and close there
                    finite = np.isfinite(sb3_value)
                    np.testing.assert_array_equal(np.isfinite(lean_value), finite, err_msg=name)
                    np.testing.assert_allclose(lean_value[finite], sb3_value[finite], rtol=1e-5, atol=1e-6, err_msg=name)


class StepOutputReader(BaseCallback):
    """A user's callback: it may read the loop's ``values`` and ``log_probs``, so the lean loop computes them per step."""

    def __init__(self) -> None:
        super().__init__()
        self.value_shapes: list[tuple[int, ...]] = []

    def _on_step(self) -> bool:
        self.value_shapes.append(tuple(self.locals["values"].shape))
        return True


def compare(make: Callable[[], TRPO], n_rollouts: int = 3) -> list[dict[str, Any]]:
    """
    Collect with SB3's loop and with the lean loop both ways from identical models, and compare the buffers: per step
    (a callback may read the step's values) bit for bit; batched where the policy allows it (values and
    log-probabilities computed for the whole rollout at its end) to float32 rounding in what the policy computes.
    Return the batched lean loop's buffers.
    """
    sb3 = collect(make(), lean=False, n_rollouts=n_rollouts)
    per_step_model = make()
    assert policy_inference(per_step_model.policy) is not None, unrecognised_reason(per_step_model.policy)
    reader = StepOutputReader()
    with (
        mock.patch.object(OnPolicyAlgorithm, "collect_rollouts", autospec=True) as sb3_loop,
        mock.patch.object(rollout_algorithm, "fill_values_and_log_probs", wraps=fill_values_and_log_probs) as fill,
    ):
        per_step = collect(per_step_model, lean=True, n_rollouts=n_rollouts, callback=reader)
        fill.assert_not_called()
        assert reader.value_shapes[0] == (per_step_model.n_envs, 1)
        batched_model = make()
        inference = policy_inference(batched_model.policy)
        assert inference is not None
        expect_batched = inference.acts_without_critic and type(batched_model.rollout_buffer) in (
            RolloutBuffer,
            DictRolloutBuffer,
        )
        batched = collect(batched_model, lean=True, n_rollouts=n_rollouts)
        assert fill.called == expect_batched
    sb3_loop.assert_not_called()  # the lean loop ran, not SB3's
    assert_same_rollouts(per_step, sb3)
    assert_same_rollouts(batched, sb3, exact=not expect_batched)
    return batched


DICT_SPACE = spaces.Dict(
    {
        "vector": spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32),
        "image": spaces.Box(0, 255, shape=(1, 36, 36), dtype=np.uint8),
        "discrete": spaces.Discrete(4),
    }
)


@pytest.mark.parametrize("action_space", ACTION_SPACES.values(), ids=ACTION_SPACES.keys())
def test_same_buffer_for_every_action_space(action_space: spaces.Space) -> None:
    rollouts = compare(lambda: make_model(action_space))
    # Episodes of 10 steps in rollouts of 16: truncations happened, and each was bootstrapped with the value.
    starts = np.concatenate([r["episode_starts"] for r in rollouts])
    assert starts[1:].sum() >= 4
    actions = np.concatenate([r["actions"] for r in rollouts])
    if isinstance(action_space, spaces.Box):
        actions = np.clip(actions, action_space.low, action_space.high)  # the environment got clipped actions
    rewards = np.concatenate([r["rewards"] for r in rollouts])
    env_rewards = (actions.astype(np.float64).sum(axis=-1) * 0.1 - 0.05).astype(np.float32)
    assert (rewards != env_rewards).sum() == starts[1:].sum()


@pytest.mark.parametrize("n_envs", [1, 3])
@pytest.mark.parametrize("squash_output", [False, True])
def test_same_buffer_with_gsde(n_envs: int, squash_output: bool) -> None:
    box = spaces.Box(-2.0, 3.0, shape=(2,), dtype=np.float32)  # bounds other than [-1, 1]: unscale_action matters
    compare(
        lambda: make_model(
            box,
            n_envs=n_envs,
            use_sde=True,
            sde_sample_freq=4,
            policy_kwargs=dict(net_arch=[16], squash_output=squash_output, log_std_init=0.0),
        )
    )


def test_same_buffer_with_gsde_noise_sampled_once_per_rollout() -> None:
    compare(lambda: make_model(ACTION_SPACES["box"], use_sde=True, policy_kwargs=dict(full_std=False, use_expln=True)))


def test_same_buffer_with_dict_observations() -> None:
    compare(lambda: make_model(ACTION_SPACES["multidiscrete"], DICT_SPACE, n_steps=8), n_rollouts=2)


def test_same_buffer_with_dict_observations_without_images() -> None:
    vector_and_discrete = spaces.Dict({key: DICT_SPACE[key] for key in ("vector", "discrete")})
    make = lambda: make_model(ACTION_SPACES["box"], vector_and_discrete, n_steps=8)  # noqa: E731
    inference = policy_inference(make().policy)
    assert inference is not None and inference.acts_without_critic  # the batched path runs (compare checks it)
    compare(make, n_rollouts=2)


def test_same_buffer_with_image_observations() -> None:
    image = spaces.Box(0, 255, shape=(36, 36, 1), dtype=np.uint8)  # channel-last: SB3 transposes it
    make = lambda: make_model(ACTION_SPACES["discrete"], image, policy="CnnPolicy", n_steps=8)  # noqa: E731
    inference = policy_inference(make().policy)
    assert inference is not None and not inference.acts_without_critic  # CNN features: values per step
    compare(make, n_rollouts=2)


def test_same_buffer_with_vec_normalize_and_separate_extractors() -> None:
    policy_kwargs = dict(net_arch=dict(pi=[16], vf=[8, 8]), share_features_extractor=False, activation_fn=torch.nn.ReLU)
    compare(lambda: make_model(ACTION_SPACES["box"], normalize=True, n_envs=3, policy_kwargs=policy_kwargs))


def test_same_buffer_with_discrete_observations_and_no_hidden_layers() -> None:
    compare(lambda: make_model(ACTION_SPACES["discrete"], spaces.Discrete(5), policy_kwargs=dict(net_arch=[])))


def test_same_buffer_on_cartpole() -> None:
    compare(lambda: TRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=3), n_steps=64, batch_size=128, seed=0))


def test_custom_buffer_class_gets_the_data_through_add() -> None:
    class CountingRolloutBuffer(RolloutBuffer):
        n_added = 0

        def add(self, *args: Any, **kwargs: Any) -> None:
            CountingRolloutBuffer.n_added += 1
            super().add(*args, **kwargs)

    rollouts = compare(lambda: make_model(ACTION_SPACES["box"], rollout_buffer_class=CountingRolloutBuffer), n_rollouts=2)
    assert CountingRolloutBuffer.n_added == 3 * 2 * 16  # three collections (SB3's loop, the lean one twice) of 2 × 16 steps
    assert rollouts[-1]["pos"] == 16


class ResidualExtractor(BaseFeaturesExtractor):
    """A features extractor of a type the lean path does not know: it is run through its own forward."""

    def __init__(self, observation_space: spaces.Box) -> None:
        super().__init__(observation_space, features_dim=8)
        self.linear = torch.nn.Linear(int(observation_space.shape[0]), 8)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.leaky_relu(self.linear(observations)) + observations.sum(dim=1, keepdim=True)


class GatedMlpExtractor(MlpExtractor):
    """An MLP extractor of an unknown type whose forward differs from MlpExtractor's."""

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent_pi, latent_vf = super().forward(features)
        return latent_pi * torch.sigmoid(latent_vf.mean(dim=1, keepdim=True)), latent_vf


class GatedPolicy(ActorCriticPolicy):
    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = GatedMlpExtractor(self.features_dim, self.net_arch, self.activation_fn, self.device)


@pytest.mark.parametrize("action_space", [ACTION_SPACES["discrete"], ACTION_SPACES["box"]], ids=["discrete", "box"])
def test_modules_of_unknown_types_run_through_their_forward(action_space: spaces.Space) -> None:
    policy_kwargs = dict(net_arch=[16], features_extractor_class=ResidualExtractor)
    rollouts = compare(lambda: make_model(action_space, policy=GatedPolicy, policy_kwargs=policy_kwargs))
    assert np.abs(rollouts[-1]["values"]).max() > 0


class RecordingCallback(BaseCallback):
    """Records every call with copies of what it sees; stops training at step ``stop_at`` (1-based) if given."""

    def __init__(self, stop_at: int | None = None) -> None:
        super().__init__()
        self.stop_at = stop_at
        self.events: list[tuple[Any, ...]] = []
        self.local_names: list[set[str]] = []

    def _on_rollout_start(self) -> None:
        self.events.append(("rollout_start", self.num_timesteps))

    def _on_step(self) -> bool:
        seen = self.locals
        self.local_names.append(set(seen))
        self.events.append(
            (
                "step",
                self.n_calls,
                self.num_timesteps,
                seen["n_steps"],
                seen["n_rollout_steps"],
                seen["actions"].copy(),
                seen["clipped_actions"].copy(),
                seen["rewards"].copy(),
                seen["dones"].copy(),
                seen["new_obs"].copy(),
                tuple(seen["values"].shape),
                tuple(seen["log_probs"].shape),
                seen["env"] is self.model.env,
                seen["rollout_buffer"] is self.model.rollout_buffer,
            )
        )
        return self.stop_at is None or self.n_calls < self.stop_at

    def _on_rollout_end(self) -> None:
        self.events.append(("rollout_end", self.num_timesteps, self.locals["values"].shape, self.locals["dones"].copy()))


def assert_same_events(lean: RecordingCallback, sb3: RecordingCallback) -> None:
    assert len(lean.events) == len(sb3.events)
    for lean_event, sb3_event in zip(lean.events, sb3.events, strict=True):
        assert len(lean_event) == len(sb3_event)
        for lean_item, sb3_item in zip(lean_event, sb3_event, strict=True):
            if isinstance(sb3_item, np.ndarray):
                assert lean_item.dtype == sb3_item.dtype and lean_item.shape == sb3_item.shape
                np.testing.assert_array_equal(lean_item, sb3_item)
            else:
                assert lean_item == sb3_item


def test_callbacks_see_the_same_calls_and_locals() -> None:
    lean_callback, sb3_callback = RecordingCallback(), RecordingCallback()
    collect(make_model(ACTION_SPACES["box"]), lean=True, n_rollouts=2, callback=lean_callback)
    collect(make_model(ACTION_SPACES["box"]), lean=False, n_rollouts=2, callback=sb3_callback)
    assert [e[0] for e in sb3_callback.events] == ["rollout_start", *["step"] * 16, "rollout_end"] * 2
    assert_same_events(lean_callback, sb3_callback)
    assert sb3_callback.local_names[0] == SB3_STEP_LOCALS
    # SB3's loop variables (from the second step on also its time-limit loop's idx, done, ...), and the lean loop's own:
    # its parts (inference, batched fill, masks, carried state: none here), whether it is batched (not here: the callback
    # reads the values), what it looks up once, the time-limit bootstraps deferred while a critic fit is in flight.
    lean_own = {"lean", "inference", "batched", "fill_batched", "masks_of_step", "action_masks", "carried"}
    lean_own |= {"deferred_bootstraps", "finish_values"}
    lean_own |= {"resample_noise_every", "is_box", "is_discrete", "squashed", "low", "high"}
    for lean_names, sb3_names in zip(lean_callback.local_names, sb3_callback.local_names, strict=True):
        assert lean_names == sb3_names | lean_own | {"add_to_rollout_buffer"}


@pytest.mark.parametrize("stop_at", [1, 7, 23])
def test_callback_returning_false_stops_both_loops_at_the_same_step(stop_at: int) -> None:
    lean_callback, sb3_callback = RecordingCallback(stop_at), RecordingCallback(stop_at)
    lean = collect(make_model(ACTION_SPACES["discrete"]), lean=True, callback=lean_callback)
    sb3 = collect(make_model(ACTION_SPACES["discrete"]), lean=False, callback=sb3_callback)
    assert not lean[-1]["completed"] and len(lean) == 1 + (stop_at - 1) // 16
    assert lean[-1]["num_timesteps"] == 2 * stop_at
    assert_same_rollouts(lean, sb3)
    assert_same_events(lean_callback, sb3_callback)


@pytest.mark.parametrize("per_step", [True, False], ids=["per-step", "batched"])
@pytest.mark.parametrize("action_space", [ACTION_SPACES["discrete"], ACTION_SPACES["box"]], ids=["discrete", "box"])
def test_short_learn_ends_at_the_same_weights(action_space: spaces.Space, per_step: bool) -> None:
    """
    Per step the buffers are SB3's bit for bit, so whole updates are too: learn() with either loop ends at the same
    weights. Batched, the values and log-probabilities differ by rounding, and so do the weights.
    """
    weights = []
    for lean in (True, False):
        model = make_model(action_space, normalize=True)
        model.lean_rollout = lean
        model.learn(3 * 16 * 2, callback=StepOutputReader() if per_step else None)
        assert model._n_updates == 3
        weights.append({name: value.clone() for name, value in model.policy.state_dict().items()})
    for name in weights[1]:
        if per_step:
            assert torch.equal(weights[0][name], weights[1][name]), name
        else:
            torch.testing.assert_close(weights[0][name], weights[1][name], rtol=1e-4, atol=1e-5, msg=name)


class OverridingPolicy(ActorCriticPolicy):
    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return super().forward(obs, deterministic)


def _forward_hook(module: torch.nn.Module, args: Any, output: Any) -> None:
    return None


@pytest.mark.parametrize("change", ["subclass", "module_hook", "global_hook", "instance_forward", "switched_off"])
def test_unrecognised_policies_take_sb3s_loop(change: str) -> None:
    model = make_model(ACTION_SPACES["discrete"], policy=OverridingPolicy if change == "subclass" else "MlpPolicy")
    handles = []
    if change == "module_hook":
        handles.append(model.policy.mlp_extractor.policy_net[0].register_forward_hook(_forward_hook))
    elif change == "global_hook":
        handles.append(torch.nn.modules.module.register_module_forward_hook(_forward_hook))
    elif change == "instance_forward":
        action_net = model.policy.action_net
        action_net.forward = lambda x: torch.nn.functional.linear(x, action_net.weight, action_net.bias) * 2  # type: ignore[method-assign]
    elif change == "switched_off":
        model.lean_rollout = False
    try:
        reason = unrecognised_reason(model.policy)
        if change == "subclass":
            assert reason == "OverridingPolicy overrides forward"
        elif change == "module_hook":
            assert reason == "module 'mlp_extractor.policy_net.0' has hooks"
        elif change == "global_hook":
            assert reason == "a global module hook is registered"
        elif change == "instance_forward":
            assert reason == "module 'action_net' has methods replaced on the instance: forward"
        else:
            assert reason is None
        with (
            mock.patch.object(
                OnPolicyAlgorithm, "collect_rollouts", autospec=True, side_effect=OnPolicyAlgorithm.collect_rollouts
            ) as sb3_loop,
            mock.patch.object(inference_module.PolicyInference, "__call__", autospec=True) as lean_inference,
        ):
            collect(model, lean=change != "switched_off", n_rollouts=2)
        assert sb3_loop.call_count == 2
        lean_inference.assert_not_called()
    finally:
        for handle in handles:
            handle.remove()
    assert (unrecognised_reason(model.policy) is None) == (change in ("module_hook", "global_hook", "switched_off"))


@pytest.mark.parametrize(
    ("action_space", "parameter"),
    [
        (ACTION_SPACES["discrete"], "logits"),
        (ACTION_SPACES["multidiscrete"], "logits"),
        (ACTION_SPACES["multibinary"], "logits"),
        (ACTION_SPACES["box"], "loc"),
    ],
    ids=["discrete", "multidiscrete", "multibinary", "box"],
)
@pytest.mark.parametrize("per_step", [True, False], ids=["per-step", "batched"])
def test_invalid_distribution_parameters_raise_sb3s_error(action_space: spaces.Space, parameter: str, per_step: bool) -> None:
    errors = []
    for lean in (True, False):
        model = make_model(action_space)
        model.lean_rollout = lean
        _, callback = model._setup_learn(10**6, callback=StepOutputReader() if per_step else None)
        callback.on_training_start({}, {})  # checks the weights: make them NaN after
        with torch.no_grad():
            model.policy.action_net.bias[0] = float("nan")
        inference_class = inference_module.PolicyInference
        lean_path = "__call__" if per_step else "actions"
        with (
            mock.patch.object(
                inference_class, "_raise_sb3_error", autospec=True, side_effect=inference_class._raise_sb3_error
            ) as spy,
            mock.patch.object(inference_class, lean_path, autospec=True, side_effect=getattr(inference_class, lean_path)),
            pytest.raises(ValueError, match=f"Expected parameter {parameter}") as error,
        ):
            model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
        assert spy.called == lean  # the lean inference found the NaN and raised SB3's error
        errors.append(str(error.value))
        assert model.num_timesteps == 0  # raised before the first step
    assert errors[0] == errors[1]


@pytest.mark.parametrize("log_std", [-60.0, 100.0])
def test_degenerate_standard_deviation_gives_sb3s_buffer_and_no_error(log_std: float) -> None:
    # exp(-60) ≈ 9e-27 squares to 0 and exp(100) is inf in float32: NaN log-probabilities, which SB3 accepts. The lean
    # path then runs SB3's forward to see whether it raises, and must leave the generator as it was: with an
    # infinite standard deviation the sign of each draw decides the (clipped) action and the reward.
    rollouts = compare(lambda: make_model(ACTION_SPACES["box"], policy_kwargs=dict(net_arch=[16], log_std_init=log_std)))
    assert np.isnan(rollouts[0]["log_probs"]).any()
    if log_std > 0:
        assert {-np.inf, np.inf} <= set(rollouts[0]["actions"].ravel().tolist())


@pytest.mark.parametrize("n_categories", [2, 3, 7, 40])
def test_categorical_sample_draws_what_multinomial_draws(n_categories: int) -> None:
    generator_state = torch.get_rng_state()
    logits = torch.randn(64, n_categories) * 3
    logits[:, 0] = -torch.inf  # a category that cannot be drawn
    normalized = logits - logits.logsumexp(dim=-1, keepdim=True)
    expected = torch.multinomial(normalized.softmax(-1), 1, True).T.reshape(64)
    state_after_multinomial = torch.get_rng_state()
    torch.set_rng_state(generator_state)
    torch.randn(64, n_categories)  # the same draws as for the logits
    assert torch.equal(heads.categorical_sample(normalized), expected)
    assert torch.equal(torch.get_rng_state(), state_after_multinomial)  # the generator moved alike


@pytest.mark.parametrize("n_categories", [2, 3, 7, 40])
def test_categorical_head_draws_and_scores_what_sb3s_distribution_does(n_categories: int) -> None:
    head = heads._CategoricalHead()
    for batch in (64, 64, 5):  # the reused draws tensor, then a new shape
        logits = torch.randn(batch, n_categories) * 3
        logits[:, 0] = -torch.inf  # a category that cannot be drawn
        generator_state = torch.get_rng_state()
        distribution = CategoricalDistribution(n_categories).proba_distribution(logits)
        expected_actions = distribution.get_actions()
        expected_log_probs = distribution.log_prob(expected_actions)
        state_after_sb3 = torch.get_rng_state()
        torch.set_rng_state(generator_state)
        actions, log_probs = head(logits, torch.empty(0))
        np.testing.assert_array_equal(actions, expected_actions.numpy())
        np.testing.assert_array_equal(log_probs, expected_log_probs.numpy())
        assert torch.equal(torch.get_rng_state(), state_after_sb3)


@pytest.mark.parametrize("batch", [1, 4096])
def test_gaussian_head_draws_and_scores_what_sb3s_distribution_does(batch: int) -> None:
    torch.manual_seed(batch)
    log_std = torch.nn.Parameter(torch.randn(3))
    head = heads._DiagGaussianHead(log_std)
    for scale in (1.0, 1e-3, 1e3):
        mean = torch.randn(batch, 3) * scale
        generator_state = torch.get_rng_state()
        with torch.no_grad():
            sb3 = DiagGaussianDistribution(3).proba_distribution(mean, log_std)
            expected_actions = sb3.get_actions()
            expected_log_probs = sb3.log_prob(expected_actions)
        torch.set_rng_state(generator_state)
        actions, log_probs = head(mean, torch.empty(0))
        np.testing.assert_array_equal(actions, expected_actions.numpy())
        np.testing.assert_array_equal(log_probs, expected_log_probs.numpy())


@pytest.mark.parametrize("squash_output", [False, True])
@pytest.mark.parametrize("batch", [1, 7, 4096])
def test_gsde_head_computes_what_sb3s_distribution_does(batch: int, squash_output: bool) -> None:
    # Many states of varied scales: any operation that rounds differently from torch's shows up in some row.
    torch.manual_seed(batch)
    distribution = StateDependentNoiseDistribution(3, squash_output=squash_output)
    distribution.proba_distribution_net(latent_dim=8, log_std_init=-0.5)
    log_std = torch.nn.Parameter(torch.randn(8, 3))
    distribution.sample_weights(log_std, batch_size=7)  # 7 matrices: one per state for the batch of 7, else one
    head = heads._StateDependentNoiseHead(distribution, log_std)
    for scale in (1.0, 1e-3, 1e3):
        latent = torch.randn(batch, 8) * scale
        mean = torch.randn(batch, 3) * scale
        with torch.no_grad():
            sb3 = distribution.proba_distribution(mean, log_std, latent)
            expected_actions = sb3.get_actions()
            expected_log_probs = sb3.log_prob(expected_actions)
            actions, log_probs = head(mean, latent)
        np.testing.assert_array_equal(actions, expected_actions.numpy())
        np.testing.assert_array_equal(log_probs, expected_log_probs.numpy())
    with torch.no_grad():
        log_std.add_(0.25)  # in place, as the trust-region step moves it: the head's cached std must follow
        sb3 = distribution.proba_distribution(mean, log_std, latent)
        expected = sb3.log_prob(sb3.get_actions())
        np.testing.assert_array_equal(head(mean, latent)[1], expected.numpy())


@pytest.mark.parametrize("size", [3, 500])
def test_environment_data_check_tells_huge_values_from_non_finite_ones(size: int) -> None:
    check = EnvironmentDataCheck()
    huge = np.full((2, size), 1e308)  # finite, but their sum overflows
    check.locals = {"new_obs": huge, "rewards": np.zeros(2, np.float32), "dones": np.array([False, False]), "infos": [{}, {}]}
    assert check._on_step()
    huge[1, -1] = np.nan
    with pytest.raises(
        NonFiniteEnvironmentDataError, match=rf"observations: 1 of {2 * size} values \(nan at index \(1, {size - 1}\)"
    ):
        check._on_step()
    terminal = np.zeros(4, np.float32)
    terminal[2] = -np.inf
    check.locals = {
        "new_obs": {"a": np.zeros((2, 3), np.float32), "b": np.zeros((2, 2), np.uint8)},
        "rewards": np.zeros(2),
        "dones": np.array([False, True]),
        "infos": [{}, {"terminal_observation": terminal}],
    }
    with pytest.raises(NonFiniteEnvironmentDataError, match=r"terminal observation of env 1: 1 of 4 values \(-inf"):
        check._on_step()


@pytest.mark.parametrize(("in_features", "out_features", "batch"), [(4, 64, 2), (64, 64, 3), (64, 2, 1), (7, 5, 16)])
def test_linear_layers_compute_what_nn_linear_computes(in_features: int, out_features: int, batch: int) -> None:
    layer = torch.nn.Linear(in_features, out_features)
    (lean_layer,) = layers.torch_layers(layer)
    x = torch.randn(batch, in_features)
    with torch.no_grad():
        assert torch.equal(lean_layer(x), layer(x))


class CheckpointSubclass(CheckpointCallback):
    """A subclass of a listed callback: it may read anything."""


class CountingCallback(BaseCallback):
    """A user's callback that says, in its own class body, that it reads neither the step's values nor log-probabilities."""

    reads_step_outputs = False

    def _on_step(self) -> bool:
        return True


class ValueLoggingCallback(CountingCallback):
    """A subclass that does not repeat the declaration: it may read them."""

    def _on_step(self) -> bool:
        self.logger.record("rollout/value", float(self.locals["values"].mean()))
        return True


def callback_chains() -> list[tuple[str, Callable[[Path], BaseCallback], bool]]:
    """(label, the chain given the run folder, whether a callback in it may read the step's values or log-probabilities)."""
    eval_env = lambda: make_vec_env("CartPole-v1", n_envs=1)  # noqa: E731
    return [
        ("environment data check", lambda path: CallbackList([EnvironmentDataCheck()]), False),
        (
            "SB3's standard callbacks",
            lambda path: CallbackList(
                [
                    EnvironmentDataCheck(),
                    ProgressBarCallback(),
                    SB3CheckpointCallback(10, str(path)),
                    EvalCallback(
                        eval_env(),
                        callback_on_new_best=StopTrainingOnRewardThreshold(1.0),
                        callback_after_eval=StopTrainingOnNoModelImprovement(3),
                    ),
                    EveryNTimesteps(5, StopTrainingOnMaxEpisodes(10)),
                ]
            ),
            False,
        ),
        (
            "this package's callbacks",
            lambda path: CallbackList(
                [CheckpointCallback(10, str(path)), UpdateCheckpointCallback(10, path), SaveVecNormalizeOnBest(path)]
            ),
            False,
        ),
        ("a user's callback", lambda path: CallbackList([EnvironmentDataCheck(), StepOutputReader()]), True),
        ("a user's callback declared blind", lambda path: CallbackList([EnvironmentDataCheck(), CountingCallback()]), False),
        ("its subclass", lambda path: CallbackList([EnvironmentDataCheck(), ValueLoggingCallback()]), True),
        ("a function", lambda path: CallbackList([ConvertCallback(lambda local_names, global_names: True)]), True),
        ("a subclass of a listed one", lambda path: CallbackList([CheckpointSubclass(10, str(path))]), True),
        ("called on a new best", lambda path: EvalCallback(eval_env(), callback_on_new_best=StepOutputReader()), True),
        ("called after evaluations", lambda path: EvalCallback(eval_env(), callback_after_eval=StepOutputReader()), True),
        ("called every n steps", lambda path: EveryNTimesteps(5, StepOutputReader()), True),
    ]


@pytest.mark.parametrize(("label", "chain", "may_read"), callback_chains(), ids=[c[0] for c in callback_chains()])
def test_values_are_batched_only_when_no_callback_can_read_them(
    label: str, chain: Callable[[Path], BaseCallback], may_read: bool, tmp_path: Path
) -> None:
    callback = chain(tmp_path)
    assert callbacks_may_read_step_outputs(callback) is may_read
    model = make_model(ACTION_SPACES["discrete"])
    model._setup_learn(10**6)
    callback.init_callback(model)
    callback.on_training_start({"total_timesteps": 10**6}, {})
    with mock.patch.object(rollout_algorithm, "fill_values_and_log_probs", wraps=fill_values_and_log_probs) as fill:
        assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    callback.on_training_end()
    assert fill.called is not may_read


def class_sources(module_name: str, class_name: str) -> list[str]:
    """
    The source of a class and of its bases defined in the same module (up to SB3's ``BaseCallback``), read from the
    module's file without importing it (importing rl-zoo3 patches gymnasium's ``TimeLimit`` for the whole process).
    """
    spec = importlib.util.find_spec(module_name)
    assert spec is not None and spec.origin is not None, module_name
    text = Path(spec.origin).read_text()
    classes = {node.name: node for node in ast.walk(ast.parse(text)) if isinstance(node, ast.ClassDef)}
    sources, pending = [], [class_name]
    while pending:
        node = classes[pending.pop()]
        sources.append(ast.get_source_segment(text, node) or "")
        pending += [
            base.id for base in node.bases if isinstance(base, ast.Name) and base.id in classes and base.id != "BaseCallback"
        ]
    return sources


@pytest.mark.parametrize("name", sorted(CALLBACKS_BLIND_TO_STEP_OUTPUTS))
def test_listed_callbacks_read_neither_values_nor_log_probabilities(name: str) -> None:
    module_name, class_name = name.rsplit(".", 1)
    module = importlib.util.find_spec(module_name)
    if module is None or not re.search(rf"^class {class_name}\b", Path(str(module.origin)).read_text(), re.MULTILINE):
        pytest.skip(f"{name} is not in the installed release of its package (the list names it for the releases that have it)")
    for source in class_sources(module_name, class_name):
        assert not re.search(r"""locals(\[|\.get\()\s*["'](values|log_probs)["']""", source), name
        assert set(re.findall(r"""locals\[\s*["'](\w+)["']""", source)) <= {"dones", "infos", "total_timesteps"}, name
        assert set(re.findall(r"""locals\.get\(\s*["'](\w+)["']""", source)) <= {"tb_log_name"}, name


@pytest.mark.parametrize(("n_steps", "n_envs"), [(1, 1), (37, 2), (64, 8)])
@pytest.mark.parametrize("buffer_class", [RolloutBuffer, DictRolloutBuffer])
def test_returns_and_advantages_are_sb3s_bit_for_bit(n_steps: int, n_envs: int, buffer_class: type[RolloutBuffer]) -> None:
    observation_space = DICT_SPACE if buffer_class is DictRolloutBuffer else spaces.Box(-1, 1, (3,))
    rng = np.random.default_rng(n_steps)
    buffers = []
    for _ in range(2):
        buffer = buffer_class(n_steps, observation_space, spaces.Discrete(2), n_envs=n_envs, gamma=0.97, gae_lambda=0.9)
        buffer.rewards[:] = rng.standard_normal(buffer.rewards.shape) * 10.0 ** rng.integers(-3, 4, buffer.rewards.shape)
        buffer.values[:] = rng.standard_normal(buffer.values.shape)
        buffer.rewards[0, 0], buffer.values[0, 0] = -0.0, 0.0  # signed zeros survive as in SB3's loop
        buffer.episode_starts[:] = rng.random(buffer.episode_starts.shape) < 0.2
        buffers.append(buffer)
    buffers[1].rewards[:], buffers[1].values[:], buffers[1].episode_starts[:] = (
        buffers[0].rewards,
        buffers[0].values,
        buffers[0].episode_starts,
    )
    last_values, dones = torch.randn(n_envs, 1), rng.random(n_envs) < 0.5
    buffers[0].compute_returns_and_advantage(last_values, dones)
    compute_returns_and_advantage(buffers[1], last_values, dones)
    for name in ("advantages", "returns"):
        expected, computed = getattr(buffers[0], name), getattr(buffers[1], name)
        assert computed.dtype == expected.dtype == np.float32
        np.testing.assert_array_equal(computed, expected, err_msg=name)
        np.testing.assert_array_equal(np.signbit(computed), np.signbit(expected), err_msg=name)


def test_returns_and_advantages_read_no_uninitialised_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    No floating-point warning, whatever fresh arrays hold: the computation once left one row of an ``np.empty_like``
    unset, and the garbage in it (unused, but multiplied) printed "overflow encountered in multiply" in training logs.
    """
    buffers = []
    for _ in range(2):
        buffer = RolloutBuffer(5, spaces.Box(-1, 1, (3,)), spaces.Discrete(2), n_envs=2, gamma=0.97, gae_lambda=0.9)
        buffer.rewards[:], buffer.values[:] = 1.0, 2.0
        buffer.episode_starts[2] = 1.0
        buffers.append(buffer)
    last_values, dones = torch.full((2, 1), 10.0), np.array([False, True])
    buffers[0].compute_returns_and_advantage(last_values, dones)
    real_empty_like = np.empty_like

    def largest_float_like(prototype: np.ndarray, *args: object, **kwargs: object) -> np.ndarray:
        fresh = real_empty_like(prototype, *args, **kwargs)
        fresh.fill(np.finfo(fresh.dtype).max if fresh.dtype.kind == "f" else 0)
        return fresh

    monkeypatch.setattr(np, "empty_like", largest_float_like)
    with np.errstate(all="raise"):
        compute_returns_and_advantage(buffers[1], last_values, dones)
    for name in ("advantages", "returns"):
        np.testing.assert_array_equal(getattr(buffers[1], name), getattr(buffers[0], name), err_msg=name)


def test_returns_and_advantages_of_other_buffers_come_from_their_own_method() -> None:
    class HalvedAdvantages(RolloutBuffer):
        def compute_returns_and_advantage(self, last_values: torch.Tensor, dones: np.ndarray) -> None:
            super().compute_returns_and_advantage(last_values, dones)
            self.advantages /= 2

    buffer = HalvedAdvantages(4, spaces.Box(-1, 1, (3,)), spaces.Discrete(2), n_envs=1)
    buffer.rewards[:] = 1.0
    compute_returns_and_advantage(buffer, torch.zeros(1, 1), np.array([False]))
    reference = RolloutBuffer(4, spaces.Box(-1, 1, (3,)), spaces.Discrete(2), n_envs=1)
    reference.rewards[:] = 1.0
    reference.compute_returns_and_advantage(torch.zeros(1, 1), np.array([False]))
    np.testing.assert_array_equal(buffer.advantages, reference.advantages / 2)
