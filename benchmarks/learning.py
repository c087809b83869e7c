"""
Learning-quality benchmark: this plugin's TRPO against sb3-contrib's TRPO and SB3's PPO.

Each algorithm trains with rl-zoo3's tuned settings for the env (``hyperparams/trpo.yml`` for both
TRPOs, ``hyperparams/ppo.yml`` for PPO, at TRPO's step budget), parsed by rl-zoo3's own
preprocessing (schedules such as ``lin_1e-3``, ``normalize``, ``policy_kwargs`` strings,
``n_envs``). A deterministic evaluation on a separate env (VecNormalize statistics synced where
the preset normalises) runs every tenth of the budget; the final return is one last evaluation
with more episodes. One process per run, ``--jobs`` at a time; each run writes
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
import contextlib
import io
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, sync_envs_normalization

from benchmarks.launch import child_environment, module_command
from benchmarks.learning_report import (
    CurvePoint,
    load_results,
    plot_env,
    render_section,
    replace_section,
    write_curve,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "learning"

#: Envs in campaign order (cheapest first), with rl-zoo3's preset name where it differs, the budget where it
#: overrides rl-zoo3's TRPO file, and keywords of ``gymnasium.make`` (``env_kwargs``, for training and evaluation).
ENVS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {},
    "Acrobot-v1": {},
    "Pendulum-v1": {},
    "MountainCarContinuous-v0": {},
    "LunarLander-v3": {},
    "LunarLanderContinuous-v3": {},
    "Hopper-v5": {"zoo_key": "Hopper-v4", "n_timesteps": 300_000},
    "HalfCheetah-v5": {"zoo_key": "HalfCheetah-v4", "n_timesteps": 300_000},
}
#: The MuJoCo campaign at rl-zoo3's budgets (``--envs`` picks them; the default campaign leaves them out). Ant-v5
#: gets Ant-v4's observation (27 entries, no contact forces), which rl-zoo3's Ant-v4 preset was tuned on.
MUJOCO_ENVS: dict[str, dict[str, Any]] = {
    "Swimmer-v5": {"zoo_key": "Swimmer-v4"},
    "Walker2d-v5": {"zoo_key": "Walker2d-v4"},
    "Ant-v5": {"zoo_key": "Ant-v4", "env_kwargs": {"include_cfrc_ext_in_observation": False}},
    "Humanoid-v5": {"zoo_key": "Humanoid-v4"},
}
ALL_ENVS: dict[str, dict[str, Any]] = {**ENVS, **MUJOCO_ENVS}
#: This TRPO with one of its fast paths switched off (the ablations of docs/benchmarks.md, "Ant-v5"): each is the
#: same algorithm, computed another way.
ABLATIONS: dict[str, str] = {
    "trpo_sb3_loop": "SB3's own rollout loop (lean_rollout = False)",
    "trpo_kl_hessian": "Fisher-vector products by double backprop of the KL (fisher_product='kl_hessian')",
    "trpo_autograd_critic": "the critic's gradient by autograd instead of the hand-derived one",
    "trpo_plain_adam": "torch's Adam.step (foreach) instead of the fused kernel called directly",
    "trpo_numpy_shuffle": "the critic's minibatch order from NumPy's generator, as sb3-contrib's buffer draws it",
}
#: This TRPO with the package's own tuned settings for the env (``sb3_trpo_plugin/zoo/trpo_v5.yml``, the same as
#: ``sb3-trpo train``'s preset; docs/benchmarks.md, "Ant-v5 preset") instead of rl-zoo3's.
PRESET_ALGO = "trpo_preset"
ALGOS = ("trpo", "sb3_contrib_trpo", "ppo", *ABLATIONS, PRESET_ALGO)
EVAL_SEED_OFFSET = 10_000


@dataclass
class Preset:
    """
    rl-zoo3's settings for one algorithm on one env, after rl-zoo3's preprocessing.

    :param policy: policy name, e.g. ``"MlpPolicy"``
    :param kwargs: constructor keywords of the algorithm (schedules and ``policy_kwargs`` parsed)
    :param n_envs: number of training envs
    :param n_timesteps: the step budget
    :param normalize: whether the envs are wrapped in ``VecNormalize``
    :param normalize_kwargs: keywords of ``VecNormalize`` (``gamma`` follows the algorithm's)
    :param raw: the YAML entry as written, for the record
    """

    policy: str
    kwargs: dict[str, Any]
    n_envs: int
    n_timesteps: int
    normalize: bool
    normalize_kwargs: dict[str, Any]
    raw: dict[str, Any]


def zoo_file(algo: str) -> str:
    """rl-zoo3's hyperparameter file for ``algo`` (both TRPOs read ``trpo.yml``; :data:`PRESET_ALGO` the package's)."""
    import rl_zoo3

    if algo == PRESET_ALGO:
        from sb3_trpo_plugin.zoo import V5_HYPERPARAMS

        return str(V5_HYPERPARAMS)

    name = "ppo" if algo == "ppo" else "trpo"
    return str(Path(rl_zoo3.__file__).parent / "hyperparams" / f"{name}.yml")


def load_preset(algo: str, env_id: str) -> Preset:
    """
    rl-zoo3's tuned settings for ``algo`` on ``env_id``, preprocessed by rl-zoo3's ``ExperimentManager``.

    The budget is TRPO's (from ``trpo.yml`` or :data:`ENVS`) for every algorithm.

    :param algo: one of :data:`ALGOS`
    :param env_id: a key of :data:`ENVS`
    :return: the preset
    """
    import yaml
    from rl_zoo3.exp_manager import ExperimentManager

    zoo_key = ALL_ENVS[env_id].get("zoo_key", env_id)
    entries = {}
    for name in ("trpo", algo):
        with open(zoo_file(name)) as f:
            entries[name] = yaml.safe_load(f)[env_id if name == PRESET_ALGO else zoo_key]
    raw = dict(entries[algo])
    # The package's entries name the observation they were tuned with: it must be the one this benchmark makes.
    if raw.get("env_kwargs", env_kwargs(env_id)) != env_kwargs(env_id):
        raise ValueError(f"{env_id}: {zoo_file(algo)} asks for env_kwargs {raw['env_kwargs']}, not {env_kwargs(env_id)}")
    budget = int(ALL_ENVS[env_id].get("n_timesteps", entries["trpo"]["n_timesteps"]))
    with contextlib.redirect_stdout(io.StringIO()), tempfile.TemporaryDirectory() as tmp:
        manager = ExperimentManager(argparse.Namespace(), "trpo" if algo != "ppo" else "ppo", env_id, tmp, verbose=0)
        kwargs, _, _, _ = manager._preprocess_hyperparams(dict(raw))
    policy = kwargs.pop("policy")
    return Preset(policy, kwargs, manager.n_envs, budget, bool(manager.normalize), dict(manager.normalize_kwargs), raw)


def env_kwargs(env_id: str) -> dict[str, Any]:
    """The keywords of ``gymnasium.make`` for ``env_id`` in this benchmark (empty for most envs)."""
    return dict(ALL_ENVS[env_id].get("env_kwargs", {}))


def action_dim(env_id: str) -> int:
    """Number of action dimensions of a Box action space, 1 for the others."""
    import gymnasium as gym

    env = gym.make(env_id, **env_kwargs(env_id))
    space = env.action_space
    env.close()
    return int(np.prod(space.shape)) if isinstance(space, gym.spaces.Box) else 1


def make_model(algo: str, preset: Preset, env: Any, seed: int, logger: Any) -> Any:
    """
    Build the model of ``algo`` with the preset's keywords (identical for both TRPOs).

    :param algo: one of :data:`ALGOS`
    :param preset: from :func:`load_preset`
    :param env: the training VecEnv
    :param seed: the run's seed
    :param logger: SB3 logger to attach
    :return: the model
    """
    kwargs = dict(preset.kwargs)
    if algo in ("trpo", PRESET_ALGO) or algo in ABLATIONS:
        from sb3_trpo_plugin import TRPO as cls

        if algo == "trpo_kl_hessian":
            kwargs["fisher_product"] = "kl_hessian"
        elif algo == "trpo_plain_adam":  # SB3's default Adam keywords, with foreach chosen: not the fused kernel
            policy_kwargs = dict(kwargs.get("policy_kwargs") or {})
            policy_kwargs["optimizer_kwargs"] = {"eps": 1e-5, **policy_kwargs.get("optimizer_kwargs", {}), "foreach": True}
            kwargs["policy_kwargs"] = policy_kwargs
        elif algo == "trpo_autograd_critic":
            _use_autograd_critic()
    elif algo == "sb3_contrib_trpo":
        from sb3_contrib import TRPO as cls
    elif algo == "ppo":
        from stable_baselines3 import PPO as cls
    else:
        raise ValueError(f"unknown algorithm {algo!r}")
    model = cls(preset.policy, env, seed=seed, verbose=0, device="cpu", **kwargs)
    if algo == "trpo_sb3_loop":
        model.lean_rollout = False
    elif algo == "trpo_numpy_shuffle":
        model.batch_reductions = NumpyShuffles  # one process's reductions, each epoch's order drawn by NumPy
    model.set_logger(logger)
    return model


class NumpyShuffles:
    """
    One process's reductions with the critic's epoch orders drawn by ``np.random.permutation``, as sb3-contrib's
    ``RolloutBuffer.get(batch_size)`` draws them (the ``trpo_numpy_shuffle`` ablation): torch's generator then samples
    the actions alone, as in sb3-contrib's TRPO, instead of also shuffling the critic's minibatches.
    """

    def __new__(cls) -> Any:
        import torch

        from sb3_trpo_plugin.common.reductions import OneProcess

        class Reductions(OneProcess):
            def minibatch_order(self, n_rows: int, batch_size: int, device: Any) -> tuple[Any, int]:
                return torch.as_tensor(np.random.permutation(n_rows), device=device), batch_size

        return Reductions()


def _use_autograd_critic() -> None:
    """
    Make this process's TRPO fit the critic with autograd's gradient (the ``trpo_autograd_critic`` ablation): the
    regression's inputs and loss are the same, only the hand-derived gradient of SB3's plain MLP is not used. A run
    is one process, so the switch affects that run only.
    """
    import sb3_trpo_plugin.trpo.critic_fit as critic_fit

    def head_regression_by_autograd(policy: Any, critic_parameters: Any, inputs: Any) -> Any:
        def value_of(batch: Any) -> Any:
            return policy.value_net(policy.mlp_extractor.forward_critic(batch))

        return critic_fit.CriticRegression(inputs, critic_fit.autograd_loss_and_gradients(value_of, critic_parameters))

    critic_fit.head_regression = head_regression_by_autograd  # type: ignore[assignment]


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


def make_envs(env_id: str, preset: Preset, seed: int) -> tuple[VecEnv, VecEnv]:
    """
    The training and evaluation envs of a run, in ``VecNormalize`` where the preset normalises (the
    evaluation one frozen and with true rewards).

    :param env_id: a key of :data:`ENVS`
    :param preset: from :func:`load_preset`
    :param seed: seeds the training envs; the evaluation env gets ``seed + EVAL_SEED_OFFSET``
    :return: the training env and the evaluation env
    """
    train_env = make_vec_env(env_id, n_envs=preset.n_envs, seed=seed, env_kwargs=env_kwargs(env_id))
    eval_env = make_vec_env(env_id, n_envs=1, seed=seed + EVAL_SEED_OFFSET, env_kwargs=env_kwargs(env_id))
    if preset.normalize:
        train_env = VecNormalize(train_env, **preset.normalize_kwargs)
        eval_env = VecNormalize(eval_env, **{**preset.normalize_kwargs, "training": False, "norm_reward": False})
    return train_env, eval_env


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
    :return: path of the JSON
    """
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    preset = load_preset(algo, env_id)
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
        algo,
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
    json_path = write_run(results / env_id / algo, seed, recorder.curve, meta)
    train_env.close()
    eval_env.close()
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
    jobs = [
        j
        for j in campaign_jobs(args.envs, args.algos, args.seeds)
        if not (results / j[0] / j[1] / f"seed{j[2]}.json").exists()
    ]
    print(f"{time.strftime('%H:%M:%S')} {len(jobs)} runs to do into {results} with {args.jobs} jobs", flush=True)
    running: list[tuple[subprocess.Popen[bytes], tuple[str, str, int], float]] = []
    failed = []
    while jobs or running:
        while jobs and len(running) < args.jobs:
            env_id, algo, seed = job = jobs.pop(0)
            if (results / env_id / algo / f"seed{seed}.json").exists():  # done meanwhile by another campaign
                continue
            command = module_command("benchmarks.learning", "one", env_id, algo, str(seed), "--results", str(results))
            command += ["--evals", str(args.evals), "--eval-episodes", str(args.eval_episodes)]
            command += ["--final-episodes", str(args.final_episodes), "--timesteps-scale", str(args.timesteps_scale)]
            if args.timesteps:
                command += ["--timesteps", str(args.timesteps)]
            print(f"{time.strftime('%H:%M:%S')} start {env_id} {algo} seed {seed}", flush=True)
            running.append((subprocess.Popen(command, env=child_environment()), job, time.perf_counter()))
        time.sleep(0.5)
        for entry in list(running):
            process, (env_id, algo, seed), t0 = entry
            if process.poll() is None:
                continue
            running.remove(entry)
            status = "done" if process.returncode == 0 else f"FAILED (exit {process.returncode})"
            if process.returncode != 0:
                failed.append(entry[1])
            print(
                f"{time.strftime('%H:%M:%S')} {status} {env_id} {algo} seed {seed} in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
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
        p.add_argument("--evals", type=int, default=10, help="evaluations during training (the final one excluded)")
        p.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation during training")
        p.add_argument("--final-episodes", type=int, default=20, help="episodes of the final evaluation")
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
