"""
Aggregation and report of the learning-quality benchmark (``benchmarks/learning.py``).

Pure functions over the saved results (interquartile mean, mean ± std, steps and wall-clock to a
threshold from a learning curve) plus the writer of the "Learning quality" section of
``docs/benchmarks.md`` and its learning-curve plots. Importing this module does not import torch
or gymnasium.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import sections

#: Display names, in table and legend order.
ALGO_LABELS: dict[str, str] = {
    "trpo": "TRPO (this plugin)",
    "sb3_contrib_trpo": "TRPO (sb3-contrib 2.9.2)",
    "ppo": "PPO (SB3)",
    "trpo_preset": "TRPO (this plugin), the package's preset",
}


@dataclass(frozen=True)
class CurvePoint:
    """
    One evaluation of a run.

    :param step: environment steps of training done before the evaluation
    :param train_wall_s: wall-clock seconds of training up to that point (evaluations excluded)
    :param mean_return: mean return of the deterministic evaluation episodes
    :param std_return: standard deviation of those returns
    :param n_episodes: number of evaluation episodes
    """

    step: int
    train_wall_s: float
    mean_return: float
    std_return: float
    n_episodes: int


@dataclass
class RunResult:
    """A finished run: its learning curve and its metadata (the run's JSON)."""

    env_id: str
    algo: str
    seed: int
    curve: list[CurvePoint]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def final_return(self) -> float:
        """The last evaluation (the final one, with more episodes)."""
        return self.curve[-1].mean_return

    @property
    def train_wall_s(self) -> float:
        """Wall-clock of the whole training, evaluations excluded."""
        return float(self.meta.get("train_wall_s", self.curve[-1].train_wall_s))


def interquartile_mean(values: Sequence[float]) -> float:
    """
    Interquartile mean: the mean of the middle 50 % of the values, weighting the values that
    straddle the 25th and 75th percentiles by the fraction of them inside (as rliable does), so
    that it is defined for any number of seeds (for 3 values: ``(a/4 + b + c/4) / 1.5`` sorted).

    :param values: one number per seed
    :return: the IQM (``nan`` for no values)
    """
    x = np.sort(np.asarray(values, dtype=float))
    n = x.size
    if n == 0:
        return math.nan
    lo, hi = 0.25 * n, 0.75 * n
    # Value i covers the interval [i, i + 1) of the empirical distribution, scaled by n.
    starts = np.arange(n)
    weights = np.clip(np.minimum(starts + 1, hi) - np.maximum(starts, lo), 0.0, None)
    return float(np.sum(weights * x) / np.sum(weights))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """
    Mean and population standard deviation (``ddof=0``, as rl-zoo3 and sb3-contrib report them).

    :param values: one number per seed
    :return: ``(mean, std)``, both ``nan`` for no values
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std())


def first_reaching(curve: Sequence[CurvePoint], threshold: float) -> CurvePoint | None:
    """
    The first evaluation after training started (step > 0) whose mean return reaches ``threshold``.

    The evaluation of the untrained policy is skipped: a lucky initial policy (a deterministic
    CartPole policy can balance by chance) says nothing about learning speed.

    :param curve: evaluations in order of steps
    :param threshold: the env's solved threshold
    :return: that evaluation, or ``None`` when the run never reaches it
    """
    for point in curve:
        if point.step > 0 and point.mean_return >= threshold:
            return point
    return None


def read_run(json_path: Path) -> RunResult:
    """
    Load one run from its ``seed<k>.json`` and the ``seed<k>.csv`` beside it.

    :param json_path: path of the JSON (written last, so its presence marks a finished run)
    :return: the run
    """
    meta = json.loads(json_path.read_text())
    curve = []
    with json_path.with_suffix(".csv").open(newline="") as f:
        for row in csv.DictReader(f):
            curve.append(
                CurvePoint(
                    step=int(row["step"]),
                    train_wall_s=float(row["train_wall_s"]),
                    mean_return=float(row["mean_return"]),
                    std_return=float(row["std_return"]),
                    n_episodes=int(row["n_episodes"]),
                )
            )
    return RunResult(meta["env_id"], meta["algo"], int(meta["seed"]), curve, meta)


def write_curve(csv_path: Path, curve: Sequence[CurvePoint]) -> None:
    """
    Write a learning curve as CSV (columns: step, train_wall_s, mean_return, std_return, n_episodes).

    :param csv_path: destination
    :param curve: evaluations in order of steps
    """
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "train_wall_s", "mean_return", "std_return", "n_episodes"])
        for p in curve:
            writer.writerow([p.step, f"{p.train_wall_s:.3f}", f"{p.mean_return:.4f}", f"{p.std_return:.4f}", p.n_episodes])


def load_results(results: Path) -> dict[str, dict[str, list[RunResult]]]:
    """
    All finished runs under ``results/<env>/<algo>/seed<k>.json``.

    :param results: the results folder
    :return: ``{env_id: {algo: [runs sorted by seed]}}``
    """
    table: dict[str, dict[str, list[RunResult]]] = {}
    for path in sorted(results.glob("*/*/seed*.json")):
        run = read_run(path)
        table.setdefault(run.env_id, {}).setdefault(run.algo, []).append(run)
    for per_algo in table.values():
        for runs in per_algo.values():
            runs.sort(key=lambda r: r.seed)
    return table


@dataclass(frozen=True)
class Summary:
    """What the report says about one algorithm on one env, over seeds."""

    n_seeds: int
    final_mean: float
    final_std: float
    final_iqm: float
    finals: list[float]
    n_solved: int
    steps_to_threshold: float
    wall_to_threshold_s: float
    train_wall_mean_s: float
    train_wall_std_s: float
    late_mean: float = math.nan
    train_cpu_mean_s: float = math.nan
    n_cpu_timed: int = 0


def summarize(runs: Sequence[RunResult], threshold: float | None) -> Summary:
    """
    Aggregate the seeds of one algorithm on one env.

    ``steps_to_threshold`` and ``wall_to_threshold_s`` are medians over the seeds that reached the
    threshold at an evaluation (``nan`` when none did or there is no threshold); ``n_solved`` counts
    seeds whose *final* return reaches it.

    ``late_mean`` is the mean over seeds of each run's last three evaluations (the final one
    included): a steadier read of where a run ended than its final evaluation alone.

    :param runs: one run per seed
    :param threshold: the env's solved threshold, or ``None``
    :return: the summary
    """
    finals = [r.final_return for r in runs]
    mean, std = mean_std(finals)
    walls = [r.train_wall_s for r in runs]
    wall_mean, wall_std = mean_std(walls)
    cpus = [float(r.meta["train_cpu_s"]) for r in runs if "train_cpu_s" in r.meta]
    n_solved = 0
    steps: list[float] = []
    times: list[float] = []
    if threshold is not None:
        n_solved = sum(f >= threshold for f in finals)
        for r in runs:
            hit = first_reaching(r.curve, threshold)
            if hit is not None:
                steps.append(hit.step)
                times.append(hit.train_wall_s)
    return Summary(
        n_seeds=len(runs),
        final_mean=mean,
        final_std=std,
        final_iqm=interquartile_mean(finals),
        finals=finals,
        n_solved=n_solved,
        steps_to_threshold=float(np.median(steps)) if steps else math.nan,
        wall_to_threshold_s=float(np.median(times)) if times else math.nan,
        train_wall_mean_s=wall_mean,
        train_wall_std_s=wall_std,
        late_mean=mean_std([float(np.mean([p.mean_return for p in r.curve[-3:]])) for r in runs])[0],
        train_cpu_mean_s=mean_std(cpus)[0],
        n_cpu_timed=len(cpus),
    )


def replace_section(document: str, section: str) -> str:
    """
    Put ``section`` between the learning markers of ``document``, leaving everything else as it is.

    :param document: the current ``docs/benchmarks.md`` (may be empty)
    :param section: the new content, markers excluded
    :return: the new document
    """
    return sections.replace_section(document, "learning", section)


def _fmt(value: float, digits: int = 1) -> str:
    return "—" if not math.isfinite(value) else f"{value:.{digits}f}"


def _fmt_steps(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{value / 1000:.0f}k"


def plot_env(env_id: str, per_algo: dict[str, list[RunResult]], threshold: float | None, path: Path) -> None:
    """
    Return against steps, one line per algorithm (mean over seeds), shaded between the lowest and
    the highest seed.

    :param env_id: title
    :param per_algo: ``{algo: runs}``
    :param threshold: drawn as a dashed line when given
    :param path: PNG destination
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for algo in sorted(per_algo, key=_algo_order):
        runs = per_algo[algo]
        n_points = min(len(r.curve) for r in runs)
        steps = np.array([runs[0].curve[i].step for i in range(n_points)])
        returns = np.array([[r.curve[i].mean_return for i in range(n_points)] for r in runs])
        (line,) = ax.plot(steps, returns.mean(axis=0), label=f"{ALGO_LABELS.get(algo, algo)} ({len(runs)} seeds)")
        ax.fill_between(steps, returns.min(axis=0), returns.max(axis=0), alpha=0.2, color=line.get_color())
    low, high = ax.get_ylim()
    if threshold is not None and threshold <= high + 0.25 * (high - low):  # not when far above every curve
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"solved ({threshold:g})")
    ax.set_title(f"{env_id}: deterministic evaluation return")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _algo_order(algo: str) -> int:
    order = list(ALGO_LABELS)
    return order.index(algo) if algo in order else len(order)


