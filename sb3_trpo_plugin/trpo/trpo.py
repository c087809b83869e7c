"""Trust Region Policy Optimization as a Stable-Baselines3 on-policy algorithm."""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import pathlib
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar, cast

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import MlpExtractor
from stable_baselines3.common.type_aliases import (
    DictRolloutBufferSamples,
    GymEnv,
    MaybeCallback,
    PyTorchObs,
    RolloutBufferSamples,
    Schedule,
)
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F

from sb3_trpo_plugin.common import distributed
from sb3_trpo_plugin.common.data_parallel import DataParallelOnPolicyAlgorithm
from sb3_trpo_plugin.common.distributions import (
    distribution_parameters,
    fisher_metric,
    kl_per_state,
    with_parameters,
)
from sb3_trpo_plugin.common.parameters import frozen, split_actor_critic, values_depend_on
from sb3_trpo_plugin.critic import MLPRegression
from sb3_trpo_plugin.rollout.checks import all_finite, check_rollout_buffer, with_environment_data_check
from sb3_trpo_plugin.serialization.model_file import write_model_file
from sb3_trpo_plugin.trpo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
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

SelfTRPO = TypeVar("SelfTRPO", bound="TRPO")

FisherProduct = Literal["auto", "gauss_newton", "kl_hessian"]


@dataclass(frozen=True)
class PolicyBatch:
    """The data of the policy step: states, actions taken, their old log-probabilities, advantages."""

    observations: PyTorchObs
    actions: torch.Tensor
    old_log_prob: torch.Tensor
    advantages: torch.Tensor


@dataclass(frozen=True)
class LinearizedPolicy:
    """
    The local model of the policy step at ``θ_old``.

    :param objective: surrogate ``L(θ_old)``
    :param gradient: ``g = ∇_θ L(θ_old)`` over the actor's parameters, flat
    :param fisher_product: ``v ↦ (F + λI) v``
    :param old_distribution: ``π_old``, detached from the graph
    """

    objective: float
    gradient: torch.Tensor
    fisher_product: Callable[[torch.Tensor], torch.Tensor]
    old_distribution: Distribution


@dataclass(frozen=True)
class PolicyStepStats:
    """What one trust-region step did, for the logs."""

    objective: float
    kl: float
    accepted: bool
    non_finite: bool = False
    line_search_steps: int = 0
    step_fraction: float = 0.0
    cg_steps: int = 0
    cg_residual: float = float("nan")
    gradient_norm: float = float("nan")
    max_step_size: float = float("nan")
    expected_improvement: float = 0.0
    actual_improvement: float = 0.0
    action_std: float = float("nan")

    def to_floats(self) -> list[float]:
        """The statistics as floats, in field order (to send them to other ranks)."""
        return [float(getattr(self, f.name)) for f in dataclasses.fields(self)]

    @classmethod
    def from_floats(cls, values: Sequence[float]) -> PolicyStepStats:
        """The inverse of :meth:`to_floats`."""
        kinds = {"float": float, "bool": bool, "int": int}
        return cls(**{f.name: kinds[str(f.type)](v) for f, v in zip(dataclasses.fields(cls), values, strict=True)})


