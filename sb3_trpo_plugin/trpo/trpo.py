"""
Trust Region Policy Optimization as a Stable-Baselines3 on-policy algorithm: the SB3 shell around the update.

``TRPO`` is SB3's ``OnPolicyAlgorithm`` (rollouts, rollout buffer, GAE, actor-critic policies, ``learn``,
``save``/``load``) with its own ``train()``: a trust-region step on the actor
(:mod:`~sb3_trpo_plugin.trpo.policy_step`), then the critic's regression to the λ-returns
(:mod:`~sb3_trpo_plugin.trpo.critic_fit`), both written for one process; the critic's fit may run in a worker process
during the next rollout (:mod:`~sb3_trpo_plugin.trpo.critic_pipeline`). A data-parallel run hands them reductions
over all processes' batches, or splits the update over the processes (:mod:`sb3_trpo_plugin.parallel`).
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.type_aliases import (
    DictRolloutBufferSamples,
    GymEnv,
    MaybeCallback,
    PyTorchObs,
    RolloutBufferSamples,
    Schedule,
    TensorDict,
)

from sb3_trpo_plugin.common.modes import has_statistics, modules_in_mode
from sb3_trpo_plugin.common.parameters import actor_modules, split_actor_critic, values_depend_on
from sb3_trpo_plugin.common.reductions import ONE_PROCESS, BatchReductions
from sb3_trpo_plugin.parallel import DataParallelOnPolicyAlgorithm
from sb3_trpo_plugin.parallel.split_update import split_update
from sb3_trpo_plugin.rollout.checks import check_rollout_buffer, with_environment_data_check
from sb3_trpo_plugin.serialization.model_file import write_model_file
from sb3_trpo_plugin.trpo.critic_fit import CriticRegression, critic_regression, fit_critic
from sb3_trpo_plugin.trpo.critic_optimizer import critic_optimizer, with_critic_optimizer_state
from sb3_trpo_plugin.trpo.critic_pipeline import CriticPipeline, pipelined_fit
from sb3_trpo_plugin.trpo.hyperparameters import (
    HyperparameterError,
    check_buffer_size,
    explain_ppo_keywords,
    scheduled,
    validate_hyperparameters,
)
from sb3_trpo_plugin.trpo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_trpo_plugin.trpo.policy_objective import normalize_advantages
from sb3_trpo_plugin.trpo.policy_step import FisherProduct, PolicyBatch, PolicyStep, TrustRegionSettings
from sb3_trpo_plugin.trpo.policy_step_stats import PolicyStepStats
from sb3_trpo_plugin.trpo.update_log import record_update

SelfTRPO = TypeVar("SelfTRPO", bound="TRPO")
Rollout = RolloutBufferSamples | DictRolloutBufferSamples


class TRPO(DataParallelOnPolicyAlgorithm):  # an OnPolicyAlgorithm that also runs under torch.distributed
    """
    Trust Region Policy Optimization (TRPO).

    Paper: https://arxiv.org/abs/1502.05477. Each update takes one step on the policy that
    maximises the surrogate advantage inside a KL trust region, then regresses the critic::

        maximise  L(θ) = E[π_θ(a|s) / π_old(a|s) · A]   subject to   KL̄(π_old ‖ π_θ) <= δ

    (plus ``ent_coef · H̄(π_θ)``, the mean entropy, when ``ent_coef > 0``)

    solved approximately by the natural gradient ``x = F⁻¹g`` (conjugate gradient with
    Fisher-vector products), scaled to the boundary ``β = sqrt(2δ / xᵀFx)`` and checked by a
    backtracking line search. The constructor takes the same keywords, with the same meanings and
    defaults, as sb3-contrib's ``TRPO``; PPO's keywords that TRPO has no use for (``n_epochs``, ``clip_range``,
    ``clip_range_vf``, ``vf_coef``, ``max_grad_norm``) raise a ``TypeError`` saying what TRPO uses instead, and an
    out-of-range value a :class:`~sb3_trpo_plugin.HyperparameterError` (a ``ValueError`` and an ``AssertionError``).

    Policies with BatchNorm, Dropout or other layers whose forward depends on the mode: rollouts and ``predict`` run
    in evaluation mode (as SB3's). Each update first lets the statistics learn from the batch by one training-mode
    pass over the policy step's states, then takes the whole trust-region step (gradient, Fisher products, line
    search) in evaluation mode, so that it is one deterministic function of the weights and the KL the line search
    accepted is the KL of the resulting policy (the refresh itself is not bounded by ``target_kl``). The critic's
    regression runs in training mode, as in SB3, except the modules the actor's distribution uses (e.g. a shared
    features extractor), which stay in evaluation mode so that it changes nothing the policy step decided.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy, or an
        ``ActorCriticPolicy`` subclass)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate of the critic's optimiser; it can be a function of the progress remaining (1 to 0)
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
    :param normalize_advantage: Whether to normalise the advantages (z-score over the policy step's batch, after
        sub-sampling, as sb3-contrib)
    :param target_kl: Trust-region radius ``δ``: the largest mean KL divergence between the old and the
        new policy that a step may reach. Values like 0.01, 0.05. As in sb3-contrib (and so in rl-zoo3's
        tuned values), on Box and MultiBinary action spaces the KL is averaged over the ``d`` action
        dimensions: the KL of the joint action distribution is bounded by ``d · target_kl``. A schedule of the progress
        remaining (as PPO's ``clip_range``; e.g. SB3's ``LinearSchedule(0.01, 0.0025, 1.0)``) must stay > 0
    :param sub_sampling_factor: Use every k-th sample of the (shuffled) batch for the policy step, to make it
        faster (see p40-42 of John Schulman's thesis http://joschu.net/docs/thesis.pdf); the critic uses all.
        As in sb3-contrib, the advantages are normalised over the sub-sample
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
    :param cg_residual_tol: The conjugate gradient stops early once the squared residual is this small relative
        to the gradient's: ``‖g - F x‖² <= cg_residual_tol · ‖g‖²``. Relative, so the step does not depend on the
        advantages' scale (with ``normalize_advantage=False``)
    :param fisher_sub_sampling_factor: Estimate the Fisher matrix on every k-th state of the policy batch
        while the gradient uses all of it (the TRPO paper uses 10% of the batch, i.e. 10). Each
        Fisher-vector product then costs about 1/k; 1 (the default) uses every state
    :param ent_coef: Entropy coefficient ``c``: the step maximises ``L(θ) + c·H̄(π_θ)``, the surrogate plus the mean
        entropy of the action distribution over the batch (OpenAI baselines' ``entcoeff``), in the gradient and in
        the line search's improvement test. 0 (the default) is the plain TRPO step, bit for bit
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: ActorCriticPolicy
    #: The trust-region step; variants of the policy (masked, recurrent) subclass it to compute a batch's distributions.
    policy_step_class: ClassVar[type[PolicyStep]] = PolicyStep
    #: Fit the critic in a worker process during the next rollout, where that gives the sequential update's weights and
    #: a core is left to it (:mod:`~sb3_trpo_plugin.trpo.critic_pipeline`); ``False`` (class or instance): in this one.
    pipeline_critic: bool = True
    #: Whether this class's update was shown exact when its critic is pipelined (variants are not, yet).
    critic_pipeline_supported: ClassVar[bool] = True

    @explain_ppo_keywords
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
        target_kl: float | Schedule = 0.01,
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
        ent_coef: float = 0.0,
    ):
        validate_hyperparameters(
            learning_rate=learning_rate,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
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
            ent_coef=ent_coef,
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
            check_buffer_size(self.n_steps, self.n_envs, self.batch_size, self.normalize_advantage, self.sub_sampling_factor)
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        distribution_of, values_of = self._policy_functions()
        self._actor_params, self._critic_params = split_actor_critic(self.policy, distribution_of)
        self._critic_depends_on_actor = values_depend_on(self.policy, self._actor_params, values_of)
        self._actor_modules = actor_modules(self.policy, distribution_of)
        if self.ent_coef > 0 and self.use_sde and self.policy.squash_output:
            raise HyperparameterError(
                f"ent_coef must be 0 with gSDE and squash_output=True (the squashed distribution has no closed-form "
                f"entropy), got {self.ent_coef!r}"
            )
        if self.collectives is not None and has_statistics(self.policy):
            raise NotImplementedError(
                "Data-parallel training of a policy with running statistics (e.g. BatchNorm): each process would "
                "refresh them on its own batch and the processes would drift apart; train on one process"
            )
        if not self._critic_params:
            raise ValueError(
                "Every trainable parameter of the policy shapes the action distribution, so the critic has nothing "
                "of its own to train: give the value function its own layers (e.g. a value head)"
            )
        # The critic's optimiser holds the critic's parameters only: the actor moves by the trust-region step alone.
        self.policy.optimizer = critic_optimizer(self.policy, self._critic_params, self.lr_schedule(1))
        self.critic_pipeline = CriticPipeline()

    def _policy_functions(self) -> tuple[Callable[[PyTorchObs], Distribution], Callable[[PyTorchObs], torch.Tensor]]:
        """
        Observations ↦ action distribution, and ↦ values: what the actor/critic split traces on one observation
        (:mod:`sb3_trpo_plugin.common.parameters`). Variants whose policies take more inputs (recurrent states) override it.
        """
        return self.policy.get_distribution, self.policy.predict_values

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "_actor_params",
            "_critic_params",
            "_critic_depends_on_actor",
            "_actor_modules",
            "critic_pipeline",
        ]

    def train(self) -> None:
        """One TRPO update from the rollout buffer: a trust-region step on the actor, then the critic's regression."""
        rollout_is_finite = check_rollout_buffer(self.rollout_buffer, self.logger)  # raises on non-finite environment data
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        rollout = next(self.rollout_buffer.get(batch_size=None))

        value_loss: float | None  # None: the critic's fit is pipelined
        if self.splits_update(self._critic_depends_on_actor):  # data-parallel: the two halves on different processes
            step, value_loss = self._split_over_processes(rollout)
        else:
            reductions = self.batch_reductions() or ONE_PROCESS  # data-parallel: over every process's batch
            step = self._take_policy_step(rollout, reductions)
            value_loss = self._fit_or_pipeline_critic(rollout, reductions)

        self._n_updates += 1
        record_update(self, step, value_loss, rollout_is_finite)

    def _take_policy_step(self, rollout: Rollout, reductions: BatchReductions = ONE_PROCESS) -> PolicyStepStats:
        """The trust-region step on the actor (:class:`~sb3_trpo_plugin.trpo.policy_step.PolicyStep`), in place."""
        return self.make_policy_step(reductions).take(self._policy_batch(rollout, reductions))

    def make_policy_step(self, reductions: BatchReductions = ONE_PROCESS) -> PolicyStep:
        """
        The policy step with the current hyperparameters (a scheduled ``target_kl`` at the progress remaining).

        :param reductions: how a process's batch statistics become the whole batch's (identity on one process)
        :return: the step, ready to take on a batch
        """
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(TrustRegionSettings)}
        values["target_kl"] = scheduled("target_kl", self.target_kl, self._current_progress_remaining)
        return self.policy_step_class(self.policy, self._actor_params, TrustRegionSettings(**values), reductions)

    def _policy_batch(self, rollout: Rollout, reductions: BatchReductions = ONE_PROCESS) -> PolicyBatch:
        """Every ``sub_sampling_factor``-th sample of the rollout, then its advantages z-scored (sb3-contrib's order)."""
        batch = self._whole_policy_batch(rollout)
        if self.sub_sampling_factor > 1:
            batch = batch.every(self.sub_sampling_factor)
        if self.normalize_advantage:
            batch = dataclasses.replace(batch, advantages=normalize_advantages(batch.advantages, reductions))
        return batch

    def _whole_policy_batch(self, rollout: Rollout) -> PolicyBatch:
        """
        The policy step's data from the whole rollout; variants (masks, recurrent sequences) return their
        :class:`PolicyBatch` subclass, whose ``every`` sub-samples what they add.
        """
        actions = rollout.actions.long().flatten() if isinstance(self.action_space, spaces.Discrete) else rollout.actions
        return PolicyBatch(rollout.observations, actions, rollout.old_log_prob, rollout.advantages)

    def _fit_critic(self, rollout: Rollout, reductions: BatchReductions = ONE_PROCESS) -> float:
        """
        ``n_critic_updates`` epochs of the critic's regression to the λ-returns; the mean loss (``nan`` if none).

        The modules the actor's distribution uses (a shared features extractor) stay in evaluation mode meanwhile:
        their statistics, like their parameters, belong to the policy step.
        """
        with modules_in_mode(self._actor_modules, False):
            return self._regress_critic(rollout, reductions)

    def _regress_critic(
        self, rollout: Rollout, reductions: BatchReductions, regression: CriticRegression | None = None
    ) -> float:
        """:meth:`_fit_critic` in the modes it sets (``regression``: the one already built for ``rollout``)."""
        self.critic_pipeline.fits_in_process += 1
        return fit_critic(
            regression or critic_regression(self.policy, self._critic_params, rollout.observations),
            rollout.returns,
            self.policy.optimizer,
            self._critic_params,
            self._actor_params,
            n_epochs=self.n_critic_updates,
            batch_size=self.batch_size,
            reductions=reductions,
        )

    def _fit_or_pipeline_critic(self, rollout: Rollout, reductions: BatchReductions) -> float | None:
        """
        The critic's fit here (its mean loss), or handed to the critic's worker process while the next rollout is
        collected (``None``, :mod:`~sb3_trpo_plugin.trpo.critic_pipeline`): when the pipeline is enabled, the rollout's
        values are computed at its end (no callback reads them per step), this is not the last update of ``learn()``
        (which returns with the critic fitted), the critic's head is a plain MLP and the worker is ready.
        """
        if not (
            reductions is ONE_PROCESS
            and self._critic_pipeline_enabled()
            and self.values_filled_at_rollout_end
            and self.num_timesteps < self._total_timesteps
        ):
            return self._fit_critic(rollout, reductions)
        with modules_in_mode(self._actor_modules, False):
            regression = critic_regression(self.policy, self._critic_params, rollout.observations)
            if regression.network is None or not self.critic_pipeline.ready():
                return self._regress_critic(rollout, reductions, regression)
        job, apply = pipelined_fit(regression, self.policy.optimizer, rollout.returns, self.n_critic_updates, self.batch_size)
        self.critic_pipeline.submit(job, apply)
        return None

    def _critic_pipeline_enabled(self) -> bool:
        """:attr:`pipeline_critic`, a class shown exact pipelined, one process, the CPU, a critic sharing nothing trained."""
        return (
            self.pipeline_critic
            and self.critic_pipeline_supported
            and self.collectives is None
            and self.device.type == "cpu"
            and not self._critic_depends_on_actor
        )

    def _critic_in_flight(self) -> bool:
        return self.critic_pipeline.in_flight

    def _await_critic(self) -> None:
        """Wait for the critic's fit in flight, if any, write it into the policy and record its loss."""
        value_loss = self.critic_pipeline.wait()
        if value_loss is not None:
            self.logger.record("train/value_loss", value_loss)

    def _split_over_processes(self, rollout: Rollout) -> tuple[PolicyStepStats, float]:
        """Data-parallel: the policy step and the critic's regression side by side on different processes (``parallel/``)."""
        assert self.collectives is not None
        return split_update(
            self.collectives,
            rollout,
            self._actor_params,
            self._critic_params,
            take_policy_step=self._take_policy_step,
            fit_critic=self._fit_critic,
            decode_statistics=PolicyStepStats.from_floats,
            n_statistics=len(dataclasses.fields(PolicyStepStats)),
        )

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

    def set_parameters(
        self,
        load_path_or_dict: str | TensorDict,
        exact_match: bool = True,
        device: torch.device | str = "auto",
    ) -> None:
        """
        SB3's ``set_parameters``, also for files of sb3-contrib's TRPO (so ``TRPO.load`` takes them): their optimiser
        state, saved over all of the policy's parameters, becomes the state of the critic's optimiser. An optimiser
        state of no layout the conversion knows is handed to SB3 as it is, so that what SB3 raises (torch's
        ``RuntimeError`` for a policy state that lacks an entry, checked first) is what this raises.

        :param load_path_or_dict: a saved model, or the dictionary of state dicts ``get_parameters`` returns
        :param exact_match: whether every module's state must be given
        :param device: device of the loaded tensors
        """
        self._await_critic()  # a fit in flight must not overwrite what is loaded
        params: dict[str, Any] = (  # as SB3's set_parameters
            load_path_or_dict
            if isinstance(load_path_or_dict, dict)
            else load_from_zip_file(load_path_or_dict, device=device, load_data=False)[1] or {}
        )
        params = with_critic_optimizer_state(self.policy, self._critic_params, params)
        super().set_parameters(params, exact_match=exact_match, device=device)

    def get_parameters(self) -> dict[str, dict[str, Any]]:
        self._await_critic()  # a pipelined fit in flight is part of the weights (``save`` reads them here too)
        return super().get_parameters()

    def _setup_learn(self, total_timesteps: int, *args: Any, **kwargs: Any) -> tuple[int, BaseCallback]:
        self._await_critic()
        setup = super()._setup_learn(total_timesteps, *args, **kwargs)
        if self._critic_pipeline_enabled():  # the worker becomes ready during the first rollouts (fits stay here until then)
            self.critic_pipeline.start_for((self._total_timesteps - self.num_timesteps) / (self.n_steps * self.n_envs))
        return setup

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
