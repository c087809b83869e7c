"""
Crash-safe checkpoints and finding the one to resume from.

SB3's ``CheckpointCallback`` writes the model, then the ``VecNormalize`` statistics, each straight
into its final file: a crash during a save can leave a truncated file with a valid-looking name. The
:class:`CheckpointCallback` here takes the same arguments and writes every file atomically, the
statistics first and the model last, so a model file on disk always has complete companions.
:func:`find_latest_checkpoint` then picks the newest complete checkpoint. Next to SB3's ``.pkl`` the
statistics also go to a pickle-free ``.npz`` (:mod:`.vec_normalize_statistics`), which
:func:`~sb3_trpo_plugin.loading.safe_load_vec_normalize` reads without running code.

Resuming after a crash::

    checkpoint = find_latest_checkpoint("checkpoints/", require_vec_normalize=True)
    env = safe_load_vec_normalize(checkpoint.vec_normalize_statistics_path, make_vec_env("CartPole-v1", n_envs=4))
    model = TRPO.load(checkpoint.model_path, env=env)  # or safe_load
    model.learn(total_timesteps - model.num_timesteps, reset_num_timesteps=False, callback=CheckpointCallback(...))
"""

from __future__ import annotations

import io
import os
import pathlib
import pickle
import re
from dataclasses import dataclass

from stable_baselines3.common.callbacks import CheckpointCallback as SB3CheckpointCallback

from sb3_trpo_plugin.serialization.atomic import atomic_write_bytes
from sb3_trpo_plugin.serialization.vec_normalize_statistics import statistics_path, write_vec_normalize_statistics


class CheckpointCallback(SB3CheckpointCallback):
    """
    SB3's ``CheckpointCallback`` (same arguments, same file names), writing each file atomically.

    Every ``save_freq`` calls it writes ``{name_prefix}_vecnormalize_{steps}_steps.npz`` (the statistics
    without pickle) and ``{name_prefix}_vecnormalize_{steps}_steps.pkl`` (SB3's; with ``save_vecnormalize=True``
    and a ``VecNormalize`` env), the replay buffer if asked and present,
    then ``{name_prefix}_{steps}_steps.zip``; each goes to a temporary file that is renamed into place.
    A crash therefore never leaves a broken file under a checkpoint name, and the model file, written
    last, marks a complete checkpoint. Works with any SB3 algorithm.
    """

    #: Reads none of the rollout loop's locals (the lean loop may then compute values and log-probabilities batched).
    reads_step_outputs = False

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq != 0:
            return True
        vec_normalize = self.model.get_vec_normalize_env()
        if self.save_vecnormalize and vec_normalize is not None:
            path = self._checkpoint_path("vecnormalize_", extension="pkl")
            # The bytes VecNormalize.save writes (it pickles itself, without the wrapped env), made before any file.
            pickled = pickle.dumps(vec_normalize)
            write_vec_normalize_statistics(vec_normalize, statistics_path(path))
            atomic_write_bytes(path, pickled)
            if self.verbose >= 2:
                print(f"Saving model VecNormalize to {path}")
        if self.save_replay_buffer and getattr(self.model, "replay_buffer", None) is not None:
            path = self._checkpoint_path("replay_buffer_", extension="pkl")
            buffer = io.BytesIO()
            self.model.save_replay_buffer(buffer)  # type: ignore[attr-defined]
            atomic_write_bytes(path, buffer.getvalue())
            if self.verbose >= 2:
                print(f"Saving model replay buffer checkpoint to {path}")
        path = self._checkpoint_path(extension="zip")
        buffer = io.BytesIO()
        self.model.save(buffer)
        atomic_write_bytes(path, buffer.getvalue())
        if self.verbose >= 2:
            print(f"Saving model checkpoint to {path}")
        return True


@dataclass(frozen=True)
class Checkpoint:
    """
    One checkpoint on disk.

    :param num_timesteps: the step count it was saved at
    :param model_path: the model ``.zip``
    :param vec_normalize_path: the ``VecNormalize`` statistics (SB3's pickle), or ``None`` when there are none
    :param vec_normalize_statistics_path: the same statistics without pickle (``.npz``, for
        :func:`~sb3_trpo_plugin.loading.safe_load_vec_normalize`), or ``None`` when there are none (checkpoints
        written by SB3's callback or an older version)
    """

    num_timesteps: int
    model_path: pathlib.Path
    vec_normalize_path: pathlib.Path | None
    vec_normalize_statistics_path: pathlib.Path | None = None


def find_latest_checkpoint(
    save_path: str | os.PathLike[str], name_prefix: str = "rl_model", require_vec_normalize: bool = False
) -> Checkpoint | None:
    """
    The checkpoint with the highest step count in a folder written by a ``CheckpointCallback``.

    Temporary files of an interrupted save are hidden (``.name.*.tmp``) and never match.

    :param save_path: the callback's ``save_path``
    :param name_prefix: the callback's ``name_prefix``
    :param require_vec_normalize: skip checkpoints without their ``VecNormalize`` statistics (SB3's ``.pkl``)
    :return: the newest checkpoint, or ``None`` when there is none
    """
    folder = pathlib.Path(save_path)
    if not folder.is_dir():
        return None
    pattern = re.compile(rf"{re.escape(name_prefix)}_(\d+)_steps\.zip")
    checkpoints = []
    for model_path in folder.iterdir():
        match = pattern.fullmatch(model_path.name)
        if match is None:
            continue
        steps = int(match.group(1))
        vec_normalize_path = folder / f"{name_prefix}_vecnormalize_{steps}_steps.pkl"
        if not vec_normalize_path.is_file():
            if require_vec_normalize:
                continue
            vec_normalize_path = None  # type: ignore[assignment]
        pickle_free = statistics_path(folder / f"{name_prefix}_vecnormalize_{steps}_steps.pkl")
        checkpoints.append(Checkpoint(steps, model_path, vec_normalize_path, pickle_free if pickle_free.is_file() else None))
    return max(checkpoints, key=lambda checkpoint: checkpoint.num_timesteps, default=None)
