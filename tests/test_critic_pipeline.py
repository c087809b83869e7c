"""
The pipelined critic (``trpo/critic_pipeline.py``): the critic fitted in a worker process while the next rollout is
collected gives the sequential update's weights bit for bit, and the pipeline steps aside where that is not shown.
"""

from __future__ import annotations

import copy
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.trpo import critic_pipeline
from sb3_trpo_plugin.trpo.critic_fit import critic_regression, fit_critic
from sb3_trpo_plugin.trpo.critic_job import CriticHead, critic_fit_job
from sb3_trpo_plugin.trpo.critic_pipeline import CriticWorkerError, pipelined_fit


class TwoVectorsEnv(gym.Env):
    """Dict observations of two Box vectors (flattened by SB3's parameter-free extractor); episodes end at 40 steps."""

    observation_space = spaces.Dict(
        {"position": spaces.Box(-1.0, 1.0, (3,), np.float32), "velocity": spaces.Box(-1.0, 1.0, (2,), np.float32)}
    )
    action_space = spaces.Discrete(3)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        return self._observation(), {}

    def step(self, action: int) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        self._t += 1
        observation = self._observation()
        reward = float(observation["position"][action] - 0.1 * action)
        return observation, reward, False, self._t >= 40, {}

    def _observation(self) -> dict[str, np.ndarray]:
        return {
            key: self.np_random.uniform(-1, 1, space.shape).astype(np.float32) for key, space in self.observation_space.items()
        }


def cartpole() -> VecEnv:
    return make_vec_env("CartPole-v1", n_envs=2, seed=0)


def truncated_cartpole() -> VecEnv:
    """Episodes truncated at 15 steps: many time-limit bootstraps, some while a fit is in flight."""
    return make_vec_env("CartPole-v1", n_envs=2, seed=0, env_kwargs={"max_episode_steps": 15})


def pendulum() -> VecEnv:
    return make_vec_env("Pendulum-v1", n_envs=2, seed=0)


def normalized_pendulum() -> VecEnv:
    return VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0), gamma=0.9)


def dict_observations() -> VecEnv:
    return DummyVecEnv([TwoVectorsEnv, TwoVectorsEnv])


CONFIGURATIONS: dict[str, tuple[Callable[[], VecEnv], dict[str, Any]]] = {
    "discrete": (cartpole, {}),
    "truncated": (truncated_cartpole, {}),
    "box": (pendulum, {}),
    "gsde": (pendulum, {"use_sde": True, "sde_sample_freq": 4}),
    "vec_normalize": (normalized_pendulum, {}),
    "dict": (dict_observations, {"policy": "MultiInputPolicy"}),
}


def make_model(make_env: Callable[[], VecEnv], pipelined: bool, **kwargs: Any) -> TRPO:
    kwargs = {"policy": "MlpPolicy", "n_steps": 64, "batch_size": 32, "n_critic_updates": 3, "seed": 5, **kwargs}
    model = TRPO(env=make_env(), **kwargs)
    model.pipeline_critic = pipelined
    if pipelined:
        assert model.critic_pipeline.wait_until_ready(120), "the critic's worker did not start"
    return model


def assert_same_model(pipelined: TRPO, sequential: TRPO) -> None:
    """The same weights, critic optimiser state, rollout, step count and random generators, bit for bit."""
    for name, value in sequential.policy.state_dict().items():
        assert torch.equal(pipelined.policy.state_dict()[name], value), name
    state, reference = pipelined.policy.optimizer.state_dict(), sequential.policy.optimizer.state_dict()
    assert state["param_groups"] == reference["param_groups"]
    assert state["state"].keys() == reference["state"].keys()
    for index, tensors in reference["state"].items():
        for name, value in tensors.items():
            assert torch.equal(state["state"][index][name], value), (index, name)
    for field in ("observations", "rewards", "values", "log_probs", "returns", "advantages"):
        array, reference_array = getattr(pipelined.rollout_buffer, field), getattr(sequential.rollout_buffer, field)
        for key in array if isinstance(array, dict) else [None]:
            np.testing.assert_array_equal(*((array, reference_array) if key is None else (array[key], reference_array[key])))
    assert pipelined.num_timesteps == sequential.num_timesteps