def surrogate_objective(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """
    Importance-sampled surrogate ``L(θ) = mean_t[ π_θ(a_t|s_t) / π_old(a_t|s_t) · A_t ]``.

    :param log_prob: ``log π_θ(a_t|s_t)``
    :param old_log_prob: ``log π_old(a_t|s_t)``
    :param advantages: ``A_t``
    :return: scalar surrogate
    """
    return (torch.exp(log_prob - old_log_prob) * advantages).mean()


def normalize_advantages(advantages: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """
    Z-score over the batch: ``Â = (A - mean A) / (std A + ε)``.

    Advantages that are all equal up to rounding (e.g. constant rewards) give zeros: their spread is
    rounding noise, which the z-score would otherwise blow up to unit scale and follow.

    :param advantages: ``A_t`` for the whole batch
    :param eps: ``ε`` guarding a zero standard deviation
    :return: ``Â``
    """
    mean, std = distributed.global_mean_std(advantages)  # data-parallel: over all ranks' advantages
    normalized = (advantages - mean) / (std + eps)
    # Global quantities only, so that every rank takes the same decision.
    spread_is_rounding = std <= 32 * torch.finfo(advantages.dtype).eps * mean.abs()
    return torch.where(spread_is_rounding, torch.zeros_like(normalized), normalized)


def mean_action_std(distribution: Distribution) -> float:
    """
    Mean over states and action dimensions of the Gaussian action noise's standard deviation before any
    squashing (``nan`` for other distributions). With gSDE it is ``sqrt(Σ_j φ_j(s)² σ_ij²)`` per state, which
    ``train/std`` (the mean of ``exp(log_std)``, i.e. of ``σ``) does not show.
    """
    normal = getattr(distribution, "distribution", None)
    if isinstance(normal, torch.distributions.Normal):
        return float(normal.stddev.detach().mean())
    return float("nan")


def index_observations(observations: PyTorchObs, index: torch.Tensor | slice) -> PyTorchObs:
    """
    Select rows of a batch of observations, a tensor or a dict of tensors.

    :param observations: batch of observations
    :param index: row indices or a slice
    :return: the selected rows
    """
    if isinstance(observations, dict):
        return {key: value[index] for key, value in observations.items()}
    return observations[index]


def gather_rollout(
    rollout: RolloutBufferSamples | DictRolloutBufferSamples,
) -> RolloutBufferSamples | DictRolloutBufferSamples:
    """
    The union of every rank's rollout samples, rank by rank, on every rank, in one collective (the rollout
    itself when not data-parallel).

    :param rollout: this rank's samples (same shapes on every rank)
    :return: the same fields with every rank's rows
    """
    observations = rollout.observations
    others = [rollout.actions, rollout.old_values, rollout.old_log_prob, rollout.advantages, rollout.returns]
    if isinstance(observations, dict):
        keys = sorted(observations)
        gathered = distributed.all_gather_row_blocks([*(observations[key] for key in keys), *others])
        union_observations: PyTorchObs = dict(zip(keys, gathered, strict=False))
    else:
        keys = []
        gathered = distributed.all_gather_row_blocks([observations, *others])
        union_observations = gathered[0]
    actions, old_values, old_log_prob, advantages, returns = gathered[len(keys) or 1 :]
    return rollout._replace(  # type: ignore[return-value]
        observations=union_observations,  # type: ignore[arg-type]
        actions=actions,
        old_values=old_values,
        old_log_prob=old_log_prob,
        advantages=advantages,
        returns=returns,
    )


def _supports_fused(optimizer_class: type[torch.optim.Optimizer], device: torch.device) -> bool:
    """Whether ``optimizer_class`` has a fused implementation for ``device`` (Adam/AdamW; CPU since torch 2.4)."""
    if optimizer_class not in (torch.optim.Adam, torch.optim.AdamW):
        return False
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return device.type == "cuda" or (device.type == "cpu" and (major, minor) >= (2, 4))


def _validate_hyperparameters(**values: Any) -> None:
    """Raise ``ValueError`` naming the parameter and its allowed range for an out-of-range value."""
    rules: dict[str, tuple[Callable[[Any], bool], str]] = {
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
    for name, value in values.items():
        is_valid, allowed = rules[name]
        if not is_valid(value):
            raise ValueError(f"{name} must be {allowed}, got {value!r}")


class TRPO(DataParallelOnPolicyAlgorithm):  # an OnPolicyAlgorithm that also runs under torch.distributed
    """
    Trust Region Policy Optimization (TRPO).

    Paper: https://arxiv.org/abs/1502.05477. Each update takes one step on the policy that
    maximises the surrogate advantage inside a KL trust region, then regresses the critic::

        maximise  L(θ) = E[π_θ(a|s) / π_old(a|s) · A]   subject to   KL̄(π_old ‖ π_θ) <= δ

    solved approximately by the natural gradient ``x = F⁻¹g`` (conjugate gradient with
    Fisher-vector products), scaled to the boundary ``β = sqrt(2δ / xᵀFx)`` and checked by a
    backtracking line search. The constructor takes the same keywords, with the same meanings and
    defaults, as sb3-contrib's ``TRPO``.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy, or an
        ``ActorCriticPolicy`` subclass)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate of the critic's optimiser; it can be a function of the
        current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
        (i.e. rollout buffer size is n_steps * n_envs where n_envs is number of environment copies running in parallel).
        ``n_steps * n_envs`` must be greater than 1 when advantages are normalised
    :param batch_size: Minibatch size for the critic's regression
    :param gamma: Discount factor
    :param cg_max_steps: Maximum number of conjugate gradient steps (Fisher-vector products) to solve ``F x = g``
    :param cg_damping: Damping ``λ`` added to the Fisher matrix ``F`` (the Hessian of the mean KL that
        ``target_kl`` bounds): the solver works with ``F + λI``
    :param line_search_shrinking_factor: Step-size reduction factor ``s`` of the backtracking line search
        (i.e., ``theta_new = theta + s^i * beta * x``)
    :param line_search_max_iter: Maximum number of trial steps of the backtracking line search
    :param n_critic_updates: Number of epochs of critic regression per policy update
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
        instead of action noise exploration (default: False)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
        Default: -1 (only sample at the beginning of the rollout)
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, it will be automatically selected.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param normalize_advantage: Whether to normalise the advantages (z-score over the whole batch)
    :param target_kl: Trust-region radius ``δ``: the largest mean KL divergence between the old and the
        new policy that a step may reach. Values like 0.01, 0.05. As in sb3-contrib (and so in rl-zoo3's
        tuned values), on Box and MultiBinary action spaces the KL is averaged over the ``d`` action
        dimensions: the KL of the joint action distribution is bounded by ``d · target_kl``
    :param sub_sampling_factor: Use every k-th sample of the (shuffled) batch for the policy step, to make it
        faster (see p40-42 of John Schulman's thesis http://joschu.net/docs/thesis.pdf); the critic uses all
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: the verbosity level: 0 no output, 1 info, 2 debug
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    :param fisher_product: How Fisher-vector products are computed: ``"gauss_newton"`` uses the closed
        form ``Jᵀ M J v`` (Categorical, MultiCategorical, Bernoulli, Gaussian and gSDE policies),
        ``"kl_hessian"`` double-backpropagates the mean KL (any distribution), ``"auto"`` takes the
        closed form where it exists. Both compute the same exact Hessian of the mean KL
    :param cg_residual_tol: The conjugate gradient stops early once the squared residual ``‖g - F x‖²``
        falls below this
    :param fisher_sub_sampling_factor: Estimate the Fisher matrix on every k-th state of the policy batch
        while the gradient uses all of it (the TRPO paper uses 10% of the batch, i.e. 10). Each
        Fisher-vector product then costs about 1/k; 1 (the default) uses every state
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: ActorCriticPolicy
    #: Data-parallel: run the policy step and the critic's regression side by side on different ranks when the
    #: critic does not depend on the actor (see :meth:`_split_update`); ``False`` averages every step over ranks.
    split_update: bool = True

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        n_steps: int = 2048,
        batch_size: int = 128,
        gamma: float = 0.99,
        cg_max_steps: int = 15,
        cg_damping: float = 0.1,
        line_search_shrinking_factor: float = 0.8,
        line_search_max_iter: int = 10,
        n_critic_updates: int = 10,
        gae_lambda: float = 0.95,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        normalize_advantage: bool = True,
        target_kl: float = 0.01,
        sub_sampling_factor: int = 1,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
        fisher_product: FisherProduct = "auto",
        cg_residual_tol: float = 1e-10,
        fisher_sub_sampling_factor: int = 1,
    ):
        _validate_hyperparameters(
            target_kl=target_kl,
            cg_max_steps=cg_max_steps,
            cg_damping=cg_damping,
            cg_residual_tol=cg_residual_tol,
            line_search_shrinking_factor=line_search_shrinking_factor,
            line_search_max_iter=line_search_max_iter,
            batch_size=batch_size,
            n_critic_updates=n_critic_updates,
            sub_sampling_factor=sub_sampling_factor,
            fisher_product=fisher_product,
            fisher_sub_sampling_factor=fisher_sub_sampling_factor,
        )
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=0.0,  # TRPO has no entropy bonus
            vf_coef=0.0,  # the critic is fitted separately
            max_grad_norm=0.0,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary),
        )
        self.normalize_advantage = normalize_advantage
        self.batch_size = batch_size
        self.cg_max_steps = cg_max_steps
        self.cg_damping = cg_damping
        self.cg_residual_tol = cg_residual_tol
        self.line_search_shrinking_factor = line_search_shrinking_factor
        self.line_search_max_iter = line_search_max_iter
        self.target_kl = target_kl
        self.n_critic_updates = n_critic_updates
        self.sub_sampling_factor = sub_sampling_factor
        self.fisher_product = fisher_product
        self.fisher_sub_sampling_factor = fisher_sub_sampling_factor
        if self.env is not None:
            self._check_buffer_size()
        if _init_setup_model:
            self._setup_model()

    def _check_buffer_size(self) -> None:
        """Refuse a one-sample buffer with advantage normalisation; warn on a truncated last minibatch."""
        buffer_size = self.n_envs * self.n_steps
        if self.normalize_advantage and buffer_size <= 1:
            raise ValueError(
                "n_steps * n_envs must be greater than 1 when normalize_advantage=True (the standard deviation "
                f"of one advantage is undefined); got n_steps={self.n_steps}, n_envs={self.n_envs}"
            )
        if buffer_size % self.batch_size > 0:
            warnings.warn(
                f"You have specified a mini-batch size of {self.batch_size}, but because the `RolloutBuffer` is of "
                f"size `n_steps * n_envs = {buffer_size}`, after every {buffer_size // self.batch_size} untruncated "
                f"mini-batches, there will be a truncated mini-batch of size {buffer_size % self.batch_size}\n"
                "We recommend using a `batch_size` that is a factor of `n_steps * n_envs`.\n"
                f"Info: (n_steps={self.n_steps} and n_envs={self.n_envs})",
                stacklevel=3,
            )

    def _setup_model(self) -> None:
        super()._setup_model()
        self._actor_params, self._critic_params = split_actor_critic(self.policy)
        self._critic_depends_on_actor = values_depend_on(self.policy, self._actor_params)
        #: Data-parallel: the critic's shuffles of all ranks' gathered samples, seeded alike on every rank.
        self._critic_shuffle_generator: torch.Generator | None = None
        if not self._critic_params:
            raise ValueError(
                "Every trainable parameter of the policy shapes the action distribution, so the critic has nothing "
                "of its own to train: give the value function its own layers (e.g. a value head)"
            )
        # The critic's optimiser holds the critic's parameters only: the actor moves by the trust-region step alone.
        optimizer_kwargs = dict(self.policy.optimizer_kwargs)
        if _supports_fused(self.policy.optimizer_class, self.device) and not {"fused", "foreach"} & optimizer_kwargs.keys():
            # Same update, one kernel for all tensors: the critic's many small steps are bound by per-op overhead.
            optimizer_kwargs["fused"] = True
        self.policy.optimizer = self.policy.optimizer_class(  # type: ignore[call-arg]
            self._critic_params, lr=self.lr_schedule(1), **optimizer_kwargs
        )

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "_actor_params",
            "_critic_params",
            "_critic_depends_on_actor",
            "_critic_shuffle_generator",
        ]

    def train(self) -> None:
        """One TRPO update from the rollout buffer: a trust-region step on the actor, then the critic's regression."""
        check_rollout_buffer(self.rollout_buffer, self.logger)  # raises on non-finite environment data
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        rollout = next(self.rollout_buffer.get(batch_size=None))

        if self._splits_update():
            policy_step, value_loss = self._split_update(rollout)
        else:
            policy_step = self._policy_step(self._policy_batch(rollout))
            value_loss = self._critic_regression(rollout.observations, rollout.returns)

        self._n_updates += 1
        self._log_update(policy_step, value_loss)

    def _policy_batch(self, rollout: RolloutBufferSamples | DictRolloutBufferSamples) -> PolicyBatch:
        """Every ``sub_sampling_factor``-th sample of the rollout, with the advantages z-scored over the whole batch."""
        advantages = normalize_advantages(rollout.advantages) if self.normalize_advantage else rollout.advantages
        actions = rollout.actions.long().flatten() if isinstance(self.action_space, spaces.Discrete) else rollout.actions
        every = slice(None, None, self.sub_sampling_factor)
        return PolicyBatch(
            index_observations(rollout.observations, every), actions[every], rollout.old_log_prob[every], advantages[every]
        )

    def _splits_update(self) -> bool:
        """Whether this update runs split over ranks (see :meth:`_split_update`)."""
        return distributed.is_distributed() and self.split_update and not self._critic_depends_on_actor

    def _split_update(self, rollout: RolloutBufferSamples | DictRolloutBufferSamples) -> tuple[PolicyStepStats, float]:
        """
        Data-parallel, with a critic that does not depend on the actor's parameters: given the rollout, the
        trust-region step and the critic's regression are independent, so they run at the same time on
        different ranks. The union of all ranks' rollouts is gathered once; rank 0 fits the critic to it while
        the other ranks take the policy step on it, each as a single process given that union would; one more
        collective then hands every rank the new actor and the step's statistics (from rank 1) and the new
        critic (from rank 0). Two collectives per update instead of one per Fisher-vector product, line-search
        trial and critic minibatch, and the same update (each critic minibatch is the union of one minibatch of
        ``batch_size`` per rank, as on the other path). The critic's optimiser state is kept on rank 0, which saves.

        :return: the policy step's statistics and the critic's mean loss, on every rank
        """
        n_ranks, rank = distributed.world_size(), distributed.rank()
        union = gather_rollout(rollout)
        actor, critic = self._actor_params, self._critic_params
        n_statistics = len(dataclasses.fields(PolicyStepStats))
        with distributed.alone():
            if rank == 0:
                value_loss = self._critic_regression(union.observations, union.returns, n_ranks)
                parts = [*(torch.zeros_like(p) for p in actor), *critic, torch.zeros(n_statistics), value_loss]
            else:
                step = self._policy_step(self._policy_batch(union))
                mine = rank == 1  # policy ranks compute the same step; one of them hands it over
                parts = [*(p if mine else torch.zeros_like(p) for p in actor), *(torch.zeros_like(p) for p in critic)]
                parts += [step.to_floats() if mine else torch.zeros(n_statistics), 0.0]
        # Float64 in transit: float32 weights come back exactly, and adding the other ranks' zeros is exact.
        exchange = torch.cat(
            [torch.as_tensor(part, dtype=torch.float64, device=self.device).detach().reshape(-1) for part in parts]
        )
        exchange = distributed.all_reduce_sum(exchange, "split update: new actor, critic and statistics")
        weights, statistics = exchange[: -n_statistics - 1], exchange[-n_statistics - 1 :].tolist()
        with torch.no_grad():
            torch._foreach_copy_([*actor, *critic], unflatten_like(weights, [*actor, *critic]))
        return PolicyStepStats.from_floats(statistics[:-1]), statistics[-1]

    def _policy_step(self, batch: PolicyBatch) -> PolicyStepStats:
        """
        The trust-region step: ``x ≈ (F + λI)⁻¹ g`` by conjugate gradient, scaled by
        ``β = sqrt(2δ / xᵀ(F + λI)x)``, then backtracked until the KL bound holds and the surrogate
        improves. Any non-finite quantity rejects the step before it reaches the weights.
        """
        model = self._linearize_policy(batch)
        if distributed.is_distributed():  # data-parallel: L, g and F v of the union of all ranks' batches
            gradient, objective = distributed.all_reduce_mean_with_scalar(model.gradient, model.objective)
            fisher_product = distributed.averaged(model.fisher_product)
            model = dataclasses.replace(model, objective=objective, gradient=gradient, fisher_product=fisher_product)
        gradient_norm = float(torch.linalg.vector_norm(model.gradient))
        action_std = mean_action_std(model.old_distribution)
        no_step = PolicyStepStats(model.objective, 0.0, accepted=False, gradient_norm=gradient_norm, action_std=action_std)
        if not (math.isfinite(gradient_norm) and math.isfinite(model.objective)):
            return dataclasses.replace(no_step, non_finite=True)
        solve = conjugate_gradient(model.fisher_product, model.gradient, self.cg_max_steps, self.cg_residual_tol)
        no_step = dataclasses.replace(no_step, cg_steps=solve.n_steps, cg_residual=solve.residual_norm)
        if not solve.ok:
            return dataclasses.replace(no_step, non_finite=solve.status is ConjugateGradientStatus.NON_FINITE)
        curvature = float(solve.quadratic_form(model.gradient))
        if not math.isfinite(curvature):
            return dataclasses.replace(no_step, non_finite=True)
        beta = max_step_size(curvature, self.target_kl)
        if math.isnan(beta):  # a zero gradient (e.g. constant advantages): no direction to move along
            return no_step
        full_step = beta * solve.solution
        search = self._line_search(batch, model, full_step)
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
        )

    def _linearize_policy(self, batch: PolicyBatch) -> LinearizedPolicy:
        """
        Surrogate ``L``, its gradient ``g`` and the Fisher product ``v ↦ (F + λI) v`` at ``θ_old``.

        Closed form (``F = Jᵀ M J``, with ``J = ∂η/∂θ`` for the distribution parameters ``η``): one
        forward pass, ``∂L/∂η`` on the small tensors ``η``, then ``g = Jᵀ ∂L/∂η`` from the same
        backward pass that sets up the products with ``J``. With Fisher sub-sampling, ``g`` uses the
        whole batch and ``F`` every k-th state, from its own smaller graph. Otherwise ``F v`` is the
        Hessian-vector product of the mean KL by double backpropagation.
        """
        distribution = self.policy.get_distribution(batch.observations)
        parameters = distribution_parameters(distribution)
        metric = None if parameters is None else fisher_metric(distribution, 1.0 / batch.advantages.shape[0])
        if self.fisher_product == "gauss_newton" and metric is None:
            raise ValueError(
                f"fisher_product='gauss_newton' has no closed form for {type(distribution).__name__}; "
                "use 'auto' or 'kl_hessian'"
            )
        if self.fisher_product == "kl_hessian" or parameters is None or metric is None:
            return self._linearize_policy_by_double_backprop(batch, distribution, parameters)

        leaves = [p.detach().requires_grad_(True) for p in parameters]
        objective = surrogate_objective(
            with_parameters(distribution, leaves).log_prob(batch.actions), batch.old_log_prob, batch.advantages
        )
        objective_grad = torch.autograd.grad(objective, leaves)
        old_distribution = with_parameters(distribution, [p.detach() for p in parameters])
        if self.fisher_sub_sampling_factor == 1:
            linearization = Linearization(parameters, self._actor_params, cotangent=objective_grad)
            gradient = linearization.transposed_product_at_cotangent
        else:
            gradient = flatten(torch.autograd.grad(parameters, self._actor_params, grad_outputs=objective_grad))
            fisher_distribution = self.policy.get_distribution(self._fisher_states(batch.observations))
            fisher_parameters = distribution_parameters(fisher_distribution) or []
            linearization = Linearization(fisher_parameters, self._actor_params)
            metric = fisher_metric(fisher_distribution, 1.0 / fisher_parameters[0].shape[0])
            assert metric is not None  # the same kind of distribution as above
        return LinearizedPolicy(
            objective=float(objective.detach()),
            gradient=gradient,
            fisher_product=gauss_newton_vector_product(linearization, metric, self.cg_damping),
            old_distribution=old_distribution,
        )

    def _linearize_policy_by_double_backprop(
        self, batch: PolicyBatch, distribution: Distribution, parameters: list[torch.Tensor] | None
    ) -> LinearizedPolicy:
        """``g`` by backpropagation and ``F v = ∇(∇KL̄ · v)`` for any distribution with a differentiable KL."""
        if parameters is not None:
            old_distribution = with_parameters(distribution, [p.detach() for p in parameters])
        else:
            # An unknown distribution cannot be detached: evaluate π_old without a graph, then π_θ with one.
            # SB3 policies return one distribution object per call and mutate it, hence the shallow copy.
            with torch.no_grad():
                old_distribution = copy.copy(self.policy.get_distribution(batch.observations))
            distribution = self.policy.get_distribution(batch.observations)
        objective = surrogate_objective(distribution.log_prob(batch.actions), batch.old_log_prob, batch.advantages)
        gradient = flatten(torch.autograd.grad(objective, self._actor_params, retain_graph=True))
        kl = kl_per_state(old_distribution, distribution)
        mean_kl = kl[:: self.fisher_sub_sampling_factor].mean()
        return LinearizedPolicy(
            objective=float(objective.detach()),
            gradient=gradient,
            fisher_product=kl_hessian_vector_product(mean_kl, self._actor_params, self.cg_damping),
            old_distribution=old_distribution,
        )

    def _fisher_states(self, rows: PyTorchObs) -> PyTorchObs:
        """Every ``fisher_sub_sampling_factor``-th row of a (shuffled) batch: the states ``F`` is estimated on."""
        return index_observations(rows, slice(None, None, self.fisher_sub_sampling_factor))

    def _line_search(self, batch: PolicyBatch, model: LinearizedPolicy, full_step: torch.Tensor) -> LineSearchResult:
        """
        Try ``θ_old + sⁱ β x`` for ``i = 0, 1, …`` until ``KL̄ <= δ`` and ``L`` improves; on failure put back
        the exact old weights. Weights are written in place: no copies of the network.
        """
        params: list[torch.Tensor] = list(self._actor_params)
        originals = [p.detach().clone() for p in params]
        step = unflatten_like(full_step, params)

        @torch.no_grad()
        def evaluate(fraction: float) -> tuple[float, float]:
            torch._foreach_copy_(params, originals)
            torch._foreach_add_(params, step, alpha=fraction)
            try:
                distribution = self.policy.get_distribution(batch.observations)
            except ValueError:  # torch's argument check: these weights give no valid distribution (e.g. σ = inf)
                objective = kl = torch.tensor(math.nan)  # a rejected trial; data-parallel, still reduced below
            else:
                objective = surrogate_objective(distribution.log_prob(batch.actions), batch.old_log_prob, batch.advantages)
                kl = kl_per_state(model.old_distribution, distribution).mean()
            if distributed.is_distributed():  # global means: every rank accepts or rejects the same step
                global_objective, global_kl = distributed.all_reduce_mean_float(objective, kl)
                return global_objective, global_kl
            return float(objective), float(kl)

        result = backtracking_line_search(
            evaluate, model.objective, self.target_kl, self.line_search_shrinking_factor, self.line_search_max_iter
        )
        if not result.accepted:
            with torch.no_grad():
                torch._foreach_copy_(params, originals)
        return result

    def _critic_regression(self, observations: PyTorchObs, returns: torch.Tensor, n_ranks: int = 1) -> float:
        """
        ``n_critic_updates`` epochs of minibatch regression ``min_φ mean (V_φ(s) - R̂)²`` to the λ-returns.

        Only the critic's own parameters move (the actor's are frozen, so a shared features extractor
        stays where the trust-region step put it). A non-finite loss or gradient skips its minibatch.

        Data-parallel, each minibatch is the union of every rank's minibatch of ``batch_size``. When the
        critic's inputs are precomputed features, they are gathered once and every rank fits the critic
        to all of them, with the same shuffles, so ranks stay identical without communicating per step
        (a small MLP costs less to run twice than ~40 synchronisations); otherwise each minibatch's
        gradient is averaged over ranks.

        :param observations: the states of the rollout
        :param returns: the λ-returns, the regression's targets
        :param n_ranks: how many ranks' rollouts ``observations`` and ``returns`` hold, rank by rank (already gathered)
        :return: mean value loss over all minibatches (``nan`` when there were none)
        """
        inputs, loss_and_gradients, inputs_are_features = self._critic_loss(observations)
        n_local = returns.shape[0] // n_ranks
        gathered = distributed.is_distributed() and inputs_are_features
        if gathered:
            inputs, returns = distributed.all_gather_rows(cast(torch.Tensor, inputs)), distributed.all_gather_rows(returns)
            n_ranks = distributed.world_size()
        losses = []
        with frozen(self._actor_params):
            for _ in range(self.n_critic_updates):
                # Shuffle once per epoch; minibatches are then contiguous slices (views, no gathers).
                order = self._critic_epoch_order(n_local, n_ranks, returns.device)
                epoch_inputs, epoch_returns = index_observations(inputs, order), returns[order]
                for start in range(0, n_local * n_ranks, self.batch_size * n_ranks):
                    minibatch = slice(start, start + self.batch_size * n_ranks)
                    loss = loss_and_gradients(index_observations(epoch_inputs, minibatch), epoch_returns[minibatch])
                    if distributed.is_distributed() and not gathered:  # mean gradient and loss over ranks' minibatches
                        loss = float(distributed.all_reduce_mean_gradients(self._critic_params, torch.tensor(loss)))
                    losses.append(loss)
                    # A non-finite loss or gradient (e.g. overflow from huge inputs) would make the weights NaN.
                    if math.isfinite(loss) and all_finite(p.grad for p in self._critic_params):
                        self.policy.optimizer.step()
        return float(np.mean(losses)) if losses else float("nan")

    def _critic_epoch_order(self, n_local: int, n_ranks: int, device: torch.device) -> torch.Tensor:
        """
        One epoch's order of the regression's samples: a random permutation. For ``n_ranks`` ranks' gathered
        samples (rank ``r`` holding rows ``r·n .. (r+1)·n - 1``), each rank's rows are shuffled apart and the
        minibatches interleaved, so that slice ``i`` of ``n_ranks·batch_size`` rows holds minibatch ``i`` of
        every rank. The shuffles then come from a generator seeded alike on all ranks.
        """
        if n_ranks == 1:
            return torch.randperm(n_local, device=device)
        if self._critic_shuffle_generator is None:
            seed = distributed.broadcast_object(int(torch.randint(2**62, ())))
            self._critic_shuffle_generator = torch.Generator().manual_seed(seed)
        generator = self._critic_shuffle_generator
        permutations = torch.stack([torch.randperm(n_local, generator=generator) + r * n_local for r in range(n_ranks)])
        return torch.cat([block.reshape(-1) for block in permutations.split(self.batch_size, dim=1)]).to(device)

    def _critic_loss(self, observations: PyTorchObs) -> tuple[PyTorchObs, Callable[[PyTorchObs, torch.Tensor], float], bool]:
        """
        What the critic's regression feeds forward, the function that returns a minibatch's loss
        ``mean (V(s) - R̂)²`` with its gradient written into the critic parameters' ``.grad``, and whether
        what is fed forward is precomputed features.

        When the critic's features extractor holds none of the critic's parameters (a parameter-free
        flatten, or an extractor shared with the actor and so frozen here), its output cannot change
        during the regression: it is computed once instead of once per minibatch and epoch. When the
        rest of the critic is then SB3's plain MLP, its gradient is computed by hand
        (:class:`~sb3_trpo_plugin.critic.MLPRegression`, about 2× faster than autograd); otherwise autograd.
        """
        policy = self.policy
        critic_ids = {id(p) for p in self._critic_params}
        extractor_is_constant = not any(id(p) in critic_ids for p in policy.vf_features_extractor.parameters())
        if extractor_is_constant and type(policy).predict_values is ActorCriticPolicy.predict_values:
            with torch.no_grad():
                features = cast(torch.Tensor, policy.extract_features(observations, policy.vf_features_extractor))
            if type(policy.mlp_extractor).forward_critic is MlpExtractor.forward_critic and features.dim() == 2:
                regression = MLPRegression.from_layers([policy.mlp_extractor.value_net, policy.value_net])
                if regression is not None and {id(p) for p in regression.parameters() if p.requires_grad} == critic_ids:
                    return (
                        features,
                        lambda inputs, targets: regression.loss_and_gradients(cast(torch.Tensor, inputs), targets),
                        True,
                    )

            def value_of_features(features: PyTorchObs) -> torch.Tensor:
                return policy.value_net(policy.mlp_extractor.forward_critic(cast(torch.Tensor, features)))

            return features, self._autograd_loss(value_of_features), True
        return observations, self._autograd_loss(policy.predict_values), False

    def _autograd_loss(self, value_of: Callable[[PyTorchObs], torch.Tensor]) -> Callable[[PyTorchObs, torch.Tensor], float]:
        """The minibatch loss and gradient of the critic ``value_of`` by backpropagation."""

        def loss_and_gradients(inputs: PyTorchObs, targets: torch.Tensor) -> float:
            loss = F.mse_loss(value_of(inputs).flatten(), targets)
            for parameter in self._critic_params:  # the optimiser holds exactly these
                parameter.grad = None
            loss.backward()
            return loss.item()

        return loss_and_gradients

    def _log_update(self, step: PolicyStepStats, value_loss: float) -> None:
        """Record sb3-contrib's keys plus the trust-region diagnostics."""
        record = self.logger.record
        record("train/policy_objective", step.objective)
        record("train/value_loss", value_loss)
        record("train/kl_divergence_loss", step.kl)
        record(
            "train/explained_variance",
            explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()),
        )
        record("train/is_line_search_success", float(step.accepted))
        record("train/is_step_non_finite", float(step.non_finite))
        record("train/line_search_steps", step.line_search_steps)
        record("train/step_fraction", step.step_fraction)
        record("train/max_step_size", step.max_step_size)
        record("train/cg_steps", step.cg_steps)
        record("train/cg_residual", step.cg_residual)
        record("train/policy_gradient_norm", step.gradient_norm)
        record("train/expected_improvement", step.expected_improvement)
        record("train/actual_improvement", step.actual_improvement)
        if hasattr(self.policy, "log_std"):
            record("train/std", torch.exp(self.policy.log_std).mean().item())
        if math.isfinite(step.action_std):
            record("train/action_std", step.action_std)
        record("train/n_updates", self._n_updates, exclude="tensorboard")
        if step.non_finite and self.verbose >= 1:
            print(f"TRPO update {self._n_updates}: non-finite objective, gradient or step; the policy step was rejected")

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """
        Save the model as SB3 does, atomically, with a JSON description for :func:`sb3_trpo_plugin.safe_load`.

        A crash during the save leaves any previous file at ``path`` intact (see ``serialization/``).

        :param path: path to the file where the rl agent should be saved (``.zip`` is appended when it has no suffix)
        :param exclude: name of parameters that should be excluded in addition to the default ones
        :param include: name of parameters that might be excluded but should be included anyway
        """
        archive = io.BytesIO()
        super().save(archive, exclude=exclude, include=include)
        write_model_file(self, archive, path)

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool = False) -> BaseCallback:
        # Non-finite environment data is refused at the step that produced it (see rollout/checks.py).
        return super()._init_callback(with_environment_data_check(callback), progress_bar)

    def learn(
        self: SelfTRPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "TRPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfTRPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
