"""
RecurrentTRPO: TRPO with LSTM policies on sb3-contrib's recurrent API (a drop-in for its ``RecurrentPPO``).

Needs sb3-contrib, the optional ``contrib`` extra: ``pip install 'sb3-trpo-plugin[contrib]'``.
"""

try:
    import sb3_contrib  # noqa: F401  (the recurrent policies and rollout buffers are sb3-contrib's)
except ImportError as error:
    raise ImportError(
        "RecurrentTRPO needs sb3-contrib, which is not installed: pip install 'sb3-trpo-plugin[contrib]'"
    ) from error

from sb3_trpo_plugin.recurrent.algorithm import RecurrentTRPO
from sb3_trpo_plugin.recurrent.policies import CnnLstmPolicy, MlpLstmPolicy, MultiInputLstmPolicy

__all__ = ["CnnLstmPolicy", "MlpLstmPolicy", "MultiInputLstmPolicy", "RecurrentTRPO"]