def render_section(
    table: dict[str, dict[str, list[RunResult]]],
    env_order: Sequence[str],
    thresholds: dict[str, float | None],
    plot_names: dict[str, str],
    preamble: str,
) -> str:
    """
    The Markdown of the "Learning quality" section.

    :param table: ``{env_id: {algo: runs}}`` from :func:`load_results`
    :param env_order: envs in the order of the report (others follow, sorted)
    :param thresholds: solved threshold per env (``None`` where there is none)
    :param plot_names: file name of each env's plot, relative to the document
    :param preamble: text placed after the title (method, caveats, findings)
    :return: the section, without markers
    """
    lines = ["## Learning quality", "", preamble.strip(), ""]
    envs = [e for e in env_order if e in table] + sorted(e for e in table if e not in env_order)
    missing = [e for e in env_order if e not in table]
    for env_id in envs:
        threshold = thresholds.get(env_id)
        lines += [f"### {env_id}", ""]
        any_run = next(iter(table[env_id].values()))[0]
        budget = any_run.meta.get("total_timesteps")
        solved_text = f"solved threshold {threshold:g}" if threshold is not None else "no solved threshold"
        lines.append(f"Budget {budget:,} steps; {solved_text}.".replace(",", " ") if budget else f"{solved_text}.")
        lines.append("")
        lines.append(
            "| algorithm | seeds | final return mean ± std | IQM | per seed | last 3 evaluations | seeds solved (final) "
            "| steps to threshold (median) | train wall-clock to threshold (median) | train wall-clock per run "
            "| train CPU time per run |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for algo in sorted(table[env_id], key=_algo_order):
            s = summarize(table[env_id][algo], threshold)
            per_seed = " / ".join(_fmt(f, 0) for f in s.finals)
            solved = f"{s.n_solved}/{s.n_seeds}" if threshold is not None else "—"
            wall_thr = "—" if not math.isfinite(s.wall_to_threshold_s) else f"{s.wall_to_threshold_s:.0f} s"
            cpu = "—" if not s.n_cpu_timed else f"{s.train_cpu_mean_s:.0f} s"
            if 0 < s.n_cpu_timed < s.n_seeds:
                cpu += f" ({s.n_cpu_timed} of {s.n_seeds} runs)"
            lines.append(
                f"| {ALGO_LABELS.get(algo, algo)} | {s.n_seeds} | {_fmt(s.final_mean)} ± {_fmt(s.final_std)} "
                f"| {_fmt(s.final_iqm)} | {per_seed} | {_fmt(s.late_mean)} | {solved} "
                f"| {_fmt_steps(s.steps_to_threshold)} | {wall_thr} "
                f"| {s.train_wall_mean_s:.0f} ± {s.train_wall_std_s:.0f} s | {cpu} |"
            )
        lines.append("")
        lines += diagnostics_table(table[env_id])
        if env_id in plot_names:
            lines += [f"![{env_id} learning curves]({plot_names[env_id]})", ""]
    if missing:
        lines += ["### Not measured yet", "", ", ".join(missing) + ": no finished run in the results folder yet.", ""]
    return "\n".join(lines)


def _diagnostic(runs: Sequence[RunResult], key: str, which: str = "mean") -> float:
    """Mean over seeds of one logged training diagnostic (``nan`` where the algorithm does not log it)."""
    values = [r.meta.get("diagnostics", {}).get(key, {}).get(which) for r in runs]
    present = [float(v) for v in values if v is not None]
    return float(np.mean(present)) if present else math.nan


def diagnostics_table(per_algo: dict[str, list[RunResult]]) -> list[str]:
    """
    Training diagnostics per algorithm, averaged over updates then seeds: line-search acceptance and
    KL per update (the trust-region methods), critic's explained variance at the last update, and the
    wall-clock of the evaluations (excluded from the training wall-clock).

    :param per_algo: ``{algo: runs}``
    :return: Markdown lines (a table and a blank line)
    """
    lines = [
        "| algorithm | line-search acceptance | KL per update (per action dimension on Box spaces, as sb3-contrib) "
        "| explained variance (last update) "
        "| evaluation wall-clock |",
        "|---|---|---|---|---|",
    ]
    for algo in sorted(per_algo, key=_algo_order):
        runs = per_algo[algo]
        accepted = _diagnostic(runs, "train/is_line_search_success")
        kl = _diagnostic(runs, "train/kl_divergence_loss")
        if not math.isfinite(kl):
            kl = _diagnostic(runs, "train/approx_kl")
        ev = _diagnostic(runs, "train/explained_variance", "last")
        eval_wall = float(np.mean([r.meta.get("eval_wall_s", math.nan) for r in runs]))
        acceptance = "—" if not math.isfinite(accepted) else f"{100 * accepted:.0f} %"
        lines.append(
            f"| {ALGO_LABELS.get(algo, algo)} | {acceptance} | {_fmt(kl, 4)} | {_fmt(ev, 2)} | {_fmt(eval_wall, 0)} s |"
        )
    lines.append("")
    return lines
