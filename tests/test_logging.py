"""Training statistics reach the logger and TensorBoard."""

import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.common.distributions import mean_action_std

CONTRIB_KEYS = {
    "train/policy_objective",
    "train/value_loss",
    "train/kl_divergence_loss",
    "train/explained_variance",
    "train/is_line_search_success",
    "train/std",
}
TRUST_REGION_KEYS = {
    "train/line_search_steps",
    "train/step_fraction",
    "train/max_step_size",
    "train/cg_steps",
    "train/cg_residual",
    "train/expected_improvement",
    "train/actual_improvement",
    "train/policy_gradient_norm",
    "train/is_step_non_finite",
}


def test_tensorboard_event_file_holds_train_scalars(tmp_path):
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    model = TRPO("MlpPolicy", env, n_steps=64, batch_size=64, seed=0, tensorboard_log=str(tmp_path))
    model.learn(384, tb_log_name="run")
    (run_dir,) = tmp_path.iterdir()
    assert run_dir.name == "run_1"
    events = EventAccumulator(str(run_dir))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    missing = (CONTRIB_KEYS | TRUST_REGION_KEYS) - scalars
    assert not missing, missing
    success = [e.value for e in events.Scalars("train/is_line_search_success")]
    # SB3 writes the logs after each rollout, so the last of the 3 updates is recorded but not yet written.
    assert len(success) == 2 and all(v in (0.0, 1.0) for v in success)
    kl = [e.value for e in events.Scalars("train/kl_divergence_loss")]
    assert all(0.0 <= v <= model.target_kl for v in kl)
    steps = [e.value for e in events.Scalars("train/cg_steps")]
    assert all(1 <= v <= model.cg_max_steps for v in steps)


def test_expected_and_actual_improvement_agree_for_small_steps():
    model = TRPO("MlpPolicy", "CartPole-v1", n_steps=256, batch_size=256, seed=0, target_kl=1e-4)
    model.learn(256)
    logged = model.logger.name_to_value
    assert logged["train/is_line_search_success"] == 1.0
    # For a tiny trust region the linear model of the surrogate is accurate.
    assert abs(logged["train/actual_improvement"] / logged["train/expected_improvement"] - 1) < 0.1


def test_action_std_is_the_noise_of_the_actions_with_gsde():
    """With gSDE the actions' noise is sqrt(Σ_j φ_j(s)² σ_ij²) per state, not exp(log_std): both are logged."""
    model = TRPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, use_sde=True, seed=0)
    model.learn(64)
    observations = next(model.rollout_buffer.get(batch_size=None)).observations
    with torch.no_grad():
        distribution = model.policy.get_distribution(observations)
        features = model.policy.action_dist._latent_sde
        sigma = model.policy.action_dist.get_std(model.policy.log_std)
        expected = torch.sqrt((features**2) @ (sigma**2)).mean().item()
    assert mean_action_std(distribution) == pytest.approx(expected, rel=1e-6)
    model.train()  # again, from these weights: the logged value is that of the distribution the step starts from
    logged = model.logger.name_to_value
    assert logged["train/action_std"] == pytest.approx(expected, rel=1e-6)
    assert abs(logged["train/action_std"] - logged["train/std"]) > 0.01


def test_no_action_std_for_discrete_actions():
    model = TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, seed=0)
    model.learn(64)
    assert "train/action_std" not in model.logger.name_to_value
