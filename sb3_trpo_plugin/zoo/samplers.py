"""
Optuna samplers for rl-zoo3's hyperparameter search with ``--algo trpo``, narrower than rl-zoo3's own.

rl-zoo3's TRPO sampler draws ten knobs over wide ranges (critic minibatches of 4 to 1024, rollouts of 32 to 4096
steps, two activations, ...): far more than some twenty trials can explore on a MuJoCo task. :data:`SAMPLERS`
holds samplers that draw the knobs that plausibly matter there, around rl-zoo3's MuJoCo settings, and keep the
others at the values of the hyperparameter file. ``python -m sb3_trpo_plugin.zoo train --algo trpo -optimize
--trpo-sampler mujoco ...`` puts one in rl-zoo3's sampler registry for that run (see :func:`install_sampler`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Choices of the ``mujoco`` sampler, by trial parameter (categorical ones).
MUJOCO_CHOICES: dict[str, list[Any]] = {
    "n_steps": [256, 512, 1024, 2048],
    "batch_size": [64, 128, 256, 512],
    "gamma": [0.98, 0.99, 0.995, 0.999, 0.9999],
    "gae_lambda": [0.9, 0.95, 0.98, 0.99],
    "net_arch": ["small", "medium"],
}
#: Ranges of the ``mujoco`` sampler, by trial parameter: ``(low, high, log scale)``.
MUJOCO_RANGES: dict[str, tuple[float, float, bool]] = {
    "target_kl": (0.005, 0.05, True),
    "learning_rate": (1e-4, 3e-3, True),
    "n_critic_updates": (5, 30, False),
}
#: Hidden layers of the policy and of the value function, by the name a trial draws.
NET_ARCHS: dict[str, list[int]] = {"small": [64, 64], "medium": [256, 256]}


def mujoco_hyperparams(params: dict[str, Any]) -> dict[str, Any]:
    """
    TRPO's keywords from the parameters a trial of the ``mujoco`` sampler drew (rl-zoo3 calls this a converter; it
    also turns a stored trial back into hyperparameters with ``--trial-id``).

    :param params: the trial's parameters (the keys of :data:`MUJOCO_CHOICES` and :data:`MUJOCO_RANGES`)
    :return: the keywords, ``net_arch`` turned into ``policy_kwargs``
    """
    hyperparams = dict(params)
    layers = NET_ARCHS[hyperparams.pop("net_arch")]
    hyperparams["policy_kwargs"] = dict(net_arch=dict(pi=list(layers), vf=list(layers)))
    return hyperparams


def sample_mujoco_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """
    Draw one trial of the ``mujoco`` sampler (rl-zoo3's sampler signature).

    :param trial: the Optuna trial
    :param n_actions: size of the action space (unused: rl-zoo3 passes it to every sampler)
    :param n_envs: number of environments (unused)
    :param additional_args: rl-zoo3's extra arguments (unused)
    :return: TRPO's keywords for the trial
    """
    params: dict[str, Any] = {name: trial.suggest_categorical(name, choices) for name, choices in MUJOCO_CHOICES.items()}
    for name, (low, high, log) in MUJOCO_RANGES.items():
        if isinstance(low, int) and isinstance(high, int):
            params[name] = trial.suggest_int(name, low, high)
        else:
            params[name] = trial.suggest_float(name, low, high, log=log)
    return mujoco_hyperparams(params)


#: ``--trpo-sampler`` choices: ``name -> (sampler, converter)``.
SAMPLERS: dict[str, tuple[Callable[..., dict[str, Any]], Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "mujoco": (sample_mujoco_params, mujoco_hyperparams),
}


def install_sampler(name: str, algo: str = "trpo") -> None:
    """
    Put the sampler ``name`` of :data:`SAMPLERS` in rl-zoo3's registries for ``algo``.

    rl-zoo3's ``ExperimentManager`` looks the sampler up in ``rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER`` when a
    trial starts (and the converter in ``HYPERPARAMS_CONVERTER``, where rl-zoo3 has one: not 2.3, when it loads a
    stored trial), so replacing the entries in place before training is all it takes.

    :param name: a key of :data:`SAMPLERS`
    :param algo: rl-zoo3's ``--algo``
    :raises KeyError: for an unknown name
    """
    from rl_zoo3 import hyperparams_opt

    if name not in SAMPLERS:
        raise KeyError(f"unknown TRPO sampler {name!r}; choose from {sorted(SAMPLERS)}")
    sampler, converter = SAMPLERS[name]
    hyperparams_opt.HYPERPARAMS_SAMPLER[algo] = sampler
    converters = getattr(hyperparams_opt, "HYPERPARAMS_CONVERTER", None)  # rl-zoo3 2.3 has none (nor --trial-id)
    if converters is not None:
        converters[algo] = converter
