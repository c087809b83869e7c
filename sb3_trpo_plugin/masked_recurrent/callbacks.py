"""
An evaluation callback for masked recurrent policies that carries the LSTM states from step to step.

sb3-contrib's ``MaskableEvalCallback`` evaluates with sb3-contrib's maskable ``evaluate_policy``, which drops the LSTM
states ``predict`` returns (see :mod:`sb3_trpo_plugin.masked_recurrent.evaluation`): a policy with memory is scored
without it. :class:`MaskableRecurrentEvalCallback` takes SB3's ``EvalCallback`` settings and evaluates with
:func:`sb3_trpo_plugin.masked_recurrent.evaluate_policy`, which carries them.
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization

from sb3_trpo_plugin.masked_recurrent.evaluation import evaluate_policy


class MaskableRecurrentEvalCallback(EvalCallback):
    """
    Evaluate the model every ``eval_freq`` calls with its LSTM states carried and, where the environment gives them,
    its action masks; log ``eval/mean_reward`` and ``eval/mean_ep_length``, append to ``evaluations.npz``, save the best
    model and call ``callback_on_new_best`` as SB3's ``EvalCallback`` does.

    ``render`` and the success rate (``is_success`` in the infos) are not supported: the evaluation function steps the
    vectorised environment itself and keeps no infos.

    :param eval_env: the environment to evaluate on; with masking it must expose ``action_masks()``
    :param callback_on_new_best: called when the mean return is a new best
    :param callback_after_eval: called after every evaluation
    :param n_eval_episodes: the number of episodes of each evaluation
    :param eval_freq: evaluate every ``eval_freq`` calls of the callback (one call per step of the vectorised env)
    :param log_path: a folder where ``evaluations.npz`` is written after each evaluation, or None
    :param best_model_save_path: a folder where ``best_model.zip`` is saved on each new best, or None
    :param deterministic: evaluate the most likely valid actions rather than samples
    :param verbose: 1 to print each evaluation's results
    :param warn: accepted for SB3's signature and kept on the callback; the evaluation sums the environment's rewards
        itself, so there is no missing-``Monitor`` warning to give
    :param use_masking: act among the valid actions
    """

    def __init__(
        self,
        eval_env: gym.Env | VecEnv,
        callback_on_new_best: BaseCallback | None = None,
        callback_after_eval: BaseCallback | None = None,
        n_eval_episodes: int = 5,
        eval_freq: int = 10000,
        log_path: str | None = None,
        best_model_save_path: str | None = None,
        deterministic: bool = True,
        verbose: int = 1,
        warn: bool = True,
        use_masking: bool = True,
    ) -> None:
        super().__init__(
            eval_env,
            callback_on_new_best=callback_on_new_best,
            callback_after_eval=callback_after_eval,
            n_eval_episodes=n_eval_episodes,
            eval_freq=eval_freq,
            log_path=log_path,
            best_model_save_path=best_model_save_path,
            deterministic=deterministic,
            verbose=verbose,
            warn=warn,
        )
        self.use_masking = use_masking

    def _on_step(self) -> bool:
        if self.eval_freq <= 0 or self.n_calls % self.eval_freq != 0:
            return True
        if self.model.get_vec_normalize_env() is not None:
            # The evaluation must see observations normalised with the training statistics.
            try:
                sync_envs_normalization(self.training_env, self.eval_env)
            except AttributeError as error:
                raise AssertionError("the training and evaluation environments are not wrapped the same way") from error
        returns, lengths = evaluate_policy(
            self.model,
            self.eval_env,
            n_eval_episodes=self.n_eval_episodes,
            deterministic=self.deterministic,
            return_episode_rewards=True,
            use_masking=self.use_masking,
        )
        assert isinstance(returns, list) and isinstance(lengths, list)  # return_episode_rewards=True gives the lists
        self._record(returns, lengths)
        continue_training = True
        if self.last_mean_reward > self.best_mean_reward:
            self.best_mean_reward = self.last_mean_reward
            if self.verbose > 0:
                print("New best mean reward!")
            if self.best_model_save_path is not None:
                self.model.save(os.path.join(self.best_model_save_path, "best_model"))
            if self.callback_on_new_best is not None:
                continue_training = self.callback_on_new_best.on_step()
        if self.callback is not None:
            continue_training = self._on_event() and continue_training
        return continue_training

    def _record(self, returns: list[float], lengths: list[int]) -> None:
        """
        Keep one evaluation's returns and lengths: ``evaluations.npz``, ``last_mean_reward``, the logger's keys.

        :param returns: each episode's return
        :param lengths: each episode's length
        """
        if self.log_path is not None:
            self.evaluations_timesteps.append(self.num_timesteps)
            self.evaluations_results.append(returns)
            self.evaluations_length.append(lengths)
            np.savez(
                self.log_path,
                timesteps=self.evaluations_timesteps,
                results=self.evaluations_results,
                ep_lengths=self.evaluations_length,
            )
        self.last_mean_reward = float(np.mean(returns))
        mean_length = float(np.mean(lengths))
        if self.verbose > 0:
            spread = np.std(returns)
            print(f"Eval num_timesteps={self.num_timesteps}, episode_reward={self.last_mean_reward:.2f} +/- {spread:.2f}")
            print(f"Episode length: {mean_length:.2f} +/- {np.std(lengths):.2f}")
        self.logger.record("eval/mean_reward", self.last_mean_reward)
        self.logger.record("eval/mean_ep_length", mean_length)
        # Dump now so that the evaluation is written at this step's timestep.
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(self.num_timesteps)


__all__ = ["MaskableRecurrentEvalCallback"]
