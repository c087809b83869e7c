"""
The ``-v5`` preset searches through rl-zoo3's Optuna route (docs/benchmarks.md, "Ant-v5 preset", "Swimmer-v5 preset
search", "Walker2d-v5 preset search", "Hopper-v5 preset search").

``python -m sb3_trpo_plugin.zoo train --algo trpo --env <id> -optimize --trpo-sampler mujoco ...`` with the arguments of
:func:`search_arguments`: one process, one trial at a time, resumable (the study lives in an SQLite file; running again
continues it), stopped by SIGINT after ``--timeout`` seconds (rl-zoo3's ``train`` has no time limit; on SIGINT Optuna
stops and rl-zoo3 writes its report). Each search (:data:`SEARCHES`) starts from a file of ``benchmarks/presets``
(rl-zoo3's settings for the task's ``-v4``) and queues its first trials in the study; the sampler draws eight knobs
around them.

**Ant-v5** (the preset's search): 500k steps per trial, no pruning, the final evaluation (5 episodes) as the objective.
A first attempt at 250k steps (median pruner, 5 evaluations) was stopped after two trials: with rl-zoo3's settings
Ant's returns stay at 0-300 until about 300k steps (benchmarks/results/mujoco_1m, seeds 0-9) and separate only after,
so trials at 250k would rank noise, and a pruner before 300k would prune at random. The first trial is rl-zoo3's own
settings (:data:`MUJOCO_ZOO_POINT`), queued in the study, as the reference at this budget. Trials 1 and 2 were TPE's random
starts; then :data:`ANT_VARIATIONS` were queued (``--queue-variations 1``), one knob of rl-zoo3's settings each, and
:data:`ANT_LATER_VARIATIONS` (``--queue-variations 2``); TPE took the rest of the time.

**Swimmer-v5**: 300k steps per trial. With rl-zoo3's settings, whether a seed ends near 360 or stuck far below (133 to
264 at 1M) shows by 300k steps on all ten seeds of the table (316-356 against 90-193). Ant's search showed that one
trial per setting ranks noise, so each setting of :data:`SWIMMER_POINTS` is queued :data:`SWIMMER_REPEATS` times,
round-robin (a stopped search leaves every setting with as many trials as the others, give or take one).

**Walker2d-v5**: 600k steps per trial, each setting of :data:`WALKER2D_POINTS` queued :data:`WALKER2D_REPEATS` times,
round-robin. At 600k steps rl-zoo3's settings gave 1909-4268 on the table's seeds; a trial is some six minutes, so
this is what about 90 minutes of one core buys.

**Hopper-v5**: 500k steps per trial, each setting of :data:`HOPPER_POINTS` (Walker2d's) queued :data:`HOPPER_REPEATS`
times, round-robin. With rl-zoo3's settings four of the table's five seeds return 2859-3447 at 200k steps, and
evaluations swing between tenths after that; a trial is some three minutes of one core.

rl-zoo3 seeds the global generators, the training environments and the TPE sampler with the tuning seed (1000: neither
the table's seeds 0-9 nor the confirmation seeds 100-104) and builds each trial's model with ``seed=None``: trials of
one setting differ in their initial weights and action noise, drawn in turn from the seeded generators, not in the
environments' seeds.

The search has one core: torch gets one thread (``--num-threads 1``; with two threads beside another process on a
2-core machine, a short Swimmer trial took 88 s instead of 5), and the critic is fitted in the training process
(``TRPO.pipeline_critic = False``), where the critic's worker process would only compete with it; the weights are the
same bit for bit either way (tests/test_critic_pipeline.py).

Usage: ``python -m benchmarks.tune_v5 --env Ant-v5|Swimmer-v5|Walker2d-v5|Hopper-v5 [--out DIR] [--timeout SECONDS]
[--timesteps N]``; then ``--export`` writes the study's trials to ``benchmarks/results/presets/<id>``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The seed of every search (global generators, training environments, TPE sampler).
TUNING_SEED = 1000

#: rl-zoo3's MuJoCo block (its Ant-v4, Hopper-v4, Walker2d-v4 entries) as a point of the ``mujoco`` sampler's space.
MUJOCO_ZOO_POINT: dict[str, Any] = dict(
    n_steps=1024, batch_size=128, gamma=0.99, gae_lambda=0.95, net_arch="small", target_kl=0.01, learning_rate=1e-3
) | {"n_critic_updates": 20}


def one_knob_settings(point: dict[str, Any], changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``point``, then ``point`` with each change of ``changes`` (one knob each)."""
    return [point, *(point | change for change in changes)]


