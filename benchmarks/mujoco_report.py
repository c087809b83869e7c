"""
Report of the MuJoCo learning campaign (``benchmarks/mujoco_campaign.sh``): this TRPO against sb3-contrib's at 1M
steps, the Ant-v5 comparison over ten seeds with its statistical tests, and the ablations of this TRPO's fast paths.

Pure functions over the saved runs (the same files as ``learning.py`` writes) plus the writer of the "MuJoCo at 1M
steps" section of ``docs/benchmarks.md`` and its plots. The tests are exact: every split of the pooled returns into
two groups of the observed sizes is enumerated (184 756 splits for ten seeds against ten), so the p-values are not
approximations.

Usage::

    python -m benchmarks.mujoco_report                      # docs/benchmarks.md section + docs/mujoco_<env>.png
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import sections
from benchmarks.learning_report import ALGO_LABELS, RunResult, load_results

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "mujoco_1m"
ENV_ORDER = ("Ant-v5", "Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Swimmer-v5", "Humanoid-v5")
OURS, PEER = "trpo", "sb3_contrib_trpo"
#: This TRPO with the package's own preset for the env (``learning.PRESET_ALGO``): its rows follow this TRPO's.
PRESET = "trpo_preset"

#: Published TRPO returns at 1M steps, with their source, environment version and protocol.
PUBLISHED: dict[str, list[tuple[str, str]]] = {
    "Ant-v5": [
        ("3554 ± 591", "sb3-contrib docs: Ant-v3, 3 seeds"),
        ("4982 ± 664", "rl-zoo3 benchmark: Ant-v3, one agent"),
        ("2867", "Tianshou: Ant-v3"),
    ],
    "Hopper-v5": [
        ("3372 ± 215", "sb3-contrib docs: Hopper-v3, 3 seeds"),
        ("3618 ± 357", "rl-zoo3 benchmark: Hopper-v3, one agent"),
    ],
    "HalfCheetah-v5": [
        ("1803 ± 46", "sb3-contrib docs: HalfCheetah-v3, 3 seeds"),
        ("1785 ± 69", "rl-zoo3 benchmark: HalfCheetah-v3, one agent"),
    ],
    "Walker2d-v5": [
        ("4502 ± 234", "sb3-contrib docs: Walker2d-v3, 3 seeds"),
        ("4933 ± 1453", "rl-zoo3 benchmark: Walker2d-v3, one agent"),
    ],
    "Swimmer-v5": [
        ("359 ± 2", "sb3-contrib docs: Swimmer-v3, 3 seeds"),
        ("366 ± 2", "rl-zoo3 benchmark: Swimmer-v3, one agent"),
    ],
    # Neither sb3-contrib's docs nor rl-zoo3's benchmark has TRPO on Humanoid; Tianshou's metric is the best mean
    # evaluation over training, not the final one.
    "Humanoid-v5": [("810 ± 126", "Tianshou: Humanoid-v3, 10 seeds, the best mean over training, ± one s.d.")],
}


#: The most splits a test enumerates; beyond, as many random ones (:func:`compare`).
RANDOM_SPLITS = 1_000_000


@dataclass(frozen=True)
class Comparison:
    """
    Two groups of final returns compared: the difference of their means with exact two-sided tests.

    :param n_a: size of the first group
    :param n_b: size of the second group
    :param mean_difference: mean of the first group minus mean of the second
    :param permutation_p: exact two-sided p-value of the difference of means (every split of the pooled values)
    :param mann_whitney_u: the Mann-Whitney U of the first group (pairs where it is larger, ties counting half)
    :param mann_whitney_p: exact two-sided p-value of U
    :param exact: whether both p-values enumerate every split (``False``: from random splits, see :func:`compare`)
    """

    n_a: int
    n_b: int
    mean_difference: float
    permutation_p: float
    mann_whitney_u: float
    mann_whitney_p: float
    exact: bool = True


def compare(a: Sequence[float], b: Sequence[float], max_splits: int = RANDOM_SPLITS) -> Comparison:
    """
    Permutation test of the difference of means and Mann-Whitney test, both two-sided.

    Each enumerates every way of splitting the pooled values into groups of ``len(a)`` and ``len(b)``; the p-value is
    the fraction of splits whose statistic is at least as far from its null centre as the observed one. Where there are
    more than ``max_splits`` ways (twenty seeds against twenty have 1.4e11), ``max_splits`` random splits (a fixed
    generator) and the observed one stand for them: ``p = (k + 1) / (max_splits + 1)`` for ``k`` random splits as
    extreme, and :attr:`Comparison.exact` is ``False``.

    :param a: one value per seed of the first algorithm
    :param b: one value per seed of the second
    :param max_splits: the most splits enumerated
    :return: the comparison
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    pooled = np.concatenate([x, y])
    n, total = len(x), float(pooled.sum())
    ranks = _midranks(pooled)
    observed_difference = x.mean() - y.mean()
    observed_u = ranks[:n].sum() - n * (n + 1) / 2
    centre_u = n * len(y) / 2
    tolerance = 1e-9 * max(1.0, float(np.abs(pooled).max()))
    count = math.comb(len(pooled), n)
    exact = count <= max_splits
    extreme_differences = extreme_us = 0
    for splits in _split_chunks(len(pooled), n, exact, max_splits):
        sums = pooled[splits].sum(axis=1)
        differences = sums / n - (total - sums) / len(y)
        us = ranks[splits].sum(axis=1) - n * (n + 1) / 2
        extreme_differences += int(np.sum(np.abs(differences) >= abs(observed_difference) - tolerance))
        extreme_us += int(np.sum(np.abs(us - centre_u) >= abs(observed_u - centre_u) - 1e-9))
    if exact:
        permutation_p, mann_whitney_p = extreme_differences / count, extreme_us / count
    else:
        permutation_p, mann_whitney_p = (extreme_differences + 1) / (max_splits + 1), (extreme_us + 1) / (max_splits + 1)
    return Comparison(n, len(y), float(observed_difference), permutation_p, float(observed_u), mann_whitney_p, exact)


