"""
What the lean inference costs per step inside a Hopper-v5 rollout, after MuJoCo's step, against in a tight loop.

The lean rollout's own time per step is mostly its inference (the actor's forward and the sampling). Timed alone, in a
loop that does nothing else, it costs a fraction of what it costs between two environment steps, where the simulator
has evicted torch's code and data from the caches. This script times, per step (2 envs), on the policy of a
``TRPO`` after one update with rl-zoo3's Hopper settings:

- ``hot``: the lean inference called repeatedly on the same observations;
- ``after env.step``: the same inference, each call after one ``env.step`` (``DummyVecEnv`` of two Hopper-v5 +
  ``VecNormalize``), and the ``env.step`` itself;
- ``minimal torch``: the fewest torch calls that compute the actor's mean and a Gaussian sample (three ``addmm``, two
  ``tanh``, one ``randn_like``), after ``env.step`` too: what any torch implementation of this forward costs there.

Usage, from the repository root::

    python investigations/pipelined_critic_hopper_floor/inference_after_step.py
"""

from __future__ import annotations

import json
import sys
import time
import timeit
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.replicas.inference import policy_inference
from sb3_trpo_plugin.replicas.layers import obs_as_cpu_tensor

STEPS = 3000


def main() -> None:
    torch.set_num_threads(1)
    env = VecNormalize(make_vec_env("Hopper-v5", n_envs=2, seed=0))
    model = TRPO("MlpPolicy", env, n_steps=1024, batch_size=128, n_critic_updates=20, cg_max_steps=25, cg_damping=0.1, seed=0)
    model.pipeline_critic = False
    model.learn(2048)
    inference = policy_inference(model.policy)
    assert inference is not None
    layers = [model.policy.mlp_extractor.policy_net[0], model.policy.mlp_extractor.policy_net[2], model.policy.action_net]
    weights = [(layer.weight.detach().t().contiguous(), layer.bias.detach()) for layer in layers]
    std = model.policy.log_std.detach().exp().numpy()

    def minimal(observations: torch.Tensor) -> np.ndarray:
        hidden = torch.tanh(torch.addmm(weights[0][1], observations, weights[0][0]))
        hidden = torch.tanh(torch.addmm(weights[1][1], hidden, weights[1][0]))
        mean = torch.addmm(weights[2][1], hidden, weights[2][0])
        return torch.randn_like(mean).numpy() * std + mean.numpy()

    observations = obs_as_cpu_tensor(env.reset())
    results = {"hot: lean inference": min(timeit.repeat(lambda: inference.actions(observations), number=STEPS, repeat=3))}
    implementations = (
        ("lean inference", inference.actions),
        ("minimal torch", minimal),
        ("lean inference again", inference.actions),
    )
    for label, act in implementations:
        observation = env.reset()
        acting = stepping = 0.0
        for _ in range(STEPS):
            start = time.perf_counter()
            actions = act(obs_as_cpu_tensor(observation))
            middle = time.perf_counter()
            observation, _, _, _ = env.step(np.clip(actions, -1, 1))
            acting, stepping = acting + middle - start, stepping + time.perf_counter() - middle
        results[f"after env.step: {label}"] = acting
        results[f"env.step (with {label})"] = stepping
    print(json.dumps({label: round(seconds / STEPS * 1e6, 1) for label, seconds in results.items()}, indent=1))


if __name__ == "__main__":
    main()
