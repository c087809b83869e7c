"""Training statistics reach the logger and TensorBoard."""

from stable_baselines3.common.env_util import make_vec_env
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sb3_trpo_plugin import TRPO

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
