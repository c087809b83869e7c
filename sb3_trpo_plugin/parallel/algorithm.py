"""
The rollout side of data-parallel training: an ``OnPolicyAlgorithm`` whose processes act as one.

Under ``torchrun`` (or any initialised ``torch.distributed`` process group of several processes), each
process collects rollouts from its own environments, seeded ``seed + rank``; rank 0 alone logs, runs the
callbacks (evaluations, checkpoints, progress bar) and should save. After each rollout the ranks agree on
the global step count, whether to go on, the VecNormalize statistics and the episode statistics. The
update reaches data-parallelism only through what this class hands it:
:meth:`~DataParallelOnPolicyAlgorithm.batch_reductions` (reductions over every rank's batch) and ``collectives`` for
the split update (:mod:`sb3_trpo_plugin.parallel.split_update`), chosen by
:meth:`~DataParallelOnPolicyAlgorithm.splits_update`. Without ``torch.distributed`` every method here reduces to the
plain one, and the algorithm runs its single-process code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_plugin.parallel.agreement import check_in_sync, merge_running_mean_std, running_mean_std_state
from sb3_trpo_plugin.parallel.collectives import Collectives
from sb3_trpo_plugin.parallel.process_group import init_from_environment, is_main_process
from sb3_trpo_plugin.parallel.reductions import AllRanks
from sb3_trpo_plugin.rollout import LeanRolloutAlgorithm


class DataParallelOnPolicyAlgorithm(LeanRolloutAlgorithm):
    """
    ``OnPolicyAlgorithm`` that trains data-parallel when ``torch.distributed`` is initialised with several processes.

    * ``total_timesteps`` and ``num_timesteps`` count the steps of **all** ranks: after each rollout
      ``num_timesteps`` is the global count (during a rollout it advances by this rank's steps only), so every
      rank runs the same number of updates and ``time/fps`` is the global throughput.
    * Weights are broadcast from rank 0 when the model is set up; every ``sync_check_interval`` updates one
      small all-reduce checks that all ranks still hold identical weights (``RuntimeError`` otherwise).
    * Rank 0 alone logs (other ranks get a logger with no outputs and ``verbose=0``) and runs the callbacks
      given to ``learn``; other ranks run none, so evaluations, checkpoints and the progress bar happen once.
      A callback that stops training on rank 0 stops every rank at the end of that rollout.
    * VecNormalize statistics are merged over ranks after each rollout (those of the union of all ranks'
      observations and returns); episode statistics of all ranks are gathered into every rank's
      ``ep_info_buffer`` / ``ep_success_buffer``, so rank 0 logs all episodes.
    * Rank ``r`` seeds its generators and environments with ``seed + r`` (see :meth:`set_random_seed`).
    * All ranks must use the same ``n_envs`` and ``n_steps`` (checked): averages over ranks then equal averages
      over the union of their batches.

    :ivar collectives: the process group's collectives (``None`` on a single process); a benchmark may set its
        ``observer`` to see every all-reduce
    """

    #: Every how many updates the ranks check that their weights are identical (0: never).
    sync_check_interval: int = 10
    #: Run the update split over the ranks when the algorithm allows it (see :mod:`sb3_trpo_plugin.parallel.split_update`);
    #: ``False`` reduces every step of the update over the ranks instead.
    split_update: bool = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Launched by torchrun without an initialised process group: initialise it (gloo on CPU, nccl on GPU).
        self.collectives: Collectives | None = Collectives() if init_from_environment(kwargs.get("device", "auto")) else None
        if not is_main_process():
            kwargs["verbose"] = 0
        self._batch_reductions: AllRanks | None = None if self.collectives is None else AllRanks(self.collectives)
        self._rollout_episodes: list[dict[str, Any]] | None = None
        self._rollout_successes: list[Any] | None = None
        self._vec_normalize_start: list[tuple[float, np.ndarray, np.ndarray]] | None = None
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.collectives is not None:
            shapes = self.collectives.all_gather_objects([self.n_envs, self.n_steps])
            if any(shape != shapes[0] for shape in shapes):
                raise ValueError(f"Every rank must use the same (n_envs, n_steps); got {[tuple(s) for s in shapes]} by rank")
            self.collectives.broadcast_parameters(self.policy)

    def batch_reductions(self) -> AllRanks | None:
        """Reductions over every rank's batch, for an update that reduces each step over the ranks (``None``: one process)."""
        return self._batch_reductions

    def splits_update(self, critic_depends_on_actor: bool) -> bool:
        """
        Whether this update runs split over the ranks: data-parallel, :attr:`split_update` set, and a critic
        that does not depend on the actor's parameters (otherwise the two halves of the update are not independent).

        :param critic_depends_on_actor: whether the critic's value depends on the actor's parameters
        """
        return self.collectives is not None and self.split_update and not critic_depends_on_actor

    def set_random_seed(self, seed: int | None = None) -> None:
        """
        Seed the generators and environments; rank ``r`` of a data-parallel run uses ``seed + r``, so that
        ranks collect distinct rollouts (their weights come from rank 0). ``self.seed`` stays ``seed`` on all ranks.

        :param seed: the common seed
        """
        rank = 0 if self.collectives is None else self.collectives.rank
        super().set_random_seed(seed + rank if seed is not None else None)

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "collectives",
            "_batch_reductions",
            "_rollout_episodes",
            "_rollout_successes",
            "_vec_normalize_start",
        ]

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        if self.collectives is not None:
            if self.collectives.rank != 0:
                # Rank 0 alone logs, evaluates and checkpoints: no outputs, no callbacks, no progress bar here.
                self.set_logger(Logger(folder=None, output_formats=[]))
                callback, progress_bar = None, False
            # Start from rank 0's normalisation statistics (before the environments' reset updates them).
            stats = self._running_statistics()
            states = self.collectives.broadcast_object([running_mean_std_state(rms) for rms in stats])
            for rms, state in zip(stats, states, strict=True):
                rms.count, rms.mean, rms.var = state
            self._vec_normalize_start = [running_mean_std_state(rms) for rms in stats]
        return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)

    def _running_statistics(self) -> list[RunningMeanStd]:
        """The VecNormalize statistics of the environment (observations, per key for dicts, and returns)."""
        venv = self._vec_normalize_env
        if venv is None:
            return []
        observation_rms = getattr(venv, "obs_rms", None)  # absent with norm_obs=False
        if observation_rms is None:
            return [venv.ret_rms]
        observation_stats = observation_rms if isinstance(observation_rms, dict) else {"": observation_rms}
        return [*(observation_stats[key] for key in sorted(observation_stats)), venv.ret_rms]

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        collectives = self.collectives
        if collectives is None:
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        if self.sync_check_interval and self._n_updates % self.sync_check_interval == 0:
            check_in_sync(collectives, self.policy, f"before the rollout after update {self._n_updates}")
        steps_before = self.num_timesteps
        self._rollout_episodes, self._rollout_successes = [], []
        continue_training = super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        # The global step count, and whether any rank's callbacks asked to stop: one all-reduce.
        total_steps, n_stopped = collectives.sum_ints(self.num_timesteps - steps_before, int(not continue_training))
        self.num_timesteps = steps_before + total_steps
        if self._vec_normalize_start is not None:
            stats = self._running_statistics()
            for rms, start in zip(stats, self._vec_normalize_start, strict=True):
                merge_running_mean_std(collectives, rms, start)
            self._vec_normalize_start = [running_mean_std_state(rms) for rms in stats]
        gathered = collectives.all_gather_objects([self._rollout_episodes, self._rollout_successes])
        assert self.ep_info_buffer is not None and self.ep_success_buffer is not None
        for other_rank, (episodes, successes) in enumerate(gathered):
            if other_rank != collectives.rank:
                self.ep_info_buffer.extend(episodes)
                self.ep_success_buffer.extend(successes)
        self._rollout_episodes = self._rollout_successes = None
        return n_stopped == 0

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        super()._update_info_buffer(infos, dones)
        if self._rollout_episodes is None or self._rollout_successes is None:
            return
        # Also keep this rollout's episodes apart, to share them with the other ranks at its end.
        for index, info in enumerate(infos):
            if info.get("episode") is not None:
                self._rollout_episodes.append(info["episode"])
            if info.get("is_success") is not None and dones is not None and dones[index]:
                self._rollout_successes.append(info["is_success"])
