"""
One ``train()`` of RecurrentTRPO against one of sb3-contrib's ``RecurrentPPO``, for scale.

rl-zoo3's ``ppo_lstm.yml`` settings for ``CartPoleNoVel-v1`` (RecurrentPPO's 20 epochs), from identical weights on one
rollout buffer of 8 × 128 steps collected by RecurrentTRPO: the cost of an update of each, not a like-for-like race
(the two updates do different work). Torch runs on one thread.

Usage (from the repository root; ``python -m benchmarks.speed_report`` then writes the docs' section)::

    python -m benchmarks.speed_recurrent_train --repeats 3     # benchmarks/results/speed/recurrent_train.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from torch import nn

from benchmarks.speed_timing import RESULTS, command_line, write_result
from sb3_trpo_plugin import RecurrentTRPO

MODULE = "benchmarks.speed_recurrent_train"
DESCRIPTION = "CartPole-v1 without velocities, LSTM 64 (actor) + 64 (critic), 8 envs × 128 steps"


def time_recurrent_train(repeats: int) -> dict[str, float]:
    """
    Median ``train()`` seconds of RecurrentTRPO and of RecurrentPPO (rl-zoo3's CartPoleNoVel-v1 settings: 20 epochs of
    minibatches of 256 steps) from identical weights on one rollout buffer collected by RecurrentTRPO.

    :param repeats: timed ``train()`` calls of each, after one discarded warm-up call
    """
    from rl_zoo3.wrappers import MaskVelocityWrapper  # importing rl-zoo3 patches gymnasium: only when it runs

    policy_kwargs = dict(
        ortho_init=False, activation_fn=nn.ReLU, lstm_hidden_size=64, enable_critic_lstm=True, net_arch=dict(pi=[64], vf=[64])
    )
    shared = dict(n_steps=128, batch_size=256, gamma=0.98, gae_lambda=0.8, seed=0, policy_kwargs=policy_kwargs)
    models: dict[str, OnPolicyAlgorithm] = {}
    for name, cls, own in (("RecurrentTRPO", RecurrentTRPO, {}), ("RecurrentPPO", RecurrentPPO, dict(n_epochs=20))):
        env = make_vec_env("CartPole-v1", n_envs=8, seed=0, wrapper_class=MaskVelocityWrapper)
        models[name] = cls("MlpLstmPolicy", env, **shared, **own)  # type: ignore[arg-type]
        models[name].set_logger(Logger(folder=None, output_formats=[]))
    ours = models["RecurrentTRPO"]
    _, callback = ours._setup_learn(ours.n_steps * ours.n_envs, callback=None)
    callback.on_training_start(locals(), globals())
    assert ours.env is not None  # built with an env
    ours.collect_rollouts(ours.env, callback, ours.rollout_buffer, n_rollout_steps=ours.n_steps)
    models["RecurrentPPO"].policy.load_state_dict(ours.policy.state_dict())
    models["RecurrentPPO"].rollout_buffer = ours.rollout_buffer
    initial = {
        name: (copy.deepcopy(m.policy.state_dict()), copy.deepcopy(m.policy.optimizer.state_dict()))
        for name, m in models.items()
    }
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for repeat in range(repeats + 1):  # the first round warms up and is discarded
        for name, model in models.items():
            model.policy.load_state_dict(initial[name][0])
            model.policy.optimizer.load_state_dict(initial[name][1])
            start = time.perf_counter()
            model.train()
            if repeat:
                seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed train() calls of each")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the result file (recurrent_train.json)")
    args = parser.parse_args()
    command = command_line(MODULE)
    torch.set_num_threads(1)
    seconds = time_recurrent_train(args.repeats)
    print("recurrent", json.dumps(seconds), flush=True)
    write_result(args.results / "recurrent_train.json", "recurrent_train", command, {"description": DESCRIPTION, **seconds})


if __name__ == "__main__":
    main()
