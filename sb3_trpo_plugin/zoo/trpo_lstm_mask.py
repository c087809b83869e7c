"""
rl-zoo3's hyperparameters for ``--algo trpo_lstm_mask`` (MaskableRecurrentTRPO; rl-zoo3 ships none): TRPO's defaults
with the LSTM policy, on any environment.

rl-zoo3 reads the ``hyperparams`` dictionary of the module given as ``--conf-file``; keys are environment ids, and
``"default"`` covers the others. Pass your own file with ``-conf`` to tune them per environment.
"""

from typing import Any

hyperparams: dict[str, dict[str, Any]] = {
    "default": {"policy": "MlpLstmPolicy", "n_timesteps": 100_000},
}
