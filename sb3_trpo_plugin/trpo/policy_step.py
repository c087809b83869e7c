"""
The trust-region step on the actor of an SB3 actor-critic policy, written for one process.

Given a batch of states, actions, their old log-probabilities and advantages::

    maximise  L(θ) + c·H̄(π_θ),  L(θ) = mean_t[ π_θ(a_t|s_t) / π_old(a_t|s_t) · A_t ]   subject to   KL̄(π_old ‖ π_θ) <= δ

(``H̄`` the mean entropy over the batch's states, ``c = ent_coef``, 0 by default: the plain surrogate)

is solved approximately by the natural gradient ``x ≈ (F + λI)⁻¹ g`` (conjugate gradient with Fisher-vector
products), scaled to the boundary ``β = sqrt(2δ / xᵀ(F + λI)x)`` and checked by a backtracking line search.
:class:`PolicyStep` orchestrates those pieces of :mod:`sb3_trpo_plugin.trust_region`; a data-parallel run
injects its :class:`~sb3_trpo_plugin.common.reductions.BatchReductions`, nothing else here knows about it.

The objective's pieces (surrogate, mean entropy, the advantages' z-score) are :mod:`.policy_objective`'s, the record
of what a step did (:class:`~.policy_step_stats.PolicyStepStats`) is :mod:`.policy_step_stats`'s.

Seam for variants of the policy (masked actions, recurrent policies): :meth:`PolicyStep.batch_distribution`,
how the action distributions of a batch's states are computed, with a :class:`PolicyBatch` subclass carrying
what they need (masks, hidden states); :meth:`PolicyBatch.every` selects the states the Fisher matrix uses.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_trpo_plugin.common.distributions import (
    distribution_parameters,
    fisher_metric,
    kl_per_state,
    mean_action_std,
    with_parameters,
)
from sb3_trpo_plugin.common.modes import has_statistics, training_mode
from sb3_trpo_plugin.common.observations import index_observations
from sb3_trpo_plugin.common.reductions import ONE_PROCESS, BatchReductions
from sb3_trpo_plugin.replicas.actor_jacobian import actor_jacobian
from sb3_trpo_plugin.trpo.policy_objective import mean_entropy, mean_entropy_value, surrogate_objective
from sb3_trpo_plugin.trpo.policy_step_stats import CG_STATUSES, PolicyStepStats
from sb3_trpo_plugin.trust_region import (
    ConjugateGradientStatus,
    Linearization,
    LineSearchResult,
    backtracking_line_search,
    conjugate_gradient,
    flatten,
    gauss_newton_vector_product,
    kl_hessian_vector_product,
    max_step_size,
    unflatten_like,
)
from sb3_trpo_plugin.trust_region.fisher import JacobianProducts, TensorListMap

FisherProduct = Literal["auto", "gauss_newton", "kl_hessian"]


@dataclass(frozen=True)
class PolicyBatch:
    """The data of the policy step: states, actions taken, their old log-probabilities, advantages."""

    observations: PyTorchObs
    actions: torch.Tensor
    old_log_prob: torch.Tensor
    advantages: torch.Tensor

    def every(self, k: int) -> PolicyBatch:
        """
        Every ``k``-th sample of the batch (variants with more per-sample fields override this).

        :param k: the step between selected samples
        :return: the selected samples
        """
        rows = slice(None, None, k)
        return PolicyBatch(
            index_observations(self.observations, rows), self.actions[rows], self.old_log_prob[rows], self.advantages[rows]
        )


@dataclass(frozen=True)
class TrustRegionSettings:
    """
    The hyperparameters of the policy step (see :class:`~sb3_trpo_plugin.TRPO` for their meaning).

    :param target_kl: the trust-region radius ``δ``
    :param cg_max_steps: conjugate-gradient iterations at most
    :param cg_damping: ``λ`` in ``F + λI``
    :param cg_residual_tol: the conjugate gradient stops once ``‖g - F x‖² <= cg_residual_tol · ‖g‖²``
    :param line_search_shrinking_factor: backtracking factor ``s``
    :param line_search_max_iter: trial steps at most
    :param fisher_product: ``"auto"``, ``"gauss_newton"`` (closed form) or ``"kl_hessian"`` (double backprop)
    :param fisher_sub_sampling_factor: ``F`` is estimated on every k-th state of the batch
    :param ent_coef: ``c``, the weight of the mean entropy in the objective ``L(θ) + c·H̄(π_θ)``
    """

    target_kl: float
    cg_max_steps: int
    cg_damping: float
    cg_residual_tol: float
    line_search_shrinking_factor: float
    line_search_max_iter: int
    fisher_product: FisherProduct
    fisher_sub_sampling_factor: int
    ent_coef: float = 0.0


@dataclass(frozen=True)
class LinearizedPolicy:
    """
    The local model of the policy step at ``θ_old``.

    :param objective: the objective at ``θ_old``: surrogate ``L(θ_old)`` (plus ``c·H̄(π_old)`` with an entropy bonus)
    :param gradient: ``g = ∇_θ`` of the objective at ``θ_old`` over the actor's parameters, flat
    :param fisher_product: ``v ↦ (F + λI) v``
    :param old_distribution: ``π_old``, detached from the graph
    :param entropy: ``H̄(π_old)``, the mean entropy over the batch's states (``nan`` when the distribution has none)
    """

    objective: float
    gradient: torch.Tensor
    fisher_product: Callable[[torch.Tensor], torch.Tensor]
    old_distribution: Distribution
    entropy: float = math.nan


class PolicyStep:
    """
    One trust-region step on the actor's parameters, in place.

    :param policy: the actor-critic policy
    :param actor_parameters: the parameters that shape the action distribution (they move; nothing else does)
    :param settings: the step's hyperparameters
    :param reductions: how this batch's statistics become the whole batch's (identity on one process)
    """

    def __init__(
        self,
        policy: ActorCriticPolicy,
        actor_parameters: Sequence[torch.nn.Parameter],
        settings: TrustRegionSettings,
        reductions: BatchReductions = ONE_PROCESS,
    ):
        self.policy = policy
        self.actor_parameters = list(actor_parameters)
        self.settings = settings
        self.reductions = reductions

    def batch_distribution(self, batch: PolicyBatch) -> Distribution:
        """
        ``π_θ(·|s)`` for the batch's states: the seam that masked or recurrent variants override.

        :param batch: the states (and whatever else a variant's distributions need)
        :return: the SB3 distribution of the current weights
        """
        return self.policy.get_distribution(batch.observations)

    def objective(self, distribution: Distribution, batch: PolicyBatch) -> torch.Tensor:
        """
        What the step maximises: the surrogate ``L(θ)``, plus ``c·H̄(π_θ)`` when ``ent_coef = c`` is not 0.

        :param distribution: ``π_θ`` on the batch's states
        :param batch: the policy step's data
        :return: scalar objective (differentiable when ``distribution`` is)
        """
        objective = surrogate_objective(distribution.log_prob(batch.actions), batch.old_log_prob, batch.advantages)
        ent_coef = self.settings.ent_coef
        if ent_coef == 0:  # the plain surrogate, bit for bit
            return objective
        entropy = mean_entropy(distribution)
        if entropy is None:
            raise ValueError(
                f"ent_coef={ent_coef} needs the entropy of the action distribution, and {type(distribution).__name__} "
                "has no closed form for it (gSDE with squash_output): use ent_coef=0"
            )
        return objective + ent_coef * entropy

    def take(self, batch: PolicyBatch) -> PolicyStepStats:
        """
        The trust-region step: ``x ≈ (F + λI)⁻¹ g`` by conjugate gradient, scaled by
        ``β = sqrt(2δ / xᵀ(F + λI)x)``, then backtracked until the KL bound holds and the objective
        improves. Any non-finite quantity rejects the step before it reaches the weights.

        Layers whose forward depends on the mode (BatchNorm, Dropout): the statistics are refreshed first by one
        training-mode pass over the batch (:meth:`refresh_statistics`), then the whole step (objective, gradient,
        Fisher products, line search) runs in evaluation mode, as rollouts and ``predict`` do. So the surrogate, the
        KL and the Fisher matrix are one deterministic function of the weights, and the KL the line search accepts
        is the KL between the policy before and after the step as it acts.

        :param batch: the policy step's data
        :return: what the step did
        """
        self.refresh_statistics(batch)
        with training_mode(self.policy, False):
            return self._take_in_evaluation_mode(batch)

    def refresh_statistics(self, batch: PolicyBatch) -> None:
        """
        Let the policy's statistics learn from the batch, as SB3's PPO's training-mode passes do: one forward over the
        batch's states in training mode, without gradients (BatchNorm: ``running ← (1 - m)·running + m·batch moment``
        for its momentum ``m``). Nothing happens for a policy without buffers.

        :param batch: the policy step's data
        """
        if not has_statistics(self.policy):
            return
        with torch.no_grad(), training_mode(self.policy, True):
            self.batch_distribution(batch)

    def _take_in_evaluation_mode(self, batch: PolicyBatch) -> PolicyStepStats:
        """:meth:`take`, the policy in evaluation mode."""
        settings = self.settings
        model = self.linearize(batch)
        gradient_norm = float(torch.linalg.vector_norm(model.gradient))
        action_std = mean_action_std(model.old_distribution)
        no_step = PolicyStepStats(
            model.objective,
            0.0,
            accepted=False,
            gradient_norm=gradient_norm,
            action_std=action_std,
            entropy=model.entropy,
            target_kl=settings.target_kl,
        )
        if not (math.isfinite(gradient_norm) and math.isfinite(model.objective)):
            return dataclasses.replace(no_step, non_finite=True)
        solve = conjugate_gradient(model.fisher_product, model.gradient, settings.cg_max_steps, settings.cg_residual_tol)
        cg_status = CG_STATUSES.index(solve.status)
        no_step = dataclasses.replace(no_step, cg_steps=solve.n_steps, cg_residual=solve.residual_norm, cg_status=cg_status)
        if not solve.ok:
            return dataclasses.replace(no_step, non_finite=solve.status is ConjugateGradientStatus.NON_FINITE)
        curvature = float(solve.quadratic_form(model.gradient))
        if not math.isfinite(curvature):
            return dataclasses.replace(no_step, non_finite=True)
        beta = max_step_size(curvature, settings.target_kl)
        if math.isnan(beta):  # a zero gradient (e.g. constant advantages): no direction to move along
            return no_step
        full_step = beta * solve.solution
        search = self.line_search(batch, model, full_step)
        return PolicyStepStats(
            objective=search.objective,
            kl=search.kl,
            accepted=search.accepted,
            line_search_steps=search.n_evaluations,
            step_fraction=search.step_fraction,
            cg_steps=solve.n_steps,
            cg_residual=solve.residual_norm,
            gradient_norm=gradient_norm,
            max_step_size=beta,
            expected_improvement=search.step_fraction * float(model.gradient @ full_step),
            actual_improvement=search.objective - model.objective,
            action_std=action_std,
            cg_status=cg_status,
            entropy=model.entropy,
            target_kl=settings.target_kl,
        )

    def linearize(self, batch: PolicyBatch) -> LinearizedPolicy:
        """
        Surrogate ``L``, its gradient ``g`` and the Fisher product ``v ↦ (F + λI) v`` at ``θ_old``, over the whole batch.

        Closed form (``F = Jᵀ M J``, with ``J = ∂η/∂θ`` for the distribution parameters ``η``): one
        forward pass, ``∂L/∂η`` on the small tensors ``η``, then ``g = Jᵀ ∂L/∂η`` from the same
        backward pass that sets up the products with ``J``. With Fisher sub-sampling, ``g`` uses the
        whole batch and ``F`` every k-th state, from its own smaller graph. Otherwise ``F v`` is the
        Hessian-vector product of the mean KL by double backpropagation.

        :param batch: the policy step's data
        :return: the local model
        """
        distribution = self.batch_distribution(batch)
        parameters = distribution_parameters(distribution)
        metric = None if parameters is None else fisher_metric(distribution, 1.0 / batch.advantages.shape[0])
        if self.settings.fisher_product == "gauss_newton" and metric is None:
            raise ValueError(
                f"fisher_product='gauss_newton' has no closed form for {type(distribution).__name__}; "
                "use 'auto' or 'kl_hessian'"
            )
        if self.settings.fisher_product == "kl_hessian" or parameters is None or metric is None:
            local = self._linearize_by_double_backprop(batch, distribution, parameters)
        else:
            local = self._linearize_in_closed_form(batch, distribution, parameters, metric)
        gradient = self.reductions.mean(local.gradient)
        # H̄(π_old) for the logs, once here whichever way the local model was built.
        objective, entropy = self.reductions.mean_floats(local.objective, mean_entropy_value(local.old_distribution))
        local_product, fisher_reductions = local.fisher_product, self.fisher_reductions(batch)

        def fisher_product(vector: torch.Tensor) -> torch.Tensor:
            return fisher_reductions.mean(local_product(vector))

        return dataclasses.replace(
            local, objective=objective, gradient=gradient, fisher_product=fisher_product, entropy=entropy
        )

    def fisher_rows(self, batch: PolicyBatch) -> slice | torch.Tensor:
        """The rows on which double backpropagation estimates ``F``: every k-th state (variants: what ``every`` keeps)."""
        return slice(None, None, self.settings.fisher_sub_sampling_factor)

    def fisher_reductions(self, batch: PolicyBatch) -> BatchReductions:
        """How this batch's Fisher products become the whole batch's (variants may weigh them by their rows)."""
        return self.reductions

    def _linearize_in_closed_form(
        self, batch: PolicyBatch, distribution: Distribution, parameters: list[torch.Tensor], metric: TensorListMap
    ) -> LinearizedPolicy:
        """``g`` and ``F v = Jᵀ M J v`` from one forward graph (see :meth:`linearize`)."""
        leaves = [p.detach().requires_grad_(True) for p in parameters]
        # The objective depends on θ only through η (the entropy too): ∂/∂η here, then g = Jᵀ ∂/∂η.
        objective = self.objective(with_parameters(distribution, leaves), batch)
        objective_grad = torch.autograd.grad(objective, leaves)
        old_distribution = with_parameters(distribution, [p.detach() for p in parameters])
        k = self.settings.fisher_sub_sampling_factor
        hand_derived = self._hand_derived_jacobian(batch, distribution)
        linearization: JacobianProducts
        if hand_derived is not None:
            gradient = hand_derived.vjp(objective_grad)
            linearization = hand_derived
        elif k == 1:  # g = Jᵀ ∂L/∂η from the same backward pass that sets up the products with J
            linearization = Linearization(parameters, self.actor_parameters, cotangent=objective_grad)
            gradient = linearization.transposed_product_at_cotangent
        else:
            gradient = flatten(torch.autograd.grad(parameters, self.actor_parameters, grad_outputs=objective_grad))
        if k > 1:
            fisher_batch = batch.every(k)
            fisher_distribution = self.batch_distribution(fisher_batch)
            fisher_parameters = distribution_parameters(fisher_distribution) or []
            fisher_subset_metric = fisher_metric(fisher_distribution, 1.0 / fisher_parameters[0].shape[0])
            assert fisher_subset_metric is not None  # the same kind of distribution as the whole batch's
            metric = fisher_subset_metric
            hand_derived = self._hand_derived_jacobian(fisher_batch, fisher_distribution)
            linearization = hand_derived or Linearization(fisher_parameters, self.actor_parameters)
        return LinearizedPolicy(
            objective=float(objective.detach()),
            gradient=gradient,
            fisher_product=gauss_newton_vector_product(linearization, metric, self.settings.cg_damping),
            old_distribution=old_distribution,
        )

    def _hand_derived_jacobian(self, batch: PolicyBatch, distribution: Distribution) -> JacobianProducts | None:
        """
        ``J = ∂η/∂θ`` derived by hand for SB3's plain MLP actors (:mod:`sb3_trpo_plugin.replicas.actor_jacobian`,
        proved against autograd before it first serves the policy), about twice as fast per product as autograd's;
        ``None`` for other actors, for variants that compute a batch's distributions their own way, and where the
        proof found a mismatch.
        """
        if type(self).batch_distribution is not PolicyStep.batch_distribution:
            return None
        return actor_jacobian(self.policy, self.actor_parameters, batch.observations, distribution)

    def _linearize_by_double_backprop(
        self, batch: PolicyBatch, distribution: Distribution, parameters: list[torch.Tensor] | None
    ) -> LinearizedPolicy:
        """``g`` by backpropagation and ``F v = ∇(∇KL̄ · v)`` for any distribution with a differentiable KL."""
        if parameters is not None:
            old_distribution = with_parameters(distribution, [p.detach() for p in parameters])
        else:
            # An unknown distribution cannot be detached: evaluate π_old without a graph, then π_θ with one.
            # SB3 policies return one distribution object per call and mutate it, hence the shallow copy.
            with torch.no_grad():
                old_distribution = copy.copy(self.batch_distribution(batch))
            distribution = self.batch_distribution(batch)
        objective = self.objective(distribution, batch)
        gradient = flatten(torch.autograd.grad(objective, self.actor_parameters, retain_graph=True))
        kl = kl_per_state(old_distribution, distribution)
        mean_kl = kl[self.fisher_rows(batch)].mean()
        return LinearizedPolicy(
            objective=float(objective.detach()),
            gradient=gradient,
            fisher_product=kl_hessian_vector_product(mean_kl, self.actor_parameters, self.settings.cg_damping),
            old_distribution=old_distribution,
        )

    def line_search(self, batch: PolicyBatch, model: LinearizedPolicy, full_step: torch.Tensor) -> LineSearchResult:
        """
        Try ``θ_old + sⁱ β x`` for ``i = 0, 1, …`` until ``KL̄ <= δ`` and the objective improves; on failure put
        back the exact old weights, and on any exception during a trial too (an out-of-memory error,
        ``KeyboardInterrupt``: the old weights are back before it propagates). Weights are written in place: no
        copies of the network.

        :param batch: the policy step's data
        :param model: the local model at ``θ_old``
        :param full_step: ``β x``, flat
        :return: what was accepted, if anything
        """
        params: list[torch.Tensor] = list(self.actor_parameters)
        originals = [p.detach().clone() for p in params]
        step = unflatten_like(full_step, params)

        @torch.no_grad()
        def evaluate(fraction: float) -> tuple[float, float]:
            torch._foreach_copy_(params, originals)
            torch._foreach_add_(params, step, alpha=fraction)
            try:
                distribution = self.batch_distribution(batch)
            except ValueError:  # torch's argument check: these weights give no valid distribution (e.g. σ = inf)
                objective = kl = torch.tensor(math.nan)  # a rejected trial (still reduced: every process decides alike)
            else:
                objective = self.objective(distribution, batch)
                kl = kl_per_state(model.old_distribution, distribution).mean()
            whole_objective, whole_kl = self.reductions.mean_floats(objective, kl)
            return whole_objective, whole_kl

        settings = self.settings
        result: LineSearchResult | None = None
        try:
            result = backtracking_line_search(
                evaluate,
                model.objective,
                settings.target_kl,
                settings.line_search_shrinking_factor,
                settings.line_search_max_iter,
            )
        finally:  # BaseException included: an interrupted trial must not leave its weights behind
            if result is None or not result.accepted:
                with torch.no_grad():
                    torch._foreach_copy_(params, originals)
        return result
