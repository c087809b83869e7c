"""
Learning with invalid-action masks: this plugin's MaskableTRPO against sb3-contrib's MaskablePPO.

The environment is sb3-contrib's ``InvalidActionEnvDiscrete`` as its own MaskablePPO test sets it up (70 cells, 55
of them invalid at each step, reward 1 for the cell given as the observation, episodes of 100 steps; ``gamma=0.4``).
Both algorithms run with their defaults otherwise. A deterministic, masked evaluation (sb3-contrib's
``evaluate_policy``, 10 episodes on a separate env) follows every ``--eval-every`` steps. Each run writes
``<results>/<algo>/seed<k>.json`` when it finishes (atomically); finished runs are skipped, so the command resumes.

Usage::

    python -m benchmarks.maskable run --seeds 0 1 2 3 4 --timesteps 30000
    python -m benchmarks.maskable report          # prints the markdown table, writes docs/maskable_learning.png
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "maskable"
FIGURE = Path(__file__).resolve().parent.parent / "docs" / "maskable_learning.png"
ALGORITHMS = {"maskable_trpo": "MaskableTRPO (this plugin)", "maskable_ppo": "MaskablePPO (sb3-contrib)"}
THRESHOLD = 90.0  # sb3-contrib's test threshold on this env


def make_env():
    from sb3_contrib.common.envs import InvalidActionEnvDiscrete

    return InvalidActionEnvDiscrete(dim=70, n_invalid_actions=55)


def run_one(algo: str, seed: int, timesteps: int, eval_every: int, results: Path) -> None:
    """Train one seed, evaluating every ``eval_every`` steps; write its curve as JSON."""
    import torch
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.evaluation import evaluate_policy

    from sb3_trpo_plugin import MaskableTRPO

    torch.set_num_threads(1)
    algorithm = {"maskable_trpo": MaskableTRPO, "maskable_ppo": MaskablePPO}[algo]
    env, eval_env = make_env(), make_env()
    model = algorithm("MlpPolicy", env, gamma=0.4, seed=seed)
    eval_env.reset(seed=seed + 1000)

    def evaluate() -> float:
        mean_return, _ = evaluate_policy(model, eval_env, n_eval_episodes=10, warn=False)
        assert isinstance(mean_return, float)  # the mean, not the per-episode list
        return float(mean_return)

    steps, returns, train_seconds = [0], [evaluate()], 0.0
    while model.num_timesteps < timesteps:
        start = time.process_time()
        # Chunks of whole rollouts (n_steps = 2048 for both): the same updates as one learn() call.
        model.learn(eval_every, reset_num_timesteps=False)
        train_seconds += time.process_time() - start
        steps.append(model.num_timesteps)
        returns.append(evaluate())
    out = results / algo / f"seed{seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"algo": algo, "seed": seed, "steps": steps, "returns": returns, "train_cpu_seconds": train_seconds}
    temporary = out.with_suffix(".tmp")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, out)
    print(f"{algo} seed {seed}: final {returns[-1]:.1f} ({train_seconds:.0f} s CPU)", flush=True)


def report(results: Path) -> str:
    """The markdown table of the finished runs, and the curves' figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        "| algorithm | seeds | final return mean ± std | per seed | steps to 90 (median) | train CPU per run |",
        "|---|---|---|---|---|---|",
    ]
    figure, axes = plt.subplots(figsize=(6, 4))
    for algo, label in ALGORITHMS.items():
        records = [json.loads(path.read_text()) for path in sorted((results / algo).glob("seed*.json"))]
        if not records:
            continue
        curves = np.array([record["returns"] for record in records])
        steps = np.array(records[0]["steps"])
        finals = curves[:, -1]
        reached = [
            next((s for s, r in zip(record["steps"], record["returns"], strict=True) if r >= THRESHOLD), None)
            for record in records
        ]
        reached_steps = [s for s in reached if s is not None]
        median = f"{int(np.median(reached_steps))} ({len(reached_steps)}/{len(records)} seeds)" if reached_steps else "—"
        cpu = np.mean([record["train_cpu_seconds"] for record in records])
        per_seed = " / ".join(f"{value:.1f}" for value in finals)
        lines.append(
            f"| {label} | {len(records)} | {finals.mean():.1f} ± {finals.std():.1f} | {per_seed} | {median} | {cpu:.0f} s |"
        )
        axes.plot(steps, curves.mean(axis=0), label=f"{label} ({len(records)} seeds)")
        axes.fill_between(steps, curves.min(axis=0), curves.max(axis=0), alpha=0.2)
    axes.axhline(THRESHOLD, color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("environment steps")
    axes.set_ylabel("masked evaluation return (10 episodes)")
    axes.set_title("InvalidActionEnvDiscrete(70 cells, 55 invalid), gamma 0.4")
    axes.legend()
    figure.tight_layout()
    figure.savefig(FIGURE, dpi=100)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "report"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--timesteps", type=int, default=30_720)
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
