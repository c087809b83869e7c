"""
The ``OnPolicyAlgorithm`` that owns rollout collection: SB3's loop with a lean policy inference.

Per environment step SB3's ``collect_rollouts`` costs several times what stepping a small environment
costs: the policy's forward through ``nn.Module.__call__``, torch distribution objects built and
validated at every step, and copies in ``RolloutBuffer.add``. :class:`LeanRolloutAlgorithm` keeps SB3's
loop, step for step (callbacks, their locals, time-limit bootstrapping, clipping, the info buffers), and
replaces only those parts: one :class:`~sb3_trpo_plugin.replicas.inference.PolicyInference` per step
(actions, values and log-probabilities bit for bit SB3's for a seed), and direct
writes into the arrays of SB3's own rollout buffers. Policies it does not recognise take SB3's loop, and so do those
for which the inference, proved against the policy's own forward on the first observations of its first rollout, was
disproved (a release of SB3 or torch that computes something else; a warning says so).

The actions need neither the critic nor the log-probabilities. When no callback can read the step's ``values``
and ``log_probs`` locals and the policy's features are only flattened, each step samples the actions alone (the
same actions, from the same random calls) and :mod:`~sb3_trpo_plugin.rollout.batched_outputs` computes the values
and log-probabilities of the whole rollout at its end, in one batch: the same quantities, to float32 rounding.
The λ-returns and advantages are SB3's, bit for bit, with the TD errors vectorised over the steps
(:mod:`~sb3_trpo_plugin.rollout.advantages`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_plugin.replicas.inference import LEAN_INFERENCE, policy_inference
from sb3_trpo_plugin.replicas.layers import obs_as_cpu_tensor
from sb3_trpo_plugin.replicas.proofs import CPUOnlyRolloutWarning, FastPath, proofs_of
from sb3_trpo_plugin.rollout.advantages import compute_returns_and_advantage
from sb3_trpo_plugin.rollout.batched_outputs import callbacks_may_read_step_outputs, fill_values_and_log_probs
from sb3_trpo_plugin.rollout.buffer_writers import BufferWriter, rollout_buffer_writer


class StepInference(Protocol):
    """
    What the lean loop asks of a policy at each step (:class:`~sb3_trpo_plugin.replicas.inference.PolicyInference`, or
    a variant's inference with the same calls).
    """

    def __call__(
        self, obs_tensor: PyTorchObs, action_masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, th.Tensor, th.Tensor]:
        """The step's actions ``(n_envs, *action_shape)``, values ``(n_envs, 1)`` and log-probabilities ``(n_envs,)``."""
        ...

    def actions(self, obs_tensor: PyTorchObs, action_masks: np.ndarray | None = None) -> np.ndarray:
        """The step's actions alone (the same random calls), when the rollout fills values and log-probabilities later."""
        ...

    def upstream_mismatch(self, obs_tensor: PyTorchObs, masked: bool = False) -> str | None:
        """How the inference differs from the policy's own forward on ``obs_tensor`` (``None``: it does not)."""
        ...


class CarriedState(Protocol):
    """
    State a policy carries from step to step (a recurrent policy's LSTM states), held beside the lean loop: the loop
    tells it where each step ends, and asks it for the values that depend on it.
    """

    def advance(self, episode_starts: np.ndarray) -> None:
        """
        After each step, once it is written to the buffer: the states after the step become the held ones.

        :param episode_starts: whether each environment starts an episode at the next step (the step's ``dones``)
        """
        ...

    def terminal_value(self, terminal_observation: PyTorchObs, env_index: int) -> th.Tensor:
        """
        The value of a truncated episode's terminal observation (the time-limit bootstrap), as ``predict_values``
        returns it, ``(1, 1)``: the episode goes on from the states after the step.

        :param terminal_observation: the observation as a tensor, one row
        :param env_index: the environment whose episode was truncated
        """
        ...

    def last_values(self, observations: PyTorchObs, episode_starts: np.ndarray) -> th.Tensor:
        """
        The values of the observations after the rollout's last step, ``(n_envs, 1)``.

        :param observations: the observations as tensors
        :param episode_starts: whether each environment starts an episode there
        """
        ...

    def step_locals(self) -> dict[str, Any]:
        """What the callbacks see of the state among the step's locals (the names of the variant's own loop)."""
        ...


@dataclass(frozen=True)
class LeanRollout:
    """
    What the lean loop uses for one rollout, beside SB3's loop itself (:meth:`LeanRolloutAlgorithm._lean_rollout`).

    :param inference: the policy's lean inference
    :param write: writes one step into the rollout buffer
    :param fill_values_and_log_probs: computes the values and log-probabilities of the whole rollout at its end
        (the steps then sample actions alone); ``None``: every step computes them (callbacks may read them)
    :param action_masks: the current step's action masks, asked of the environments before each step;
        ``None``: the policy acts without masks
    :param carried: the state the policy carries from step to step (``RecurrentTRPO``: the LSTM states), told of each
        step's end, and asked for the time-limit bootstrap's and the last step's values; ``None``: a feed-forward policy
    :param fast_path: what the inference's proof and its warnings call it
    """

    inference: StepInference
    write: BufferWriter
    fill_values_and_log_probs: Callable[[], None] | None = None
    action_masks: Callable[[], np.ndarray] | None = None
    carried: CarriedState | None = None
    fast_path: FastPath = LEAN_INFERENCE


class LeanRolloutAlgorithm(OnPolicyAlgorithm):
    """
    ``OnPolicyAlgorithm`` whose ``collect_rollouts`` is the one rollout loop of the package.

    With SB3's standard actor-critic policies on the CPU (``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy``; any
    action space, gSDE, ``squash_output``) the loop infers actions, values and log-probabilities without
    ``nn.Module.__call__`` and without torch distribution objects, sampling with SB3's random calls: for a
    seed, the rollout buffer holds bit for bit what SB3's loop would put there (observations, actions, rewards,
    episode starts, values, log-probabilities, and so returns and advantages; when no callback can read the step's
    values and log-probabilities and the features are only flattened, those two are computed for the whole rollout at
    its end, equal to float32 rounding, and the rest stays bit for bit SB3's). Everything else is SB3's loop: the
    callbacks get the same calls with the same locals (and ``inference``), ``_update_info_buffer`` is called
    where SB3 calls it, truncated episodes are bootstrapped with SB3's own ``predict_values``. SB3's
    ``RolloutBuffer`` and ``DictRolloutBuffer`` are written directly; buffers of other classes get the data
    through their ``add``.

    A policy whose forward cannot be proved to be replicated exactly (a class that overrides how it acts, an
    unknown action distribution, hooks, another device: see
    :func:`~sb3_trpo_plugin.replicas.eligibility.unrecognised_reason`) makes the algorithm use SB3's loop unchanged,
    and so does :attr:`lean_rollout` set to ``False``. Before the lean inference first serves a policy it is proved
    against the policy's own forward on the observations the rollout starts from
    (:meth:`~sb3_trpo_plugin.replicas.inference.PolicyInference.upstream_mismatch`); a mismatch warns once
    (:class:`~sb3_trpo_plugin.replicas.proofs.FastPathMismatchWarning`) and leaves the policy to SB3's loop.
    Variants change the loop's parts, not the loop, through :meth:`_lean_rollout` (``MaskableTRPO``: masked heads, the
    step's masks, a buffer writer that stores them; ``RecurrentTRPO``: an inference that carries the LSTM states, a
    writer that stores them, the states told of each step's end through :class:`CarriedState`); their own loop
    (``super().collect_rollouts``: sb3-contrib's ``MaskablePPO`` or ``RecurrentPPO`` loop) takes the policies they do
    not recognise.
    """

    #: Collect rollouts with the lean loop when the policy is recognised; ``False`` (on the class or an
    #: instance, e.g. ``model.lean_rollout = False``) always uses SB3's ``OnPolicyAlgorithm.collect_rollouts``.
    lean_rollout: bool = True
    #: Whether the last rollout computed its values at its end, in one batch (the lean loop's batched fill): the next
    #: one will too, and so may run while the critic is being fitted elsewhere (``_critic_in_flight``).
    values_filled_at_rollout_end: bool = False

    def _setup_model(self) -> None:
        super()._setup_model()
        self._recommend_cpu()

    def _maybe_recommend_cpu(self, mlp_class_name: str = "ActorCriticPolicy") -> None:
        """
        SB3's recommendation of the CPU for ``MlpPolicy`` (which ``OnPolicyAlgorithm._setup_model`` calls in the SB3
        releases that have it): replaced by :meth:`_recommend_cpu`, which every variant and release calls, and which
        also says what steps aside on another device.

        :param mlp_class_name: SB3's name of its ``MlpPolicy`` class (unused)
        """

    def _recommend_cpu(self) -> None:
        """
        Warn (:class:`CPUOnlyRolloutWarning`) when an MLP policy (the class of a ``Mlp…`` alias: ``MlpPolicy``,
        ``MlpLstmPolicy``) is on another device than the CPU, as SB3's PPO does (``device="auto"`` picks a GPU where
        there is one): there, the lean rollout steps aside.
        """
        mlp_classes = [cls for name, cls in self.policy_aliases.items() if name.startswith("Mlp")]
        if self.device.type == "cpu" or self.policy_class not in mlp_classes:
            return
        warnings.warn(
            CPUOnlyRolloutWarning(
                f"You are trying to run {type(self).__name__} on {self.device} with an MLP policy "
                f"({self.policy_class.__name__}): it is primarily intended to run on the CPU (small networks are "
                "bound by per-call overhead, not arithmetic), and this package's lean rollout runs on the CPU only, so "
                f"on {self.device} every rollout step runs SB3's own loop. Pass device='cpu' (or export "
                "CUDA_VISIBLE_DEVICES=) to use the CPU. See https://github.com/DLR-RM/stable-baselines3/issues/1245."
            ),
            stacklevel=2,
        )

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """
        Collect experiences using the current policy and fill a ``RolloutBuffer`` (SB3's semantics).

        :param env: The training environment
        :param callback: Callback that will be called at each step (and at the beginning and end of the rollout)
        :param rollout_buffer: Buffer to fill with rollouts
        :param n_rollout_steps: Number of experiences to collect per environment
        :return: True if function returned with at least `n_rollout_steps` collected, False if callback
            terminated rollout prematurely.
        """
        lean = self._lean_rollout(env, callback, rollout_buffer) if self.lean_rollout else None
        lean = lean if lean is not None and self._lean_inference_proved(lean) else None
        self.values_filled_at_rollout_end = lean is not None and lean.fill_values_and_log_probs is not None
        if not self.values_filled_at_rollout_end:
            self._await_critic()  # every step reads the critic
        if lean is None:
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        return self._collect_rollouts_lean(env, callback, rollout_buffer, n_rollout_steps, lean)

    def _critic_in_flight(self) -> bool:
        """
        Whether the critic is being fitted elsewhere (``TRPO``'s pipelined critic): the rollout must not read it before
        :meth:`_await_critic`, so a truncated episode's time-limit bootstrap waits for the rollout's end.
        """
        return False

    def _await_critic(self) -> None:
        """Wait until the critic's weights are final (the seam of ``TRPO``'s pipelined critic; nothing to wait for here)."""

    def _terminal_value(self, terminal_obs: PyTorchObs, env_index: int, carried: CarriedState | None) -> th.Tensor:
        """
        ``V(terminal_obs)`` for a truncated episode's time-limit bootstrap (see GitHub issue #633), ``(1,)``, as SB3's
        loop computes it (sb3-contrib's, with the carried state of environment ``env_index``).
        """
        with th.no_grad():
            if carried is None:
                return self.policy.predict_values(terminal_obs)[0]
            return carried.terminal_value(terminal_obs, env_index)[0]

    def _lean_inference_proved(self, lean: LeanRollout) -> bool:
        """
        Whether the lean inference serves this policy: proved against the policy's own forward on the observations the
        rollout starts from, the first time (per policy object; later rollouts read the verdict), see
        :mod:`sb3_trpo_plugin.replicas.proofs`. The proof leaves torch's generator, the modules' modes and the action
        distribution as they were.

        :param lean: the rollout's parts
        """
        inference, masked = lean.inference, lean.action_masks is not None
        observations = self._last_obs
        return proofs_of(self.policy).serves(
            lean.fast_path,
            lambda: inference.upstream_mismatch(obs_as_cpu_tensor(observations), masked),  # type: ignore[arg-type]
        )

    def _lean_rollout(self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer) -> LeanRollout | None:
        """
        The lean loop's parts for this rollout, or ``None`` for SB3's loop (the policy is not recognised).

        The seam of the variants: ``MaskableTRPO`` returns an inference that samples with masks, the masks of each
        step and a buffer writer that stores them.

        :param env: the training environment
        :param callback: the callback of the rollout (may it read the step's values and log-probabilities?)
        :param rollout_buffer: the buffer to fill
        """
        inference = policy_inference(self.policy)
        if inference is None:
            return None
        batched = (
            inference.acts_without_critic
            and type(rollout_buffer) in (RolloutBuffer, DictRolloutBuffer)
            and not callbacks_may_read_step_outputs(callback)
        )
        policy = self.policy
        return LeanRollout(
            inference,
            rollout_buffer_writer(rollout_buffer),
            (lambda: fill_values_and_log_probs(policy, rollout_buffer)) if batched else None,
        )

    def _collect_rollouts_lean(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int, lean: LeanRollout
    ) -> bool:
        """
        SB3's ``OnPolicyAlgorithm.collect_rollouts`` with ``lean.inference`` for the policy's forward (same local
        names); with ``lean.fill_values_and_log_probs``, the actions alone at each step, and the values and
        log-probabilities of the whole rollout at its end; with ``lean.action_masks``, the step's masks (as
        ``MaskablePPO``'s loop: asked of the environments before the step, stored with it).
        """
        assert self._last_obs is not None, "No previous observation was provided"
        # Switch to eval mode (this affects batch norm / dropout)
        self.policy.set_training_mode(False)

        n_steps = 0
        rollout_buffer.reset()
        # Sample new weights for the state dependent exploration
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)

        callback.on_rollout_start()

        # What SB3's loop looks up at every step, looked up once (callbacks also see these names among the locals)
        resample_noise_every = self.sde_sample_freq if self.use_sde else 0
        is_box, is_discrete = isinstance(self.action_space, spaces.Box), isinstance(self.action_space, spaces.Discrete)
        squashed = is_box and self.policy.squash_output
        low, high = (self.action_space.low, self.action_space.high) if isinstance(self.action_space, spaces.Box) else (0, 0)
        inference, add_to_rollout_buffer, fill_batched, masks_of_step, carried = (
            lean.inference,
            lean.write,
            lean.fill_values_and_log_probs,
            lean.action_masks,
            lean.carried,
        )
        batched = fill_batched is not None
        action_masks = None
        # While the critic is fitted elsewhere, the time-limit bootstraps wait for it: (position, env, rewards, observation)
        deferred_bootstraps: list[tuple[int, int, np.ndarray, Any]] | None = (
            [] if batched and self._critic_in_flight() else None
        )

        def finish_values() -> None:
            """The critic's reads, at the rollout's end: the deferred bootstraps, then the whole rollout's values."""
            assert fill_batched is not None
            self._await_critic()
            for position, env_index, step_rewards, observation in deferred_bootstraps or ():
                step_rewards[env_index] += self.gamma * self._terminal_value(observation, env_index, None)  # as above
                rollout_buffer.rewards[position, env_index] = step_rewards[env_index]
            fill_batched()

        while n_steps < n_rollout_steps:
            if resample_noise_every > 0 and n_steps % resample_noise_every == 0:
                # Sample a new noise matrix
                self.policy.reset_noise(env.num_envs)

            # Convert to pytorch tensor or to TensorDict (the inference runs without gradients)
            obs_tensor = obs_as_cpu_tensor(self._last_obs)  # type: ignore[arg-type]
            if masks_of_step is not None:
                action_masks = masks_of_step()
            if batched:
                actions = inference.actions(obs_tensor, action_masks)
            else:
                actions, values, log_probs = inference(obs_tensor, action_masks)

            # Rescale and perform action
            clipped_actions = actions

            if squashed:
                # Unscale the actions to match env bounds
                # if they were previously squashed (scaled in [-1, 1])
                clipped_actions = self.policy.unscale_action(clipped_actions)
            elif is_box:
                # Otherwise, clip the actions to avoid out of bound error
                # as we are sampling from an unbounded Gaussian distribution
                # (np.clip is this method behind a wrapper)
                clipped_actions = actions.clip(low, high)

            new_obs, rewards, dones, infos = env.step(clipped_actions)

            self.num_timesteps += env.num_envs

            # Give access to local variables
            callback.update_locals(locals())
            if carried is not None:
                callback.update_locals(carried.step_locals())  # e.g. the LSTM states, under sb3-contrib's names
            if not callback.on_step():
                if fill_batched is not None:
                    finish_values()
                return False

            self._update_info_buffer(infos, dones)
            n_steps += 1

            if is_discrete:
                # Reshape in case of discrete action
                actions = actions.reshape(-1, 1)

            # Handle timeout by bootstrapping with value function
            # see GitHub issue #633 (inline, as in SB3's loop: callbacks see its `idx` and `done` among the locals)
            for idx, done in enumerate(dones):
                if (
                    done
                    and infos[idx].get("terminal_observation") is not None
                    and infos[idx].get("TimeLimit.truncated", False)
                ):
                    # SB3's own computation (rare): the reward is bit for bit SB3's (sb3-contrib's with carried states)
                    terminal_obs = self.policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
                    if deferred_bootstraps is None:
                        terminal_value = self._terminal_value(terminal_obs, idx, carried)
                        rewards[idx] += self.gamma * terminal_value
                    else:  # the same computation at the rollout's end, on copies (the env may reuse its arrays)
                        deferred_bootstraps.append((rollout_buffer.pos, idx, rewards.copy(), _copied(terminal_obs)))

            add_to_rollout_buffer(
                self._last_obs,
                actions,
                rewards,
                self._last_episode_starts,  # type: ignore[arg-type]
                None if batched else values,
                None if batched else log_probs,
                action_masks,
            )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones
            if carried is not None:
                carried.advance(dones)

        if fill_batched is not None:
            finish_values()

        with th.no_grad():
            # Compute value for the last timestep
            if carried is None:
                values = self.policy.predict_values(obs_as_tensor(new_obs, self.device))  # type: ignore[arg-type]
            else:
                values = carried.last_values(obs_as_tensor(new_obs, self.device), dones)  # type: ignore[arg-type]

        compute_returns_and_advantage(rollout_buffer, last_values=values, dones=dones)

        callback.update_locals(locals())

        callback.on_rollout_end()

        return True


def _copied(observation: PyTorchObs) -> PyTorchObs:
    """A copy of an observation tensor (or dict of them) that nothing else holds."""
    if isinstance(observation, dict):
        return {key: value.clone() for key, value in observation.items()}
    return observation.clone()
