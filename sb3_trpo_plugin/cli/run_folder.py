"""Where ``sb3-trpo train`` puts each file of a run, so that ``eval`` and ``plot`` find them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sb3_trpo_plugin.serialization.vec_normalize_statistics import statistics_path

CONFIG_FILE = "run.json"


@dataclass(frozen=True)
class RunFolder:
    """
    The files of one training run.

    :param path: the run's folder (``--log-folder``)
    """

    path: Path

    @property
    def config(self) -> Path:
        """What was trained and how: algorithm, environment, seed, hyperparameters (JSON)."""
        return self.path / CONFIG_FILE

    @property
    def model(self) -> Path:
        """The model at the end of training."""
        return self.path / "model.zip"

    @property
    def vecnormalize(self) -> Path:
        """``VecNormalize`` statistics at the end of training (normalised runs only)."""
        return self.path / "vecnormalize.pkl"

    @property
    def best_model(self) -> Path:
        """The model of the best evaluation (``EvalCallback``)."""
        return self.path / "best_model.zip"

    @property
    def best_vecnormalize(self) -> Path:
        """``VecNormalize`` statistics at the best evaluation (normalised runs only)."""
        return self.path / "best_vecnormalize.pkl"

    @property
    def evaluations(self) -> Path:
        """``EvalCallback``'s log: ``timesteps``, ``results``, ``ep_lengths``."""
        return self.path / "evaluations.npz"

    @property
    def monitor(self) -> Path:
        """One ``Monitor`` CSV per training environment: return, length and time of each episode."""
        return self.path / "monitor"

    @property
    def checkpoints(self) -> Path:
        """``CheckpointCallback``'s models (and normalisation statistics)."""
        return self.path / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files."""
        return self.path / "tensorboard"

    def statistics_file(self, best: bool = False) -> Path:
        """
        The ``VecNormalize`` statistics of the final or the best model: the pickle-free ``.npz`` when present (runs of
        older versions have only SB3's ``.pkl``); the final statistics when no evaluation saved the best's.

        :param best: for ``best_model.zip`` rather than ``model.zip``
        """
        pickle_path = self.best_vecnormalize if best and self.best_vecnormalize.exists() else self.vecnormalize
        npz_path = statistics_path(pickle_path)
        return npz_path if npz_path.exists() else pickle_path

    def read_config(self) -> dict[str, Any]:
        """
        :return: the run's configuration
        :raises FileNotFoundError: when the folder holds no run
        """
        return json.loads(self.config.read_text())

    def write_config(self, config: dict[str, Any]) -> None:
        """
        :param config: the run's configuration; values JSON cannot hold (classes, functions) are stored by ``repr``
        """
        self.config.write_text(json.dumps(config, indent=2, default=repr) + "\n")
