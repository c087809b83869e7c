"""Learning check: rl-zoo3's tuned TRPO settings solve CartPole-v1 within 100k steps on several seeds."""

import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_trpo_plugin import TRPO

# rl-zoo3 hyperparams/trpo.yml, CartPole-v1.
ZOO_CARTPOLE = dict(
    n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98, gamma=0.99, learning_rate=1e-3, n_critic_updates=20
)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zoo_settings_solve_cartpole(seed):
    model = TRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=seed), seed=seed, **ZOO_CARTPOLE)
    model.learn(100_000)
    mean_return, _ = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=1, seed=seed + 100), n_eval_episodes=20)
    assert mean_return >= 475
