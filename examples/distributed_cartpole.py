"""
Data-parallel TRPO on CartPole-v1 with torch.distributed: every process collects its own rollouts, all end
each update with the same weights, those one process would reach on the union of the rollouts (gathered once:
rank 0 fits the critic to them while the other processes take the trust-region step on them).

One machine, 2 processes::

    torchrun --nproc_per_node=2 examples/distributed_cartpole.py

Two machines, 2 processes each (run on both; HOST is the first machine's address, reachable from the other)::

    torchrun --nnodes=2 --nproc_per_node=2 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 --rdzv-id=cartpole \\
        examples/distributed_cartpole.py

Run as plain ``python examples/distributed_cartpole.py``, it trains in one process, as usual.
``--timesteps`` counts the steps of all processes together; each process runs ``n_envs`` environments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_trpo_plugin import TRPO, parallel

# rl-zoo3's tuned TRPO hyperparameters for CartPole-v1 (hyperparams/trpo.yml), per process: with N processes
# each update sees N times the rollouts (divide n_steps by N to keep the single-process batch instead).
ZOO_CARTPOLE = dict(
    n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98, gamma=0.99, learning_rate=1e-3, n_critic_updates=20
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=100_000, help="training budget: steps of all processes together")
    parser.add_argument("--seed", type=int, default=0, help="base seed; process r uses seed + r for its rollouts")
    parser.add_argument("--n-envs", type=int, default=2, help="environments per process")
    parser.add_argument("--output", type=Path, default=Path("distributed_output"), help="folder for the model and logs")
    args = parser.parse_args()

    # Under torchrun, building TRPO initialises the process group (gloo on CPU, nccl on GPU); a script may
    # also call torch.distributed.init_process_group itself beforehand.
    env = make_vec_env("CartPole-v1", n_envs=args.n_envs)
    model = TRPO("MlpPolicy", env, seed=args.seed, verbose=1, tensorboard_log=str(args.output / "tensorboard"), **ZOO_CARTPOLE)
    rank, world_size = parallel.rank(), parallel.world_size()
    print(f"process {rank} of {world_size}: {args.n_envs} envs, seed {args.seed + rank}", flush=True)

    # Callbacks run on rank 0 only (the others ignore them), so one process evaluates and checkpoints.
    callback = None
    if parallel.is_main_process():
        eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=args.seed + 1000)
        callback = EvalCallback(eval_env, eval_freq=10_000 // (args.n_envs * world_size), n_eval_episodes=5, verbose=0)
    model.learn(args.timesteps, callback=callback, tb_log_name="TRPO_CartPole_distributed")

    if parallel.is_main_process():  # rank 0 alone evaluates and saves
        mean_return, std_return = evaluate_policy(model, callback.eval_env, n_eval_episodes=20, deterministic=True)
        model_path = args.output / "trpo_cartpole_distributed.zip"
        model.save(model_path)
        print(f"Mean return over 20 deterministic episodes: {mean_return:.1f} ± {std_return:.1f} (500 is the maximum)")
        print(f"{model.num_timesteps} steps over {world_size} process(es); model saved to {model_path}")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
