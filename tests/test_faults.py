"""
Faults from the environment and from the optimisation: each gives a clear error naming its cause, or a
logged, safe continuation; the weights never become non-finite.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.logger import configure

import sb3_trpo_plugin.trpo.policy_step as policy_step_module
from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.rollout.checks import NonFiniteEnvironmentDataError, check_rollout_buffer
from sb3_trpo_plugin.trust_region import conjugate_gradient

SMALL = dict(n_steps=32, batch_size=32, policy_kwargs=dict(net_arch=[8]), seed=0)


class ScriptedEnv(gym.Env):
    """
    A 2-D observation, 2-action environment whose faults are chosen by the test.

    :param bad_step: global step (1-based) at which ``bad_value`` is put in ``where`` (``None``: never)
    :param where: ``"observation"``, ``"reward"``, ``"terminal_observation"`` or ``"reset"``
    :param bad_value: the value to inject
    :param reward: reward of every step (when not injected)
    :param episode_length: steps until an episode ends
    :param truncate: end episodes by truncation (time limit) instead of termination
    """

    observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(
        self,
        bad_step: int | None = None,
        where: str = "observation",
        bad_value: float = float("nan"),
        reward: float | None = None,
        episode_length: int = 10,
        truncate: bool = False,
    ) -> None:
        self.bad_step, self.where, self.bad_value = bad_step, where, bad_value
        self.reward, self.episode_length, self.truncate = reward, episode_length, truncate
        self.total_steps = 0
        self.episode_step = 0
        self.state = np.zeros(2, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.episode_step = 0
        self.state = self.np_random.uniform(-1, 1, size=2).astype(np.float32)
        observation = self.state.copy()
        if self.where == "reset" and self.bad_step is not None:
            observation[0] = self.bad_value
        return observation, {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.total_steps += 1
        self.episode_step += 1
        self.state = np.clip(self.state + (0.1 if action else -0.1), -1, 1).astype(np.float32)
        reward = float(self.state[0] * (1 if action else -1)) if self.reward is None else self.reward
        done = self.episode_step >= self.episode_length
        observation = self.state.copy()
        if self.total_steps == self.bad_step:
            if self.where == "observation":
                observation[1] = self.bad_value
            elif self.where == "reward":
                reward = self.bad_value
            elif self.where == "terminal_observation":
                observation[1] = self.bad_value
                done = True
        terminated, truncated = (False, done) if self.truncate else (done, False)
        return observation, reward, terminated, truncated, {}


def assert_weights_finite(model: TRPO) -> None:
    for name, parameter in model.policy.named_parameters():
        assert torch.isfinite(parameter).all(), f"{name} is not finite"


def weights(model: TRPO) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.policy.state_dict().items()}


@pytest.mark.parametrize(
    ("where", "bad_value", "named"),
    [
        ("observation", float("nan"), "observations"),
        ("observation", float("inf"), "observations"),
        ("reward", float("nan"), "rewards"),
        ("reward", -float("inf"), "rewards"),
        ("terminal_observation", float("nan"), "terminal observation of env 0"),
        ("reset", float("nan"), "on reset"),
    ],
)
def test_non_finite_environment_data_is_refused_with_a_clear_error(where: str, bad_value: float, named: str) -> None:
    env = ScriptedEnv(where=where, bad_value=bad_value)
    model = TRPO("MlpPolicy", env, **SMALL)
    model.learn(32)  # one clean update first, so there are weights that must survive
    env.bad_step = env.total_steps + 13
    before = weights(model)
    with pytest.raises(NonFiniteEnvironmentDataError, match=r"non-finite data \(NaN or inf\)") as error:
        model.learn(64, reset_num_timesteps=where == "reset")
    assert named in str(error.value)
    assert_weights_finite(model)
    after = weights(model)
    # The bad step comes before the next update, so nothing was trained on it.
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_environment_check_comes_before_user_callbacks() -> None:
    seen: list[int] = []

    def record_step(locals_: dict[str, Any], globals_: dict[str, Any]) -> bool:
        seen.append(int(locals_["self"].num_timesteps))
        return True

    model = TRPO("MlpPolicy", ScriptedEnv(bad_step=5, where="reward"), **SMALL)
    with pytest.raises(NonFiniteEnvironmentDataError, match="rewards"):
        model.learn(32, callback=record_step)
    assert seen == [1, 2, 3, 4]


def test_rollout_buffer_check_names_the_environment_and_logs_derived_quantities() -> None:
    model = TRPO("MlpPolicy", ScriptedEnv(), **SMALL)
    model.learn(32)
    logger = configure(None, [])
    assert check_rollout_buffer(model.rollout_buffer, logger)
    assert logger.name_to_value["train/is_rollout_non_finite"] == 0.0
    model.rollout_buffer.advantages[3, 0] = np.inf  # derived: logged, not an error
    assert not check_rollout_buffer(model.rollout_buffer, logger)
    assert logger.name_to_value["train/is_rollout_non_finite"] == 1.0
    model.rollout_buffer.rewards[7, 0] = np.nan
    with pytest.raises(NonFiniteEnvironmentDataError, match=r"rewards: 1 of 32 values \(nan at index \(7, 0\)"):
        model.train()
    assert_weights_finite(model)


@pytest.mark.parametrize("reward", [1e12, -1e12, 1e38])
def test_huge_rewards_train_with_finite_weights(reward: float) -> None:
    model = TRPO("MlpPolicy", ScriptedEnv(reward=reward), **SMALL)
    model.learn(96)
    assert model._n_updates == 3
    assert_weights_finite(model)


def test_huge_observations_keep_the_weights_finite() -> None:
    # Finite but huge inputs (near the float32 maximum) saturate or overflow activations, never the weights.
    model = TRPO("MlpPolicy", ScriptedEnv(bad_step=3, where="observation", bad_value=3e38), **SMALL)
    model.learn(64)
    assert_weights_finite(model)


def test_non_finite_critic_gradient_skips_the_minibatch() -> None:
    # A finite loss whose gradient is not (overflow inside a custom network): an optimiser step would write NaN.
    model = TRPO("MlpPolicy", ScriptedEnv(), **SMALL)
    model.learn(32)
    model.policy.value_net.weight.register_hook(lambda gradient: gradient * float("nan"))
    value_weights = model.policy.value_net.weight.detach().clone()
    model.train()
    assert_weights_finite(model)
    assert torch.equal(model.policy.value_net.weight, value_weights)
    assert np.isfinite(model.logger.name_to_value["train/value_loss"])


def test_constant_rewards_give_a_logged_rejection_and_identical_actor() -> None:
    model = TRPO("MlpPolicy", ScriptedEnv(reward=1.0, episode_length=10**9), n_critic_updates=0, **SMALL)
    model.learn(32)
    # Constant advantages: their spread is rounding noise, which must not be normalised into a step direction.
    model.rollout_buffer.advantages[:] = 0.1
    before = weights(model)
    model.train()
    after = weights(model)
    assert all(torch.equal(before[name], after[name]) for name in before)
    logged = model.logger.name_to_value
    assert logged["train/is_line_search_success"] == 0.0
    assert logged["train/is_step_non_finite"] == 0.0
    assert logged["train/policy_gradient_norm"] == 0.0


@pytest.mark.parametrize("truncate", [False, True])
@pytest.mark.parametrize("episode_length", [1, 3])
def test_short_and_truncation_only_episodes(episode_length: int, truncate: bool) -> None:
    env = ScriptedEnv(episode_length=episode_length, truncate=truncate)
    model = TRPO("MlpPolicy", env, **SMALL)
    model.learn(64)
    assert model._n_updates == 2
    assert len(model.ep_info_buffer) == 64 // episode_length
    assert {info["l"] for info in model.ep_info_buffer} == {episode_length}
    assert_weights_finite(model)
    assert np.isfinite(model.rollout_buffer.returns).all()


@pytest.mark.parametrize("log_std_init", [-60.0, -80.0])
def test_collapsed_log_std_is_a_logged_rejection(log_std_init: float) -> None:
    # exp(-60) ≈ 9e-27: the variance underflows, log-probabilities and the surrogate are not finite.
    kwargs = dict(SMALL, policy_kwargs=dict(net_arch=[8], log_std_init=log_std_init))
    model = TRPO("MlpPolicy", "Pendulum-v1", n_critic_updates=0, **kwargs)
    before = weights(model)
    model.learn(64)
    after = weights(model)
    assert all(torch.equal(before[name], after[name]) for name in before)
    logged = model.logger.name_to_value
    assert logged["train/is_rollout_non_finite"] == 1.0
    assert logged["train/is_step_non_finite"] == 1.0
    assert logged["train/is_line_search_success"] == 0.0


def test_log_std_that_underflows_to_zero_is_refused() -> None:
    model = TRPO("MlpPolicy", "Pendulum-v1", **SMALL)
    with torch.no_grad():
        model.policy.log_std.fill_(-110.0)  # e.g. edited or loaded: exp(-110) is 0 in float32
    with pytest.raises(ValueError, match=r"log_std has collapsed \(smallest entry -110\)"):
        model.learn(32)


def test_non_finite_weights_are_refused_before_training() -> None:
    model = TRPO("MlpPolicy", ScriptedEnv(), **SMALL)
    with torch.no_grad():
        model.policy.action_net.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"parameter 'action_net.weight' is not finite"):
        model.learn(32)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda v: v * float("nan"),  # NaN products
        lambda v: -v,  # negative curvature
        lambda v: torch.full_like(v, float("inf")),  # overflow
    ],
    ids=["nan", "negative", "inf"],
)
def test_fisher_product_that_breaks_cg_rejects_the_step(monkeypatch: pytest.MonkeyPatch, breakage: Any) -> None:
    model = TRPO("MlpPolicy", ScriptedEnv(), n_critic_updates=0, **SMALL)
    model.learn(32)
    statuses = []

    def broken_conjugate_gradient(product: Any, b: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        result = conjugate_gradient(lambda v: breakage(product(v)), b, *args, **kwargs)
        statuses.append(result.status)
        return result

    monkeypatch.setattr(policy_step_module, "conjugate_gradient", broken_conjugate_gradient)
    before = weights(model)
    model.train()
    after = weights(model)
    assert statuses and not any(s in ("converged", "max_steps") for s in statuses)
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert model.logger.name_to_value["train/is_line_search_success"] == 0.0
    assert_weights_finite(model)
