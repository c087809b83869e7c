"""
The logs of one TRPO update: sb3-contrib's keys (so its dashboards and rl-zoo3's plots read them) and the trust-region
diagnostics, and at ``verbose >= 1`` a line saying why an update was cut short.
"""

from __future__ import annotations

import math

import torch
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.utils import explained_variance

from sb3_trpo_plugin.trpo.policy_step_stats import PolicyStepStats


def record_update(model: OnPolicyAlgorithm, step: PolicyStepStats, value_loss: float | None, rollout_is_finite: bool) -> None:
    """
    Record one update's logs in ``model.logger``.

    :param model: the algorithm, after the update (its rollout buffer still holds the update's rollout)
    :param step: what the policy step did
    :param value_loss: the critic's mean minibatch loss; ``None`` when the fit is pipelined (its loss is recorded when
        the fit is applied, before the logs are dumped)
    :param rollout_is_finite: whether the rollout's values, log-probabilities, returns and advantages were all finite
    """
    record = model.logger.record
    record("train/policy_objective", step.objective)
    if value_loss is not None:
        record("train/value_loss", value_loss)
    record("train/kl_divergence_loss", step.kl)
    record(
        "train/explained_variance",
        explained_variance(model.rollout_buffer.values.flatten(), model.rollout_buffer.returns.flatten()),
    )
    record("train/is_line_search_success", float(step.accepted))
    record("train/is_step_non_finite", float(step.non_finite))
    record("train/line_search_steps", step.line_search_steps)
    record("train/step_fraction", step.step_fraction)
    record("train/max_step_size", step.max_step_size)
    record("train/target_kl", step.target_kl)
    record("train/cg_steps", step.cg_steps)
    record("train/cg_residual", step.cg_residual)
    record("train/cg_status", step.cg_status_name, exclude="tensorboard")
    record("train/is_cg_breakdown", float(step.is_cg_breakdown))
    record("train/entropy_loss", -step.entropy)
    record("train/policy_gradient_norm", step.gradient_norm)
    record("train/expected_improvement", step.expected_improvement)
    record("train/actual_improvement", step.actual_improvement)
    if hasattr(model.policy, "log_std"):
        record("train/std", torch.exp(model.policy.log_std).mean().item())
    if math.isfinite(step.action_std):
        record("train/action_std", step.action_std)
    record("train/n_updates", model._n_updates, exclude="tensorboard")
    if not rollout_is_finite and model.verbose >= 1:
        print(f"TRPO update {model._n_updates}: non-finite values, log-probabilities, returns or advantages in the rollout")
    if step.non_finite and model.verbose >= 1:
        print(f"TRPO update {model._n_updates}: non-finite objective, gradient or step; the policy step was rejected")
    elif step.is_cg_breakdown and model.verbose >= 1:
        print(
            f"TRPO update {model._n_updates}: the conjugate gradient broke down ({step.cg_status_name} after "
            f"{step.cg_steps} steps); no policy step was taken (cg_damping > 0 keeps F + λI positive definite)"
        )
