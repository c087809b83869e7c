"""
Lock-step runs: this TRPO's ``train()`` against sb3-contrib's on sb3-contrib's own training trajectory, update
after update, with rl-zoo3's settings for the env.

sb3-contrib's TRPO (the *leader*) trains normally. At the end of each of its rollouts, before its ``train()``, two
copies of this TRPO (the *followers*) get its rollout buffer and run their own ``train()`` on it, with the critic's
minibatches in the order sb3-contrib draws them (the same NumPy permutations, mapped onto this TRPO's rows):

* ``reset``: each update starts from the leader's weights and critic optimiser state, so its step can be compared with
  the leader's step from the same point: the policy step (cosine and norm ratio of the two steps in the actor's
  parameters), the critic after its regression (largest difference, relative to the critic's own change), the Adam
  state, and the logged diagnostics (KL, surrogate, value loss, line search);
* ``free_critic``: only the actor is copied from the leader at each update; the critic and its Adam state carry over
  from the follower's own previous fits, so that a difference that accumulates across updates in the critic's fit
  (Adam's moments and step count, the learning rate, the minibatch order) shows as a growing distance to the leader's.

The two algorithms cannot share a trajectory beyond one update by running both freely: on MuJoCo tasks a 1e-7
difference in the weights gives another rollout within the next thousand steps (contacts amplify it), hence this
arrangement. ``tests/test_lockstep.py`` runs it on Pendulum-v1; ``investigations/ant_learning_gap/`` on Ant-v5.

Usage::

    python -m benchmarks.lockstep Ant-v5 --updates 300 --seed 0 --out lockstep_seed0.csv
    python -m benchmarks.lockstep Ant-v5 --updates 130 --seed 0 --follower trpo_autograd_critic --out lockstep_ag.csv
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from benchmarks.learning_setup import ALL_ENVS, load_preset, make_envs, make_model
from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.common.reductions import OneProcess
from sb3_trpo_plugin.trpo.critic_optimizer import critic_optimizer_state

MODES = ("reset", "free_critic")
#: What may follow: this TRPO, or the ablations that change its update (the critic's gradient by autograd: does the
#: ``free_critic`` follower's critic fit as well with it?; the Fisher products by double backpropagation).
FOLLOWERS = ("trpo", "trpo_autograd_critic", "trpo_kl_hessian")
LOGGED = ("train/kl_divergence_loss", "train/policy_objective", "train/value_loss", "train/is_line_search_success")


class SB3ContribOrder(OneProcess):
    """
    One process's reductions, with the critic's minibatches in sb3-contrib's order: each epoch a NumPy permutation of
    the buffer's flattened rows (``RolloutBuffer.get(batch_size)``), expressed in the rows of this TRPO's batch (which
    ``get(None)`` already permuted by ``first``).

    :param first: the permutation of the buffer's flattened rows that this TRPO's batch holds
    """

    def __init__(self, first: np.ndarray) -> None:
        self.position_of = np.argsort(first)

    def minibatch_order(self, n_rows: int, batch_size: int, device: torch.device) -> tuple[torch.Tensor, int]:
        return torch.as_tensor(self.position_of[np.random.permutation(n_rows)], device=device), batch_size


def flat_state(policy: Any, names: list[str]) -> torch.Tensor:
    """:return: the policy's state-dict entries ``names``, flattened into one float64 vector in that order"""
    state = policy.state_dict()
    return torch.cat([state[name].flatten().double() for name in names])


