"""
Surviving a lost process: checkpoints at update boundaries, and every rank resuming from the same one.

Under ``torchrun --max-restarts=K``, a rank that dies takes the group down (the others' next collective fails,
within the timeout at worst: :mod:`.rendezvous`), and the agent starts every rank again. The script then resumes
from the newest complete checkpoint (``examples/distributed_cartpole.py`` shows the pattern)::

    parallel.init_from_environment()  # the group first: the ranks agree on what to resume
    checkpoint = parallel.latest_checkpoint_on_every_rank("checkpoints", require_vec_normalize=True)
    if checkpoint is None:
        model = TRPO("MlpPolicy", VecNormalize(venv), tensorboard_log="tb")
    else:
        env = VecNormalize.load(str(checkpoint.vec_normalize_path), venv)
        model = TRPO.load(checkpoint.model_path, env=env, tensorboard_log="tb")
    callback = UpdateCheckpointCallback(10_000, "checkpoints", save_vecnormalize=True)  # runs on rank 0 only
    model.learn(total - model.num_timesteps, callback=callback, reset_num_timesteps=checkpoint is None)

At most the steps since the last checkpoint are lost.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

from sb3_trpo_plugin.parallel.collectives import Collectives
from sb3_trpo_plugin.parallel.process_group import is_distributed
from sb3_trpo_plugin.serialization.atomic import atomic_write_bytes
from sb3_trpo_plugin.serialization.checkpoints import Checkpoint, CheckpointCallback, find_latest_checkpoint


class UpdateCheckpointCallback(CheckpointCallback):
    """
    The atomic :class:`~sb3_trpo_plugin.serialization.checkpoints.CheckpointCallback` (same files, same names),
    saving between two updates, where the weights, the optimiser's state, the ``VecNormalize`` statistics and
    the step count belong together.

    SB3's callback saves every ``save_freq`` environment steps, usually in the middle of a rollout: the step count
    then includes steps no update has used yet (data-parallel, only this rank's part of them), which a resumed
    run would count without ever training on them. This one saves at the start of the first rollout once
    ``save_every`` steps (of all ranks) have passed since the last checkpoint, and once more when training ends.
    Data-parallel, it runs on rank 0, like every callback.

    :param save_every: steps (of all ranks together) between two checkpoints, at least
    :param save_path: folder of the checkpoints
    :param name_prefix: their common prefix
    :param save_vecnormalize: also save the ``VecNormalize`` statistics, when the environment has them
    :param verbose: 2 prints every save
    """

    #: Reads none of the rollout loop's locals (the lean loop may then compute values and log-probabilities batched).
    reads_step_outputs = False

    def __init__(
        self,
        save_every: int,
        save_path: str | os.PathLike[str],
        name_prefix: str = "rl_model",
        save_vecnormalize: bool = False,
        verbose: int = 0,
    ):
        if save_every < 1:
            raise ValueError(f"save_every must be a positive number of steps, got {save_every}")
        # save_freq=1: the parent's _on_step writes whenever it is called, which happens at the boundaries only.
        super().__init__(1, str(save_path), name_prefix, save_vecnormalize=save_vecnormalize, verbose=verbose)
        self.save_every = save_every
        self.last_saved_at = 0

    def _init_callback(self) -> None:
        super()._init_callback()
        self.last_saved_at = self.model.num_timesteps  # a resumed run's checkpoint is already on disk

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if self.model.num_timesteps - self.last_saved_at >= self.save_every:
            self._save()

    def _on_training_end(self) -> None:
        if self.model.num_timesteps > self.last_saved_at:
            self._save()

    def _save(self) -> None:
        self.num_timesteps = self.model.num_timesteps  # what the file names say
        super()._on_step()
        self.last_saved_at = self.num_timesteps


def latest_checkpoint_on_every_rank(
    save_path: str | os.PathLike[str], name_prefix: str = "rl_model", require_vec_normalize: bool = False
) -> Checkpoint | None:
    """
    The newest complete checkpoint of any rank, the same on every rank, with its files on every rank's disk.

    Each rank looks in its own ``save_path`` (:func:`~sb3_trpo_plugin.serialization.checkpoints.find_latest_checkpoint`);
    the rank holding the newest checkpoint (the lowest such rank on a tie) sends its files to the others, which
    write them into their ``save_path`` where they are missing or differ (machines without a shared disk). Every
    rank then loads the same bytes. One process (not distributed): :func:`find_latest_checkpoint` itself.
    Call it on every rank, after the process group exists (:func:`~.process_group.init_from_environment`).

    :param save_path: the checkpoint callback's folder
    :param name_prefix: the checkpoint callback's prefix
    :param require_vec_normalize: skip checkpoints without their ``VecNormalize`` statistics
    :return: the checkpoint, with paths in this rank's ``save_path``; ``None`` when no rank has one
    """
    local = find_latest_checkpoint(save_path, name_prefix, require_vec_normalize)
    if not is_distributed():
        return local
    collectives = Collectives()
    step_counts = collectives.all_gather_objects([-1 if local is None else local.num_timesteps])
    newest = max(range(collectives.world_size), key=lambda other: (step_counts[other][0], -other))
    if step_counts[newest][0] < 0:
        return None
    files = _file_fields(local) if collectives.rank == newest and local is not None else {}
    shared: tuple[Checkpoint, dict[str, tuple[str, bytes]]] = collectives.broadcast_object(
        (local, {field: (path.name, path.read_bytes()) for field, path in files.items()}), src=newest
    )
    checkpoint, contents = shared
    folder = pathlib.Path(save_path)
    paths: dict[str, Any] = {}
    for field, (name, data) in contents.items():
        path = folder / name
        if not (path.is_file() and path.read_bytes() == data):
            atomic_write_bytes(path, data)
        paths[field] = path
    return dataclasses.replace(checkpoint, **paths)


def _file_fields(checkpoint: Checkpoint) -> dict[str, pathlib.Path]:
    """The checkpoint's files, by field name (every path-valued field: the model and its companions)."""
    return {
        field.name: value
        for field in dataclasses.fields(checkpoint)
        if isinstance(value := getattr(checkpoint, field.name), pathlib.Path)
    }
