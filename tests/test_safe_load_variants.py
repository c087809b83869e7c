"""safe_load restores MaskableTRPO and RecurrentTRPO files without unpickling, and refuses policies they do not take."""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import numpy as np
import pytest
import torch
from sb3_contrib.common.envs import InvalidActionEnvDiscrete
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3.common.env_util import make_vec_env

from sb3_trpo_plugin import MaskableTRPO, RecurrentTRPO, safe_load
from sb3_trpo_plugin.loading import UnsafeModelFileError
from sb3_trpo_plugin.serialization.description import DESCRIPTION_ENTRY
from tests.test_safe_load import description_of, rewrite_zip


def masked_env() -> Any:
    return make_vec_env(lambda: InvalidActionEnvDiscrete(dim=8, n_invalid_actions=3), n_envs=2, seed=0)


def trained_maskable() -> MaskableTRPO:
    model = MaskableTRPO(
        "MlpPolicy", masked_env(), n_steps=16, batch_size=32, seed=1, target_kl=0.02, policy_kwargs=dict(net_arch=[8])
    )
    return model.learn(64)


def trained_recurrent() -> RecurrentTRPO:
    policy_kwargs = dict(lstm_hidden_size=8, net_arch=dict(pi=[8], vf=[8]), enable_critic_lstm=True)
    model = RecurrentTRPO(
        "MlpLstmPolicy",
        make_vec_env("CartPole-v1", n_envs=2, seed=0),
        n_steps=16,
        batch_size=32,
        seed=1,
        policy_kwargs=policy_kwargs,
    )
    return model.learn(64)


def same_weights(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_maskable_trpo_predicts_and_trains_on_like_its_own_load(tmp_path: pathlib.Path) -> None:
    model = trained_maskable()
    model.save(tmp_path / "masked.zip")
    reference = MaskableTRPO.load(tmp_path / "masked.zip")
    restored = safe_load(tmp_path / "masked.zip")
    assert type(restored) is MaskableTRPO and type(restored.policy) is type(reference.policy)
    assert same_weights(restored.policy, reference.policy)
    assert (restored.num_timesteps, restored.target_kl, restored.n_steps) == (64, 0.02, 16)
    env = masked_env()
    obs = env.reset()
    for _ in range(20):
        masks = get_action_masks(env)
        expected, _ = reference.predict(obs, deterministic=True, action_masks=masks)
        actions, _ = restored.predict(obs, deterministic=True, action_masks=masks)
        np.testing.assert_array_equal(actions, expected)
        assert masks[np.arange(len(actions)), actions].all()
        obs, *_ = env.step(actions)
    restored = safe_load(tmp_path / "masked.zip", env=masked_env())
    restored.learn(32, reset_num_timesteps=False)
    assert restored.num_timesteps == 96


def test_recurrent_trpo_predicts_and_trains_on_like_its_own_load(tmp_path: pathlib.Path) -> None:
    model = trained_recurrent()
    model.save(tmp_path / "recurrent.zip")
    reference = RecurrentTRPO.load(tmp_path / "recurrent.zip")
    restored = safe_load(tmp_path / "recurrent.zip")
    assert type(restored) is RecurrentTRPO and type(restored.policy) is type(reference.policy)
    assert same_weights(restored.policy, reference.policy)
    assert restored.policy.lstm_actor.hidden_size == 8 and restored.policy.lstm_critic is not None
    env = make_vec_env("CartPole-v1", n_envs=2, seed=5)
    obs = env.reset()
    states: dict[str, Any] = {"reference": None, "restored": None}
    starts = np.ones(2, dtype=bool)
    for _ in range(30):
        expected, states["reference"] = reference.predict(obs, states["reference"], starts, deterministic=True)
        actions, states["restored"] = restored.predict(obs, states["restored"], starts, deterministic=True)
        np.testing.assert_array_equal(actions, expected)
        for got, want in zip(states["restored"], states["reference"], strict=True):
            np.testing.assert_array_equal(got, want)
        obs, _, starts, _ = env.step(actions)
    restored = safe_load(tmp_path / "recurrent.zip", env=make_vec_env("CartPole-v1", n_envs=2, seed=0))
    restored.learn(32, reset_num_timesteps=False)
    assert restored.num_timesteps == 96


@pytest.mark.parametrize(
    ("make", "policy_class", "message"),
    [
        (
            trained_maskable,
            "stable_baselines3.common.policies:ActorCriticPolicy",
            r"policy_class = 'stable_baselines3\.common\.policies:ActorCriticPolicy': safe loading only restores classes "
            r"from sb3_contrib\.common\.maskable\.policies",
        ),
        (
            trained_recurrent,
            "sb3_contrib.common.maskable.policies:MaskableActorCriticPolicy",
            r"safe loading only restores classes from sb3_contrib\.common\.recurrent\.policies",
        ),
        (trained_maskable, "sb3_contrib.common.maskable.policies:get_action_dim", r"is not a subclass of BasePolicy"),
        (
            trained_recurrent,
            "sb3_contrib.common.recurrent.policies:RecurrentActorCriticPolicy.__subclasses__",
            r"safe loading only restores",
        ),
    ],
)
def test_policies_the_variant_does_not_take_are_refused(
    tmp_path: pathlib.Path, make: Any, policy_class: str, message: str
) -> None:
    make().save(tmp_path / "model.zip")
    description = description_of(tmp_path / "model.zip")
    description["policy_class"] = {"class": policy_class}
    rewrite_zip(tmp_path / "model.zip", tmp_path / "crafted.zip", {DESCRIPTION_ENTRY: json.dumps(description).encode()})
    with pytest.raises(UnsafeModelFileError, match=message):
        safe_load(tmp_path / "crafted.zip")


def test_a_variant_file_without_sb3_contrib_is_refused_naming_it(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained_maskable().save(tmp_path / "masked.zip")
    for name in [name for name in sys.modules if name == "sb3_contrib" or name.startswith("sb3_contrib.")]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it now raises ImportError
    with pytest.raises(UnsafeModelFileError, match=r"holds a MaskableTRPO model, which needs sb3-contrib"):
        safe_load(tmp_path / "masked.zip")
