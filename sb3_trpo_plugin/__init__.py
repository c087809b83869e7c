"""Trust Region Policy Optimization (TRPO) as a first-class Stable-Baselines3 algorithm."""

from sb3_trpo_plugin.loading import safe_load, safe_load_vec_normalize
from sb3_trpo_plugin.trpo import TRPO, CnnPolicy, HyperparameterError, MlpPolicy, MultiInputPolicy
from sb3_trpo_plugin.version import __version__

__all__ = [
    "TRPO",
    "CnnPolicy",
    "HyperparameterError",
    "MlpPolicy",
    "MultiInputPolicy",
    "__version__",
    "safe_load",
    "safe_load_vec_normalize",
]
