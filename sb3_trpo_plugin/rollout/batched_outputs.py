"""
The rollout's values and log-probabilities computed once per rollout, for the whole buffer, instead of at every step.

SB3's loop runs the critic and scores the sampled actions at every step, in batches of ``n_envs`` rows, only to
store both in the rollout buffer and to show them to the callbacks (the ``values`` and ``log_probs`` locals). The
actions need neither. When no callback can read those locals (:func:`callbacks_may_read_step_outputs`) and the
policy's features are only flattened (recomputing them is cheap), the lean loop samples the actions alone and
:func:`fill_values_and_log_probs` computes both for every step at the end of the rollout, with SB3's own
``evaluate_actions`` on the stored observations and actions. The actions, and so the whole trajectory, are the
same bit for bit; the values and log-probabilities are the same functions of the same inputs, rounded as a batch of
``n_steps × n_envs`` rows rather than of ``n_envs`` (the matrix products' kernels differ with the batch size: a few
float32 ulps).
"""

from __future__ import annotations

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.utils import obs_as_tensor

#: Callbacks of SB3, sb3-contrib and rl-zoo3 that read neither ``values`` nor ``log_probs`` from the loop's locals (exact
#: classes, by qualified name, so that neither extra need be installed; a subclass may read them, and is not listed).
CALLBACKS_BLIND_TO_STEP_OUTPUTS = frozenset(
    {
        "stable_baselines3.common.callbacks.CallbackList",
        "stable_baselines3.common.callbacks.CheckpointCallback",
        "stable_baselines3.common.callbacks.EvalCallback",
        "stable_baselines3.common.callbacks.EveryNTimesteps",
        "stable_baselines3.common.callbacks.LogEveryNTimesteps",
        "stable_baselines3.common.callbacks.ProgressBarCallback",
        "stable_baselines3.common.callbacks.StopTrainingOnMaxEpisodes",
        "stable_baselines3.common.callbacks.StopTrainingOnNoModelImprovement",
        "stable_baselines3.common.callbacks.StopTrainingOnRewardThreshold",
        "sb3_contrib.common.maskable.callbacks.MaskableEvalCallback",
        "rl_zoo3.callbacks.RawStatisticsCallback",
        "rl_zoo3.callbacks.SaveVecNormalizeCallback",
        "rl_zoo3.callbacks.TrialEvalCallback",
    }
)

#: The attributes through which SB3's callbacks hold the callbacks they call (besides ``CallbackList.callbacks``).
_CHILD_ATTRIBUTES = ("callback", "callback_on_new_best")


def callbacks_may_read_step_outputs(callback: BaseCallback | None) -> bool:
    """
    Whether a callback, or one it calls, may read the ``values`` or ``log_probs`` locals of the rollout loop.

    ``False`` only for callbacks known not to: SB3's, sb3-contrib's and rl-zoo3's listed in
    :data:`CALLBACKS_BLIND_TO_STEP_OUTPUTS`, and classes that say so in their own body with ``reads_step_outputs = False``
    (this package's callbacks), and then only if every callback they call is known too. Any other callback (a function,
    a class of the user's, a subclass of a listed one) may read them.

    :param callback: the callback handed to ``collect_rollouts``
    """
    cls = type(callback)
    known = f"{cls.__module__}.{cls.__qualname__}" in CALLBACKS_BLIND_TO_STEP_OUTPUTS
    if not known and vars(cls).get("reads_step_outputs", True):
        return True
    children = [*getattr(callback, "callbacks", ()), *(getattr(callback, name, None) for name in _CHILD_ATTRIBUTES)]
    return any(callbacks_may_read_step_outputs(child) for child in children if child is not None)


def fill_values_and_log_probs(
    policy: ActorCriticPolicy, rollout_buffer: RolloutBuffer, action_masks: np.ndarray | None = None
) -> None:
    """
    Write the values of the stored observations and the log-probabilities of the stored actions, for every step
    the buffer holds, with the policy's ``evaluate_actions`` over all of them at once (without gradients).

    :param policy: the policy that acted (in the mode it acted in)
    :param rollout_buffer: SB3's ``RolloutBuffer`` or ``DictRolloutBuffer``, filled up to ``pos`` except for
        ``values`` and ``log_probs``
    :param action_masks: ``(buffer_size, n_envs, mask_dims)``, the masks each step acted with, for sb3-contrib's
        maskable policies (their ``evaluate_actions`` takes them); ``None``: the policy acted without masks
    """
    steps = rollout_buffer.buffer_size if rollout_buffer.full else rollout_buffer.pos
    if steps == 0:
        return
    n_envs = rollout_buffer.n_envs

    def rows(array: np.ndarray) -> np.ndarray:
        return array[:steps].reshape(steps * n_envs, *array.shape[2:])

    observations = rollout_buffer.observations
    obs = {key: rows(value) for key, value in observations.items()} if isinstance(observations, dict) else rows(observations)
    # As SB3's buffers hand the actions to its updates (float32; Discrete ones then as indices).
    actions = th.as_tensor(rows(rollout_buffer.actions).astype(np.float32, copy=False), device=policy.device)
    if isinstance(policy.action_space, spaces.Discrete):
        actions = actions.long().flatten()
    masks = {} if action_masks is None else {"action_masks": th.as_tensor(rows(action_masks), device=policy.device)}
    with th.no_grad():
        values, log_probs, _ = policy.evaluate_actions(obs_as_tensor(obs, policy.device), actions, **masks)
    rollout_buffer.values[:steps] = values.cpu().numpy().reshape(steps, n_envs)
    rollout_buffer.log_probs[:steps] = log_probs.cpu().numpy().reshape(steps, n_envs)
