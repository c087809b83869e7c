"""
Data-parallel TRPO on CartPole-v1 with torch.distributed: every process collects its own rollouts, all end
each update with the same weights, those one process would reach on the union of the rollouts (gathered once:
rank 0 fits the critic to them while the other processes take the trust-region step on them).

One machine, 2 processes::

    torchrun --nproc_per_node=2 examples/distributed_cartpole.py

Two machines, 2 processes each (run on both; HOST is the first machine's address, reachable from the other)::

    torchrun --nnodes=2 --nproc_per_node=2 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 --rdzv-id=cartpole \\
        examples/distributed_cartpole.py

Surviving a lost process (a killed worker, a preempted machine): add ``--max-restarts=3`` to either command
(and ``--nnodes=MIN:MAX`` where machines may come and go). A process that dies makes the others' next collective
fail (within ``SB3_TRPO_COLLECTIVE_TIMEOUT`` seconds, 300 by default, if it vanished without closing its
connections); torchrun then restarts every process, and this script resumes from the newest checkpoint in
``OUTPUT/checkpoints``, written by rank 0 between two updates every ``--checkpoint-every`` steps: at most the steps
since that checkpoint are lost. Running the same command again after a crash resumes the same way (with torch 2.3,
whose torchrun cannot restart, the only way: rank 0 warns of it).

Run as plain ``python examples/distributed_cartpole.py``, it trains in one process, as usual (and resumes too).
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
from sb3_trpo_plugin.parallel import UpdateCheckpointCallback

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
    parser.add_argument("--checkpoint-every", type=int, default=10_000, help="steps (of all processes) between checkpoints")
    parser.add_argument("--eval-episodes", type=int, default=20, help="deterministic episodes of the final evaluation")
    args = parser.parse_args()

    # Under torchrun, the process group first (gloo on CPU, nccl on GPU), so that the processes agree on what to
    # resume. (Building TRPO would initialise it too; a script may also call init_process_group itself.)
    parallel.init_from_environment()
    rank, world_size = parallel.rank(), parallel.world_size()
    checkpoints = args.output / "checkpoints"
    # Resume if a checkpoint exists (a restart after a lost process), else start: every process loads the same one.
    checkpoint = parallel.latest_checkpoint_on_every_rank(checkpoints)
    env = make_vec_env("CartPole-v1", n_envs=args.n_envs)
    if checkpoint is None:
        model = TRPO(
            "MlpPolicy", env, seed=args.seed, verbose=1, tensorboard_log=str(args.output / "tensorboard"), **ZOO_CARTPOLE
        )
    else:
        # With VecNormalize: latest_checkpoint_on_every_rank(..., require_vec_normalize=True), then
        # env = VecNormalize.load(str(checkpoint.vec_normalize_path), env) before loading the model.
        model = TRPO.load(checkpoint.model_path, env=env)  # weights, critic optimiser, step count, TensorBoard folder
        model.set_random_seed(args.seed + checkpoint.num_timesteps)  # process r: + r
        print(f"process {rank}: resuming from {checkpoint.num_timesteps} steps", flush=True)
    print(f"process {rank} of {world_size}: {args.n_envs} envs, seed {args.seed + rank}", flush=True)

    # Callbacks run on rank 0 only (the others ignore them), so one process evaluates and checkpoints.
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=args.seed + 1000)
    callbacks = [
        UpdateCheckpointCallback(args.checkpoint_every, checkpoints),  # between updates, atomic files
        EvalCallback(eval_env, eval_freq=10_000 // (args.n_envs * world_size), n_eval_episodes=5, verbose=0),
    ]
    model.learn(
        max(args.timesteps - model.num_timesteps, 0),  # learn() counts on from the checkpoint's step count
        callback=callbacks,
        reset_num_timesteps=checkpoint is None,  # False: the step count and the TensorBoard run go on
        tb_log_name="TRPO_CartPole_distributed",
    )

    if parallel.is_main_process():  # rank 0 alone evaluates and saves
        mean_return, std_return = evaluate_policy(model, eval_env, n_eval_episodes=args.eval_episodes, deterministic=True)
        model_path = args.output / "trpo_cartpole_distributed.zip"
        model.save(model_path)
        episodes = args.eval_episodes
        print(f"Mean return over {episodes} deterministic episodes: {mean_return:.1f} ± {std_return:.1f} (500 is the maximum)")
        print(f"{model.num_timesteps} steps over {world_size} process(es); model saved to {model_path}")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
