"""
Mid-training Hopper-v5 (rl-zoo3's TRPO preset): this TRPO's policy step against sb3-contrib's on the same weights and
the same rollout buffer.

Trains this TRPO for N steps, collects one fresh rollout, copies the weights and the buffer into sb3-contrib's TRPO,
runs one ``train()`` of each without critic updates, and prints the cosine and the norm ratio of the two actor steps.

Usage::

    python -m investigations.hopper_step_agreement.hopper_step_agreement 20480 102400   # from the repository root
"""

from __future__ import annotations

import copy
import sys
import warnings

import numpy as np
import torch
from stable_baselines3.common.logger import Logger

from benchmarks.learning_setup import load_preset, make_envs, make_model


def actor(model: object) -> list[torch.Tensor]:
    policy = model.policy  # type: ignore[attr-defined]
    return [*policy.mlp_extractor.policy_net.parameters(), *policy.action_net.parameters(), policy.log_std]


def flat(parameters: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in parameters])


def compare_after(steps: int) -> tuple[float, float]:
    preset = load_preset("trpo", "Hopper-v5")
    ours = make_model("trpo", preset, make_envs("Hopper-v5", preset, 0)[0], 0, Logger(None, []))
    ours.learn(steps)
    _, callback = ours._setup_learn(10**7, reset_num_timesteps=False)
    callback.on_training_start({}, {})
    ours.collect_rollouts(ours.env, callback, ours.rollout_buffer, ours.n_steps)
    theirs = make_model("sb3_contrib_trpo", preset, make_envs("Hopper-v5", preset, 1)[0], 0, Logger(None, []))
    theirs.policy.load_state_dict(ours.policy.state_dict())
    theirs.rollout_buffer = copy.deepcopy(ours.rollout_buffer)
    ours.n_critic_updates = theirs.n_critic_updates = 0
    before = flat(actor(ours))
    np.random.seed(0)
    ours.train()
    np.random.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sb3-contrib averages an empty list of critic losses
        theirs.train()
    our_step, their_step = flat(actor(ours)) - before, flat(actor(theirs)) - before
    cosine = float(our_step @ their_step / (our_step.norm() * their_step.norm()))
    return cosine, float(our_step.norm() / their_step.norm())


if __name__ == "__main__":
    torch.set_num_threads(1)
    for n_steps in [int(arg) for arg in sys.argv[1:]] or [20480]:
        cosine, ratio = compare_after(n_steps)
        print(f"after {n_steps} steps: cosine {cosine:.6f}, norm ratio {ratio:.5f}", flush=True)
