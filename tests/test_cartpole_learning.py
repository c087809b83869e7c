"""Learning check: rl-zoo3's tuned TRPO settings solve CartPole-v1 within 100k steps on several seeds."""

import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_trpo_plugin import TRPO

# rl-zoo3 hyperparams/trpo.yml, CartPole-v1.
ZOO_CARTPOLE = dict(
    n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98, gamma=0.99, learning_rate=1e-3, n_critic_updates=20
)


SEEDS = (0, 1, 2, 3, 4)


@pytest.mark.slow
def test_zoo_settings_solve_cartpole_on_at_least_three_seeds():
    """
    The final deterministic policy reaches CartPole-v1's solved threshold of 475 (mean of 20 episodes) within
    100k steps on at least 3 of 5 seeds, and no seed ends far below it. Which seeds end on a perfect 500 moves
    with float rounding: with the current critic arithmetic seeds 0, 1, 3 and 4 end at 500 and seed 2 at about
    461 (two of 20 episodes end early). A broken update ends far below (a random policy scores about 20).
    """
    returns = []
    for seed in SEEDS:
        model = TRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=seed), seed=seed, **ZOO_CARTPOLE)
        model.learn(100_000)
        mean_return, _ = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=1, seed=seed + 100), n_eval_episodes=20)
        returns.append(float(mean_return))
    assert sum(r >= 475 for r in returns) >= 3, returns
    assert min(returns) >= 400, returns
