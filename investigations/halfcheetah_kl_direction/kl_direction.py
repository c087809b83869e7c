"""
Does the line search's KL direction decide when this TRPO backtracks on HalfCheetah-v5 (``target_kl`` 0.04)?

This TRPO's line search accepts a trial step if ``KL(π_old ‖ π_new) <= δ`` (the TRPO paper's direction) and the
surrogate improves; sb3-contrib's if ``KL(π_new ‖ π_old) < δ`` and the surrogate improves. The two KLs share their
Hessian at ``π_old``, so the proposed step is the same; they differ at the trial steps. On HalfCheetah this TRPO
backtracks on about half the seeds (campaign runs: 1.002-1.12 trial steps per update), which sb3-contrib's seed 0
trajectory never makes either TRPO do (the lock-step run).

This script re-runs one campaign run of this TRPO exactly (``benchmarks.learning.run_one``, the campaign's protocol and
seed), recording at every trial step of every line search the surrogate, ``KL(π_old ‖ π_new)`` (what decides) and
``KL(π_new ‖ π_old)`` (computed beside it; training is unchanged, which the final return equal to the campaign's
shows). It then counts the updates where this TRPO backtracked although sb3-contrib's test would have accepted the
full step, and the converse.

Usage: ``python investigations/halfcheetah_kl_direction/kl_direction.py --seed 16 --out trials_seed16.jsonl``
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import sb3_trpo_plugin.trpo.policy_step as policy_step
from benchmarks.learning import run_one
from sb3_trpo_plugin.common.distributions import kl_per_state

LINE_SEARCHES: list[dict[str, Any]] = []
_REVERSE: list[float] = []


def recording_kl_per_state(old: Any, new: Any) -> Any:
    """``KL(old ‖ new)`` as the line search computes it; ``KL(new ‖ old)``'s mean recorded beside it."""
    _REVERSE.append(float(kl_per_state(new, old).mean()))
    return kl_per_state(old, new)


def recording_line_search(evaluate: Any, old_objective: float, max_kl: float, *args: Any, **kwargs: Any) -> Any:
    """The package's line search, each trial's surrogate and two KLs recorded."""
    trials: list[dict[str, float]] = []

    def recorded(fraction: float) -> tuple[float, float]:
        _REVERSE.clear()
        objective, kl = evaluate(fraction)
        reverse = _REVERSE[-1] if _REVERSE else float("nan")
        trials.append({"fraction": fraction, "objective": objective, "kl_old_new": kl, "kl_new_old": reverse})
        return objective, kl

    result = ORIGINAL_LINE_SEARCH(recorded, old_objective, max_kl, *args, **kwargs)
    LINE_SEARCHES.append(
        {"old_objective": old_objective, "max_kl": max_kl, "accepted_fraction": result.step_fraction, "trials": trials}
    )
    return result


ORIGINAL_LINE_SEARCH = policy_step.backtracking_line_search


def summarise(line_searches: list[dict[str, Any]]) -> dict[str, Any]:
    """Updates where the two tests disagree on the full step."""
    backtracked = [s for s in line_searches if s["accepted_fraction"] < 1.0]

    def sb3_contrib_accepts(search: dict[str, Any], trial: dict[str, float]) -> bool:
        return trial["kl_new_old"] < search["max_kl"] and trial["objective"] > search["old_objective"]

    def ours_accepts(search: dict[str, Any], trial: dict[str, float]) -> bool:
        return trial["kl_old_new"] <= search["max_kl"] and trial["objective"] > search["old_objective"]

    full = [(s, s["trials"][0]) for s in line_searches]
    return {
        "updates": len(line_searches),
        "backtracked": len(backtracked),
        "full step: ours rejects, sb3-contrib's test accepts": sum(
            not ours_accepts(s, t) and sb3_contrib_accepts(s, t) for s, t in full
        ),
        "full step: ours accepts, sb3-contrib's test rejects": sum(
            ours_accepts(s, t) and not sb3_contrib_accepts(s, t) for s, t in full
        ),
        "full step rejected for the surrogate (both tests)": sum(t["objective"] <= s["old_objective"] for s, t in full),
        "first backtracking update": next((i + 1 for i, s in enumerate(line_searches) if s["accepted_fraction"] < 1.0), None),
        "median KL(new||old) / KL(old||new) at the full step": sorted(
            t["kl_new_old"] / t["kl_old_new"] for _, t in full if t["kl_old_new"] > 0
        )[len(full) // 2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("trials.jsonl"))
    args = parser.parse_args()
    policy_step.kl_per_state = recording_kl_per_state  # type: ignore[assignment]
    policy_step.backtracking_line_search = recording_line_search  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as results:
        path = run_one("HalfCheetah-v5", "trpo", args.seed, Path(results), timesteps=1_000_000)
        final_return = json.loads(path.read_text())["final_return"]
    with open(args.out, "w") as f:
        for search in LINE_SEARCHES:
            f.write(json.dumps(search) + "\n")
    print(json.dumps({"seed": args.seed, "final_return": final_return, **summarise(LINE_SEARCHES)}, indent=2))


if __name__ == "__main__":
    main()
