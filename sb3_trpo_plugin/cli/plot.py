"""
``sb3-trpo plot``: learning curves of one or several runs, against environment steps and against wall-clock time.

Runs are read from their ``Monitor`` files with SB3's ``load_results``/``ts2xy``, so any SB3 run with monitor files
can be drawn (``sb3-trpo train``, rl-zoo3, or a script using ``make_vec_env(monitor_dir=...)``). Runs of the same
algorithm on the same environment are seeds of one experiment: they are drawn as one line, their mean, with a band
of one standard deviation.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sb3_trpo_plugin.cli.arguments import CommandError, positive_int
from sb3_trpo_plugin.cli.run_folder import RunFolder

# "ppo_seed3", "TRPO-s1", "CartPole-v1_2" → "ppo", "TRPO", "CartPole-v1": the seed or run number is not the algorithm.
_RUN_SUFFIX = re.compile(r"[_-](?:seed|s|run)?\d+$", re.IGNORECASE)
N_GRID_POINTS = 200


@dataclass(frozen=True)
class Curve:
    """
    The episodes of one run.

    :param algo: the algorithm's name, the label of its line
    :param env: the environment (``None`` when unknown)
    :param steps: environment steps at the end of each episode
    :param seconds: wall-clock seconds at the end of each episode
    :param returns: the episode returns
    :param path: the run's folder
    """

    algo: str
    env: str | None
    steps: np.ndarray
    seconds: np.ndarray
    returns: np.ndarray
    path: Path


@dataclass(frozen=True)
class MeanCurve:
    """
    Several seeds on a common x grid.

    :param x: the grid
    :param mean: mean over seeds of the smoothed returns
    :param std: their standard deviation (zero for one seed)
    :param n_runs: number of seeds
    """

    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n_runs: int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """
    :param parser: the ``plot`` sub-command's parser
    """
    parser.add_argument(
        "folders",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="run folders, or folders holding several runs; every folder below with *monitor.csv files is a run",
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("curves.png"), help="image to write (default: curves.png)")
    parser.add_argument("--window", type=positive_int, default=10, help="moving average over this many episodes (default: 10)")
    parser.add_argument("--title", default=None, help="title of the figure")


def run_label(run_path: Path) -> tuple[str, str | None]:
    """
    The algorithm and environment of a run: from ``run.json`` (``sb3-trpo train``), from rl-zoo3's layout
    ``<algo>/<env>_<run id>/<env>/``, or else the folder's name without a trailing seed or run number.

    :param run_path: the run's folder
    :return: algorithm and environment (``None`` when unknown)
    """
    run = RunFolder(run_path)
    if run.config.exists():
        config = run.read_config()
        return str(config["algo"]), str(config["env"])
    zoo_env, separator, run_id = run_path.name.rpartition("_")
    if separator and run_id.isdigit() and (run_path / zoo_env).is_dir():
        return run_path.parent.name.upper(), zoo_env
    return _RUN_SUFFIX.sub("", run_path.name) or run_path.name, None


def find_monitor_folders(folders: list[Path]) -> list[Path]:
    """
    :param folders: folders given on the command line
    :return: every folder at or below them that holds ``*monitor.csv`` files, sorted
    :raises CommandError: for a missing folder, or one with no monitor file below it
    """
    found: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder")
        below = sorted({path.parent for path in folder.rglob("*monitor.csv")})
        if not below:
            raise CommandError(f"no monitor files (*monitor.csv) in or below {folder}")
        found.extend(below)
    return sorted(set(found))


def load_curves(folders: list[Path]) -> list[Curve]:
    """
    Read the episodes of every run in or below ``folders`` with SB3's ``load_results``.

    :param folders: run folders or folders of runs
    :return: one curve per run that finished at least one episode
    """
    from stable_baselines3.common.monitor import load_results
    from stable_baselines3.common.results_plotter import X_TIMESTEPS, X_WALLTIME, ts2xy

    curves = []
    for monitor_folder in find_monitor_folders(folders):
        # sb3-trpo train writes its monitor files into <run>/monitor; rl-zoo3 and most scripts into the run folder.
        run_path = monitor_folder.parent if monitor_folder.name == "monitor" else monitor_folder
        results = load_results(str(monitor_folder))
        if len(results) == 0:
            print(f"skipping {run_path}: no episode finished")
            continue
        steps, returns = ts2xy(results, X_TIMESTEPS)
        hours, _ = ts2xy(results, X_WALLTIME)
        algo, env = run_label(run_path)
        curves.append(
            Curve(algo, env, np.asarray(steps, float), np.asarray(hours, float) * 3600, np.asarray(returns, float), run_path)
        )
    if not curves:
        raise CommandError("no run has a finished episode yet")
    return curves


def smooth(returns: np.ndarray, window: int) -> np.ndarray:
    """
    Trailing moving average; the first episodes average over the episodes so far.

    :param returns: episode returns
    :param window: number of episodes averaged
    :return: smoothed returns, as many as ``returns``
    """
    cumulative = np.cumsum(np.insert(returns, 0, 0.0))
    counts = np.minimum(np.arange(1, len(returns) + 1), window)
    ends = np.arange(1, len(returns) + 1)
    return (cumulative[ends] - cumulative[ends - counts]) / counts


def mean_over_seeds(xs: list[np.ndarray], ys: list[np.ndarray], n_points: int = N_GRID_POINTS) -> MeanCurve:
    """
    Interpolate each run onto a common grid, then take mean and standard deviation across the runs at each point.

    The grid spans all runs; a point outside a run's own range (before its first or after its last episode) is
    averaged over the other runs only.

    :param xs: per run, increasing x (steps or seconds) of each episode
    :param ys: per run, the (smoothed) returns
    :param n_points: grid size
    :return: the mean curve
    """
    start = min(float(x[0]) for x in xs)
    stop = max(float(x[-1]) for x in xs)
    grid = np.linspace(start, stop, n_points) if stop > start else np.array([stop])
    values = np.stack([np.interp(grid, x, y, left=np.nan, right=np.nan) for x, y in zip(xs, ys, strict=True)])
    covered = ~np.isnan(values)
    # Mean and (population) standard deviation over the runs covering each point: nan where none does.
    n_covering = np.where(covered.any(axis=0), covered.sum(axis=0), np.nan)
    mean = np.where(covered, values, 0.0).sum(axis=0) / n_covering
    std = np.sqrt(np.where(covered, (values - mean) ** 2, 0.0).sum(axis=0) / n_covering)
    return MeanCurve(grid, mean, std, len(xs))


def plot_curves(curves: list[Curve], output: Path, window: int = 10, title: str | None = None) -> Path:
    """
    Draw one row per environment, with return against steps (left) and against wall-clock time (right), and one line
    per algorithm: the mean over its seeds and a band of one standard deviation.

    :param curves: the runs
    :param output: the image to write (its suffix picks the format)
    :param window: moving average over this many episodes
    :param title: title of the figure
    :return: ``output``
    """
    from matplotlib.figure import Figure

    by_env: dict[str | None, dict[str, list[Curve]]] = defaultdict(lambda: defaultdict(list))
    for curve in curves:
        by_env[curve.env][curve.algo].append(curve)

    figure = Figure(figsize=(11, 3.6 * len(by_env)), layout="constrained")
    axes = figure.subplots(len(by_env), 2, squeeze=False)
    for row, (env, by_algo) in zip(axes, sorted(by_env.items(), key=lambda item: str(item[0])), strict=True):
        for algo, runs in sorted(by_algo.items()):
            smoothed = [smooth(run.returns, window) for run in runs]
            label = f"{algo} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
            for axis, xs, scale in ((row[0], [run.steps for run in runs], 1.0), (row[1], [run.seconds for run in runs], 60.0)):
                mean = mean_over_seeds(xs, smoothed)
                (line,) = axis.plot(mean.x / scale, mean.mean, label=label)
                if mean.n_runs > 1:
                    axis.fill_between(
                        mean.x / scale, mean.mean - mean.std, mean.mean + mean.std, color=line.get_color(), alpha=0.2
                    )
        env_name = env or "unknown environment"
        row[0].set(xlabel="environment steps", ylabel=f"episode return ({window}-episode mean)", title=env_name)
        row[1].set(xlabel="wall-clock time (minutes)", ylabel=f"episode return ({window}-episode mean)", title=env_name)
        for axis in row:
            axis.grid(alpha=0.3)
            axis.legend(loc="best")
    if title:
        figure.suptitle(title)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100)
    return output


def plot(args: argparse.Namespace) -> Path:
    """
    Run the parsed ``plot`` command line.

    :param args: the parsed command line
    :return: the image written
    :raises CommandError: when matplotlib or pandas is missing, or when no run is found
    """
    missing = [name for name in ("matplotlib", "pandas") if not _importable(name)]
    if missing:
        raise CommandError(f"sb3-trpo plot needs {' and '.join(missing)}: pip install {' '.join(missing)}")
    curves = load_curves(args.folders)
    output = plot_curves(curves, args.output, args.window, args.title)
    print(f"{len(curves)} run{'s' if len(curves) > 1 else ''} drawn in {output}")
    return output


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
