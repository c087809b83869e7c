"""Trust Region Policy Optimization (TRPO) as a first-class Stable-Baselines3 algorithm."""

from typing import TYPE_CHECKING, Any

from sb3_trpo_plugin.loading import safe_load, safe_load_vec_normalize
from sb3_trpo_plugin.replicas import CPUOnlyRolloutWarning, FastPathMismatchWarning, FastPathWarning
from sb3_trpo_plugin.trpo import TRPO, CnnPolicy, CriticWorkerError, HyperparameterError, MlpPolicy, MultiInputPolicy
from sb3_trpo_plugin.version import __version__

if TYPE_CHECKING:
    from sb3_trpo_plugin.export import export_onnx

# The variants are not in __all__: ``from sb3_trpo_plugin import *`` must work without sb3-contrib.
__all__ = [
    "TRPO",
    "CPUOnlyRolloutWarning",
    "CnnPolicy",
    "CriticWorkerError",
    "FastPathMismatchWarning",
    "FastPathWarning",
    "HyperparameterError",
    "MlpPolicy",
    "MultiInputPolicy",
    "__version__",
    "export_onnx",
    "safe_load",
    "safe_load_vec_normalize",
]


def __getattr__(name: str) -> Any:
    """
    Imported on first use: the variants (they need sb3-contrib, the ``contrib`` extra), and ONNX export (which imports
    onnx and onnxruntime, the ``export`` extra, only when it runs).
    """
    if name == "export_onnx":
        from sb3_trpo_plugin.export import export_onnx

        return export_onnx
    if name == "MaskableTRPO":
        from sb3_trpo_plugin.masked import MaskableTRPO

        return MaskableTRPO
    if name == "RecurrentTRPO":
        from sb3_trpo_plugin.recurrent import RecurrentTRPO

        return RecurrentTRPO
    if name == "MaskableRecurrentTRPO":
        from sb3_trpo_plugin.masked_recurrent import MaskableRecurrentTRPO

        return MaskableRecurrentTRPO
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
