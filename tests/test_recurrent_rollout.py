"""
RecurrentTRPO's lean rollout fills the recurrent rollout buffer as sb3-contrib's ``RecurrentPPO`` loop does, bit for bit.

Each comparison builds two identical models (same seed, same environments, short episodes so that LSTM states are
reset inside rollouts) and collects consecutive rollouts, one with ``lean_rollout = False`` (``RecurrentPPO``'s own
loop, with the policy's forward): every field of the buffer, the LSTM states included, and the states carried to the
next rollout must be equal. A simulated upstream change (SB3's MLP extractor patched) is caught by the lean
inference's proof, which leaves the rollouts to ``RecurrentPPO``'s loop.
"""

from __future__ import annotations

import warnings
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.torch_layers import MlpExtractor

from sb3_trpo_plugin import FastPathMismatchWarning, RecurrentTRPO
from sb3_trpo_plugin.recurrent.inference import (
    RECURRENT_LEAN_INFERENCE,
    RecurrentPolicyInference,
    recurrent_policy_inference,
    recurrent_unrecognised_reason,
)
from sb3_trpo_plugin.replicas.proofs import proofs_of
from tests.conftest import ACTION_SPACES, RandomEnv

FIELDS = (
    "observations",
    "actions",
    "rewards",
    "episode_starts",
    "values",
    "log_probs",
    "returns",
    "advantages",
    "hidden_states_pi",
    "cell_states_pi",
    "hidden_states_vf",
    "cell_states_vf",
)
DICT_OBSERVATIONS = spaces.Dict({"position": spaces.Box(-1, 1, (3,), np.float32), "mode": spaces.Discrete(3)})
LSTM_SETTINGS = {
    "critic lstm": dict(enable_critic_lstm=True),
    "shared lstm": dict(shared_lstm=True, enable_critic_lstm=False),
    "no critic lstm": dict(enable_critic_lstm=False),
    "two layers": dict(n_lstm_layers=2),
}


def make_model(
    action_space: spaces.Space,
    observation_space: spaces.Space | None = None,
    n_envs: int = 3,
    use_sde: bool = False,
    **policy_kwargs: Any,
) -> RecurrentTRPO:
    lengths = iter([3, 5, 7, 4] * 10)
    env = make_vec_env(lambda: RandomEnv(action_space, observation_space, episode_length=next(lengths)), n_envs=n_envs, seed=1)
    policy = "MultiInputLstmPolicy" if isinstance(observation_space, spaces.Dict) else "MlpLstmPolicy"
    kwargs = dict(lstm_hidden_size=8, net_arch=dict(pi=[8], vf=[8])) | policy_kwargs
    return RecurrentTRPO(policy, env, n_steps=16, batch_size=16, seed=0, use_sde=use_sde, policy_kwargs=kwargs)


def collect(model: RecurrentTRPO, lean: bool, n_rollouts: int = 3) -> list[dict[str, Any]]:
    model.lean_rollout = lean
    _, callback = model._setup_learn(10**6, callback=None)
    callback.on_training_start({}, {})
    snapshots = []
    for _ in range(n_rollouts):
        assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
        buffer = model.rollout_buffer
        snapshot = {name: getattr(buffer, name) for name in FIELDS}
        snapshot = {
            k: {key: a.copy() for key, a in v.items()} if isinstance(v, dict) else v.copy() for k, v in snapshot.items()
        }
        snapshot["last_states"] = [t.clone() for pair in model._last_lstm_states for t in pair]
        snapshots.append(snapshot)
    return snapshots


def compare(make: Any) -> None:
    reference = collect(make(), lean=False)
    model = make()
    assert recurrent_unrecognised_reason(model.policy) is None
    with mock.patch.object(
        RecurrentActorCriticPolicy, "forward", autospec=True, side_effect=RecurrentActorCriticPolicy.forward
    ) as forward:
        lean = collect(model, lean=True)
    assert forward.call_count == 2  # the lean inference acted: the forward ran only for its proof's two probes
    assert_same_rollouts(lean, reference)
    starts = np.concatenate([rollout["episode_starts"] for rollout in reference])
    assert starts[1:].any()  # episodes start inside the rollouts: the states are reset there


def assert_same_rollouts(lean: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
    """Every field of every rollout's buffer, and the states carried to the next rollout, bit for bit."""
    for lean_rollout, reference_rollout in zip(lean, reference, strict=True):
        for name in (*FIELDS, "last_states"):
            ours, theirs = lean_rollout[name], reference_rollout[name]
            if isinstance(theirs, dict):
                for key in theirs:
                    np.testing.assert_array_equal(ours[key], theirs[key], err_msg=f"{name}[{key}]")
            elif isinstance(theirs, list):
                assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True)), name
            else:
                assert ours.dtype == theirs.dtype
                np.testing.assert_array_equal(ours, theirs, err_msg=name)


@pytest.mark.parametrize("action_space", ACTION_SPACES.values(), ids=ACTION_SPACES.keys())
def test_same_buffer_for_every_action_space(action_space: spaces.Space) -> None:
    compare(lambda: make_model(action_space))


@pytest.mark.parametrize("settings", LSTM_SETTINGS.values(), ids=LSTM_SETTINGS.keys())
def test_same_buffer_for_every_critic_kind(settings: dict[str, Any]) -> None:
    compare(lambda: make_model(ACTION_SPACES["box"], **settings))


def test_same_buffer_with_dict_observations_and_separate_extractors() -> None:
    compare(lambda: make_model(ACTION_SPACES["discrete"], DICT_OBSERVATIONS, share_features_extractor=False))


