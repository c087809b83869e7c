"""
TRPO with invalid-action masking on sb3-contrib's masking API: :class:`MaskableTRPO`, a drop-in for ``MaskablePPO``.

sb3-contrib is an optional dependency (the ``contrib`` extra): importing this package without it raises an
``ImportError`` that says what to install; nothing else in ``sb3_trpo_plugin`` imports it.
"""

try:
    import sb3_contrib  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised in a subprocess without sb3-contrib
    raise ImportError(
        "MaskableTRPO uses sb3-contrib's action masking, which is not installed: pip install 'sb3-trpo-plugin[contrib]'"
    ) from error

from sb3_trpo_plugin.masked.maskable_trpo import CnnPolicy, MaskableTRPO, MlpPolicy, MultiInputPolicy
from sb3_trpo_plugin.masked.policy_step import MaskedPolicyBatch, MaskedPolicyStep

__all__ = ["CnnPolicy", "MaskableTRPO", "MaskedPolicyBatch", "MaskedPolicyStep", "MlpPolicy", "MultiInputPolicy"]
