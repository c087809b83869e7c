"""Trust Region Policy Optimization (TRPO) as a first-class Stable-Baselines3 algorithm."""

from typing import Any

from sb3_trpo_plugin.loading import safe_load
from sb3_trpo_plugin.trpo import TRPO, CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_trpo_plugin.version import __version__

__all__ = ["TRPO", "CnnPolicy", "MlpPolicy", "MultiInputPolicy", "__version__", "safe_load"]


def __getattr__(name: str) -> Any:
    """``MaskableTRPO``, imported on first use: it needs sb3-contrib (the ``contrib`` extra); the rest does not."""
    if name == "MaskableTRPO":
        from sb3_trpo_plugin.masked import MaskableTRPO

        return MaskableTRPO
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
