"""
What the zoo route passes rl-zoo3 as ``--conf-file`` for ``-v5`` ids: the entries of
:func:`~sb3_trpo_plugin.zoo.v5_hyperparams` (rl-zoo3's ``-v4`` entries, and ``trpo_v5.yml``'s own) without their
``env_kwargs``, which the route passes as ``--env-kwargs`` instead.

rl-zoo3 before 2.8 reads no ``env_kwargs`` from a hyperparameter file: it hands every key it does not know to the
algorithm, so ``TRPO(env_kwargs=...)`` would fail. rl-zoo3 2.8 and later read them, but for their training environments only.
Given as ``--env-kwargs``, the observation reaches training, evaluation and ``enjoy`` on every release.
``trpo_v5.yml`` stays the file to read (and to pass with ``-conf`` to rl-zoo3 2.9 directly).
"""

from typing import Any

from sb3_trpo_plugin.zoo import v5_hyperparams

hyperparams: dict[str, dict[str, Any]] = {
    env_id: {key: value for key, value in entry.items() if key != "env_kwargs"} for env_id, entry in v5_hyperparams().items()
}
