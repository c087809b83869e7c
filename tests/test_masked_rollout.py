"""
MaskableTRPO's lean rollout fills the maskable rollout buffer as sb3-contrib's ``MaskablePPO.collect_rollouts`` does.

Each comparison builds identical models (same seed, same environments, whose valid actions change from step to step)
and collects consecutive rollouts with ``MaskablePPO``'s own loop (called on our model) and with the lean loop both
ways: per step (a callback may read the step's values) every field bit for bit, masks included; batched (values and
log-probabilities under the stored masks, for the whole rollout at its end) with those and what derives from them
equal to float32 rounding, and everything else bit for bit.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from sb3_contrib.common.maskable.distributions import make_masked_proba_distribution
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env

from sb3_trpo_plugin.envs import RandomEnv
from sb3_trpo_plugin.masked import MaskableTRPO
from sb3_trpo_plugin.masked import inference as masked_inference
from sb3_trpo_plugin.masked.inference import MaskedCategoricalHead, masked_head, masked_unrecognised_reason
from sb3_trpo_plugin.masked.on_policy import MaskedOnPolicyAlgorithm
from sb3_trpo_plugin.replicas.inference import PolicyInference
from sb3_trpo_plugin.rollout.batched_outputs import callbacks_may_read_step_outputs
from sb3_trpo_plugin.rollout.checks import EnvironmentDataCheck
from tests.test_rollout import BUFFER_FIELDS, DICT_SPACE, StepOutputReader, assert_same_rollouts

MASKABLE_SPACES = {
    "discrete": spaces.Discrete(3),
    "multidiscrete": spaces.MultiDiscrete([2, 3]),
    "multibinary": spaces.MultiBinary(3),
}


def component_sizes(space: spaces.Space) -> list[int]:
    """The number of choices of each categorical component of sb3-contrib's masked distribution for ``space``."""
    if isinstance(space, spaces.Discrete):
        return [int(space.n)]
    if isinstance(space, spaces.MultiDiscrete):
        return [int(n) for n in space.nvec]
    assert isinstance(space, spaces.MultiBinary) and isinstance(space.n, int)
    return [2] * space.n


class MaskedRandomEnv(RandomEnv):
    """:class:`RandomEnv` whose ``action_masks()`` forbid a different action of each component from step to step."""

    def action_masks(self) -> np.ndarray:
        parts = []
        for index, size in enumerate(component_sizes(self.action_space)):
            mask = np.ones(size, dtype=bool)
            if (self._t + index) % 3:  # every third step all actions are valid
                mask[(self._t + index) % size] = False
            parts.append(mask)
        return np.concatenate(parts)


def make_model(
    action_space: spaces.Space, observation_space: spaces.Space | None = None, n_envs: int = 2, **kwargs: Any
) -> MaskableTRPO:
    """A MaskableTRPO model on ``n_envs`` seeded masked random environments truncated every 10 steps."""
    env = make_vec_env(lambda: MaskedRandomEnv(action_space, observation_space, episode_length=10), n_envs=n_envs, seed=1)
    kwargs.setdefault("policy_kwargs", dict(net_arch=[16, 16]))
    policy = kwargs.pop("policy", "MultiInputPolicy" if isinstance(observation_space, spaces.Dict) else "MlpPolicy")
    return MaskableTRPO(policy, env, n_steps=16, batch_size=16 * n_envs, seed=0, **kwargs)


def collect(
    model: MaskableTRPO, loop: str, use_masking: bool = True, n_rollouts: int = 3, callback: BaseCallback | None = None
) -> list[dict[str, Any]]:
    """
    Copies of the buffer (masks included) after each of ``n_rollouts`` rollouts: ``loop`` is ``"MaskablePPO"``
    (sb3-contrib's loop, called on our model), ``"fallback"`` (``lean_rollout = False``) or ``"lean"``.
    """
    model._use_masking = use_masking
    model.lean_rollout = loop == "lean"
    _, callback_list = model._setup_learn(10**6, callback=callback)
    callback_list.on_training_start({}, {})
    snapshots = []
    for _ in range(n_rollouts):
        if loop == "MaskablePPO":
            completed = MaskablePPO.collect_rollouts(
                model,  # type: ignore[arg-type]
                model.env,
                callback_list,
                model.rollout_buffer,
                model.n_steps,
                use_masking=use_masking,
            )
        else:
            completed = model.collect_rollouts(model.env, callback_list, model.rollout_buffer, model.n_steps)
        buffer = model.rollout_buffer
        snapshot: dict[str, Any] = {"completed": completed, "pos": buffer.pos, "num_timesteps": model.num_timesteps}
        for name in (*BUFFER_FIELDS, "action_masks"):
            value = getattr(buffer, name)
            snapshot[name] = {k: v.copy() for k, v in value.items()} if isinstance(value, dict) else value.copy()
        snapshots.append(snapshot)
    return snapshots


