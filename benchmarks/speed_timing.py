"""
What the speed benchmarks share: alternating rounds, per-round ratios, timed ``learn()`` calls, and the result files.

Each speed benchmark (``speed_train``, ``speed_recurrent_train``, ``speed_variants``, ``speed_end_to_end``) measures and
writes one JSON file per comparison into ``benchmarks/results/speed/``; ``python -m benchmarks.speed_report`` turns
every such file into its section of ``docs/benchmarks.md``. A result file holds what the table needs: the measured
values, what was measured (configurations, labels), the command, the machine and the date.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.launch import ROOT

#: Where the speed benchmarks write their results, one JSON file per comparison.
RESULTS = ROOT / "benchmarks" / "results" / "speed"


@dataclass(frozen=True)
class LearnTiming:
    """
    One timed ``learn()``.

    :param wall_s: wall time of the whole call
    :param rollout_s: time inside ``collect_rollouts``
    :param update_s: time inside ``train``
    :param timesteps: env steps done (all envs together)
    """

    wall_s: float
    rollout_s: float
    update_s: float
    timesteps: int


T = TypeVar("T")


def rotated(items: Sequence[T], round_index: int) -> list[T]:
    """
    ``items`` starting at position ``round_index`` (cyclically): the order of one round, so that no implementation
    always runs first or right after the same other one.

    :param items: the order of round 0
    :param round_index: the round
    """
    shift = round_index % len(items)
    return [*items[shift:], *items[:shift]]


def microseconds_per_step(seconds: float, timesteps: int) -> float:
    """
    Microseconds per env step.

    :param seconds: total time
    :param timesteps: env steps done in it (all envs together)
    """
    if timesteps <= 0:
        raise ValueError(f"no steps to divide by ({timesteps})")
    return seconds / timesteps * 1e6


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """
    The median over rounds of the per-round ratios (values of one round were measured seconds apart, on one machine state).

    :param numerators: one value per round
    :param denominators: one value per round, in the same order
    """
    if not numerators:
        raise ValueError("no rounds")
    return statistics.median(n / d for n, d in zip(numerators, denominators, strict=True))


def instrument(model: Any) -> dict[str, float]:
    """
    Wrap the instance's ``collect_rollouts`` and ``train`` with timers (instance attributes shadow the methods;
    the class and the library stay untouched).

    :param model: the model to time
    :return: the seconds spent in each so far, ``{"rollout": ..., "update": ...}``, updated in place
    """
    totals = {"rollout": 0.0, "update": 0.0}

    def timed(method: Callable[..., Any], key: str) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                totals[key] += time.perf_counter() - start

        return wrapper

    model.collect_rollouts = timed(model.collect_rollouts, "rollout")
    model.train = timed(model.train, "update")
    return totals


def timed_learn(model: Any, timesteps: int) -> LearnTiming:
    """
    ``model.learn(timesteps)`` with its rollout and update timed apart (:func:`instrument`); its env is closed after.

    :param model: a fresh model on fresh envs
    :param timesteps: the budget
    """
    totals = instrument(model)
    gc.collect()  # the previous run's garbage is not this run's time
    start = time.perf_counter()
    model.learn(timesteps)
    wall = time.perf_counter() - start
    assert model.env is not None
    model.env.close()
    return LearnTiming(wall, totals["rollout"], totals["update"], model.num_timesteps)


def machine() -> str:
    """The machine and the versions, in words (torch's thread count is the benchmark's own setting)."""
    import sb3_contrib
    import stable_baselines3
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} thread, set by the benchmark), sb3-contrib {sb3_contrib.__version__}, "
        f"SB3 {stable_baselines3.__version__}, Python {platform.python_version()}"
    )


def run_facts() -> dict[str, str]:
    """What an investigation's result file says of its run: the command as run, the machine, the load, the date."""
    return {
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
        "load_average": "/".join(f"{v:.1f}" for v in os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def command_line(module: str) -> str:
    """This process's command line as it reads in the docs: ``python -m <module> <arguments>``."""
    return " ".join(["python", "-m", module, *sys.argv[1:]])


def write_result(path: Path, benchmark: str, command: str, results: Mapping[str, Any], **run: str) -> None:
    """
    Write one comparison's result file, which ``benchmarks.speed_report`` renders.

    :param path: the file (its folder is created)
    :param benchmark: which renderer draws it (``train``, ``recurrent_train``, ``variant``, ``end_to_end``)
    :param command: the command line, as run
    :param results: the measured values and what they are of
    :param run: more facts of the run, e.g. ``load_average``
    """
    record = {
        "benchmark": benchmark,
        "command": command,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **run,
        "results": results,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}", flush=True)
