"""Constructor compatibility with sb3-contrib and clear errors for bad input."""

import inspect

import pytest
from sb3_contrib import TRPO as ContribTRPO
from stable_baselines3.common.env_util import make_vec_env

from sb3_trpo_plugin import TRPO, HyperparameterError
from sb3_trpo_plugin.trpo.hyperparameters import PPO_KEYWORDS
from tests.conftest import ACTION_SPACES, RandomEnv


def test_every_sb3_contrib_keyword_has_the_same_name_and_default():
    theirs = inspect.signature(ContribTRPO.__init__).parameters
    ours = inspect.signature(TRPO.__init__).parameters
    for name, parameter in theirs.items():
        assert name in ours, name
        assert ours[name].default == parameter.default, name
    # New options come after sb3-contrib's, so positional calls keep working.
    assert list(ours)[: len(theirs)] == list(theirs)


@pytest.mark.parametrize(
    "keyword, value, allowed",
    [
        ("target_kl", 0.0, "> 0"),
        ("target_kl", -0.1, "> 0"),
        ("target_kl", None, "> 0"),
        ("cg_max_steps", 0, ">= 1"),
        ("cg_damping", -1e-3, ">= 0"),
        ("line_search_shrinking_factor", 0.0, r"\(0, 1\)"),
        ("line_search_shrinking_factor", 1.0, r"\(0, 1\)"),
        ("line_search_max_iter", 0, ">= 1"),
        ("batch_size", 0, ">= 1"),
        ("n_critic_updates", -1, ">= 0"),
        ("sub_sampling_factor", 0, ">= 1"),
        ("fisher_sub_sampling_factor", 0, ">= 1"),
        ("fisher_product", "exact", "gauss_newton"),
        # Non-finite values pass no range test on their own: refused as such.
        ("target_kl", float("inf"), "finite and > 0"),
        ("target_kl", float("nan"), "finite and > 0"),
        ("cg_damping", float("inf"), "finite and >= 0"),
        ("cg_damping", float("nan"), "finite and >= 0"),
        ("cg_residual_tol", float("nan"), "finite and >= 0"),
        ("cg_residual_tol", float("inf"), "finite and >= 0"),
        ("line_search_shrinking_factor", float("nan"), r"\(0, 1\)"),
        ("learning_rate", float("nan"), "finite and >= 0"),
        ("learning_rate", float("inf"), "finite and >= 0"),
        ("learning_rate", -1e-3, ">= 0"),
        ("gamma", float("nan"), r"\[0, 1\]"),
        ("gamma", 1.5, r"\[0, 1\]"),
        ("gamma", float("inf"), r"finite and in the closed interval \[0, 1\]"),
        ("gae_lambda", float("inf"), r"\[0, 1\]"),
        ("ent_coef", float("nan"), "finite and >= 0"),
        ("ent_coef", -0.01, ">= 0"),
    ],
)
def test_bad_hyperparameter_is_a_value_error_naming_it(keyword, value, allowed):
    with pytest.raises(ValueError, match=rf"{keyword} must be .*{allowed}"):
        TRPO("MlpPolicy", RandomEnv(ACTION_SPACES["discrete"]), **{keyword: value})


@pytest.mark.parametrize("keyword, value", [("target_kl", -1.0), ("cg_max_steps", 0), ("learning_rate", float("inf"))])
def test_bad_hyperparameter_is_caught_as_sb3_contribs_assertion_error(keyword, value):
    """sb3-contrib and SB3 assert; code written for them (``except AssertionError``) keeps catching ours."""
    with pytest.raises(AssertionError, match=keyword) as caught:
        TRPO("MlpPolicy", RandomEnv(ACTION_SPACES["discrete"]), **{keyword: value})
    assert type(caught.value) is HyperparameterError and isinstance(caught.value, ValueError)


def test_learning_rate_schedule_is_accepted():
    model = TRPO("MlpPolicy", RandomEnv(ACTION_SPACES["discrete"]), learning_rate=lambda progress: 1e-3 * progress)
    assert model.lr_schedule(0.5) == pytest.approx(5e-4)