def assert_same_masks(lean: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
    for lean_rollout, reference_rollout in zip(lean, reference, strict=True):
        assert lean_rollout["action_masks"].dtype == reference_rollout["action_masks"].dtype
        np.testing.assert_array_equal(lean_rollout["action_masks"], reference_rollout["action_masks"])


def compare(make: Any, use_masking: bool = True, expect_batched: bool = True) -> list[dict[str, Any]]:
    """sb3-contrib's loop, our fallback loop, and the lean loop per step and batched, from identical models."""
    reference = collect(make(), "MaskablePPO", use_masking)
    assert any(not mask.all() for rollout in reference for mask in rollout["action_masks"]) == use_masking
    fallback = collect(make(), "fallback", use_masking)
    per_step_model = make()
    assert masked_unrecognised_reason(per_step_model.policy) is None
    with (
        mock.patch.object(MaskedOnPolicyAlgorithm, "collect_rollouts", autospec=True) as contrib_loop,
        mock.patch.object(
            masked_inference, "fill_values_and_log_probs", wraps=masked_inference.fill_values_and_log_probs
        ) as fill,
    ):
        per_step = collect(per_step_model, "lean", use_masking, callback=StepOutputReader())
        fill.assert_not_called()
        batched = collect(make(), "lean", use_masking)
        assert fill.called == expect_batched
    contrib_loop.assert_not_called()  # the lean loop ran
    for rollouts, exact in ((fallback, True), (per_step, True), (batched, not expect_batched)):
        assert_same_rollouts(rollouts, reference, exact=exact)
        assert_same_masks(rollouts, reference)
    return batched


@pytest.mark.parametrize("use_masking", [True, False])
@pytest.mark.parametrize("action_space", MASKABLE_SPACES.values(), ids=MASKABLE_SPACES.keys())
def test_same_buffer_as_maskable_ppos_loop(action_space: spaces.Space, use_masking: bool) -> None:
    rollouts = compare(lambda: make_model(action_space), use_masking)
    actions = np.concatenate([rollout["actions"] for rollout in rollouts])
    assert len(np.unique(actions.reshape(-1, actions.shape[-1]), axis=0)) > 1  # the policy did sample


def test_same_buffer_with_several_envs_and_dict_observations() -> None:
    # Dict observations without images batch the values; with an image they are computed per step.
    vector_dict = spaces.Dict({"a": spaces.Box(-1, 1, (3,), dtype=np.float32), "b": spaces.Discrete(4)})
    compare(lambda: make_model(MASKABLE_SPACES["multidiscrete"], vector_dict, n_envs=3))
    compare(lambda: make_model(MASKABLE_SPACES["discrete"], DICT_SPACE), expect_batched=False)


def test_sampled_actions_respect_the_masks() -> None:
    model = make_model(MASKABLE_SPACES["multidiscrete"])
    for rollout in collect(model, "lean"):
        actions, masks = rollout["actions"].astype(int), rollout["action_masks"].astype(bool)
        assert masks[:, :, :2][np.arange(16)[:, None], np.arange(2)[None, :], actions[:, :, 0]].all()
        assert masks[:, :, 2:][np.arange(16)[:, None], np.arange(2)[None, :], actions[:, :, 1]].all()


@pytest.mark.parametrize("with_masks", [True, False])
@pytest.mark.parametrize("action_space", MASKABLE_SPACES.values(), ids=MASKABLE_SPACES.keys())
def test_head_draws_and_scores_what_sb3_contribs_distribution_does(action_space: spaces.Space, with_masks: bool) -> None:
    torch.manual_seed(0)
    sizes = component_sizes(action_space)
    head = masked_head(mock.Mock(action_dist=make_masked_proba_distribution(action_space)))
    assert isinstance(head, MaskedCategoricalHead)
    for batch in (1, 64):
        logits = torch.randn(batch, sum(sizes)) * 3
        logits[0, 0] = -torch.inf  # an action that cannot be drawn
        masks = (torch.rand(batch, sum(sizes)) < 0.7).numpy() if with_masks else None
        generator_state = torch.get_rng_state()
        distribution = make_masked_proba_distribution(action_space).proba_distribution(logits)
        if masks is not None:
            distribution.apply_masking(masks)
        expected_actions = distribution.get_actions()
        expected_log_probs = distribution.log_prob(expected_actions)
        state_after_contrib = torch.get_rng_state()
        torch.set_rng_state(generator_state)
        actions, log_probs = head(logits, torch.empty(0), masks)
        np.testing.assert_array_equal(actions, expected_actions.numpy())
        np.testing.assert_array_equal(log_probs, expected_log_probs.numpy())
        assert torch.equal(torch.get_rng_state(), state_after_contrib)
        torch.set_rng_state(generator_state)
        sampled, valid = head.sample(logits, torch.empty(0), masks)
        np.testing.assert_array_equal(sampled, expected_actions.numpy())
        assert valid


@pytest.mark.parametrize("per_step", [True, False], ids=["per-step", "batched"])
@pytest.mark.parametrize("action_space", MASKABLE_SPACES.values(), ids=MASKABLE_SPACES.keys())
def test_nan_logits_raise_sb3_contribs_error(action_space: spaces.Space, per_step: bool) -> None:
    errors = []
    for loop in ("MaskablePPO", "lean"):
        model = make_model(action_space)
        model.lean_rollout = loop == "lean"
        _, callback = model._setup_learn(10**6, callback=StepOutputReader() if per_step else None)
        callback.on_training_start({}, {})  # checks the weights: make them NaN after
        with torch.no_grad():
            model.policy.action_net.bias[0] = float("nan")
        with (
            mock.patch.object(
                PolicyInference, "_raise_sb3_error", autospec=True, side_effect=PolicyInference._raise_sb3_error
            ) as spy,
            pytest.raises(ValueError, match="Expected parameter logits") as error,
        ):
            if loop == "MaskablePPO":
                MaskablePPO.collect_rollouts(model, model.env, callback, model.rollout_buffer, model.n_steps)  # type: ignore[arg-type]
            else:
                model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
        assert spy.called == (loop == "lean")  # the lean inference found the NaN and raised sb3-contrib's error
        assert model.num_timesteps == 0
        errors.append(str(error.value))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("per_step", [True, False])
def test_short_learn_ends_at_the_same_weights(per_step: bool) -> None:
    weights = []
    for lean in (False, True):
        model = make_model(MASKABLE_SPACES["multibinary"])
        model.lean_rollout = lean
        model.learn(3 * 16 * 2, callback=StepOutputReader() if per_step or not lean else None)
        weights.append(torch.nn.utils.parameters_to_vector(model.policy.parameters()).detach())
    if per_step:
        assert torch.equal(weights[0], weights[1])
    else:
        torch.testing.assert_close(weights[1], weights[0], rtol=1e-4, atol=1e-5)


class OverridingPolicy(MaskableActorCriticPolicy):
    def forward(self, obs: torch.Tensor, deterministic: bool = False, action_masks: np.ndarray | None = None) -> Any:
        return super().forward(obs, deterministic, action_masks)


def test_unrecognised_policies_take_sb3_contribs_loop() -> None:
    model = make_model(MASKABLE_SPACES["discrete"], policy=OverridingPolicy)
    assert masked_unrecognised_reason(model.policy) == "OverridingPolicy overrides forward"
    with mock.patch.object(MaskedOnPolicyAlgorithm, "collect_rollouts", autospec=True, return_value=True) as contrib_loop:
        collect(model, "lean", n_rollouts=1)
    contrib_loop.assert_called_once()


def test_masks_are_refused_by_a_head_that_does_not_mask() -> None:
    from sb3_trpo_plugin import TRPO
    from sb3_trpo_plugin.replicas.inference import policy_inference

    model = TRPO("MlpPolicy", make_vec_env(lambda: RandomEnv(MASKABLE_SPACES["discrete"]), n_envs=1), n_steps=8, batch_size=8)
    inference = policy_inference(model.policy)
    assert inference is not None
    obs = torch.zeros(1, 4)
    with pytest.raises(ValueError, match="does not take action masks"):
        inference.actions(obs, np.ones((1, 3), dtype=bool))


def test_environments_without_masks_are_refused_with_masking_on() -> None:
    model = MaskableTRPO("MlpPolicy", make_vec_env(lambda: RandomEnv(MASKABLE_SPACES["discrete"]), n_envs=1), n_steps=8)
    with pytest.raises(ValueError, match="does not support action masking"):
        model.learn(8)
    model.learn(8, use_masking=False)
    assert model.num_timesteps == 8


def test_maskable_eval_callback_keeps_the_values_batched() -> None:
    eval_env = make_vec_env(lambda: MaskedRandomEnv(MASKABLE_SPACES["discrete"]), n_envs=1)
    assert not callbacks_may_read_step_outputs(CallbackList([EnvironmentDataCheck(), MaskableEvalCallback(eval_env)]))
    assert callbacks_may_read_step_outputs(MaskableEvalCallback(eval_env, callback_on_new_best=StepOutputReader()))
