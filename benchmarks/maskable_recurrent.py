"""
Learning with memory and masks: MaskableRecurrentTRPO against RecurrentTRPO without masks and MaskableTRPO without
memory, on the task that needs both.

The environment is ``sb3_trpo_plugin.envs.CueWithForbiddenActionsEnv`` (4 actions, 2 forbidden at every step, drawn
anew; the cue at the first step names the action that pays at the fourth; a forbidden action ends the episode with
-1): the best return is 1, masks without memory earn 0.5 at best, memory without masks meets an unseen forbidden action
half the time at each step. The three algorithms take the same settings (8 envs, ``n_steps=32``, ``batch_size=64``,
``target_kl=0.05``; LSTM of 16 units for the recurrent ones, a hidden layer of 16). A deterministic evaluation
(:func:`sb3_trpo_plugin.masked_recurrent.evaluate_policy`: LSTM states carried, masks where the algorithm uses them;
200 episodes on separate envs) follows every ``--eval-every`` steps. Each run writes ``<results>/<algo>/seed<k>.json``
when it finishes (atomically); finished runs are skipped, so the command resumes.

Usage::

    python -m benchmarks.maskable_recurrent run --seeds 0 1 2 --timesteps 20480
    python -m benchmarks.maskable_recurrent report          # prints the markdown table
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "maskable_recurrent"
ALGORITHMS = {
    "maskable_recurrent_trpo": "MaskableRecurrentTRPO (memory and masks)",
    "recurrent_trpo": "RecurrentTRPO (memory, no masks)",
    "maskable_trpo": "MaskableTRPO (masks, no memory)",
}
THRESHOLD = 0.9


def run_one(algo: str, seed: int, timesteps: int, eval_every: int, results: Path) -> None:
    """Train one seed, evaluating every ``eval_every`` steps; write its curve as JSON."""
    import torch
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_trpo_plugin import MaskableRecurrentTRPO, MaskableTRPO, RecurrentTRPO
    from sb3_trpo_plugin.envs import CueWithForbiddenActionsEnv
    from sb3_trpo_plugin.masked_recurrent import evaluate_policy

    torch.set_num_threads(1)
    settings = dict(n_steps=32, batch_size=64, target_kl=0.05, seed=seed)
    env = make_vec_env(CueWithForbiddenActionsEnv, n_envs=8, seed=seed)
    recurrent_kwargs = dict(lstm_hidden_size=16, net_arch=[16])
    if algo == "maskable_recurrent_trpo":
        model = MaskableRecurrentTRPO("MlpLstmPolicy", env, policy_kwargs=recurrent_kwargs, **settings)
    elif algo == "recurrent_trpo":
        model = RecurrentTRPO("MlpLstmPolicy", env, policy_kwargs=recurrent_kwargs, **settings)
    else:
        model = MaskableTRPO("MlpPolicy", env, policy_kwargs=dict(net_arch=[16]), **settings)
    masked = algo != "recurrent_trpo"

    def evaluate() -> float:
        eval_env = make_vec_env(CueWithForbiddenActionsEnv, n_envs=4, seed=seed + 1000)
        mean_return, _ = evaluate_policy(model, eval_env, n_eval_episodes=200, use_masking=masked)
        assert isinstance(mean_return, float)  # the mean, not the per-episode list
        return float(mean_return)

    steps, returns, train_seconds = [0], [evaluate()], 0.0
    while model.num_timesteps < timesteps:
        start = time.process_time()
        model.learn(eval_every, reset_num_timesteps=False)  # whole rollouts (256 steps): the same updates as one call
        train_seconds += time.process_time() - start
        steps.append(model.num_timesteps)
        returns.append(evaluate())
    out = results / algo / f"seed{seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"algo": algo, "seed": seed, "steps": steps, "returns": returns, "train_cpu_seconds": train_seconds}
    temporary = out.with_suffix(".tmp")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, out)
    print(f"{algo} seed {seed}: final {returns[-1]:.2f} ({train_seconds:.0f} s CPU)", flush=True)


def report(results: Path) -> str:
    """The markdown table of the finished runs."""
    lines = [
        f"| algorithm | seeds | final return mean ± std | per seed | steps to {THRESHOLD} (median) | train CPU per run |",
        "|---|---|---|---|---|---|",
    ]
    for algo, label in ALGORITHMS.items():
        records = [json.loads(path.read_text()) for path in sorted((results / algo).glob("seed*.json"))]
        if not records:
            continue
        finals = np.array([record["returns"][-1] for record in records])
        reached = [
            next((s for s, r in zip(record["steps"], record["returns"], strict=True) if r >= THRESHOLD), None)
            for record in records
        ]
        reached_steps = [s for s in reached if s is not None]
        median = f"{int(np.median(reached_steps))} ({len(reached_steps)}/{len(records)} seeds)" if reached_steps else "—"
        cpu = np.mean([record["train_cpu_seconds"] for record in records])
        per_seed = " / ".join(f"{value:.2f}" for value in finals)
        lines.append(
            f"| {label} | {len(records)} | {finals.mean():.2f} ± {finals.std():.2f} | {per_seed} | {median} | {cpu:.0f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "report"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=20_480)
    parser.add_argument("--eval-every", type=int, default=2048)
    parser.add_argument("--algos", nargs="+", default=list(ALGORITHMS), choices=list(ALGORITHMS))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.command == "report":
        print(report(args.results))
        return
    for seed in args.seeds:
        for algo in args.algos:
            if not (args.results / algo / f"seed{seed}.json").exists():
                run_one(algo, seed, args.timesteps, args.eval_every, args.results)


if __name__ == "__main__":
    main()