def test_same_buffer_with_gsde() -> None:
    compare(lambda: make_model(ACTION_SPACES["box"], log_std_init=-1.0, use_sde=True))


class OverridingPolicy(RecurrentActorCriticPolicy):
    @staticmethod
    def _process_sequence(*args: Any) -> Any:
        return RecurrentActorCriticPolicy._process_sequence(*args)


def test_unrecognised_policies_act_through_their_forward() -> None:
    env = make_vec_env(lambda: RandomEnv(ACTION_SPACES["discrete"]), n_envs=2, seed=0)
    model = RecurrentTRPO(OverridingPolicy, env, n_steps=8, batch_size=16, policy_kwargs=dict(lstm_hidden_size=4))
    assert recurrent_unrecognised_reason(model.policy) == "OverridingPolicy overrides _process_sequence"
    with mock.patch.object(RecurrentPolicyInference, "__call__", autospec=True) as lean:
        model.learn(16)
    lean.assert_not_called()


def test_nan_parameters_raise_the_policys_own_error() -> None:
    errors = []
    for lean in (False, True):
        model = make_model(ACTION_SPACES["discrete"])
        model.lean_rollout = lean
        _, callback = model._setup_learn(10**6, callback=None)
        callback.on_training_start({}, {})  # checks the weights: make them NaN after
        with torch.no_grad():
            model.policy.action_net.bias[0] = float("nan")
        with pytest.raises(ValueError, match="Expected parameter logits") as error:
            model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
        errors.append(str(error.value))
    assert errors[0] == errors[1]


def scaled_forward_actor(self: MlpExtractor, features: torch.Tensor) -> torch.Tensor:
    """A future SB3 whose MLP extractor computes another latent for the actor."""
    return self.policy_net(features) * 1.5


@pytest.mark.parametrize("settings", LSTM_SETTINGS.values(), ids=LSTM_SETTINGS.keys())
def test_lean_rollout_falls_back_to_recurrent_ppos_loop_when_sb3_computes_otherwise(settings, monkeypatch) -> None:
    monkeypatch.setattr(MlpExtractor, "forward_actor", scaled_forward_actor)
    reference = collect(make_model(ACTION_SPACES["box"], **settings), lean=False)
    # Without its proof the lean inference would act on, unaware: its rollouts are not RecurrentPPO's under the change.
    unproved = make_model(ACTION_SPACES["box"], **settings)
    proofs_of(unproved.policy)._verdicts[(RECURRENT_LEAN_INFERENCE.name, "")] = True
    with pytest.raises(AssertionError):
        assert_same_rollouts(collect(unproved, lean=True), reference)

    model = make_model(ACTION_SPACES["box"], **settings)
    with (
        warnings.catch_warnings(record=True) as caught,
        mock.patch.object(
            RecurrentPPO, "collect_rollouts", autospec=True, side_effect=RecurrentPPO.collect_rollouts
        ) as contrib_loop,
    ):
        warnings.simplefilter("always")
        rollouts = collect(model, lean=True)
    assert contrib_loop.call_count == 3  # sb3-contrib's own loop collected every rollout
    assert_same_rollouts(rollouts, reference)  # bit for bit
    mismatches = [w for w in caught if issubclass(w.category, FastPathMismatchWarning)]
    assert len(mismatches) == 1, [str(w.message) for w in mismatches]  # once, not once per rollout
    message = str(mismatches[0].message)
    assert "the lean recurrent rollout inference does not reproduce the policy's own forward" in message
    assert "the actions with episode starts differ" in message and "sb3-contrib " in message
    assert proofs_of(model.policy).verdict(RECURRENT_LEAN_INFERENCE) is False
    assert recurrent_policy_inference(model.policy) is None  # later rollouts do not even build it


def test_proof_leaves_the_rollout_as_it_was_and_runs_once_per_policy() -> None:
    reference = collect(make_model(ACTION_SPACES["box"], log_std_init=-1.0, use_sde=True), lean=False)
    model = make_model(ACTION_SPACES["box"], log_std_init=-1.0, use_sde=True)
    with (
        warnings.catch_warnings(record=True) as caught,
        mock.patch.object(
            RecurrentPolicyInference,
            "upstream_mismatch",
            autospec=True,
            side_effect=RecurrentPolicyInference.upstream_mismatch,
        ) as proof,
    ):
        warnings.simplefilter("always")
        rollouts = collect(model, lean=True)
    assert proof.call_count == 1  # the first rollout only
    assert_same_rollouts(rollouts, reference)  # the generator, modes and gSDE noise were left alone
    assert proofs_of(model.policy).verdict(RECURRENT_LEAN_INFERENCE) is True
    assert not [w for w in caught if issubclass(w.category, FastPathMismatchWarning)]


class ReadStates(BaseCallback):
    """Keeps the step's ``lstm_states`` and ``episode_starts`` locals."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def _on_step(self) -> bool:
        self.seen.append([t.clone() for pair in self.locals["lstm_states"] for t in pair])
        self.seen.append(self.locals["episode_starts"].clone())
        return True


def test_callbacks_see_the_lstm_states_as_in_recurrent_ppos_loop() -> None:
    readers = {True: ReadStates(), False: ReadStates()}
    for lean, reader in readers.items():
        model = make_model(ACTION_SPACES["discrete"])
        model.lean_rollout = lean
        model.learn(2 * model.n_steps * model.n_envs, callback=reader)
    assert len(readers[True].seen) == len(readers[False].seen) == 2 * 2 * 16
    for ours, theirs in zip(readers[True].seen, readers[False].seen, strict=True):
        if isinstance(theirs, list):
            assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
        else:
            assert torch.equal(ours, theirs)
