"""save/load, get/set_parameters and continued training keep the model intact."""

import numpy as np
import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env

from sb3_trpo_plugin import TRPO
from tests.conftest import ACTION_SPACES, RandomEnv


@pytest.mark.parametrize("space", ["discrete", "box"])
def test_save_load_gives_identical_deterministic_actions(tmp_path, space):
    env = RandomEnv(ACTION_SPACES[space])
    model = TRPO(
        "MlpPolicy", env, n_steps=64, batch_size=32, seed=0, target_kl=0.02, cg_max_steps=7, fisher_product="kl_hessian"
    )
    model.learn(128)
    model.save(tmp_path / "model")
    loaded = TRPO.load(tmp_path / "model", env=env)
    observations = np.stack([env.observation_space.sample() for _ in range(20)])
    np.testing.assert_array_equal(
        model.predict(observations, deterministic=True)[0], loaded.predict(observations, deterministic=True)[0]
    )
    for key, value in model.policy.state_dict().items():
        assert torch.equal(value, loaded.policy.state_dict()[key]), key
    assert (loaded.target_kl, loaded.cg_max_steps, loaded.fisher_product) == (0.02, 7, "kl_hessian")
    assert loaded.num_timesteps == 128 and loaded._n_updates == 2
    # The critic's optimiser state survives, and only the critic's parameters are in it.
    assert len(loaded.policy.optimizer.param_groups[0]["params"]) == len(loaded._critic_params)
    assert loaded.policy.optimizer.state_dict()["state"].keys() == model.policy.optimizer.state_dict()["state"].keys()
    loaded.learn(64, reset_num_timesteps=False)
    assert loaded.num_timesteps == 192


def test_get_and_set_parameters_round_trip():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    trained = TRPO("MlpPolicy", env, n_steps=64, batch_size=64, seed=0).learn(256)
    fresh = TRPO("MlpPolicy", env, n_steps=64, batch_size=64, seed=1)
    observations = env.observation_space.sample()[None].repeat(8, axis=0) + np.linspace(-0.1, 0.1, 8)[:, None].astype(
        np.float32
    )
    assert not np.array_equal(
        *(m.policy.predict_values(m.policy.obs_to_tensor(observations)[0]).detach().numpy() for m in (trained, fresh))
    )
    fresh.set_parameters(trained.get_parameters())
    for key, value in trained.policy.state_dict().items():
        assert torch.equal(value, fresh.policy.state_dict()[key]), key
    np.testing.assert_array_equal(
        trained.predict(observations, deterministic=True)[0], fresh.predict(observations, deterministic=True)[0]
    )


def test_files_of_sb3_contribs_trpo_load_with_trpo_load(tmp_path):
    from sb3_contrib import TRPO as ContribTRPO

    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    theirs = ContribTRPO("MlpPolicy", env, n_steps=64, batch_size=32, seed=0).learn(128)
    theirs.save(tmp_path / "contrib")
    ours = TRPO.load(tmp_path / "contrib", env=env)
    assert isinstance(ours, TRPO)
    observations = np.stack([env.observation_space.sample() for _ in range(20)])
    np.testing.assert_array_equal(
        theirs.predict(observations, deterministic=True)[0], ours.predict(observations, deterministic=True)[0]
    )
    # Their optimiser runs over every parameter but only the critic's have state: it becomes our critic optimiser's.
    their_state = theirs.policy.optimizer.state_dict()["state"]
    their_index = {name: i for i, (name, _) in enumerate(theirs.policy.named_parameters())}
    our_names = {id(p): name for name, p in ours.policy.named_parameters()}
    our_state = ours.policy.optimizer.state_dict()["state"]
    assert len(our_state) == len(ours._critic_params) == len(their_state)
    for j, parameter in enumerate(ours._critic_params):
        for key, value in their_state[their_index[our_names[id(parameter)]]].items():
            assert torch.equal(our_state[j][key], value), (our_names[id(parameter)], key)
    ours.learn(128, reset_num_timesteps=False)
    assert ours.num_timesteps == 256
    ours.set_parameters(str(tmp_path / "contrib.zip"))  # a path works too
    np.testing.assert_array_equal(
        theirs.predict(observations, deterministic=True)[0], ours.predict(observations, deterministic=True)[0]
    )


def _drop(params, name, key):
    """A copy of ``get_parameters()``'s dictionary with ``params[name][key]`` left out."""
    copied = {entry: dict(state) for entry, state in params.items()}
    del copied[name][key]
    return copied


@pytest.mark.parametrize(
    "incomplete",
    [
        lambda params: _drop(params, "policy", "value_net.bias"),  # the policy's state lacks an entry: torch's RuntimeError
        # ... also when the optimiser state is not one the sb3-contrib conversion knows (it must not speak first)
        lambda params: {**_drop(params, "policy", "value_net.bias"), "policy.optimizer": {}},
        lambda params: _drop(params, "policy.optimizer", "param_groups"),  # what torch's load_state_dict raises
        lambda params: {key: value for key, value in params.items() if key != "policy.optimizer"},  # SB3's exact match
    ],
    ids=["policy-entry", "policy-entry-and-unknown-optimizer-state", "optimizer-entry", "missing-object"],
)
def test_incomplete_parameters_raise_what_sb3_raises(incomplete):
    """``set_parameters(..., exact_match=True)`` on incomplete parameters: the same exception, as SB3's PPO raises it."""
    from stable_baselines3 import PPO

    env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
    errors = []
    for algorithm in (TRPO, PPO):
        model = algorithm("MlpPolicy", env, n_steps=64, batch_size=64, seed=0)
        with pytest.raises(Exception) as caught:
            model.set_parameters(incomplete(model.get_parameters()), exact_match=True)
        errors.append(caught.value)
    ours, sb3s = errors
    assert type(ours) is type(sb3s), (ours, sb3s)
    assert str(ours).split(":")[0] == str(sb3s).split(":")[0]
