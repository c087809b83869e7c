"""The same seed and settings give bit-identical weights after several updates on the CPU, in one process."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env

from sb3_trpo_plugin import TRPO

SETTINGS: dict[str, Any] = dict(n_steps=32, batch_size=32, n_critic_updates=3, policy_kwargs=dict(net_arch=[16]), device="cpu")


def trained_weights(env_id: str, seed: int, **kwargs: Any) -> dict[str, torch.Tensor]:
    env = make_vec_env(env_id, n_envs=2, seed=seed)
    model = TRPO("MlpPolicy", env, seed=seed, **SETTINGS, **kwargs)
    model.learn(4 * 32 * 2)  # four updates
    assert model._n_updates == 4
    weights = {name: value.detach().clone() for name, value in model.policy.state_dict().items()}
    weights.update(
        {
            f"optimizer.{key}.{name}": value
            for key, state in model.policy.optimizer.state_dict()["state"].items()
            for name, value in state.items()
        }
    )
    return weights


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [("CartPole-v1", {}), ("Pendulum-v1", {"use_sde": True, "sde_sample_freq": 8, "fisher_product": "kl_hessian"})],
)
def test_same_seed_gives_bit_identical_weights(env_id: str, kwargs: dict[str, Any]) -> None:
    first = trained_weights(env_id, seed=7, **kwargs)
    torch.manual_seed(12345)  # the global generator state in between must not matter: the seed resets it
    second = trained_weights(env_id, seed=7, **kwargs)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), f"{name} differs between two runs with the same seed"
    other = trained_weights(env_id, seed=8, **kwargs)
    assert any(not torch.equal(first[name], other[name]) for name in first), "the seed has no effect"