class LockStep(BaseCallback):
    """
    Runs the followers at each rollout end of the leader, then compares them with the leader after its update.

    :param followers: this TRPO per mode of :data:`MODES`, with the leader's settings
    :param on_row: called with each update's comparison (a flat dict of floats)
    """

    def __init__(self, followers: dict[str, TRPO], on_row: Callable[[dict[str, float]], None]) -> None:
        super().__init__()
        self.followers = followers
        self.on_row = on_row
        self.pending: dict[str, Any] | None = None

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        leader = self.model
        assert isinstance(leader, OnPolicyAlgorithm)  # sb3-contrib's TRPO
        names = list(leader.policy.state_dict())
        critic_names = [n for n in names if "value" in n]  # SB3's MlpPolicy: mlp_extractor.value_net, value_net
        before = flat_state(leader.policy, names)
        numpy_state, torch_state = np.random.get_state(), torch.get_rng_state()
        first = np.random.permutation(leader.rollout_buffer.buffer_size * leader.rollout_buffer.n_envs)
        after, logged, adam = {}, {}, {}
        for mode, follower in self.followers.items():
            state = leader.policy.state_dict()
            carry_critic = mode == "free_critic" and self.pending is not None
            if carry_critic:
                state = {**state, **{n: follower.policy.state_dict()[n] for n in critic_names}}
            follower.policy.load_state_dict(state)
            if not carry_critic:
                # A deep copy: load_state_dict keeps tensors that need no cast, which the follower's steps would move
                saved = copy.deepcopy(leader.policy.optimizer.state_dict())
                follower.policy.optimizer.load_state_dict(
                    critic_optimizer_state(follower.policy, follower._critic_params, saved)
                )
            follower.rollout_buffer = copy.deepcopy(leader.rollout_buffer)
            # The progress the leader's train() will see (learn() updates it after the rollout): learning-rate schedules
            follower._update_current_progress_remaining(leader.num_timesteps, leader._total_timesteps)
            # The lock-step tool replaces the method on this follower with one that returns one process's reductions in
            # sb3-contrib's order, where the method is declared to return the data-parallel ones: mypy cannot follow it.
            follower.batch_reductions = lambda first=first: SB3ContribOrder(first)  # type: ignore[method-assign, assignment, misc]
            np.random.set_state(numpy_state)  # the permutations sb3-contrib's train() is about to draw
            follower.train()
            after[mode] = flat_state(follower.policy, names)
            logged[mode] = dict(follower.logger.name_to_value)
            follower.logger.dump(0)
            parameters = dict(follower.policy.named_parameters())
            adam[mode] = {n: copy.deepcopy(follower.policy.optimizer.state[parameters[n]]) for n in critic_names}
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        self.pending = {"before": before, "after": after, "logged": logged, "adam": adam, "names": names}

    def _on_rollout_start(self) -> None:
        if self.pending is None:
            return
        leader, pending = self.model, self.pending
        names = pending["names"]
        sizes = {n: t.numel() for n, t in leader.policy.state_dict().items()}
        is_actor = torch.cat([torch.full((sizes[n],), "value" not in n, dtype=torch.bool) for n in names])
        before, theirs = pending["before"], flat_state(leader.policy, names)
        their_step, critic_change = (theirs - before)[is_actor], (theirs - before)[~is_actor].abs().max()
        row: dict[str, float] = {"update": float(leader._n_updates), "timesteps": float(leader.num_timesteps)}
        for key in LOGGED:
            row[f"leader {key}"] = float(leader.logger.name_to_value.get(key, math.nan))
        leader_parameters = dict(leader.policy.named_parameters())
        for mode, ours in pending["after"].items():
            our_step = (ours - before)[is_actor]
            row[f"{mode} actor cosine"] = float(our_step @ their_step / (our_step.norm() * their_step.norm()))
            row[f"{mode} actor norm ratio"] = float(our_step.norm() / their_step.norm())
            row[f"{mode} critic diff / change"] = float((ours - theirs)[~is_actor].abs().max() / critic_change)
            for key in LOGGED:
                row[f"{mode} {key}"] = float(pending["logged"][mode].get(key, math.nan))
            adam_difference = 0.0
            for name, state in pending["adam"][mode].items():
                their_state = leader.policy.optimizer.state[leader_parameters[name]]
                if float(state["step"]) != float(their_state["step"]):
                    adam_difference = math.inf
                for moment in ("exp_avg", "exp_avg_sq"):
                    scale = float(their_state[moment].abs().max())
                    adam_difference = max(adam_difference, float((state[moment] - their_state[moment]).abs().max()) / scale)
            row[f"{mode} adam relative diff"] = adam_difference
        self.on_row(row)


def run_lockstep(
    leader: Any, make_follower: Callable[[], TRPO], n_updates: int, on_row: Callable[[dict[str, float]], None]
) -> None:
    """
    Train ``leader`` (sb3-contrib's TRPO) for ``n_updates`` updates with this TRPO's followers in lock step.

    :param leader: sb3-contrib's TRPO, built with the settings and seed of the run
    :param make_follower: builds this TRPO with the same settings (its env only gives the spaces; it never steps)
    :param n_updates: updates of the leader
    :param on_row: receives each update's comparison
    """
    followers = {}
    for mode in MODES:
        follower = make_follower()
        follower.set_logger(Logger(folder=None, output_formats=[]))
        followers[mode] = follower
    leader.learn(n_updates * leader.n_steps * leader.n_envs + 1, callback=LockStep(followers, on_row))


def write_rows(path: Path, rows: list[dict[str, float]]) -> None:
    """Write the comparisons as CSV, atomically (the file is rewritten after every update)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("env_id", choices=list(ALL_ENVS))
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("lockstep.csv"))
    parser.add_argument(
        "--follower",
        choices=FOLLOWERS,
        default="trpo",
        help="the followers: this TRPO, or an ablation that changes its update (not those of the rollout or the order)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    silent = Logger(folder=None, output_formats=[])
    preset = load_preset("sb3_contrib_trpo", args.env_id)
    leader = make_model("sb3_contrib_trpo", preset, make_envs(args.env_id, preset, args.seed)[0], args.seed, silent)
    rows: list[dict[str, float]] = []

    def make_follower() -> TRPO:
        env = make_envs(args.env_id, preset, args.seed + 1)[0]
        return make_model(args.follower, preset, env, args.seed, Logger(folder=None, output_formats=[]))

    def on_row(row: dict[str, float]) -> None:
        rows.append(row)
        write_rows(args.out, rows)
        if len(rows) % 10 == 0:
            print(
                f"{time.strftime('%H:%M:%S')} update {len(rows)}: actor cosine {row['reset actor cosine']:.9f}, norm ratio "
                f"{row['reset actor norm ratio']:.7f}, critic {row['reset critic diff / change']:.2e}; carried critic "
                f"{row['free_critic critic diff / change']:.2e}",
                flush=True,
            )

    run_lockstep(leader, make_follower, args.updates, on_row)


if __name__ == "__main__":
    main()
