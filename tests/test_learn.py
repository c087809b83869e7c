"""learn() across action spaces, observation types, policies, vectorised envs, wrappers and callbacks."""

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

from sb3_trpo_plugin import TRPO
from tests.conftest import ACTION_SPACES, RandomEnv, filled_model

IMAGE_SPACE = spaces.Box(0, 255, shape=(36, 36, 3), dtype=np.uint8)
DICT_SPACE = spaces.Dict(
    {"vector": spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32), "flag": spaces.Discrete(2), "image": IMAGE_SPACE}
)


def snapshot(params):
    return [p.detach().clone() for p in params]


def changed(before, params):
    return any(not torch.equal(a, b) for a, b in zip(before, params, strict=True))


def learn_and_check(model: TRPO, timesteps: int) -> TRPO:
    actor_before, critic_before = snapshot(model._actor_params), snapshot(model._critic_params)
    model.learn(timesteps)
    rollout = model.n_steps * model.n_envs
    assert model.num_timesteps == -(-timesteps // rollout) * rollout
    assert model._n_updates == -(-timesteps // rollout)
    assert changed(actor_before, model._actor_params), "no policy step was taken"
    assert changed(critic_before, model._critic_params), "the critic did not move"
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())
    return model


@pytest.mark.parametrize("space", sorted(ACTION_SPACES))
def test_learn_on_every_action_space(space):
    model = TRPO("MlpPolicy", RandomEnv(ACTION_SPACES[space]), n_steps=64, batch_size=32, seed=0)
    assert not model._critic_depends_on_actor  # separate actor and critic networks
    learn_and_check(model, 128)
    action, _ = model.predict(model.observation_space.sample(), deterministic=True)
    assert model.action_space.contains(np.asarray(action, dtype=model.action_space.dtype))


@pytest.mark.parametrize("share_features_extractor", [True, False])
def test_cnn_policy_on_images(share_features_extractor):
    env = RandomEnv(ACTION_SPACES["discrete"], observation_space=IMAGE_SPACE)
    model = TRPO(
        "CnnPolicy",
        env,
        n_steps=32,
        batch_size=16,
        n_critic_updates=2,
        seed=0,
        policy_kwargs=dict(share_features_extractor=share_features_extractor, features_extractor_kwargs=dict(features_dim=32)),
    )
    actor_ids = {id(p) for p in model._actor_params}
    extractor_params = list(model.policy.pi_features_extractor.parameters())
    assert all(id(p) in actor_ids for p in extractor_params)
    vf_extractor_in_actor = [id(p) in actor_ids for p in model.policy.vf_features_extractor.parameters()]
    # A shared extractor is constrained by the trust region; a separate critic extractor is the critic's own.
    assert all(vf_extractor_in_actor) if share_features_extractor else not any(vf_extractor_in_actor)
    # Only a critic independent of the actor may be fitted beside the policy step (data-parallel split update).
    assert model._critic_depends_on_actor == share_features_extractor
    learn_and_check(model, 64)


def test_critic_regression_never_moves_a_shared_extractor():
    env = RandomEnv(ACTION_SPACES["discrete"], observation_space=IMAGE_SPACE)
    model = filled_model(env, policy="CnnPolicy", n_steps=32, batch_size=16, policy_kwargs=dict(share_features_extractor=True))
    actor_before, critic_before = snapshot(model._actor_params), snapshot(model._critic_params)
    rollout = next(model.rollout_buffer.get(batch_size=None))
    model._fit_critic(rollout)
    assert not changed(actor_before, model._actor_params)
    assert changed(critic_before, model._critic_params)
    assert all(p.requires_grad for p in model.policy.parameters())


def test_dict_observations_with_multi_input_policy():
    env = RandomEnv(ACTION_SPACES["box"], observation_space=DICT_SPACE)
    model = TRPO("MultiInputPolicy", env, n_steps=32, batch_size=16, n_critic_updates=2, seed=0)
    learn_and_check(model, 64)


def test_gsde_resamples_noise_and_learns():
    model = TRPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, use_sde=True, sde_sample_freq=4, seed=0)
    learn_and_check(model, 128)
    assert model.policy.log_std.shape == (64, 1)


def test_several_envs_and_vec_normalize():
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=3, seed=0), gamma=0.9)
    model = learn_and_check(TRPO("MlpPolicy", env, n_steps=32, batch_size=48, gamma=0.9, seed=0), 192)
    assert model.get_vec_normalize_env() is env
    assert env.obs_rms.count > 192 and not np.allclose(env.obs_rms.mean, 0.0)


def test_subproc_vec_env():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv)
    try:
        learn_and_check(TRPO("MlpPolicy", env, n_steps=32, batch_size=64, seed=0), 128)
    finally:
        env.close()


class CountingCallback(BaseCallback):
    def __init__(self):
        super().__init__()
        self.steps = 0
        self.rollouts = 0

    def _on_step(self) -> bool:
        self.steps += 1
        return True

    def _on_rollout_end(self) -> None:
        self.rollouts += 1


def test_callbacks_eval_checkpoint_custom_and_progress_bar(tmp_path):
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=1)
    counting = CountingCallback()
    evaluation = EvalCallback(eval_env, eval_freq=64, n_eval_episodes=2, log_path=str(tmp_path / "eval"), verbose=0)
    checkpoint = CheckpointCallback(save_freq=64, save_path=str(tmp_path / "ckpt"), name_prefix="trpo")
    model = TRPO("MlpPolicy", env, n_steps=64, batch_size=64, seed=0)
    model.learn(512, callback=[counting, evaluation, checkpoint], progress_bar=True)
    assert counting.steps == 256 and counting.rollouts == 4
    assert len(np.load(tmp_path / "eval" / "evaluations.npz")["timesteps"]) == 4
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [f"trpo_{n}_steps.zip" for n in (128, 256, 384, 512)]
    mean_return, _ = evaluate_policy(model, eval_env, n_eval_episodes=3)
    assert mean_return > 0


def test_stopping_callback_ends_training():
    class StopAfter(BaseCallback):
        def _on_step(self) -> bool:
            return self.num_timesteps < 40

    model = TRPO("MlpPolicy", DummyVecEnv([lambda: RandomEnv(ACTION_SPACES["discrete"])]), n_steps=32, batch_size=32)
    model.learn(1000, callback=StopAfter())
    assert model.num_timesteps == 40
