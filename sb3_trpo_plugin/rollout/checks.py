"""
Fault detection for training data: non-finite values from the environment are refused with an error naming them.

A NaN or inf in an observation or a reward does not crash PyTorch: it flows into advantages, value
targets and gradients, and either stops every later update or, through an optimiser step, turns the
weights into NaN. TRPO therefore checks the data where it enters:

* :class:`EnvironmentDataCheck`, a callback that TRPO puts first in every ``learn`` call, looks at
  each ``env.step`` result (observations, rewards, terminal observations) and at the first
  observation after a reset, before the data reaches the rollout buffer or the policy;
* :func:`check_rollout_buffer`, at the start of ``train()``, checks the buffer again (a buffer can
  also be filled by hand) and tells environment data apart from derived quantities. Non-finite
  returns or advantages computed from finite data (e.g. overflow from huge rewards) are not the
  environment's fault: the update then skips what cannot be used and the event is logged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, ConvertCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.type_aliases import MaybeCallback


class NonFiniteEnvironmentDataError(ValueError):
    """The environment produced a NaN or an infinity (in an observation or a reward); training cannot use it."""


def _describe_non_finite(values: np.ndarray | torch.Tensor) -> str | None:
    """
    A short description of the non-finite entries of an array, or ``None`` when all are finite.

    :param values: a NumPy array or a tensor (integer and boolean dtypes are always finite)
    :return: e.g. ``"2 of 8 values (nan at index (0, 3), first of them)"``
    """
    if isinstance(values, torch.Tensor):
        if not values.is_floating_point() or bool(torch.isfinite(values).all()):
            return None
        values = values.detach().cpu().numpy()
    values = np.asarray(values)
    if values.dtype.kind not in "fc":
        return None
    finite = np.isfinite(values)
    if finite.all():
        return None
    bad = np.argwhere(~finite)
    first = tuple(int(i) for i in bad[0])
    return f"{len(bad)} of {values.size} values ({values[first]} at index {first}, the first of them)"


def _non_finite_parts(name: str, values: Any) -> list[str]:
    """Describe the non-finite parts of ``values`` (an array, a tensor, or a dict of them, as for Dict spaces)."""
    if isinstance(values, Mapping):
        return [part for key, value in values.items() for part in _non_finite_parts(f"{name}[{key!r}]", value)]
    description = _describe_non_finite(values)
    return [] if description is None else [f"{name}: {description}"]


def _environment_error(parts: list[str], where: str) -> NonFiniteEnvironmentDataError:
    return NonFiniteEnvironmentDataError(
        f"The environment returned non-finite data (NaN or inf) {where}: " + "; ".join(parts) + ". "
        "TRPO cannot learn from it, and would otherwise spread it into advantages, value targets and weights. "
        "Fix the environment, or clip or replace such values in a wrapper before training."
    )


class EnvironmentDataCheck(BaseCallback):
    """
    Raise :class:`NonFiniteEnvironmentDataError` as soon as an environment step returns a NaN or an inf.

    Checked at every step, before the data reaches the rollout buffer: the new observations, the
    rewards (as the algorithm sees them, i.e. after ``VecNormalize`` if any) and the terminal
    observations of finished episodes; the first observations after a reset are checked when
    training starts, with the policy (:func:`check_policy`). Integer observations (e.g. images) cost nothing.
    The common case (all finite) costs a Python sum per small array, and terminal observations are looked
    at only at steps where an episode ended; the values are described only when one is not finite.
    """

    #: Reads the loop's observations, rewards, dones and infos, never its values or log-probabilities.
    reads_step_outputs = False

    def _on_training_start(self) -> None:
        check_policy(self.model.policy)
        parts = _non_finite_parts("observations", self.model._last_obs)
        if parts:
            raise _environment_error(parts, "on reset, before the first step")

    def _on_step(self) -> bool:
        new_obs, rewards = self.locals.get("new_obs"), self.locals.get("rewards")
        infos, dones = self.locals.get("infos") or [], self.locals.get("dones")
        # A VecEnv puts terminal observations in the infos of finished episodes only: no episode ended, none to check.
        any_done = dones is None or any(np.asarray(dones).tolist())
        terminal_observations = [info.get("terminal_observation") for info in infos] if any_done else []
        if _is_finite(new_obs) and _is_finite(rewards) and all(_is_finite(obs) for obs in terminal_observations):
            return True
        parts = [
            *_non_finite_parts("observations", new_obs),
            *_non_finite_parts("rewards", rewards),
        ]
        for env_index, info in enumerate(infos):
            terminal_observation = info.get("terminal_observation")
            if terminal_observation is not None:
                parts += _non_finite_parts(f"terminal observation of env {env_index}", terminal_observation)
        if parts:
            raise _environment_error(parts, f"at timestep {self.num_timesteps}")
        return True


#: Up to this many values, a Python sum of the values is cheaper than a NumPy reduction (vector observations, rewards).
SMALL_ARRAY = 64


def _is_finite(values: Any) -> bool:
    """
    Whether ``values`` certainly holds no NaN or inf: for a small floating-point array, one Python sum of its values.

    A finite sum proves that every term is finite; a non-finite one (a NaN, an inf, or finite float64 values
    whose sum overflows) answers ``False`` and leaves the verdict to :func:`_non_finite_parts`.

    :param values: an array, a tensor, a dict of them (Dict spaces), or ``None``
    """
    if isinstance(values, np.ndarray):
        kind = values.dtype.kind
        if kind == "f":
            if values.size <= SMALL_ARRAY:
                return math.isfinite(sum(values.ravel().tolist()))  # in float64: float32 values cannot overflow
            return bool(np.isfinite(values).all())
        # Integer and boolean arrays cannot hold non-finite values.
        return kind != "c" or bool(np.isfinite(values).all())
    if isinstance(values, Mapping):
        return all(_is_finite(value) for value in values.values())
    return values is None or not _non_finite_parts("values", values)


def check_policy(policy: torch.nn.Module) -> None:
    """
    Refuse a policy that cannot act: non-finite weights, or a Gaussian whose standard deviation underflows to 0.

    TRPO's own updates never write non-finite weights and, because steps whose KL or surrogate is not
    finite are rejected, stop shrinking ``log_std`` long before ``exp(log_std)`` underflows; this
    catches policies that arrive that way (loaded, built with an extreme ``log_std_init``, edited).

    :param policy: the policy about to collect data
    :raises ValueError: naming the parameter and the problem
    """
    for name, parameter in policy.named_parameters():
        description = _describe_non_finite(parameter)
        if description is not None:
            raise ValueError(f"The policy's parameter {name!r} is not finite: {description}; it cannot be trained")
    log_std = getattr(policy, "log_std", None)
    if isinstance(log_std, torch.Tensor) and log_std.numel() > 0:
        smallest = float(log_std.detach().min())
        if float(torch.exp(torch.tensor(smallest, dtype=log_std.dtype))) == 0.0:
            raise ValueError(
                f"The policy's log_std has collapsed (smallest entry {smallest:.4g}): its standard deviation exp(log_std) "
                "is 0 in floating point, so the action distribution is degenerate. Re-initialise log_std "
                "(e.g. policy_kwargs=dict(log_std_init=...)) or load an earlier checkpoint."
            )


def with_environment_data_check(callback: MaybeCallback) -> list[BaseCallback]:
    """
    The callbacks of a ``learn`` call with an :class:`EnvironmentDataCheck` in front.

    :param callback: what the user passed to ``learn`` (``None``, a callback, a list or a function)
    :return: a list for ``BaseAlgorithm._init_callback``, which chains and initialises it
    """
    if callback is None:
        callbacks: list[BaseCallback] = []
    elif isinstance(callback, list):
        callbacks = list(callback)
    elif isinstance(callback, BaseCallback):
        callbacks = [callback]
    else:
        callbacks = [ConvertCallback(callback)]
    if any(isinstance(c, EnvironmentDataCheck) for c in callbacks):
        return callbacks
    return [EnvironmentDataCheck(), *callbacks]


def check_rollout_buffer(rollout_buffer: RolloutBuffer, logger: Logger | None = None) -> bool:
    """
    Check a filled rollout buffer before an update.

    Observations and rewards come from the environment: a non-finite one raises
    :class:`NonFiniteEnvironmentDataError`. Values, log-probabilities, returns and advantages are
    computed by the algorithm: when one is not finite although the environment data are (overflow
    from huge rewards or observations, or a degenerate action distribution), the update goes on,
    rejects the policy step and skips non-finite critic minibatches, and this records
    ``train/is_rollout_non_finite`` = 1 so the event shows in the logs.

    :param rollout_buffer: a full ``RolloutBuffer`` or ``DictRolloutBuffer``
    :param logger: where to record the event (nothing is recorded when ``None``)
    :return: whether every derived quantity is finite
    """
    environment_parts = [
        *_non_finite_parts("observations", rollout_buffer.observations),
        *_non_finite_parts("rewards", rollout_buffer.rewards),
    ]
    if environment_parts:
        raise _environment_error(environment_parts, "in the rollout buffer")
    derived_parts = [
        part
        for name in ("values", "log_probs", "returns", "advantages")
        for part in _non_finite_parts(name, getattr(rollout_buffer, name))
    ]
    if logger is not None:
        logger.record("train/is_rollout_non_finite", float(bool(derived_parts)))
    return not derived_parts
