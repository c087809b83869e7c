"""
Learning-quality benchmark: this plugin's TRPO against sb3-contrib's TRPO and SB3's PPO; its runs, its campaign and
its command line.

What is trained (the envs, the algorithms, rl-zoo3's tuned settings) is in :mod:`benchmarks.learning_setup`; what a
run records (the curve of deterministic evaluations every tenth of the budget, the training diagnostics, the
metadata) in :mod:`benchmarks.learning_record`; the tables and plots of the report in
:mod:`benchmarks.learning_report`. One process per run, ``--jobs`` at a time; each run writes
``<results>/<env>/<algo>/seed<k>.csv`` (the curve) and then ``seed<k>.json`` (metadata, written
last and atomically: its presence marks the run finished, and finished runs are skipped).

Every run process calls ``torch.set_num_threads(1)``: runs are small MLPs, and one thread per
process is what makes ``--jobs`` runs share the cores without oversubscription.

Usage::

    python -m benchmarks.learning run --jobs 2                   # the whole campaign
    python -m benchmarks.learning run --envs CartPole-v1 --seeds 0 1 2 3 4
    python -m benchmarks.learning run --timesteps-scale 0.02 --results /tmp/smoke   # a smoke test
    python -m benchmarks.learning report                          # docs/benchmarks.md + docs/learning_<env>.png
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from stable_baselines3.common.logger import Logger

from benchmarks.launch import ROOT, Run, module_command, run_pool
from benchmarks.learning_record import CurveRecorder, DiagnosticsWriter, run_metadata, train, write_run
from benchmarks.learning_report import load_results, plot_env, render_section, replace_section
from benchmarks.learning_setup import ALGOS, ALL_ENVS, ENVS, Preset, load_preset, make_envs, make_model
from sb3_trpo_plugin.cli.arguments import positive_int

DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "learning"


def run_one(
    env_id: str,
    algo: str,
    seed: int,
    results: Path,
    n_evals: int = 10,
    eval_episodes: int = 10,
    final_episodes: int = 20,
    timesteps: int | None = None,
    timesteps_scale: float = 1.0,
    preset: Preset | None = None,
    label: str | None = None,
) -> Path:
    """
    Train one run with periodic deterministic evaluation; write its CSV, then its JSON.

    :param env_id: a key of :data:`ENVS`
    :param algo: one of :data:`ALGOS`
    :param seed: seeds the model and the training envs (the evaluation env gets ``seed + 10000``)
    :param results: the results folder
    :param n_evals: evaluations during training (at steps ``0, B/n, 2B/n, …``), the final one excluded
    :param eval_episodes: episodes per evaluation during training
    :param final_episodes: episodes of the final evaluation
    :param timesteps: budget override (default: rl-zoo3's / :data:`ENVS`)
    :param timesteps_scale: factor on the budget (for smoke tests)
    :param preset: the settings to train with (default: ``algo``'s for ``env_id``, :func:`load_preset`)
    :param label: the run's folder under ``<results>/<env>`` and its recorded algorithm (default: ``algo``)
    :return: path of the JSON
    """
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    preset = preset or load_preset(algo, env_id)
    budget = max(1, int((timesteps or preset.n_timesteps) * timesteps_scale))
    train_env, eval_env = make_envs(env_id, preset, seed)
    diagnostics = DiagnosticsWriter()
    model = make_model(algo, preset, train_env, seed, Logger(folder=None, output_formats=[diagnostics]))
    if hasattr(model, "pipeline_critic"):
        # A campaign run fits this TRPO's critic in its own process, not in a worker: the weights are the same bit for
        # bit (tests/test_critic_pipeline.py), ``--jobs 2`` runs already fill two cores, and the run's CPU time (which
        # counts this process only) then counts all of its work. The speed benchmarks keep the default.
        model.pipeline_critic = False
    recorder = CurveRecorder(model, train_env, eval_env, preset.normalize)
    train_time = train(model, recorder, budget, n_evals, eval_episodes)
    recorder.evaluate(final_episodes)
    meta = run_metadata(
        env_id,
        label or algo,
        seed,
        preset,
        budget,
        steps_done=int(model.num_timesteps),
        recorder=recorder,
        final_episodes=final_episodes,
        train_time=train_time,
        diagnostics=diagnostics,
        started=started,
    )
    json_path = write_run(results / env_id / (label or algo), seed, recorder.curve, meta)
    train_env.close()
    eval_env.close()
    return json_path


def campaign_jobs(envs: Sequence[str], algos: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, str, int]]:
    """
    The runs of a campaign, in order: env by env (cheapest first), seed by seed, the algorithms of a
    seed side by side (so that they meet similar load on a shared machine).

    :param envs: env ids
    :param algos: algorithms
    :param seeds: seeds
    :return: ``(env_id, algo, seed)`` triples
    """
    return [(env_id, a, s) for env_id in envs for s in seeds for a in algos]


def run_campaign(args: argparse.Namespace) -> None:
    """Run every unfinished run of the campaign, ``args.jobs`` processes at a time."""
    results: Path = args.results.resolve()
    runs = []
    for env_id, algo, seed in campaign_jobs(args.envs, args.algos, args.seeds):
        command = module_command("benchmarks.learning", "one", env_id, algo, str(seed), "--results", str(results))
        command += ["--evals", str(args.evals), "--eval-episodes", str(args.eval_episodes)]
        command += ["--final-episodes", str(args.final_episodes), "--timesteps-scale", str(args.timesteps_scale)]
        if args.timesteps:
            command += ["--timesteps", str(args.timesteps)]
        runs.append(Run(f"{env_id} {algo} seed {seed}", command, results / env_id / algo / f"seed{seed}.json"))
    runs = [run for run in runs if not run.result.exists()]
    print(f"{time.strftime('%H:%M:%S')} {len(runs)} runs to do into {results} with {args.jobs} jobs", flush=True)
    failed = run_pool(runs, args.jobs)
    print(f"{time.strftime('%H:%M:%S')} campaign over; {len(failed)} failed: {failed}", flush=True)


def report(results: Path, doc: Path, plots: Path) -> None:
    """
    Rewrite the "Learning quality" section of ``doc`` (between its markers) and the plots.

    :param results: the results folder
    :param doc: ``docs/benchmarks.md``
    :param plots: folder of the PNGs (the document links them relative to itself)
    """
    import gymnasium as gym

    table = load_results(results)
    thresholds = {env_id: gym.spec(env_id).reward_threshold for env_id in set(ENVS) | set(table)}
    plot_names = {}
    plots.mkdir(parents=True, exist_ok=True)
    for env_id, per_algo in table.items():
        path = plots / f"learning_{env_id}.png"
        plot_env(env_id, per_algo, thresholds[env_id], path)
        plot_names[env_id] = os.path.relpath(path, doc.parent)
    preamble = (ROOT / "benchmarks" / "learning_preamble.md").read_text()
    section = render_section(table, list(ENVS), thresholds, plot_names, preamble)
    doc.parent.mkdir(parents=True, exist_ok=True)
    old = doc.read_text() if doc.exists() else ""
    doc.write_text(replace_section(old, section))
    n_runs = sum(len(runs) for per_algo in table.values() for runs in per_algo.values())
    print(f"wrote {doc} ({n_runs} runs, {len(table)} envs) and {len(plot_names)} plots in {plots}")


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``run`` (a campaign), ``one`` (a single run, used by ``run``), ``report``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder")
        p.add_argument("--evals", type=positive_int, default=10, help="evaluations during training (the final one excluded)")
        p.add_argument("--eval-episodes", type=positive_int, default=10, help="episodes per evaluation during training")
        p.add_argument("--final-episodes", type=positive_int, default=20, help="episodes of the final evaluation")
        p.add_argument("--timesteps", type=int, default=None, help="override every budget")
        p.add_argument("--timesteps-scale", type=float, default=1.0, help="factor on every budget (smoke tests)")

    run = sub.add_parser("run", help="run the campaign (finished runs are skipped)")
    common(run)
    run.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ALL_ENVS))
    run.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    run.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at a time (one process each)")

    one = sub.add_parser("one", help="a single run")
    common(one)
    one.add_argument("env_id", choices=list(ALL_ENVS))
    one.add_argument("algo", choices=list(ALGOS))
    one.add_argument("seed", type=int)

    rep = sub.add_parser("report", help="write the Learning quality section of docs/benchmarks.md and the plots")
    rep.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    rep.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    rep.add_argument("--plots", type=Path, default=None, help="folder of the PNGs (default: the doc's folder)")

    args = parser.parse_args(argv)
    if args.command == "run":
        run_campaign(args)
    elif args.command == "one":
        path = run_one(
            args.env_id,
            args.algo,
            args.seed,
            args.results,
            args.evals,
            args.eval_episodes,
            args.final_episodes,
            args.timesteps,
            args.timesteps_scale,
        )
        meta = json.loads(path.read_text())
        print(
            f"{args.env_id} {args.algo} seed {args.seed}: final return {meta['final_return']:.1f}, "
            f"train {meta['train_wall_s']:.0f} s, total {meta['total_wall_s']:.0f} s",
            flush=True,
        )
    else:
        report(args.results, args.doc, args.plots or args.doc.parent)


if __name__ == "__main__":
    main()
