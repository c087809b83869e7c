"""
A RecurrentPPO training script (sb3-contrib) switched to RecurrentTRPO by its import alone.

The task needs memory: CartPole with the velocities hidden (the observation is the cart's position and the pole's
angle only). Everything else is the usual recurrent SB3 pipeline, unchanged by the swap: VecNormalize,
checkpoints, TensorBoard, save and load, and the acting loop that carries the LSTM states and episode starts
through ``predict``. The swap::

    - from sb3_contrib import RecurrentPPO as Algo
    + from sb3_trpo_plugin import RecurrentTRPO as Algo

Both take the keywords used here with the same meanings (PPO's own, such as ``clip_range`` or ``n_epochs``, would
have to go). Run ``--algo ppo_lstm`` for the original, ``--algo trpo_lstm`` (the default) for the swap::

    python examples/recurrent_ppo_to_trpo.py --algo ppo_lstm
    python examples/recurrent_ppo_to_trpo.py --algo trpo_lstm
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize


class HideVelocities(gym.ObservationWrapper):
    """CartPole's observation without the two velocities: ``(x, θ)`` instead of ``(x, ẋ, θ, θ̇)``."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        low, high = env.observation_space.low[[0, 2]], env.observation_space.high[[0, 2]]  # type: ignore[attr-defined]
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[[0, 2]]


def main(argv: Sequence[str] | None = None) -> float:
    """
    :param argv: command line arguments (default: ``sys.argv[1:]``)
    :return: mean return of the final model over 10 episodes, acting with its LSTM states
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=["ppo_lstm", "trpo_lstm"], default="trpo_lstm")
    parser.add_argument("--timesteps", type=int, default=100_000, help="training budget in environment steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/recurrent"), help="folder for the model and logs")
    parser.add_argument("--no-progress-bar", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    if args.algo == "ppo_lstm":
        from sb3_contrib import RecurrentPPO as Algo
    else:
        from sb3_trpo_plugin import RecurrentTRPO as Algo  # the only change

    # ---- the RecurrentPPO script, as it was ----
    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=8, seed=args.seed, wrapper_class=HideVelocities))
    model = Algo(
        "MlpLstmPolicy",
        env,
        n_steps=128,
        batch_size=256,
        gamma=0.98,
        gae_lambda=0.8,
        learning_rate=1e-3,
        policy_kwargs=dict(lstm_hidden_size=64, enable_critic_lstm=True, net_arch=dict(pi=[64], vf=[64])),
        tensorboard_log=str(args.output / "tensorboard"),
        seed=args.seed,
    )
    checkpoints = CheckpointCallback(save_freq=max(50_000 // env.num_envs, 1), save_path=str(args.output / "checkpoints"))
    model.learn(args.timesteps, callback=checkpoints, progress_bar=not args.no_progress_bar)
    model.save(args.output / "model")
    env.save(str(args.output / "vecnormalize.pkl"))

    model = Algo.load(args.output / "model")
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=args.seed + 1000, wrapper_class=HideVelocities)
    eval_env = VecNormalize.load(str(args.output / "vecnormalize.pkl"), eval_env)
    eval_env.training, eval_env.norm_reward = False, False
    returns, episode_return = [], 0.0
    observation = eval_env.reset()
    lstm_states, episode_starts = None, np.ones((1,), dtype=bool)
    while len(returns) < 10:
        action, lstm_states = model.predict(observation, state=lstm_states, episode_start=episode_starts, deterministic=True)
        observation, rewards, dones, _ = eval_env.step(action)
        episode_return += float(rewards[0])
        episode_starts = dones
        if dones[0]:
            returns.append(episode_return)
            episode_return = 0.0
    print(f"{args.algo} seed {args.seed}: mean return {np.mean(returns):.1f} ± {np.std(returns):.1f}; files in {args.output}")
    return float(np.mean(returns))


if __name__ == "__main__":
    main()
