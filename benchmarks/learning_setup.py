"""
What the learning-quality benchmark trains: its envs, the algorithms compared (this plugin's TRPO, sb3-contrib's TRPO,
SB3's PPO, this TRPO's ablations and its package preset), their settings, and the model and the envs of a run.

Each algorithm trains with rl-zoo3's tuned settings for the env (``hyperparams/trpo.yml`` for both
TRPOs, ``hyperparams/ppo.yml`` for PPO, at TRPO's step budget), parsed by rl-zoo3's own
preprocessing (schedules such as ``lin_1e-3``, ``normalize``, ``policy_kwargs`` strings,
``n_envs``). The evaluation env is a separate one, seeded apart, in ``VecNormalize`` (frozen) where the preset
normalises. The runs, the campaign and the command line are in :mod:`benchmarks.learning`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

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
    from sb3_trpo_plugin.zoo import V5_HYPERPARAMS, zoo_hyperparameter_file

    if algo == PRESET_ALGO:
        return str(V5_HYPERPARAMS)
    return str(zoo_hyperparameter_file("ppo" if algo == "ppo" else "trpo"))


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
    # Not the model's: rl-zoo3 before 2.8 would leave them among its keywords (make_envs builds the observation).
    model_entry = {key: value for key, value in raw.items() if key != "env_kwargs"}
    with contextlib.redirect_stdout(io.StringIO()), tempfile.TemporaryDirectory() as tmp:
        manager = ExperimentManager(argparse.Namespace(), "trpo" if algo != "ppo" else "ppo", env_id, tmp, verbose=0)
        kwargs, _, _, _ = manager._preprocess_hyperparams(model_entry)
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
    model: OnPolicyAlgorithm
    if algo in ("trpo", PRESET_ALGO) or algo in ABLATIONS:
        from sb3_trpo_plugin import TRPO

        if algo == "trpo_kl_hessian":
            kwargs["fisher_product"] = "kl_hessian"
        elif algo == "trpo_plain_adam":  # SB3's default Adam keywords, with foreach chosen: not the fused kernel
            policy_kwargs = dict(kwargs.get("policy_kwargs") or {})
            policy_kwargs["optimizer_kwargs"] = {"eps": 1e-5, **policy_kwargs.get("optimizer_kwargs", {}), "foreach": True}
            kwargs["policy_kwargs"] = policy_kwargs
        elif algo == "trpo_autograd_critic":
            _use_autograd_critic()
        model = trpo = TRPO(preset.policy, env, seed=seed, verbose=0, device="cpu", **kwargs)
        if algo == "trpo_sb3_loop":
            trpo.lean_rollout = False
        elif algo == "trpo_numpy_shuffle":
            # One process's reductions, each epoch's order drawn by NumPy: the ablation replaces the method on this
            # instance with a class whose instances are those reductions, which mypy cannot follow.
            trpo.batch_reductions = NumpyShuffles  # type: ignore[method-assign]
    else:
        upstream: type[OnPolicyAlgorithm]
        if algo == "sb3_contrib_trpo":
            from sb3_contrib import TRPO as upstream
        elif algo == "ppo":
            from stable_baselines3 import PPO as upstream
        else:
            raise ValueError(f"unknown algorithm {algo!r}")
        model = upstream(preset.policy, env, seed=seed, verbose=0, device="cpu", **kwargs)
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

    critic_fit.head_regression = head_regression_by_autograd


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
