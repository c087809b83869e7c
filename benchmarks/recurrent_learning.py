"""
Learning comparison on a partially observed task: RecurrentTRPO against sb3-contrib's RecurrentPPO.

The task is CartPole with the velocities hidden (rl-zoo3's ``MaskVelocityWrapper``, its ``CartPoleNoVel-v1``): the
observation is the cart's position and the pole's angle only, so a policy must remember to balance. RecurrentPPO
trains with rl-zoo3's tuned ``ppo_lstm.yml`` settings for ``CartPoleNoVel-v1``; RecurrentTRPO with the same
environments, discount, GAE and policy (an LSTM of 64 units for the actor, another for the critic), and TRPO's
defaults otherwise (see :data:`SETTINGS`). Each run records the mean return of the last 20 training episodes after
every rollout, then evaluates the final policy deterministically over 20 episodes. One process per run; each writes
``<results>/<algo>/seed<k>.json`` when it ends (atomically), and finished runs are skipped: the campaign resumes.

Usage::

    python -m benchmarks.recurrent_learning run --seeds 0 1 2 --timesteps 50000   # resumable
    python -m benchmarks.recurrent_learning report   # docs/benchmarks.md's section, docs/recurrent_cartpole_novel.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import sections
from benchmarks.launch import child_environment, module_command

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "recurrent"
PLOT = REPO / "docs" / "recurrent_cartpole_novel.png"
ALGOS = ("trpo_lstm", "ppo_lstm")

#: rl-zoo3's ppo_lstm.yml for CartPoleNoVel-v1 (with its linear schedules), and RecurrentTRPO on the same ground.
POLICY_KWARGS: dict[str, Any] = dict(
    ortho_init=False, lstm_hidden_size=64, enable_critic_lstm=True, net_arch=dict(pi=[64], vf=[64])
)
SETTINGS: dict[str, dict[str, Any]] = {
    "ppo_lstm": dict(n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0),
    "trpo_lstm": dict(n_steps=128, batch_size=256, gae_lambda=0.8, gamma=0.98, n_critic_updates=10),
}
N_ENVS = 8


def linear(initial: float) -> Any:
    """rl-zoo3's ``lin_<x>`` schedule: ``x · progress_remaining``."""
    return lambda progress_remaining: progress_remaining * initial


def make_env(seed: int, training: bool) -> Any:
    """CartPole-v1 with the velocities masked, ``N_ENVS`` copies (4 for evaluation), VecNormalize as rl-zoo3 sets it."""
    from rl_zoo3.wrappers import MaskVelocityWrapper
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    env = make_vec_env("CartPole-v1", n_envs=N_ENVS if training else 4, seed=seed, wrapper_class=MaskVelocityWrapper)
    return VecNormalize(env, training=training, norm_reward=training)


def run(algo: str, seed: int, timesteps: int, results: Path) -> None:
    """Train one run and write its JSON (the curve, the final evaluation, the wall time)."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy
    from torch import nn

    torch.set_num_threads(1)
    env = make_env(seed, training=True)
    policy_kwargs = {**POLICY_KWARGS, "activation_fn": nn.ReLU}
    if algo == "ppo_lstm":
        from sb3_contrib import RecurrentPPO

        model: Any = RecurrentPPO(
            "MlpLstmPolicy",
            env,
            learning_rate=linear(1e-3),
            clip_range=linear(0.2),
            policy_kwargs=policy_kwargs,
            seed=seed,
            **SETTINGS[algo],
        )
    else:
        from sb3_trpo_plugin import RecurrentTRPO

        model = RecurrentTRPO("MlpLstmPolicy", env, policy_kwargs=policy_kwargs, seed=seed, **SETTINGS[algo])

    curve: list[tuple[int, float]] = []

    class RecordReturns(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            assert self.model.ep_info_buffer is not None  # learn() made it before the first rollout
            episodes = list(self.model.ep_info_buffer)[-20:]
            if episodes:
                curve.append((self.model.num_timesteps, float(np.mean([episode["r"] for episode in episodes]))))

    start = time.perf_counter()
    model.learn(timesteps, callback=RecordReturns())
    wall = time.perf_counter() - start
    eval_env = make_env(seed + 1000, training=False)
    eval_env.obs_rms = env.obs_rms
    mean_return, std_return = evaluate_policy(model, eval_env, n_eval_episodes=20, deterministic=True)
    assert isinstance(mean_return, float) and isinstance(std_return, float)  # the mean and std, not per-episode lists
    record = dict(
        algo=algo,
        seed=seed,
        timesteps=timesteps,
        settings=SETTINGS[algo],
        curve=curve,
        final_eval_mean=float(mean_return),
        final_eval_std=float(std_return),
        wall_seconds=wall,
    )
    path = results / algo / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as file:
        json.dump(record, file, indent=1)
    os.replace(file.name, path)
    print(f"{algo} seed {seed}: final {mean_return:.1f} ± {std_return:.1f}, {wall:.0f} s", flush=True)


def campaign(algos: list[str], seeds: list[int], timesteps: int, results: Path) -> None:
    """Every (algo, seed) without a result yet, one process after another (seeds interleaved across algorithms)."""
    for seed in seeds:
        for algo in algos:
            if (results / algo / f"seed{seed}.json").exists():
                continue
            command = module_command("benchmarks.recurrent_learning", "one", algo, str(seed), str(timesteps), str(results))
            subprocess.run(command, check=False, env=child_environment({"OMP_NUM_THREADS": "1"}))


def interpolated(grid: np.ndarray, curve: list[list[float]]) -> np.ndarray:
    """A run's curve of ``[step, return]`` points at the steps of ``grid`` (NaN before its first point)."""
    steps, returns = np.array(curve).T
    return np.interp(grid, steps, returns, left=np.nan)


