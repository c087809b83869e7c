"""
RecurrentTRPO: TRPO with sb3-contrib's LSTM policies, a drop-in for sb3-contrib's ``RecurrentPPO``.

The update is TRPO's (:class:`~sb3_trpo_plugin.TRPO`): a trust-region step on the actor, then the critic's
regression. What differs is where the data come from and how the distributions of a batch are computed: the
rollouts store the LSTM states (:mod:`~sb3_trpo_plugin.recurrent.rollout`), the batch is a set of padded sequences
(:class:`~sb3_trpo_plugin.recurrent.sequences.RecurrentPolicyBatch`), the policy step re-runs the actor's LSTM
over them (:class:`~sb3_trpo_plugin.recurrent.policy_step.RecurrentPolicyStep`), and a critic LSTM is fitted over
sequence minibatches (:mod:`~sb3_trpo_plugin.recurrent.critic_fit`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, cast

import torch
from gymnasium import spaces
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import (
    RecurrentDictRolloutBufferSamples,
    RecurrentRolloutBufferSamples,
    RNNStates,
)
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import MaybeCallback, PyTorchObs
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_plugin.common.reductions import ONE_PROCESS, BatchReductions, weighted_by_rows
from sb3_trpo_plugin.recurrent.critic_fit import feedforward_critic_regression, fit_critic_over_sequences
from sb3_trpo_plugin.recurrent.on_policy import RecurrentOnPolicyAlgorithm
from sb3_trpo_plugin.recurrent.policies import CnnLstmPolicy, MlpLstmPolicy, MultiInputLstmPolicy
from sb3_trpo_plugin.recurrent.policy_step import RecurrentPolicyStep
from sb3_trpo_plugin.recurrent.rollout import recurrent_lean_rollout, zero_lstm_states
from sb3_trpo_plugin.recurrent.sequences import RecurrentPolicyBatch
from sb3_trpo_plugin.rollout.algorithm import LeanRollout
from sb3_trpo_plugin.trpo.critic_fit import fit_critic
from sb3_trpo_plugin.trpo.policy_step import PolicyBatch, PolicyStep, PolicyStepStats
from sb3_trpo_plugin.trpo.trpo import TRPO

SelfRecurrentTRPO = TypeVar("SelfRecurrentTRPO", bound="RecurrentTRPO")
RecurrentRollout = RecurrentRolloutBufferSamples | RecurrentDictRolloutBufferSamples
PairOfStates = tuple[torch.Tensor, torch.Tensor]  # sb3-contrib's annotation of an LSTM's (hidden, cell) states


class RecurrentTRPO(TRPO, RecurrentOnPolicyAlgorithm):  # below TRPO's rollout classes in the MRO: see on_policy.py
    """
    Trust Region Policy Optimization with recurrent (LSTM) policies.

    TRPO (:class:`~sb3_trpo_plugin.TRPO`, the same keywords, meanings and defaults) on sb3-contrib's recurrent API:
    ``MlpLstmPolicy``, ``CnnLstmPolicy``, ``MultiInputLstmPolicy`` (``RecurrentActorCriticPolicy`` and its
    ``lstm_hidden_size``, ``n_lstm_layers``, ``shared_lstm``, ``enable_critic_lstm``), its recurrent rollout buffers,
    and ``predict(observation, state, episode_start, deterministic)`` returning the LSTM states. A ``RecurrentPPO``
    script needs only its import changed (PPO's own keywords, e.g. ``clip_range`` or ``n_epochs``, have no meaning
    here and are refused, as by ``TRPO``).

    Each update re-runs the actor's LSTM over the rollout's sequences (cut at episode starts, from the states the
    rollout held, padded steps excluded) for the surrogate, the KL and the Fisher-vector products; the actor's
    parameters, its LSTM included (and a shared LSTM), move by the trust-region step only. A separate critic LSTM
    (``enable_critic_lstm=True``) is the critic's, fitted by the critic's regression over sequence minibatches of
    ``batch_size`` steps. ``sub_sampling_factor`` selects every k-th sequence, and so does ``fisher_sub_sampling_factor``
    for the Fisher products (of either kind).
    Data-parallel training (``torchrun``) works as TRPO's: the statistics of the update are means over the valid steps
    of every process's sequences together, and the critic LSTM's minibatch gradients are averaged over the processes
    (the update is not split over them: ``split_update`` is ``False``, and setting it is refused).

    :param policy: The policy model to use (MlpLstmPolicy, CnnLstmPolicy, MultiInputLstmPolicy, or a
        ``RecurrentActorCriticPolicy`` subclass)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate of the critic's optimiser; it can be a function of the
        current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
        (i.e. rollout buffer size is n_steps * n_envs where n_envs is number of environment copies running in parallel)
    :param batch_size: Minibatch size (in steps) for the critic's regression
    :param gamma: Discount factor
    :param cg_max_steps: Maximum number of conjugate gradient steps (Fisher-vector products) to solve ``F x = g``
    :param cg_damping: Damping ``λ`` added to the Fisher matrix ``F``
    :param line_search_shrinking_factor: Step-size reduction factor ``s`` of the backtracking line search
    :param line_search_max_iter: Maximum number of trial steps of the backtracking line search
    :param n_critic_updates: Number of epochs of critic regression per policy update
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE (-1: once per rollout)
    :param rollout_buffer_class: sb3-contrib's ``RecurrentRolloutBuffer`` or ``RecurrentDictRolloutBuffer`` (or a
        subclass); ``None`` chooses by the observation space
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param normalize_advantage: Whether to normalise the advantages (z-score over the valid steps of the batch)
    :param target_kl: Trust-region radius ``δ``: the largest mean KL divergence between the old and the new policy (a
        number, or a schedule of the progress remaining, as for :class:`~sb3_trpo_plugin.TRPO`)
    :param sub_sampling_factor: Use every k-th sequence of the batch for the policy step; the critic uses all
    :param stats_window_size: Window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: the verbosity level: 0 no output, 1 info, 2 debug
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    :param fisher_product: ``"gauss_newton"`` (closed form ``Jᵀ M J v``, the Jacobian-vector products through the
        LSTM), ``"kl_hessian"`` (double backpropagation), ``"auto"`` (the closed form where it exists)
    :param cg_residual_tol: The conjugate gradient stops early once ``‖g - F x‖² <= cg_residual_tol · ‖g‖²``
    :param fisher_sub_sampling_factor: Estimate the Fisher matrix on every k-th whole sequence of the policy batch
        (by either kind of product: the closed form and ``fisher_product="kl_hessian"`` take the same steps)
    :param ent_coef: Entropy coefficient ``c``: the step maximises the surrogate plus ``c`` times the mean entropy of
        the valid steps' action distributions (0, the default: the plain TRPO step)
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpLstmPolicy": MlpLstmPolicy,
        "CnnLstmPolicy": CnnLstmPolicy,
        "MultiInputLstmPolicy": MultiInputLstmPolicy,
    }
    policy: RecurrentActorCriticPolicy
    policy_step_class: ClassVar[type[PolicyStep]] = RecurrentPolicyStep
    #: Its critic is fitted in this process: the pipelined critic (``TRPO.pipeline_critic``) is not shown exact here yet.
    critic_pipeline_supported: ClassVar[bool] = False

    #: The split update (:mod:`sb3_trpo_plugin.parallel.split_update`) gathers flat rows, not padded sequences with
    #: their LSTM states: a data-parallel RecurrentTRPO reduces every step of its update over the processes instead.
    split_update: bool = False

    def splits_update(self, critic_depends_on_actor: bool) -> bool:
        """
        ``False``: the update of a data-parallel RecurrentTRPO reduces each step over the processes.

        :param critic_depends_on_actor: whether the critic's value depends on the actor's parameters
        :raises NotImplementedError: when :attr:`split_update` is set on a data-parallel model
        """
        if self.collectives is not None and self.split_update:
            raise NotImplementedError(
                "RecurrentTRPO cannot split its update over the processes (the split update gathers rows, not padded "
                "sequences with their LSTM states): leave split_update = False, its default, and every step of the "
                "update is reduced over the processes instead"
            )
        return False

    def _take_policy_step(self, rollout: Any, reductions: BatchReductions = ONE_PROCESS) -> PolicyStepStats:
        """
        The trust-region step on the actor, its statistics means over the valid steps of every process's sequences
        together (processes whose sub-sampled sequences hold different numbers of steps are weighed by them).
        """
        batch = self._policy_batch(rollout, reductions)
        return self.make_policy_step(weighted_by_rows(reductions, int(batch.advantages.shape[0]))).take(batch)

    def _lean_rollout(self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer) -> LeanRollout | None:
        """
        The lean loop's parts carrying the LSTM states (:func:`~sb3_trpo_plugin.recurrent.rollout.recurrent_lean_rollout`);
        ``None`` leaves the rollout to sb3-contrib's ``RecurrentPPO`` loop.
        """

        def keep(states: RNNStates) -> None:
            self._last_lstm_states = states

        states = self._lstm_states_for(env.num_envs)
        episode_starts = self._last_episode_starts
        assert episode_starts is not None, "set by _setup_learn"
        return recurrent_lean_rollout(self.policy, rollout_buffer, states, episode_starts, keep)

    def _policy_functions(self) -> tuple[Callable[[PyTorchObs], Distribution], Callable[[PyTorchObs], torch.Tensor]]:
        """One observation's distribution and value from zero LSTM states, for the actor/critic split's trace."""
        if not isinstance(self.policy, RecurrentActorCriticPolicy):
            raise ValueError(
                f"RecurrentTRPO needs a RecurrentActorCriticPolicy (e.g. 'MlpLstmPolicy'), got {type(self.policy).__name__}"
            )
        policy = self.policy
        states = zero_lstm_states(policy, 1)
        actor_states, critic_states = cast(PairOfStates, states.pi), cast(PairOfStates, states.vf)
        no_start = torch.zeros(1, device=policy.device)

        def distribution_of(observation: PyTorchObs) -> Distribution:
            return policy.get_distribution(cast(torch.Tensor, observation), actor_states, no_start)[0]

        def values_of(observation: PyTorchObs) -> torch.Tensor:
            return policy.predict_values(cast(torch.Tensor, observation), critic_states, no_start)

        return distribution_of, values_of

    def _excluded_save_params(self) -> list[str]:
        # The states of the last rollout belong to its environments, which are not saved either.
        return [*super()._excluded_save_params(), "_last_lstm_states"]

    def _whole_policy_batch(self, rollout: Any) -> PolicyBatch:
        """
        The rollout's padded sequences with the actions, old log-probabilities and advantages of the valid steps
        (``RecurrentPolicyBatch.every`` sub-samples whole sequences).
        """
        rollout = cast(RecurrentRollout, rollout)
        mask = rollout.mask > 0.5
        actions = rollout.actions[mask]
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.long().flatten()
        return RecurrentPolicyBatch(
            observations=rollout.observations,
            actions=actions,
            old_log_prob=rollout.old_log_prob[mask],
            advantages=rollout.advantages[mask],
            initial_states=rollout.lstm_states.pi,
            episode_starts=rollout.episode_starts,
            mask=mask,
        )

    def _fit_critic(self, rollout: Any, reductions: BatchReductions = ONE_PROCESS) -> float:
        """
        The critic's regression: over sequence minibatches for a critic LSTM, row by row otherwise
        (:mod:`~sb3_trpo_plugin.recurrent.critic_fit`).
        """
        rollout = cast(RecurrentRollout, rollout)
        if self.policy.lstm_critic is not None:
            assert isinstance(self.rollout_buffer, (RecurrentRolloutBuffer, RecurrentDictRolloutBuffer))
            return fit_critic_over_sequences(
                self.policy,
                self.rollout_buffer,
                self.policy.optimizer,
                self._critic_params,
                self._actor_params,
                n_epochs=self.n_critic_updates,
                batch_size=self.batch_size,
                reductions=reductions,
            )
        return fit_critic(
            feedforward_critic_regression(self.policy, self._critic_params, rollout),
            rollout.returns[rollout.mask > 0.5],
            self.policy.optimizer,
            self._critic_params,
            self._actor_params,
            n_epochs=self.n_critic_updates,
            batch_size=self.batch_size,
            reductions=reductions,
        )

    def learn(
        self: SelfRecurrentTRPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "RecurrentTRPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfRecurrentTRPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