#: Variations of rl-zoo3's settings, one knob each, queued while the Ant search ran (``--queue-variations 1``): at about
#: seven minutes a trial on a shared core, the search affords some seven trials, too few for TPE to learn from random
#: starts in eight dimensions, so the rest of the budget went to the knobs most likely to matter on Ant: a larger
#: trust region (the slow seeds of rl-zoo3's settings were still climbing at 1M steps) and a longer GAE horizon.
ANT_VARIATIONS: list[dict[str, Any]] = one_knob_settings(
    MUJOCO_ZOO_POINT, [{"target_kl": 0.02}, {"target_kl": 0.03}, {"gae_lambda": 0.98}]
)[1:]
#: Queued after ``target_kl=0.02`` gave 31 at 500k steps (rl-zoo3's settings: 1966): the ``target_kl=0.03`` trial was
#: stopped (SIGINT; it shows as failed) and the wider network queued in its place (``--queue-variations 2``).
ANT_LATER_VARIATIONS: list[dict[str, Any]] = [MUJOCO_ZOO_POINT | {"net_arch": "medium"}]

#: The Swimmer search's settings: rl-zoo3's (its MuJoCo block with ``gamma`` 0.9999), then one knob of it each, those
#: that plausibly decide whether a seed escapes the stuck gait: larger batches (less noisy steps), a larger trust
#: region, a longer GAE horizon, a wider network, shorter rollouts (twice the updates).
SWIMMER_POINTS = one_knob_settings(
    MUJOCO_ZOO_POINT | {"gamma": 0.9999},
    [{"n_steps": 2048}, {"target_kl": 0.02}, {"gae_lambda": 0.98}, {"net_arch": "medium"}, {"n_steps": 512}],
)
#: Trials of each Swimmer setting.
SWIMMER_REPEATS = 4

#: The Walker2d search's settings: rl-zoo3's (its MuJoCo block), then one knob of it each. With rl-zoo3's settings the
#: evaluations of a seed swing by thousands between tenths of the budget (seed 0: 4387 at 900k steps, 1826 at 1M), so
#: the smaller trust region and the larger batches (steadier steps) come first, then a longer GAE horizon and a wider
#: network.
WALKER2D_POINTS = one_knob_settings(
    MUJOCO_ZOO_POINT, [{"target_kl": 0.005}, {"n_steps": 2048}, {"gae_lambda": 0.98}, {"net_arch": "medium"}]
)
#: Trials of each Walker2d setting.
WALKER2D_REPEATS = 3

#: The Hopper search's settings: Walker2d's, for the same reason (with rl-zoo3's settings the evaluations of a seed
#: swing by hundreds to a thousand between tenths of the budget: seed 3, 3634 at 400k steps, 1528 at 700k).
HOPPER_POINTS = WALKER2D_POINTS
#: Trials of each Hopper setting.
HOPPER_REPEATS = 3


@dataclass(frozen=True)
class Search:
    """
    One task's preset search.

    :param env_id: the Gymnasium id
    :param env_kwargs: rl-zoo3's ``--env-kwargs`` (rl-zoo3 2.9 passes a file's ``env_kwargs`` to the training envs
        only; given here, its evaluation envs get them too)
    :param first_trials: the trials queued in a new study, in order
    :param later_trials: trials queued into a running search by ``--queue-variations N``
    :param timesteps: the training budget of one trial
    """

    env_id: str
    env_kwargs: tuple[str, ...] = ()
    first_trials: list[dict[str, Any]] = field(default_factory=list)
    later_trials: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    timesteps: int = 500_000

    @property
    def study_name(self) -> str:
        """The study's name in its storage."""
        return f"{self.env_id.lower().replace('-', '_')}_trpo_mujoco"

    @property
    def base_conf(self) -> Path:
        """The search's starting hyperparameters (rl-zoo3's ``-conf``)."""
        return Path("benchmarks/presets") / f"{self.env_id.lower().replace('-', '_')}_tuning.yml"

    @property
    def results(self) -> Path:
        """Where the exported trials land."""
        return Path("benchmarks/results/presets") / self.env_id


#: The searches, by environment id.
SEARCHES: dict[str, Search] = {
    "Ant-v5": Search(
        "Ant-v5",
        ("include_cfrc_ext_in_observation:False",),
        [MUJOCO_ZOO_POINT],
        {1: ANT_VARIATIONS, 2: ANT_LATER_VARIATIONS},
    ),
    "Swimmer-v5": Search(
        "Swimmer-v5",
        first_trials=SWIMMER_POINTS * SWIMMER_REPEATS,  # round-robin
        timesteps=300_000,
    ),
    "Walker2d-v5": Search(
        "Walker2d-v5",
        first_trials=WALKER2D_POINTS * WALKER2D_REPEATS,  # round-robin
        timesteps=600_000,
    ),
    "Hopper-v5": Search(
        "Hopper-v5",
        first_trials=HOPPER_POINTS * HOPPER_REPEATS,  # round-robin
        timesteps=500_000,
    ),
}