def report(results: Path) -> str:
    """A Markdown table of the finished runs and the learning curves (mean ± std over seeds) in ``PLOT``."""
    runs: dict[str, list[dict[str, Any]]] = {
        algo: [json.loads(p.read_text()) for p in sorted((results / algo).glob("seed*.json"))] for algo in ALGOS
    }
    lines = [
        "| algorithm | seeds | final return (20 episodes, mean over seeds ± std) | last training return | wall time per run |",
        "| --- | --- | --- | --- | --- |",
    ]
    for algo, records in runs.items():
        if not records:
            continue
        finals = [r["final_eval_mean"] for r in records]
        lasts = [r["curve"][-1][1] for r in records if r["curve"]]
        walls = [r["wall_seconds"] for r in records]
        lines.append(
            f"| {algo} | {len(records)} | {np.mean(finals):.1f} ± {np.std(finals):.1f} (per seed: "
            f"{', '.join(f'{v:.0f}' for v in finals)}) | {np.mean(lasts):.1f} | {np.mean(walls):.0f} s |"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for algo, records in runs.items():
        if not records:
            continue
        grid = np.linspace(0, min(r["timesteps"] for r in records), 50)
        curves = np.array([interpolated(grid, r["curve"]) for r in records if r["curve"]])
        mean, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
        axes.plot(grid, mean, label=f"{algo} ({len(curves)} seeds)")
        axes.fill_between(grid, mean - std, mean + std, alpha=0.2)
    axes.set_xlabel("environment steps")
    axes.set_ylabel("training return (last 20 episodes)")
    axes.set_title("CartPole-v1, velocities hidden")
    axes.legend()
    figure.tight_layout()
    figure.savefig(PLOT, dpi=100)
    return "\n".join(lines)


def section(table: str, results: Path) -> str:
    """The ``recurrent_learning`` section of ``docs/benchmarks.md``: the task, the settings, the table, the curves."""
    budgets = sorted({json.loads(p.read_text())["timesteps"] for p in results.glob("*/seed*.json")})
    return "\n".join(
        [
            "## RecurrentTRPO against RecurrentPPO: CartPole without velocities",
            "",
            "Command: `python -m benchmarks.recurrent_learning run --seeds 0 1 2 --timesteps "
            f"{budgets[-1] if budgets else 30000}` (resumable: finished runs are skipped), then "
            "`python -m benchmarks.recurrent_learning report`. Results: `benchmarks/results/recurrent/<algo>/seed<k>.json`.",
            "",
            "CartPole-v1 with the velocities hidden (rl-zoo3's `CartPoleNoVel-v1`: position and angle only), 8 envs,",
            "VecNormalize. RecurrentPPO: rl-zoo3's tuned `ppo_lstm.yml` settings (n_steps 32, batch 256, 20 epochs, linear",
            "learning-rate and clip schedules). RecurrentTRPO: the same envs, discount (0.98), GAE λ (0.8) and policy (an",
            "LSTM of 64 units for the actor, another for the critic, ReLU MLPs of 64), n_steps 128, TRPO's defaults",
            "otherwise (`target_kl` 0.01, `cg_damping` 0.1, 10 critic epochs of minibatches of 256 steps), untuned. A",
            "small budget for the loaded 2-core machine; rl-zoo3 trains RecurrentPPO for 100 000 steps on this task.",
            "Final return: the last policy, 20 deterministic episodes (at most 500).",
            "",
            table,
            "",
            "![RecurrentTRPO and RecurrentPPO on CartPole without velocities](recurrent_cartpole_novel.png)",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run")
    run_parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    run_parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    run_parser.add_argument("--timesteps", type=int, default=100_000)
    run_parser.add_argument("--results", type=Path, default=RESULTS)
    one = commands.add_parser("one")
    one.add_argument("algo", choices=ALGOS)
    one.add_argument("seed", type=int)
    one.add_argument("timesteps", type=int)
    one.add_argument("results", type=Path)
    report_parser = commands.add_parser("report")
    report_parser.add_argument("--results", type=Path, default=RESULTS)
    arguments = parser.parse_args()
    if arguments.command == "run":
        campaign(arguments.algos, arguments.seeds, arguments.timesteps, arguments.results)
    elif arguments.command == "one":
        run(arguments.algo, arguments.seed, arguments.timesteps, arguments.results)
    else:
        text = section(report(arguments.results), arguments.results)
        print(text)
        sections.write_section("recurrent_learning", text)


if __name__ == "__main__":
    main()
