from sb3_trpo_plugin.trpo.critic_pipeline import CriticWorkerError
from sb3_trpo_plugin.trpo.hyperparameters import HyperparameterError
from sb3_trpo_plugin.trpo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_trpo_plugin.trpo.trpo import TRPO

__all__ = ["TRPO", "CnnPolicy", "CriticWorkerError", "HyperparameterError", "MlpPolicy", "MultiInputPolicy"]
