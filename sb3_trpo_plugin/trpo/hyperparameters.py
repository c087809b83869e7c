"""The checks of TRPO's constructor keywords: an out-of-range value is refused with its name and allowed range."""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any, TypeVar


class HyperparameterError(ValueError, AssertionError):
    """
    A configuration TRPO refuses, named with its allowed range.

    Both a ``ValueError`` (what a bad argument is in Python) and an ``AssertionError`` (what sb3-contrib and SB3
    raise for the same configurations, e.g. ``n_steps * n_envs == 1`` with advantage normalisation), so that code
    and tests written for either keep catching it.
    """


def _is_finite_number(value: Any) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


#: ``name -> (is_valid, allowed range)`` of the keywords checked on construction.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    # A schedule is checked at both ends of training here (:func:`check_schedule`) and at each update (:func:`scheduled`).
    "target_kl": (lambda v: callable(v) or v > 0, "> 0 (or a schedule)"),
    "cg_max_steps": (lambda v: v >= 1, ">= 1"),
    "cg_damping": (lambda v: v >= 0, ">= 0"),
    "cg_residual_tol": (lambda v: v >= 0, ">= 0"),
    "line_search_shrinking_factor": (lambda v: 0 < v < 1, "in the open interval (0, 1)"),
    "line_search_max_iter": (lambda v: v >= 1, ">= 1"),
    "batch_size": (lambda v: v >= 1, ">= 1"),
    "n_critic_updates": (lambda v: v >= 0, ">= 0"),
    "sub_sampling_factor": (lambda v: v >= 1, ">= 1"),
    "fisher_sub_sampling_factor": (lambda v: v >= 1, ">= 1"),
    "fisher_product": (
        lambda v: v in ("auto", "gauss_newton", "kl_hessian"),
        "one of 'auto', 'gauss_newton', 'kl_hessian'",
    ),
    "gamma": (lambda v: 0 <= v <= 1, "in the closed interval [0, 1]"),
    "gae_lambda": (lambda v: 0 <= v <= 1, "in the closed interval [0, 1]"),
    "ent_coef": (lambda v: v >= 0, ">= 0"),
    # A schedule (a callable of the progress remaining) is the caller's to check.
    "learning_rate": (lambda v: callable(v) or v >= 0, ">= 0 (or a schedule)"),
}

#: The float settings that must also be finite numbers (NaN and inf pass some range tests, and break the update).
FINITE = frozenset(
    {
        "target_kl",
        "cg_damping",
        "cg_residual_tol",
        "line_search_shrinking_factor",
        "gamma",
        "gae_lambda",
        "ent_coef",
        "learning_rate",
    }
)


#: Keywords that take a schedule (a callable of the progress remaining, 1 at the start of ``learn()`` and 0 at its end).
SCHEDULED = ("target_kl",)


def validate_hyperparameters(**values: Any) -> None:
    """
    Raise :class:`HyperparameterError` naming the parameter and its allowed range for an out-of-range value.

    :param values: keyword values, each named in :data:`RULES`
    """
    for name, value in values.items():
        is_valid, allowed = RULES[name]
        if name in FINITE and not callable(value) and not _is_finite_number(value):
            raise HyperparameterError(f"{name} must be finite and {allowed}, got {value!r}")
        if not is_valid(value):
            raise HyperparameterError(f"{name} must be {allowed}, got {value!r}")
        if name in SCHEDULED:
            check_schedule(name, value)


def scheduled(name: str, value: float | Callable[[float], float], progress_remaining: float) -> float:
    """
    The value of a keyword that may be a schedule, at ``progress_remaining``; a schedule's value is checked against the
    keyword's range.

    :param name: the keyword (one of :data:`SCHEDULED`)
    :param value: a number, or a schedule
    :param progress_remaining: 1 at the start of ``learn()``, 0 at its end
    :return: the number
    :raises HyperparameterError: when a schedule gives a value out of range
    """
    if not callable(value):
        return float(value)
    current = value(progress_remaining)
    is_valid, allowed = RULES[name]
    if not (_is_finite_number(current) and is_valid(current)):
        raise HyperparameterError(
            f"{name}'s schedule gave {current!r} at progress_remaining={progress_remaining!r}; each of its values must be "
            f"finite and {allowed.removesuffix(' (or a schedule)')} (e.g. SB3's LinearSchedule(start, end, end_fraction) "
            "with end > 0)"
        )
    return float(current)