def learn_both(make_env: Callable[[], VecEnv], timesteps: int, **kwargs: Any) -> tuple[TRPO, TRPO, torch.Tensor, torch.Tensor]:
    """The same run pipelined and sequential; torch's generator state after each."""
    pipelined = make_model(make_env, True, **kwargs)
    pipelined.learn(timesteps)
    pipelined_generator = torch.get_rng_state()
    sequential = make_model(make_env, False, **kwargs)
    sequential.learn(timesteps)
    return pipelined, sequential, pipelined_generator, torch.get_rng_state()


@pytest.mark.parametrize("configuration", sorted(CONFIGURATIONS))
def test_pipelined_weights_equal_the_sequential_update(configuration: str) -> None:
    make_env, kwargs = CONFIGURATIONS[configuration]
    pipelined, sequential, generator, reference_generator = learn_both(make_env, 64 * 2 * 6, **kwargs)
    assert pipelined.critic_pipeline.fits_in_worker == 5  # every update but the last of learn()
    assert pipelined.critic_pipeline.fits_in_process == 1 and sequential.critic_pipeline.fits_in_worker == 0
    assert_same_model(pipelined, sequential)
    assert torch.equal(generator, reference_generator)
    if configuration == "vec_normalize":
        for field in ("mean", "var"):
            np.testing.assert_array_equal(
                getattr(pipelined.get_vec_normalize_env().obs_rms, field),  # type: ignore[union-attr]
                getattr(sequential.get_vec_normalize_env().obs_rms, field),  # type: ignore[union-attr]
            )


def test_deferred_bootstraps_are_applied() -> None:
    """With truncations while fits are in flight, the rewards hold γ V(terminal observation), as in the sequential run."""
    pipelined, sequential, _, _ = learn_both(truncated_cartpole, 64 * 2 * 4)
    truncated_rewards = sequential.rollout_buffer.rewards[sequential.rollout_buffer.rewards > 1.0]
    assert truncated_rewards.size > 0  # bootstrapped rewards exceed CartPole's reward of 1
    np.testing.assert_array_equal(pipelined.rollout_buffer.rewards, sequential.rollout_buffer.rewards)


class StopAt(BaseCallback):
    """Stops ``learn()`` at a given step (it reads no step outputs, so the rollout's values stay batched)."""

    reads_step_outputs = False

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def _on_step(self) -> bool:
        return self.num_timesteps < self.step


def test_learn_stopped_by_a_callback_mid_rollout() -> None:
    pipelined = make_model(cartpole, True)
    pipelined.learn(64 * 2 * 10, callback=StopAt(64 * 2 * 4 + 30))
    sequential = make_model(cartpole, False)
    sequential.learn(64 * 2 * 10, callback=StopAt(64 * 2 * 4 + 30))
    assert pipelined.critic_pipeline.fits_in_worker == 4
    assert not pipelined.critic_pipeline.in_flight  # learn() returns with the critic fitted
    assert_same_model(pipelined, sequential)


def test_save_and_load_between_updates(tmp_path: Path) -> None:
    models = []
    for pipelined in (True, False):
        model = make_model(cartpole, pipelined)
        model.learn(64 * 2 * 5)
        model.save(tmp_path / f"model_{pipelined}")
        loaded = TRPO.load(tmp_path / f"model_{pipelined}", env=cartpole())
        loaded.pipeline_critic = pipelined
        if pipelined:
            assert loaded.critic_pipeline.wait_until_ready(120)
        loaded.learn(64 * 2 * 5, reset_num_timesteps=False)
        models.append(loaded)
    assert models[0].critic_pipeline.fits_in_worker == 4
    assert_same_model(*models)


def test_a_checkpoint_during_a_rollout_holds_the_fitted_critic(tmp_path: Path) -> None:
    """SB3's CheckpointCallback saves mid-rollout, while a fit is in flight: the file has the fitted critic."""
    for pipelined in (True, False):
        model = make_model(cartpole, pipelined)
        model.learn(64 * 2 * 6, callback=CheckpointCallback(50, str(tmp_path / str(pipelined)), name_prefix="m"))
    files = sorted(p.name for p in (tmp_path / "True").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "False").iterdir()) and len(files) >= 5
    for name in files:
        pipelined_params = TRPO.load(tmp_path / "True" / name).policy.state_dict()
        for key, value in TRPO.load(tmp_path / "False" / name).policy.state_dict().items():
            assert torch.equal(pipelined_params[key], value), (name, key)


