"""
What a run of the learning-quality benchmark records: the learning curve, its training diagnostics, its metadata.

A deterministic evaluation on a separate env (VecNormalize statistics synced where
the preset normalises) runs every tenth of the budget; the final return is one last evaluation
with more episodes. Each run writes ``<results>/<env>/<algo>/seed<k>.csv`` (the curve) and then ``seed<k>.json``
(metadata, written last and atomically: its presence marks the run finished, and the campaign skips finished runs).
What is trained is in :mod:`benchmarks.learning_setup`; the runs, the campaign and the command line in
:mod:`benchmarks.learning`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import KVWriter
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization

from benchmarks.launch import ROOT
from benchmarks.learning_report import CurvePoint, write_curve
from benchmarks.learning_setup import ALL_ENVS, PRESET_ALGO, Preset, action_dim, env_kwargs, zoo_file

#: The per-update training diagnostics kept in each run's JSON; each algorithm logs some of them.
DIAGNOSTIC_KEYS = (
    "train/is_line_search_success",
    "train/kl_divergence_loss",
    "train/explained_variance",
    "train/value_loss",
    "train/std",
    "train/approx_kl",
    "train/clip_fraction",
    "train/line_search_steps",
    "train/step_fraction",
)


class DiagnosticsWriter(KVWriter):
    """An output of SB3's logger that keeps the values of :data:`DIAGNOSTIC_KEYS` at each dump (one per update)."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        """
        :param key_values: the logged values of one dump
        :param key_excluded: the output formats each key is excluded from (not used: every kept key is recorded)
        :param step: the step of the dump
        """
        for key in DIAGNOSTIC_KEYS:
            if key in key_values:
                self.values.setdefault(key, []).append(float(key_values[key]))

    def close(self) -> None:
        """Nothing to release: the values stay in memory."""

    def summary(self) -> dict[str, dict[str, float]]:
        """:return: per key logged, the mean over updates, the last value and the number of updates (``n``)"""
        return {key: {"mean": float(np.mean(v)), "last": v[-1], "n": len(v)} for key, v in self.values.items()}


class CurveRecorder:
    """
    Deterministic evaluations on a separate env, recorded as the learning curve against training time.

    Each evaluation's own wall-clock and CPU time is added up apart, so that the training time (of the
    curve's points and of :meth:`training_time`) leaves the evaluations out.

    :param model: the model being trained
    :param train_env: its training env
    :param eval_env: the evaluation env
    :param normalize: whether both are ``VecNormalize``: the training statistics are copied over before each evaluation
    """

    def __init__(self, model: BaseAlgorithm, train_env: VecEnv, eval_env: VecEnv, normalize: bool) -> None:
        self.model = model
        self.train_env = train_env
        self.eval_env = eval_env
        self.normalize = normalize
        self.curve: list[CurvePoint] = []
        self.eval_wall_s = 0.0
        self.eval_cpu_s = 0.0
        self.training_started_wall = 0.0
        self.training_started_cpu = 0.0

    def start_training_clock(self) -> None:
        """Start counting training time, just before ``learn``."""
        self.training_started_wall, self.training_started_cpu = time.perf_counter(), time.process_time()

    def training_time(self) -> tuple[float, float]:
        """:return: wall-clock and CPU seconds since :meth:`start_training_clock`, the evaluations' excluded"""
        return (
            time.perf_counter() - self.training_started_wall - self.eval_wall_s,
            time.process_time() - self.training_started_cpu - self.eval_cpu_s,
        )

    def evaluate(self, n_episodes: int) -> None:
        """
        Evaluate the model deterministically and add the result to the curve.

        :param n_episodes: number of evaluation episodes
        """
        wall_started, cpu_started = time.perf_counter(), time.process_time()
        if self.normalize:
            sync_envs_normalization(self.train_env, self.eval_env)
        returns, _ = evaluate_policy(
            self.model, self.eval_env, n_eval_episodes=n_episodes, deterministic=True, return_episode_rewards=True
        )
        train_wall = wall_started - self.training_started_wall - self.eval_wall_s
        point = CurvePoint(self.model.num_timesteps, train_wall, float(np.mean(returns)), float(np.std(returns)), n_episodes)
        self.curve.append(point)
        self.eval_wall_s += time.perf_counter() - wall_started
        self.eval_cpu_s += time.process_time() - cpu_started