def _split_chunks(size: int, n: int, exact: bool, max_splits: int, chunk: int = 100_000) -> Iterator[np.ndarray]:
    """The first groups of the splits, as index arrays of ``chunk`` rows at most: every one, or ``max_splits`` random."""
    if exact:
        combinations = itertools.combinations(range(size), n)
        while rows := list(itertools.islice(combinations, chunk)):
            yield np.array(rows)
        return
    generator = np.random.default_rng(0)
    for start in range(0, max_splits, chunk):
        count = min(chunk, max_splits - start)
        yield np.argsort(generator.random((count, size)), axis=1)[:, :n]


def _midranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean (sample standard deviation over ``sqrt(n)``; ``nan`` below two values)."""
    x = np.asarray(values, dtype=float)
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan


def mean_curve(runs: Sequence[RunResult]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    The learning curve averaged over seeds, at the evaluations every run has.

    :param runs: one run per seed
    :return: steps, mean training wall-clock (s) and mean return at each evaluation
    """
    n_points = min(len(r.curve) for r in runs)
    steps = np.array([runs[0].curve[i].step for i in range(n_points)], dtype=float)
    walls = np.array([[r.curve[i].train_wall_s for i in range(n_points)] for r in runs]).mean(axis=0)
    returns = np.array([[r.curve[i].mean_return for i in range(n_points)] for r in runs]).mean(axis=0)
    return steps, walls, returns


def first_reaching_mean(runs: Sequence[RunResult], target: float) -> tuple[float, float] | None:
    """
    Where the seed-averaged curve first reaches ``target`` (after training started).

    :param runs: one run per seed
    :param target: a return, e.g. the other algorithm's final mean
    :return: steps and mean training wall-clock (s) at that evaluation, or ``None`` if never
    """
    steps, walls, returns = mean_curve(runs)
    for step, wall, value in zip(steps, walls, returns, strict=True):
        if step > 0 and value >= target:
            return float(step), float(wall)
    return None


def _fmt(value: float, digits: int = 0) -> str:
    return "—" if not math.isfinite(value) else f"{value:.{digits}f}"


