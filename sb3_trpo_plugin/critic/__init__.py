"""The critic's regression to the λ-returns, with hand-derived gradients for plain MLP critics."""

from sb3_trpo_plugin.critic.mlp_regression import MLPRegression

__all__ = ["MLPRegression"]