class PeriodicEvaluation(BaseCallback):
    """
    Evaluates between updates, at the first rollout start at or past each ``n_evals``-th of the budget.

    :param recorder: evaluates and records
    :param budget: the run's step budget
    :param n_evals: evaluations during training (at steps ``0, B/n, 2B/n, …``)
    :param n_episodes: episodes per evaluation
    """

    #: It reads no step's values or log-probabilities, so this TRPO's rollout computes them in one batch at the end, as
    #: under SB3's ``EvalCallback`` (the path users get); the ``trpo_sb3_loop`` ablation then differs from ``trpo``.
    reads_step_outputs = False

    def __init__(self, recorder: CurveRecorder, budget: int, n_evals: int, n_episodes: int) -> None:
        super().__init__()
        self.recorder = recorder
        self.budget = budget
        self.interval = max(1, budget // n_evals)
        self.n_episodes = n_episodes
        self.next_eval = 0

    def _on_rollout_start(self) -> None:
        if self.num_timesteps >= self.next_eval and self.next_eval < self.budget:
            self.recorder.evaluate(self.n_episodes)
            while self.next_eval <= self.num_timesteps:
                self.next_eval += self.interval

    def _on_step(self) -> bool:
        return True


def train(model: BaseAlgorithm, recorder: CurveRecorder, budget: int, n_evals: int, eval_episodes: int) -> tuple[float, float]:
    """
    Train for ``budget`` steps, evaluating periodically.

    :param model: the model
    :param recorder: evaluates and records
    :param budget: steps of training
    :param n_evals: evaluations during training
    :param eval_episodes: episodes per evaluation
    :return: wall-clock and CPU seconds of training, evaluations excluded
    """
    recorder.start_training_clock()
    model.learn(total_timesteps=budget, callback=PeriodicEvaluation(recorder, budget, n_evals, eval_episodes))
    train_wall_s, train_cpu_s = recorder.training_time()
    model.logger.dump(model.num_timesteps)  # the last update's diagnostics (learn dumps before each update)
    return train_wall_s, train_cpu_s


def versions() -> dict[str, str]:
    """:return: the versions of the software a run used, and the commit of this checkout"""
    import gymnasium as gym
    import sb3_contrib
    import stable_baselines3
    import torch

    import sb3_trpo_plugin

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gymnasium": gym.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "sb3_contrib": sb3_contrib.__version__,
        "sb3_trpo_plugin": sb3_trpo_plugin.__version__,
        "sb3_trpo_plugin_git": _git_commit(),
    }


def run_metadata(
    env_id: str,
    algo: str,
    seed: int,
    preset: Preset,
    budget: int,
    steps_done: int,
    recorder: CurveRecorder,
    final_episodes: int,
    train_time: tuple[float, float],
    diagnostics: DiagnosticsWriter,
    started: float,
) -> dict[str, Any]:
    """
    What a run's JSON records: its result, timings, settings, training diagnostics and software versions.

    :param env_id: a key of :data:`ENVS`
    :param algo: one of :data:`ALGOS`
    :param seed: the run's seed
    :param preset: from :func:`load_preset`
    :param budget: the step budget
    :param steps_done: steps trained (the budget rounded up to whole rollouts)
    :param recorder: holds the curve, the final evaluation last, and the evaluations' time
    :param final_episodes: episodes of the final evaluation
    :param train_time: wall-clock and CPU seconds of training, from :func:`train`
    :param diagnostics: the training diagnostics logged
    :param started: ``time.perf_counter()`` at the start of the run
    :return: the metadata
    """
    import torch

    train_wall_s, train_cpu_s = train_time
    return {
        "env_id": env_id,
        "algo": algo,
        "seed": seed,
        "total_timesteps": budget,
        "steps_done": steps_done,
        "final_return": recorder.curve[-1].mean_return,
        "final_return_std": recorder.curve[-1].std_return,
        "final_episodes": final_episodes,
        "train_wall_s": train_wall_s,
        "eval_wall_s": recorder.eval_wall_s,
        "train_cpu_s": train_cpu_s,
        "total_wall_s": time.perf_counter() - started,
        "n_envs": preset.n_envs,
        "normalize": preset.normalize,
        "normalize_kwargs": preset.normalize_kwargs,
        "zoo_file": Path(zoo_file(algo)).name,
        "zoo_key": env_id if algo == PRESET_ALGO else ALL_ENVS[env_id].get("zoo_key", env_id),
        "env_kwargs": env_kwargs(env_id),
        "hyperparams": {k: repr(v) for k, v in preset.raw.items()},
        "action_dim": action_dim(env_id),
        # this TRPO's critic fitted in a worker process (True) or in the run's (False); None for the other algorithms
        "pipeline_critic": getattr(recorder.model, "pipeline_critic", None),
        "diagnostics": diagnostics.summary(),
        "versions": versions(),
        "torch_threads": torch.get_num_threads(),
        "host_cpus": os.cpu_count(),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_run(folder: Path, seed: int, curve: list[CurvePoint], meta: dict[str, Any]) -> Path:
    """
    Write ``seed<k>.csv`` (the curve), then ``seed<k>.json`` (the metadata), each atomically: the JSON,
    written last, marks the run finished.

    :param folder: ``<results>/<env>/<algo>``, created if missing
    :param seed: the run's seed
    :param curve: the learning curve
    :param meta: from :func:`run_metadata`
    :return: path of the JSON
    """
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"seed{seed}.json"
    _atomic_write(json_path.with_suffix(".csv"), lambda p: write_curve(p, curve))
    _atomic_write(json_path, lambda p: p.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n"))
    return json_path


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _git_commit() -> str:
    """Commit of the code that ran (of the checkout this file is in), ``"unknown"`` outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
