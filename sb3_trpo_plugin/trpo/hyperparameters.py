"""The checks of TRPO's constructor keywords: an out-of-range value is refused with its name and allowed range."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

#: ``name -> (is_valid, allowed range)`` of the keywords checked on construction.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "target_kl": (lambda v: v is not None and v > 0, "> 0"),
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
}


def validate_hyperparameters(**values: Any) -> None:
    """
    Raise ``ValueError`` naming the parameter and its allowed range for an out-of-range value.

    :param values: keyword values, each named in :data:`RULES`
    """
    for name, value in values.items():
        is_valid, allowed = RULES[name]
        if not is_valid(value):
            raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_buffer_size(n_steps: int, n_envs: int, batch_size: int, normalize_advantage: bool) -> None:
    """
    Refuse a one-sample buffer with advantage normalisation; warn on a truncated last minibatch (as SB3's PPO does).

    :param n_steps: steps per environment per rollout
    :param n_envs: environments
    :param batch_size: the critic's minibatch size
    :param normalize_advantage: whether the advantages are z-scored over the batch
    """
    buffer_size = n_envs * n_steps
    if normalize_advantage and buffer_size <= 1:
        raise ValueError(
            "n_steps * n_envs must be greater than 1 when normalize_advantage=True (the standard deviation "
            f"of one advantage is undefined); got n_steps={n_steps}, n_envs={n_envs}"
        )
    if buffer_size % batch_size > 0:
        warnings.warn(
            f"You have specified a mini-batch size of {batch_size}, but because the `RolloutBuffer` is of "
            f"size `n_steps * n_envs = {buffer_size}`, after every {buffer_size // batch_size} untruncated "
            f"mini-batches, there will be a truncated mini-batch of size {buffer_size % batch_size}\n"
            "We recommend using a `batch_size` that is a factor of `n_steps * n_envs`.\n"
            f"Info: (n_steps={n_steps} and n_envs={n_envs})",
            stacklevel=3,
        )
