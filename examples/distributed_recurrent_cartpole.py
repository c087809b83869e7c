"""
Data-parallel RecurrentTRPO on CartPole-v1 without its velocities (the LSTM must infer them from the positions), with
torch.distributed: every process collects its own rollouts (LSTM states carried in each), all end each update with
the same weights, those one process would reach on the union of the rollouts (every process's sequences in the
update's means, the critic LSTM's minibatch gradients averaged over the processes).

One machine, 2 processes::

    torchrun --nproc_per_node=2 examples/distributed_recurrent_cartpole.py

Surviving a lost process: add ``--max-restarts=3``; this script then resumes from the newest checkpoint in
``OUTPUT/checkpoints`` (written by rank 0 between two updates every ``--checkpoint-every`` steps), as
``examples/distributed_cartpole.py`` does for TRPO. Run as plain ``python examples/distributed_recurrent_cartpole.py``,
it trains in one process (and resumes too). ``--timesteps`` counts the steps of all processes together.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_trpo_plugin import RecurrentTRPO, parallel
from sb3_trpo_plugin.parallel import UpdateCheckpointCallback

# rl-zoo3's RecurrentPPO settings for CartPoleNoVel-v1 (hyperparams/ppo_lstm.yml), per process; TRPO's update otherwise.
ZOO_CARTPOLE_NO_VELOCITY = dict(
    n_steps=128,
    batch_size=256,
    gamma=0.98,
    gae_lambda=0.8,
    policy_kwargs=dict(ortho_init=False, lstm_hidden_size=64, enable_critic_lstm=True, net_arch=dict(pi=[64], vf=[64])),
)


class NoVelocity(gym.ObservationWrapper):
    """CartPole's cart position and pole angle, without their velocities."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        box = env.observation_space
        assert isinstance(box, gym.spaces.Box)
        self.observation_space = gym.spaces.Box(box.low[[0, 2]], box.high[[0, 2]], dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[[0, 2]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=100_000, help="training budget: steps of all processes together")
    parser.add_argument("--seed", type=int, default=0, help="base seed; process r uses seed + r for its rollouts")
    parser.add_argument("--n-envs", type=int, default=4, help="environments per process")
    parser.add_argument("--output", type=Path, default=Path("distributed_recurrent_output"), help="model and logs folder")
    parser.add_argument("--checkpoint-every", type=int, default=10_000, help="steps (of all processes) between checkpoints")
    parser.add_argument("--eval-episodes", type=int, default=20, help="deterministic episodes of the final evaluation")
    args = parser.parse_args()

    # Under torchrun, the process group first (gloo on CPU, nccl on GPU), so that the processes agree on what to resume.
    parallel.init_from_environment()
    rank, world_size = parallel.rank(), parallel.world_size()
    checkpoints = args.output / "checkpoints"
    checkpoint = parallel.latest_checkpoint_on_every_rank(checkpoints)
    env = make_vec_env("CartPole-v1", n_envs=args.n_envs, wrapper_class=NoVelocity)
    if checkpoint is None:
        model = RecurrentTRPO(
            "MlpLstmPolicy",
            env,
            seed=args.seed,
            verbose=1,
            tensorboard_log=str(args.output / "tensorboard"),
            **ZOO_CARTPOLE_NO_VELOCITY,  # type: ignore[arg-type]
        )
    else:
        # The LSTM states of the last rollout belong to environments that are gone: the resumed rollouts start from zero.
        model = RecurrentTRPO.load(checkpoint.model_path, env=env)
        model.set_random_seed(args.seed + checkpoint.num_timesteps)  # process r: + r
        print(f"process {rank}: resuming from {checkpoint.num_timesteps} steps", flush=True)
    print(f"process {rank} of {world_size}: {args.n_envs} envs, seed {args.seed + rank}", flush=True)

    model.learn(
        max(args.timesteps - model.num_timesteps, 0),  # learn() counts on from the checkpoint's step count
        callback=UpdateCheckpointCallback(args.checkpoint_every, checkpoints),  # rank 0 only, between updates
        reset_num_timesteps=checkpoint is None,
        tb_log_name="RecurrentTRPO_CartPoleNoVel_distributed",
    )

    if parallel.is_main_process():  # rank 0 alone evaluates and saves
        eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=args.seed + 1000, wrapper_class=NoVelocity)
        mean_return, std_return = evaluate_policy(model, eval_env, n_eval_episodes=args.eval_episodes, deterministic=True)
        model_path = args.output / "recurrent_trpo_cartpole_distributed.zip"
        model.save(model_path)
        print(f"Mean return over {args.eval_episodes} deterministic episodes: {mean_return:.1f} ± {std_return:.1f}")
        print(f"{model.num_timesteps} steps over {world_size} process(es); model saved to {model_path}")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