@pytest.mark.parametrize(
    "keyword, value, instead",
    [
        ("n_epochs", 10, "n_critic_updates"),
        ("clip_range", 0.2, "target_kl"),
        ("clip_range_vf", 0.2, "n_critic_updates"),
        ("vf_coef", 0.5, "n_critic_updates"),
        ("max_grad_norm", 0.5, "target_kl"),
    ],
)
def test_ppo_keyword_is_a_type_error_saying_what_trpo_uses_instead(keyword, value, instead):
    with pytest.raises(TypeError, match=rf"unexpected keyword argument '{keyword}': it is PPO's .*{instead}"):
        TRPO("MlpPolicy", RandomEnv(ACTION_SPACES["discrete"]), **{keyword: value})
    assert set(PPO_KEYWORDS) == {"n_epochs", "clip_range", "clip_range_vf", "vf_coef", "max_grad_norm"}


def test_unknown_keyword_is_python_s_type_error_and_the_signature_is_kept():
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'n_epoch'$"):
        TRPO("MlpPolicy", RandomEnv(ACTION_SPACES["discrete"]), n_epoch=10)
    assert "ent_coef" in inspect.signature(TRPO.__init__).parameters
    assert "n_epochs" not in inspect.signature(TRPO.__init__).parameters


def test_single_sample_buffer_with_advantage_normalisation_is_refused():
    with pytest.raises(ValueError, match="n_steps \\* n_envs"):
        TRPO("MlpPolicy", RandomEnv(ACTION_SPACES["discrete"]), n_steps=1, batch_size=1)
    with pytest.raises(AssertionError, match="n_steps \\* n_envs"):  # what sb3-contrib raises
        TRPO("MlpPolicy", RandomEnv(ACTION_SPACES["discrete"]), n_steps=1, batch_size=1)
    model = TRPO("MlpPolicy", RandomEnv(ACTION_SPACES["discrete"]), n_steps=1, batch_size=1, normalize_advantage=False)
    assert model.n_steps == 1


def test_buffer_not_divisible_by_batch_size_warns():
    with pytest.warns(UserWarning, match="truncated mini-batch of size 36"):
        TRPO("MlpPolicy", RandomEnv(ACTION_SPACES["discrete"]), n_steps=100, batch_size=64)


def test_zero_critic_updates_is_allowed():
    model = TRPO("MlpPolicy", RandomEnv(ACTION_SPACES["discrete"]), n_steps=32, batch_size=32, n_critic_updates=0)
    critic_before = [p.detach().clone() for p in model._critic_params]
    model.learn(64)
    assert all((a == b).all() for a, b in zip(critic_before, model._critic_params, strict=True))


@pytest.mark.parametrize("n_steps, n_envs, factor", [(4, 1, 4), (4, 1, 9), (2, 2, 4)])
def test_sub_sampling_that_leaves_one_row_with_advantage_normalisation_is_refused(n_steps, n_envs, factor):
    """Every k-th row of n_steps · n_envs keeps one when k ≥ n_steps · n_envs: its advantage has no spread to z-score."""
    env = make_vec_env(lambda: RandomEnv(ACTION_SPACES["discrete"]), n_envs=n_envs)
    size = n_steps * n_envs
    with pytest.raises(HyperparameterError, match="sub_sampling_factor must be smaller than n_steps \\* n_envs") as caught:
        TRPO("MlpPolicy", env, n_steps=n_steps, batch_size=size, sub_sampling_factor=factor)
    assert isinstance(caught.value, AssertionError)  # what sb3-contrib raises for n_steps * n_envs == 1
    two_rows = TRPO("MlpPolicy", env, n_steps=n_steps, batch_size=size, sub_sampling_factor=size - 1, seed=0)
    two_rows.learn(size)
    assert two_rows.logger.name_to_value["train/is_step_non_finite"] == 0.0
    unnormalised = TRPO(
        "MlpPolicy", env, n_steps=n_steps, batch_size=size, sub_sampling_factor=factor, normalize_advantage=False
    )
    assert unnormalised.sub_sampling_factor == factor