def search_arguments(search: Search, out: Path, timesteps: int) -> list[str]:
    """
    rl-zoo3's ``train`` arguments of a search.

    :param search: the search
    :param out: folder of the study's storage, rl-zoo3's logs and its per-trial evaluations
    :param timesteps: training budget of one trial
    :return: the arguments, ``train`` first
    """
    env_kwargs = ("--env-kwargs", *search.env_kwargs) if search.env_kwargs else ()
    return [
        "train",
        *("--algo", "trpo", "--env", search.env_id, "-conf", str(search.base_conf), *env_kwargs),
        *("-optimize", "--trpo-sampler", "mujoco", "--n-jobs", "1"),
        *("--n-timesteps", str(timesteps), "--n-evaluations", "2", "--eval-episodes", "5"),
        *("--sampler", "tpe", "--pruner", "none", "--n-startup-trials", "5", "--n-trials", "100", "--no-optim-plots"),
        *("--storage", f"sqlite:///{out / 'study.db'}", "--study-name", search.study_name),
        *("--seed", str(TUNING_SEED), "--device", "cpu", "--vec-env", "dummy", "--num-threads", "1"),
        *("-f", str(out / "logs"), "--optimization-log-path", str(out / "trials")),
    ]


def enqueue_points(storage: str, study_name: str, points: list[dict[str, Any]]) -> None:
    """
    Queue trials with the given parameters in the study (a running search takes them before sampling new ones).

    :param storage: the study's Optuna storage URL
    :param study_name: the study's name
    :param points: the trials' parameters (the ``mujoco`` sampler's names)
    """
    import optuna

    study = optuna.load_study(storage=storage, study_name=study_name)
    for point in points:
        study.enqueue_trial(point)


def enqueue_first_trials(storage: str, search: Search) -> bool:
    """
    Put the search's first trials in a new study (rl-zoo3 loads the study and runs queued trials before sampling).

    :param storage: the study's Optuna storage URL
    :param search: the search
    :return: whether they were queued (not when the study already has trials)
    """
    import optuna

    study = optuna.create_study(storage=storage, study_name=search.study_name, direction="maximize", load_if_exists=True)
    if study.trials:
        return False
    for point in search.first_trials:
        study.enqueue_trial(point)
    return True


def export_trials(storage: str, study_name: str, path: Path) -> list[dict[str, Any]]:
    """
    Write the study's trials as JSON: number, state, parameters, final value, intermediate evaluations, seconds.

    :param storage: the study's Optuna storage URL
    :param study_name: the study's name
    :param path: the JSON file
    :return: the trials written
    """
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = [
        {
            "number": trial.number,
            "state": trial.state.name,
            "params": trial.params,
            "value": trial.value,
            "evaluations": {str(step): value for step, value in sorted(trial.intermediate_values.items())},
            "seconds": trial.duration.total_seconds() if trial.duration is not None else None,
        }
        for trial in study.trials
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"study": study_name, "command": study.user_attrs.get("command"), "trials": trials}, indent=1))
    return trials


def main() -> int:
    """Run a search (or export its trials with ``--export``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--env", choices=sorted(SEARCHES), default="Ant-v5", help="the task whose preset is searched")
    parser.add_argument("--out", type=Path, help="study storage and rl-zoo3 logs (default /work/tune/<id>)")
    parser.add_argument("--timeout", type=float, default=3300.0, help="seconds before the search is stopped")
    parser.add_argument("--timesteps", type=int, help="training budget of one trial (default: the search's)")
    parser.add_argument("--export", action="store_true", help="write the trials to benchmarks/results/presets/<id>")
    parser.add_argument("--queue-variations", type=int, help="queue the search's later trials of this key, then return")
    args = parser.parse_args()
    search = SEARCHES[args.env]
    out: Path = args.out or Path("/work/tune") / search.env_id.lower()
    storage = f"sqlite:///{out / 'study.db'}"
    if args.queue_variations is not None:
        if args.queue_variations not in search.later_trials:
            parser.error(f"{search.env_id}'s search has later trials {sorted(search.later_trials)}")
        points = search.later_trials[args.queue_variations]
        enqueue_points(storage, search.study_name, points)
        print(f"{len(points)} trials queued")
        return 0
    if args.export:
        trials = export_trials(storage, search.study_name, search.results / "trials.json")
        print(f"{len(trials)} trials written to {search.results / 'trials.json'}")
        return 0
    from sb3_trpo_plugin import TRPO
    from sb3_trpo_plugin.zoo import main as zoo_main

    TRPO.pipeline_critic = False  # see the module's docstring
    # A shell starts background jobs with SIGINT ignored, and Python then installs no handler: the timer's SIGINT
    # (and a user's) must raise KeyboardInterrupt, which Optuna and rl-zoo3 handle.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    out.mkdir(parents=True, exist_ok=True)
    enqueue_first_trials(storage, search)
    timer = threading.Timer(args.timeout, signal.raise_signal, (signal.SIGINT,))
    timer.daemon = True
    timer.start()
    return zoo_main(search_arguments(search, out, args.timesteps or search.timesteps))


if __name__ == "__main__":
    sys.exit(main())
