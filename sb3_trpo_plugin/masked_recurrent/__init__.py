"""
MaskableRecurrentTRPO: TRPO with LSTM policies and invalid-action masks in one policy (sb3-contrib's conventions of
``RecurrentPPO`` and ``MaskablePPO`` together).

Needs sb3-contrib, the optional ``contrib`` extra: ``pip install 'sb3-trpo-plugin[contrib]'``.
"""

try:
    import sb3_contrib  # noqa: F401  (the LSTM policies, masked distributions and buffers build on sb3-contrib's)
except ImportError as error:  # pragma: no cover - exercised in a subprocess without sb3-contrib
    raise ImportError(
        "MaskableRecurrentTRPO needs sb3-contrib, which is not installed: pip install 'sb3-trpo-plugin[contrib]'"
    ) from error

from sb3_trpo_plugin.masked_recurrent.algorithm import MaskableRecurrentTRPO
from sb3_trpo_plugin.masked_recurrent.buffers import MaskableRecurrentDictRolloutBuffer, MaskableRecurrentRolloutBuffer
from sb3_trpo_plugin.masked_recurrent.callbacks import MaskableRecurrentEvalCallback
from sb3_trpo_plugin.masked_recurrent.evaluation import evaluate_policy
from sb3_trpo_plugin.masked_recurrent.policies import CnnLstmPolicy, MlpLstmPolicy, MultiInputLstmPolicy
from sb3_trpo_plugin.masked_recurrent.policy_step import MaskedRecurrentPolicyBatch, MaskedRecurrentPolicyStep

__all__ = [
    "CnnLstmPolicy",
    "MaskableRecurrentDictRolloutBuffer",
    "MaskableRecurrentEvalCallback",
    "MaskableRecurrentRolloutBuffer",
    "MaskableRecurrentTRPO",
    "MaskedRecurrentPolicyBatch",
    "MaskedRecurrentPolicyStep",
    "MlpLstmPolicy",
    "MultiInputLstmPolicy",
    "evaluate_policy",
]