def test_the_worker_runs_the_sequential_fit() -> None:
    """In this process: a job run by :class:`CriticHead`, applied to the model, gives what ``fit_critic`` gives."""
    model = make_model(pendulum, False)
    model.learn(64 * 2 * 2)  # optimiser state exists
    rollout = next(model.rollout_buffer.get(batch_size=None))
    regression = critic_regression(model.policy, model._critic_params, rollout.observations)
    assert regression.network is not None
    weights = [p.detach().clone() for p in regression.network.parameters()]
    optimizer_state = copy.deepcopy(model.policy.optimizer.state_dict())
    generator_state = torch.get_rng_state()
    job, apply = pipelined_fit(regression, model.policy.optimizer, rollout.returns, 3, 32)
    # One copy of the rollout's features and returns; beside them, the critic's weights, its optimiser state and a
    # generator state, whatever the number of epochs
    assert job.inputs.nbytes + job.returns.nbytes == rollout.observations.numel() * 4 + rollout.returns.numel() * 4
    assert job.shuffles.nbytes == torch.get_rng_state().numel() and job.n_epochs == 3
    result = CriticHead().fit(job)
    apply(result)
    pipelined_weights = [p.detach().clone() for p in regression.network.parameters()]
    pipelined_state = copy.deepcopy(model.policy.optimizer.state_dict())
    for parameter, weight in zip(regression.network.parameters(), weights, strict=True):  # back to before the fit
        parameter.data.copy_(weight)
    model.policy.optimizer.load_state_dict(optimizer_state)
    torch.set_rng_state(generator_state)
    loss = fit_critic(regression, rollout.returns, model.policy.optimizer, model._critic_params, model._actor_params, 3, 32)
    assert result.mean_loss == loss
    assert all(torch.equal(a, p) for a, p in zip(pipelined_weights, regression.network.parameters(), strict=True))
    assert not all(torch.equal(a, w) for a, w in zip(pipelined_weights, weights, strict=True))  # the fit moved them
    for index, tensors in model.policy.optimizer.state_dict()["state"].items():
        for name, value in tensors.items():
            assert torch.equal(pipelined_state["state"][index][name], value), (index, name)


def failing_job(*args: Any, **kwargs: Any) -> Any:
    """A job whose features lack a column: the worker's fit raises."""
    job = critic_fit_job(*args, **kwargs)
    return type(job)(**{**job.__dict__, "inputs": job.inputs[:, :-1].copy()})


def test_an_exception_in_the_worker_surfaces_and_leaves_the_model_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model(cartpole, True)
    model.learn(64 * 2 * 2)
    before = {name: value.clone() for name, value in model.policy.state_dict().items()}
    optimizer_before = model.policy.optimizer.state_dict()["state"][0]["exp_avg"].clone()
    monkeypatch.setattr(critic_pipeline, "critic_fit_job", failing_job)
    with pytest.raises(
        CriticWorkerError, match=r"(?s)failed in its worker process.*Traceback.*RuntimeError: (addmm: )?mat1 and mat2 shapes"
    ):
        model.learn(64 * 2 * 3)
    assert not model.critic_pipeline.in_flight
    critic = [name for name in before if "value" in name]
    assert critic and all(torch.equal(model.policy.state_dict()[name], before[name]) for name in critic)
    assert torch.equal(model.policy.optimizer.state_dict()["state"][0]["exp_avg"], optimizer_before)
    monkeypatch.undo()
    fits = model.critic_pipeline.fits_in_worker
    model.learn(64 * 2 * 3)  # the same worker takes the next jobs
    assert model.critic_pipeline.fits_in_worker == fits + 2
    assert all(torch.isfinite(value).all() for value in model.policy.state_dict().values())


class KillWorkerAt(BaseCallback):
    """Kills the critic's worker at a given step (mid-rollout, while a fit is in flight)."""

    reads_step_outputs = False

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def _on_step(self) -> bool:
        worker = self.model.critic_pipeline._worker
        if self.num_timesteps == self.step and worker is not None:
            assert self.model.critic_pipeline.in_flight
            os.kill(worker.process.pid, signal.SIGKILL)
            worker.process.wait()
        return True


