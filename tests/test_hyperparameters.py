"""Constructor compatibility with sb3-contrib and clear errors for bad input."""

import inspect

import pytest
from sb3_contrib import TRPO as ContribTRPO

from sb3_trpo_plugin import TRPO
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
    ],
)
def test_bad_hyperparameter_is_a_value_error_naming_it(keyword, value, allowed):
    with pytest.raises(ValueError, match=rf"{keyword} must be .*{allowed}"):
        TRPO("MlpPolicy", RandomEnv(ACTION_SPACES["discrete"]), **{keyword: value})


def test_single_sample_buffer_with_advantage_normalisation_is_refused():
    with pytest.raises(ValueError, match="n_steps \\* n_envs"):
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