def campaign_table(table: dict[str, dict[str, list[RunResult]]]) -> list[str]:
    """
    The 1M table: per env and algorithm, final return mean ± standard error over seeds, wall-clock and CPU time per
    run, and where this TRPO's mean curve reaches sb3-contrib's final mean.
    """
    lines = [
        "| env | algorithm | seeds | final return mean ± s.e. | per seed | train wall-clock per run | train CPU per run "
        "| this TRPO reaches sb3-contrib's final mean at | published TRPO (1M steps) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for env_id in [e for e in ENV_ORDER if e in table]:
        per_algo = table[env_id]
        published = "; ".join(f"{value} ({source})" for value, source in PUBLISHED.get(env_id, [])) or "—"
        for algo in [a for a in (OURS, PRESET, PEER) if a in per_algo]:
            runs = per_algo[algo]
            finals = [r.final_return for r in runs]
            walls = [r.train_wall_s for r in runs]
            cpus = [float(r.meta.get("train_cpu_s", math.nan)) for r in runs]
            reach = "—"
            if algo == OURS and PEER in per_algo:
                target = float(np.mean([r.final_return for r in per_algo[PEER]]))
                hit = first_reaching_mean(runs, target)
                peer_wall = float(np.mean([r.train_wall_s for r in per_algo[PEER]]))
                reach = (
                    f"never (target {target:.0f})"
                    if hit is None
                    else f"{hit[0] / 1e6:.1f}M steps, {hit[1]:.0f} s (sb3-contrib's run: {peer_wall:.0f} s)"
                )
            lines.append(
                f"| {env_id} | {ALGO_LABELS.get(algo, algo)} | {len(runs)} | {np.mean(finals):.0f} ± "
                f"{_fmt(standard_error(finals))} | {' / '.join(f'{f:.0f}' for f in finals)} | {np.mean(walls):.0f} s "
                f"| {_fmt(float(np.nanmean(cpus)))} s | {reach} | {published if algo == OURS else ''} |"
            )
    return [*lines, ""]


def ablations_table(table: dict[str, dict[str, list[RunResult]]], ablations: dict[str, str]) -> list[str]:
    """
    Ant-v5's ablations of the fast paths beside this TRPO: final returns per seed and the training CPU time per run
    (what each fast path saves). Empty when no ablation has finished runs.

    :param table: the runs, per env and algorithm
    :param ablations: algorithm name -> what it computes instead of the fast path (entries that are not ablations, such
        as the preset, are ignored)
    """
    per_algo = table.get("Ant-v5", {})
    present = [a for a in ablations if a in per_algo and a not in (OURS, PRESET, PEER)]
    if not present:
        return []
    lines = [
        "| run | computed with | seeds | final return mean ± s.e. | per seed | train CPU per run |",
        "|---|---|---|---|---|---|",
    ]
    rows = [(a, "the fast paths") for a in (OURS, PRESET) if a in per_algo]
    for algo, switched_off in rows + [(a, ablations[a]) for a in present]:
        runs = per_algo[algo]
        finals = [r.final_return for r in runs]
        cpus = [float(r.meta.get("train_cpu_s", math.nan)) for r in runs]
        lines.append(
            f"| {ALGO_LABELS.get(algo, f'`{algo}`')} | {switched_off} | {len(runs)} | {np.mean(finals):.0f} ± "
            f"{_fmt(standard_error(finals))} | {' / '.join(f'{f:.0f}' for f in finals)} | {_fmt(float(np.nanmean(cpus)))} s |"
        )
    return [*lines, ""]


def comparison_lines(name: str, ours: Sequence[float], theirs: Sequence[float]) -> str:
    """One table row: the two groups' means, the difference and both exact tests."""
    c = compare(ours, theirs)
    sampled = "" if c.exact else f" (random splits: {RANDOM_SPLITS:.0e})"
    return (
        f"| {name} | {c.n_a} vs {c.n_b} | {np.mean(ours):.0f} ± {_fmt(standard_error(ours))} | {np.mean(theirs):.0f} ± "
        f"{_fmt(standard_error(theirs))} | {c.mean_difference:+.0f} | {c.permutation_p:.3f}{sampled} | "
        f"{c.mann_whitney_u:.0f} | {c.mann_whitney_p:.3f}{sampled} |"
    )


def tests_table(table: dict[str, dict[str, list[RunResult]]], ablations: dict[str, str]) -> list[str]:
    """
    Exact tests per env (this TRPO against sb3-contrib's), then each ablation of Ant-v5, and this TRPO with the
    package's preset of each env that has runs of it, against this TRPO and against sb3-contrib's.
    """
    lines = [
        "| comparison | seeds | first: mean ± s.e. | second: mean ± s.e. | difference | permutation p | Mann-Whitney U "
        "| Mann-Whitney p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for env_id in [e for e in ENV_ORDER if e in table]:
        per_algo = table[env_id]
        if OURS in per_algo and PEER in per_algo:
            lines.append(
                comparison_lines(
                    f"{env_id}: this TRPO vs sb3-contrib's",
                    [r.final_return for r in per_algo[OURS]],
                    [r.final_return for r in per_algo[PEER]],
                )
            )
    # The ablations run on Ant-v5 only; the package's presets wherever it has one.
    for env_id in [e for e in ENV_ORDER if e in table]:
        per_algo = table[env_id]
        for algo, description in ablations.items():
            if algo not in per_algo or (algo != PRESET and env_id != "Ant-v5"):
                continue
            finals = [r.final_return for r in per_algo[algo]]
            for other in (OURS, PEER):
                if other in per_algo:
                    lines.append(
                        comparison_lines(
                            f"{env_id}: {description} vs {ALGO_LABELS[other]}",
                            finals,
                            [r.final_return for r in per_algo[other]],
                        )
                    )
    return [*lines, ""]


def plot_env(env_id: str, per_algo: dict[str, list[RunResult]], path: Path, title: str) -> None:
    """
    Return against environment steps (left) and against training wall-clock (right): each seed thin, the mean over
    seeds thick.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), dpi=100, sharey=True)
    for algo in sorted(per_algo, key=lambda a: list(ALGO_LABELS).index(a) if a in ALGO_LABELS else 99):
        runs = per_algo[algo]
        steps, walls, returns = mean_curve(runs)
        label = f"{ALGO_LABELS.get(algo, algo)} ({len(runs)} seeds)"
        (line,) = axes[0].plot(steps, returns, linewidth=2, label=label)
        axes[1].plot(walls, returns, linewidth=2, color=line.get_color(), label=label)
        for r in runs:
            axes[0].plot(
                [p.step for p in r.curve], [p.mean_return for p in r.curve], color=line.get_color(), alpha=0.25, lw=0.8
            )
            axes[1].plot(
                [p.train_wall_s for p in r.curve], [p.mean_return for p in r.curve], color=line.get_color(), alpha=0.25, lw=0.8
            )
    axes[0].set_xlabel("environment steps")
    axes[1].set_xlabel("training wall-clock (s, evaluations excluded)")
    axes[0].set_ylabel("deterministic evaluation return")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{env_id}: {title}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_section(
    table: dict[str, dict[str, list[RunResult]]],
    ablations: dict[str, str],
    plot_names: dict[str, str],
    preamble: str,
    ablations_plot: str | None = None,
) -> str:
    """
    The Markdown of the "MuJoCo at 1M steps" section (without its markers).

    :param table: the runs, per env and algorithm
    :param ablations: the compared variants of this TRPO (ablations and the preset), name -> description
    :param plot_names: env -> the path of its plot, relative to the document
    :param preamble: the section's opening text
    :param ablations_plot: the path of the plot of Ant-v5's ablations, relative to the document, if there is one
    """
    lines = ["## MuJoCo at 1M steps", "", preamble.strip(), "", "### Final returns", ""]
    lines += campaign_table(table)
    lines += ["### Exact tests of the final returns", ""]
    lines += tests_table(table, ablations)
    for env_id in [e for e in ENV_ORDER if e in plot_names]:
        lines += [f"![{env_id} learning curves]({plot_names[env_id]})", ""]
    ablation_rows = ablations_table(table, ablations)
    if ablation_rows:
        lines += ["### Ablations of the fast paths on Ant-v5", "", *ablation_rows]
        if ablations_plot is not None:
            lines += [f"![Ant-v5 ablations]({ablations_plot})", ""]
    return "\n".join(lines)


def report(results: Path, doc: Path, plots: Path) -> None:
    """Rewrite the ``mujoco`` section of ``doc`` and the plots from the runs under ``results``."""
    from benchmarks.learning_setup import ABLATIONS, PRESET_ALGO  # imports SB3 and torch: only when a report is written

    assert PRESET_ALGO == PRESET

    table = load_results(results)
    plots.mkdir(parents=True, exist_ok=True)
    plot_names = {}
    for env_id, per_algo in table.items():
        path = plots / f"mujoco_{env_id}.png"
        title = "rl-zoo3's TRPO settings" + (" and the package's preset" if PRESET in per_algo else "")
        plot_env(env_id, {a: runs for a, runs in per_algo.items() if a in (OURS, PRESET, PEER)}, path, title)
        plot_names[env_id] = os.path.relpath(path, doc.parent)
    ablated = {a: runs for a, runs in table.get("Ant-v5", {}).items() if a == OURS or a in ABLATIONS}
    ablations_plot = None
    if len(ablated) > 1:
        path = plots / "mujoco_Ant-v5_ablations.png"
        plot_env("Ant-v5", ablated, path, "this TRPO with one fast path switched off at a time")
        ablations_plot = os.path.relpath(path, doc.parent)
    preamble = (ROOT / "benchmarks" / "mujoco_preamble.md").read_text()
    compared = {**ABLATIONS, PRESET: "this TRPO with the package's preset (seeds its search did not use)"}
    section = render_section(table, compared, plot_names, preamble, ablations_plot)
    sections.write_section("mujoco", section, doc)
    print(f"wrote the mujoco section of {doc} and {len(plot_names) + (ablations_plot is not None)} plots")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--plots", type=Path, default=None, help="folder of the PNGs (default: the doc's folder)")
    args = parser.parse_args(argv)
    report(args.results, args.doc, args.plots or args.doc.parent)


if __name__ == "__main__":
    main()