def test_a_worker_that_dies_during_a_fit_is_reported_and_replaced() -> None:
    model = make_model(cartpole, True, n_critic_updates=3000)  # a fit of seconds: the worker dies during it
    critic_before = model.policy.value_net.weight.clone()
    with pytest.raises(CriticWorkerError, match="exited with code -9 during a fit"):
        model.learn(64 * 2 * 3, callback=KillWorkerAt(64 * 2 + 10))
    assert not model.critic_pipeline.in_flight
    assert torch.equal(model.policy.value_net.weight, critic_before)  # the lost fit left the critic as it was
    assert model.critic_pipeline.wait_until_ready(120)  # a new worker
    model.n_critic_updates = 3
    model.learn(64 * 2 * 3)
    assert model.critic_pipeline.fits_in_worker == 1 + 2


def test_a_worker_that_exits_between_fits_is_replaced_with_a_warning() -> None:
    model = make_model(cartpole, True)
    worker = model.critic_pipeline._worker
    assert worker is not None
    os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.wait()
    with pytest.warns(RuntimeWarning, match="exited with code -9 between fits: a new one starts"):
        model.learn(64 * 2 * 3)
    assert model.critic_pipeline.fits_in_worker == 0
    assert model.critic_pipeline.wait_until_ready(120) and model.critic_pipeline._worker is not worker
    model.learn(64 * 2 * 3)
    assert model.critic_pipeline.fits_in_worker == 2


class ReadsValues(BaseCallback):
    """A callback of the user's: it may read the step's values, so every step computes them."""

    def _on_step(self) -> bool:
        return True


class LinearFeatures(BaseFeaturesExtractor):
    """A features extractor with weights of its own: shared, the critic's values depend on the actor's parameters."""

    def __init__(self, observation_space: spaces.Box):
        super().__init__(observation_space, features_dim=8)
        self.linear = torch.nn.Linear(int(np.prod(observation_space.shape)), 8)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(observations))


@pytest.mark.parametrize("case", ["switched_off", "callback_reads_values", "autograd_critic", "sb3_rollout_loop"])
def test_the_critic_is_fitted_in_this_process_where_the_pipeline_does_not_apply(case: str) -> None:
    kwargs: dict[str, Any] = {}
    if case == "autograd_critic":  # not SB3's plain MLP: no hand-derived gradient to run elsewhere
        kwargs["policy_kwargs"] = {"activation_fn": torch.nn.ELU}
    model = make_model(cartpole, True, **kwargs)
    model.pipeline_critic = case != "switched_off"
    model.lean_rollout = case != "sb3_rollout_loop"
    model.learn(64 * 2 * 5, callback=ReadsValues() if case == "callback_reads_values" else None)
    assert model.critic_pipeline.fits_in_worker == 0
    assert model.critic_pipeline.fits_in_process == 5


def test_a_critic_sharing_trained_parameters_with_the_actor_is_not_pipelined() -> None:
    kwargs = {"policy_kwargs": {"features_extractor_class": LinearFeatures, "share_features_extractor": True}}
    model = TRPO("MlpPolicy", cartpole(), n_steps=64, **kwargs)
    assert model._critic_depends_on_actor and not model._critic_pipeline_enabled()
    separate = TRPO(
        "MlpPolicy", cartpole(), n_steps=64, policy_kwargs={**kwargs["policy_kwargs"], "share_features_extractor": False}
    )
    assert not separate._critic_depends_on_actor and separate._critic_pipeline_enabled()


class MaskedChoiceEnv(gym.Env):
    """Discrete(5) with masks that follow the observation (action 0 always allowed); episodes truncated at 13 steps."""

    observation_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = spaces.Discrete(5)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        self._observation = self.np_random.uniform(-1, 1, 4).astype(np.float32)
        return self._observation, {}

    def action_masks(self) -> np.ndarray:
        masks = self._observation[0] > np.linspace(-1.0, 1.0, 5)
        masks[0] = True
        return masks

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward = float(self._observation[int(action) % 4])
        self._t += 1
        self._observation = self.np_random.uniform(-1, 1, 4).astype(np.float32)
        return self._observation, reward, False, self._t >= 13, {}