def check_schedule(name: str, value: Any) -> None:
    """
    Check a scheduled keyword at both ends of training, so that a schedule that leaves the range (e.g. one decaying to
    0) is refused on construction rather than at the last update; each update checks its own value again.

    :param name: the keyword (one of :data:`SCHEDULED`)
    :param value: a number (nothing to do), or a schedule
    """
    if callable(value):
        for progress_remaining in (1.0, 0.0):
            scheduled(name, value, progress_remaining)


def check_buffer_size(
    n_steps: int, n_envs: int, batch_size: int, normalize_advantage: bool, sub_sampling_factor: int = 1
) -> None:
    """
    Refuse a policy batch of one sample with advantage normalisation (a one-sample buffer, or a sub-sampling factor
    that keeps one of its rows); warn on a truncated last minibatch (as SB3's PPO does).

    :param n_steps: steps per environment per rollout
    :param n_envs: environments
    :param batch_size: the critic's minibatch size
    :param normalize_advantage: whether the advantages are z-scored over the batch
    :param sub_sampling_factor: the policy step uses every k-th row of the buffer (``ceil(n_steps * n_envs / k)`` rows)
    """
    buffer_size = n_envs * n_steps
    if normalize_advantage and buffer_size <= 1:
        raise HyperparameterError(
            "n_steps * n_envs must be greater than 1 when normalize_advantage=True (the standard deviation "
            f"of one advantage is undefined); got n_steps={n_steps}, n_envs={n_envs}"
        )
    if normalize_advantage and -(-buffer_size // sub_sampling_factor) <= 1:
        raise HyperparameterError(
            "sub_sampling_factor must be smaller than n_steps * n_envs when normalize_advantage=True: the policy step "
            "would use one row, whose advantage has no standard deviation (every update would be non-finite and "
            f"rejected); got sub_sampling_factor={sub_sampling_factor}, n_steps={n_steps}, n_envs={n_envs}"
        )
    if buffer_size % batch_size > 0:
        warnings.warn(
            f"You have specified a mini-batch size of {batch_size}, but because the `RolloutBuffer` is of "
            f"size `n_steps * n_envs = {buffer_size}`, after every {buffer_size // batch_size} untruncated "
            f"mini-batches, there will be a truncated mini-batch of size {buffer_size % batch_size}\n"
            "We recommend using a `batch_size` that is a factor of `n_steps * n_envs`.\n"
            f"Info: (n_steps={n_steps} and n_envs={n_envs})",
            stacklevel=4,  # the caller of TRPO(...), past __init__ and explain_ppo_keywords
        )


#: PPO's keywords that TRPO does not take, and what TRPO does instead.
PPO_KEYWORDS: dict[str, str] = {
    "n_epochs": (
        "PPO's number of optimisation epochs over each rollout; TRPO takes one trust-region step on the policy per "
        "rollout (its size set by target_kl) and fits the critic for n_critic_updates epochs"
    ),
    "clip_range": (
        "PPO's clipping of the probability ratio, a soft trust region; TRPO bounds the step by the mean KL "
        "divergence instead: use target_kl (e.g. 0.01 to 0.05)"
    ),
    "clip_range_vf": (
        "PPO's clipping of the value function's change; TRPO regresses the critic to the returns with its own "
        "optimiser (learning_rate, batch_size, n_critic_updates), without clipping"
    ),
    "vf_coef": (
        "PPO's weight of the value loss in its joint loss; TRPO fits the critic separately with its own optimiser "
        "(learning_rate, batch_size, n_critic_updates), so there is nothing to weigh"
    ),
    "max_grad_norm": (
        "PPO's gradient-norm clipping; TRPO's policy step is bounded by target_kl and checked by a line search, "
        "and the critic's regression takes plain optimiser steps (learning_rate)"
    ),
}

InitT = TypeVar("InitT", bound=Callable[..., None])


def explain_ppo_keywords(init: InitT) -> InitT:
    """
    Decorate ``__init__`` so that a PPO keyword it does not take raises a ``TypeError`` saying what TRPO uses instead.

    The signature is unchanged (``inspect.signature`` and type checkers see ``init``'s).

    :param init: the constructor
    :return: the constructor, explaining PPO's keywords
    """

    @functools.wraps(init)
    def checked_init(self: Any, *args: Any, **kwargs: Any) -> None:
        for keyword in kwargs.keys() & PPO_KEYWORDS.keys():
            raise TypeError(
                f"{type(self).__name__}.__init__() got an unexpected keyword argument {keyword!r}: "
                f"it is {PPO_KEYWORDS[keyword]}"
            )
        init(self, *args, **kwargs)

    return checked_init  # type: ignore[return-value]
