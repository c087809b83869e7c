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
    """
    The final deterministic policy scores near the maximum of 500 over 20 episodes. Which seeds end on
    a perfect 500 moves with float rounding: after a change of the critic's arithmetic in the last bits,
    seeds 0, 1 and 3 to 6 ended at 500 and seed 2 at 461 (two of 20 episodes ended early). A broken
    update ends far below (a random policy scores about 20); the learning benchmark reports every seed.
    """
    model = TRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=seed), seed=seed, **ZOO_CARTPOLE)
    model.learn(100_000)
    mean_return, _ = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=1, seed=seed + 100), n_eval_episodes=20)
    assert mean_return >= 450
