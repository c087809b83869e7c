"""
What the proofs of the fast paths cost: each proof alone, and their share of a 100k-step CartPole ``learn()``.

Before a fast path first serves a model it runs beside the upstream computation on a small probe
(``sb3_trpo_plugin/replicas/proofs.py``). Two measurements, in one process:

1. *Each proof alone*: the lean inference's (on the first observations of a rollout), the actor Jacobian's, the critic
   gradient's and the fused Adam step's, each on a fresh verdict store, repeated; median and quartiles in ms.
2. *Share of ``learn()``*: ``learn()`` of CartPole-v1 (rl-zoo3's TRPO settings: 2 envs × 512 steps) for 100k steps,
   in rounds that alternate a model that proves its fast paths as usual with one whose verdicts are given beforehand
   (no proof runs): the time spent inside the proofs (timers that this script wraps around them) over the run's wall
   time, and the ratio of the two variants' wall times (noisy on a shared machine: it shows no more than that the
   difference is lost in the noise).

Usage::

    python -m benchmarks.fast_path_proofs                     # both, 3 rounds of learn()
    python -m benchmarks.fast_path_proofs --rounds 1 --timesteps 20000 --json proofs.json

Torch runs on one thread (set here, not in the library).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypedDict


class CartPoleSettings(TypedDict):
    """TRPO's constructor keywords that rl-zoo3 tunes for CartPole-v1."""

    n_steps: int
    batch_size: int
    cg_damping: float
    gae_lambda: float
    gamma: float
    n_critic_updates: int


#: rl-zoo3's hyperparams/trpo.yml entry for CartPole-v1 (n_timesteps aside).
CARTPOLE = CartPoleSettings(n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98, gamma=0.99, n_critic_updates=20)
N_ENVS = 2


@contextmanager
def timed_proofs(spent: dict[str, float]) -> Iterator[None]:
    """Add the wall time of every proof that runs inside the block to ``spent[path name]``."""
    from sb3_trpo_plugin.replicas.proofs import FastPath, FastPathProofs

    original = FastPathProofs.serves

    def serves(self: FastPathProofs, path: FastPath, prove: Callable[[], str | None], key: str = "") -> bool:
        def timed() -> str | None:
            start = time.perf_counter()
            try:
                return prove()
            finally:
                spent[path.name] += time.perf_counter() - start

        return original(self, path, timed, key)

    FastPathProofs.serves = serves  # type: ignore[method-assign]
    try:
        yield
    finally:
        FastPathProofs.serves = original  # type: ignore[method-assign]


def make_model(seed: int) -> Any:
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_trpo_plugin import TRPO

    return TRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=N_ENVS, seed=seed), seed=seed, **CARTPOLE)


def proof_costs(repeats: int) -> dict[str, list[float]]:
    """Each proof alone on a fresh verdict store, ``repeats`` times: milliseconds per proof and path."""
    from sb3_trpo_plugin.replicas import actor_jacobian, critic_gradient, fused_adam
    from sb3_trpo_plugin.replicas.inference import policy_inference
    from sb3_trpo_plugin.replicas.layers import obs_as_cpu_tensor
    from sb3_trpo_plugin.trpo.policy_step import PolicyBatch

    model = make_model(0)
    model.learn(N_ENVS * CARTPOLE["n_steps"])  # a rollout in the buffer, weights moved once
    rollout = next(model.rollout_buffer.get(batch_size=None))
    batch = PolicyBatch(rollout.observations, rollout.actions.long().flatten(), rollout.old_log_prob, rollout.advantages)
    observations = obs_as_cpu_tensor(model.env.reset())
    features = model.policy.extract_features(rollout.observations, model.policy.vf_features_extractor)
    inference = policy_inference(model.policy)
    assert inference is not None
    proofs: dict[str, Callable[[], str | None]] = {
        "lean rollout inference": lambda: inference.upstream_mismatch(observations),
        "actor Jacobian": lambda: actor_jacobian._upstream_mismatch(model.policy, model._actor_params, batch.observations),
        "critic gradient": lambda: critic_gradient._upstream_mismatch(
            model.policy,
            critic_gradient.plain_regression([model.policy.mlp_extractor.value_net, model.policy.value_net]),  # type: ignore[arg-type]
            features,
        ),
        "fused Adam step": lambda: fused_adam._upstream_mismatch(model.policy.optimizer),
    }
    costs: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for name, prove in proofs.items():
            start = time.perf_counter()
            assert prove() is None, name
            costs[name].append(1e3 * (time.perf_counter() - start))
    return costs


def given_verdicts(model: Any) -> None:
    """Record every fast path of ``model`` as proved, so that none of its proofs runs."""
    from sb3_trpo_plugin.replicas.proofs import proofs_of

    proved = proofs_of(model.policy)
    original = proved.serves
    proved.serves = lambda path, prove, key="": original(path, lambda: None, key)  # type: ignore[method-assign]
    optimizer_proofs = proofs_of(model.policy.optimizer)
    original_optimizer = optimizer_proofs.serves
    optimizer_proofs.serves = lambda path, prove, key="": original_optimizer(path, lambda: None, key)  # type: ignore[method-assign]


def learn_share(timesteps: int, rounds: int) -> list[dict[str, Any]]:
    """Alternating rounds of ``learn(timesteps)``: with proofs as usual, and with the verdicts given beforehand."""
    results = []
    for round_index in range(rounds):
        order = ("proved", "given") if round_index % 2 == 0 else ("given", "proved")
        row: dict[str, Any] = {"round": round_index}
        for variant in order:
            model = make_model(round_index)
            if variant == "given":
                given_verdicts(model)
            spent: dict[str, float] = defaultdict(float)
            with timed_proofs(spent):
                start = time.perf_counter()
                model.learn(timesteps)
                wall = time.perf_counter() - start
            row[variant] = {"wall_s": wall, "proofs_s": dict(spent), "proofs_total_s": sum(spent.values())}
        row["share_of_learn"] = row["proved"]["proofs_total_s"] / row["proved"]["wall_s"]
        row["wall_ratio_proved_over_given"] = row["proved"]["wall_s"] / row["given"]["wall_s"]
        results.append(row)
        print(json.dumps(row), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="repetitions of each proof alone")
    parser.add_argument("--timesteps", type=int, default=100_000, help="steps of each learn()")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of learn()")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    costs = proof_costs(args.repeats)
    print("| proof | median ms | quartiles ms |")
    print("| --- | ---: | ---: |")
    for name, values in costs.items():
        q1, _, q3 = statistics.quantiles(values, n=4)
        print(f"| {name} | {statistics.median(values):.2f} | {q1:.2f}–{q3:.2f} |")
    rounds = learn_share(args.timesteps, args.rounds) if args.rounds else []
    if rounds:
        shares = [row["share_of_learn"] for row in rounds]
        ratios = [row["wall_ratio_proved_over_given"] for row in rounds]
        print(
            f"\nlearn({args.timesteps}) CartPole-v1, {args.rounds} alternating rounds (load {os.getloadavg()[0]:.1f}): "
            f"proofs {statistics.median(shares):.4%} of the wall time (median; range {min(shares):.4%}–{max(shares):.4%}); "
            f"wall time with proofs / without: {statistics.median(ratios):.3f} (range {min(ratios):.3f}–{max(ratios):.3f})"
        )
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"proof_ms": costs, "learn": rounds}, file, indent=2)


if __name__ == "__main__":
    main()