@pytest.mark.parametrize("use_masking", [True, False])
def test_maskable_trpo_pipelined_equals_its_sequential_update(use_masking: bool) -> None:
    pytest.importorskip("sb3_contrib")
    from sb3_trpo_plugin import MaskableTRPO

    def learned(pipelined: bool) -> tuple[MaskableTRPO, torch.Tensor]:
        env = DummyVecEnv([MaskedChoiceEnv, MaskedChoiceEnv])
        model = MaskableTRPO("MlpPolicy", env, n_steps=64, batch_size=32, n_critic_updates=3, seed=5)
        model.pipeline_critic = pipelined
        if pipelined:
            assert model.critic_pipeline.wait_until_ready(120), "the critic's worker did not start"
        model.learn(64 * 2 * 6, use_masking=use_masking)
        return model, torch.get_rng_state()

    (pipelined, generator), (sequential, reference_generator) = learned(True), learned(False)
    assert pipelined.critic_pipeline.fits_in_worker == 5 and pipelined.critic_pipeline.fits_in_process == 1
    assert_same_model(pipelined, sequential)  # type: ignore[arg-type]
    np.testing.assert_array_equal(pipelined.rollout_buffer.action_masks, sequential.rollout_buffer.action_masks)
    assert torch.equal(generator, reference_generator)


def test_recurrent_variants_fit_their_critic_in_this_process() -> None:
    pytest.importorskip("sb3_contrib")
    from sb3_trpo_plugin import MaskableRecurrentTRPO, MaskableTRPO, RecurrentTRPO

    assert TRPO.critic_pipeline_supported and MaskableTRPO.critic_pipeline_supported
    assert not RecurrentTRPO.critic_pipeline_supported and not MaskableRecurrentTRPO.critic_pipeline_supported
    model = RecurrentTRPO("MlpLstmPolicy", "CartPole-v1", n_steps=64, batch_size=32, seed=0)
    model.learn(64 * 10)
    assert model.critic_pipeline.fits_in_worker == 0 and model.critic_pipeline._worker is None


def test_a_short_learn_starts_no_worker() -> None:
    model = make_model(cartpole, False)
    model.pipeline_critic = True
    model.learn(64 * 2 * (critic_pipeline.MIN_UPDATES_TO_START - 1))
    assert model.critic_pipeline._worker is None
    assert critic_pipeline.usable_cores() >= 1


def test_a_single_core_starts_no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(critic_pipeline, "usable_cores", lambda: 1)
    model = make_model(cartpole, False)
    model.pipeline_critic = True
    model.learn(64 * 2 * critic_pipeline.MIN_UPDATES_TO_START)
    assert (
        model.critic_pipeline._worker is None and model.critic_pipeline.fits_in_process == critic_pipeline.MIN_UPDATES_TO_START
    )
    monkeypatch.setattr(critic_pipeline, "usable_cores", lambda: 2)
    model.learn(64 * 2 * critic_pipeline.MIN_UPDATES_TO_START)
    assert model.critic_pipeline._worker is not None


def test_no_worker_where_torchs_threads_take_every_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's default (a thread per core) leaves no core to the worker: the critic is fitted in this process."""
    monkeypatch.setattr(critic_pipeline, "usable_cores", lambda: 2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert not critic_pipeline.spare_core()
        model = make_model(cartpole, False)
        model.pipeline_critic = True
        model.learn(64 * 2 * critic_pipeline.MIN_UPDATES_TO_START)
        assert model.critic_pipeline._worker is None
        assert model.critic_pipeline.fits_in_process == critic_pipeline.MIN_UPDATES_TO_START
        torch.set_num_threads(1)
        assert critic_pipeline.spare_core()
    finally:
        torch.set_num_threads(threads)


def test_an_interrupted_wait_leaves_the_fit_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during the wait: the fit's result is still read by the next wait, not taken for a later fit's."""
    pipelined = make_model(cartpole, True)
    worker = pipelined.critic_pipeline._worker
    assert worker is not None
    result = type(worker).result
    calls = []

    def interrupted_once(self: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return result(self)

    monkeypatch.setattr(type(worker), "result", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        pipelined.learn(64 * 2 * 4)
    assert pipelined.critic_pipeline.in_flight
    monkeypatch.undo()
    sequential = make_model(cartpole, False)  # (seeded as the pipelined model was)
    sequential.learn(64 * 2)  # the update whose fit was in flight: its policy step and its critic fit
    assert_same_model_weights(pipelined, sequential)  # get_parameters (so save) waits for the fit in flight
    assert not pipelined.critic_pipeline.in_flight


def assert_same_model_weights(model: TRPO, reference: TRPO) -> None:
    parameters = model.get_parameters()["policy"]
    for name, value in reference.get_parameters()["policy"].items():
        assert torch.equal(parameters[name], value), name
