"""The ``mujoco`` TRPO sampler (``zoo/samplers.py``) and ``--trpo-sampler``, which puts it in rl-zoo3's registry."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import optuna
import pytest

from sb3_trpo_plugin.zoo import SAMPLER_OPTION, main, take_sampler_option
from sb3_trpo_plugin.zoo.samplers import (
    MUJOCO_CHOICES,
    MUJOCO_RANGES,
    SAMPLERS,
    install_sampler,
    mujoco_hyperparams,
    sample_mujoco_params,
)

#: The knobs the sampler draws, and nothing else (the others stay as the hyperparameter file says).
DRAWN = {"n_steps", "batch_size", "gamma", "gae_lambda", "net_arch", "target_kl", "learning_rate", "n_critic_updates"}


@pytest.fixture
def zoo_registries(gymnasium_restored: list) -> Iterator[tuple[dict, dict | None]]:
    """rl-zoo3's sampler and converter registries (rl-zoo3 2.3 has no converters: ``None``), put back after the test."""
    from rl_zoo3 import hyperparams_opt

    registries = [hyperparams_opt.HYPERPARAMS_SAMPLER, getattr(hyperparams_opt, "HYPERPARAMS_CONVERTER", None)]
    saved = [None if registry is None else dict(registry) for registry in registries]
    yield registries[0], registries[1]
    for registry, before in zip(registries, saved, strict=True):
        if registry is not None and before is not None:
            registry.clear()
            registry.update(before)


def test_search_space() -> None:
    assert set(MUJOCO_CHOICES) | set(MUJOCO_RANGES) == DRAWN
    assert MUJOCO_CHOICES["n_steps"] == [256, 512, 1024, 2048] and MUJOCO_CHOICES["batch_size"] == [64, 128, 256, 512]
    # 0.9999: rl-zoo3's Swimmer value.
    assert MUJOCO_CHOICES["gamma"] == [0.98, 0.99, 0.995, 0.999, 0.9999] and MUJOCO_CHOICES["gae_lambda"] == [
        0.9,
        0.95,
        0.98,
        0.99,
    ]
    assert MUJOCO_RANGES == {
        "target_kl": (0.005, 0.05, True),
        "learning_rate": (1e-4, 3e-3, True),
        "n_critic_updates": (5, 30, False),
    }
    # rl-zoo3's MuJoCo settings (n_steps 1024, critic minibatch 128, gamma 0.99, lambda 0.95, lr 1e-3, 20 critic
    # epochs, target KL 0.01, 64x64) are a point of the space.
    assert 1024 in MUJOCO_CHOICES["n_steps"] and 128 in MUJOCO_CHOICES["batch_size"]
    assert 0.99 in MUJOCO_CHOICES["gamma"] and 0.95 in MUJOCO_CHOICES["gae_lambda"] and "small" in MUJOCO_CHOICES["net_arch"]


def test_a_fixed_trial_gives_trpo_keywords() -> None:
    params: dict[str, Any] = dict(
        n_steps=512, batch_size=64, gamma=0.995, gae_lambda=0.98, net_arch="medium", target_kl=0.02, learning_rate=3e-4
    )
    hyperparams = sample_mujoco_params(optuna.trial.FixedTrial({**params, "n_critic_updates": 7}), 8, 2, {})
    assert hyperparams == {
        **{key: value for key, value in params.items() if key != "net_arch"},
        "n_critic_updates": 7,
        "policy_kwargs": {"net_arch": {"pi": [256, 256], "vf": [256, 256]}},
    }
    assert mujoco_hyperparams({"net_arch": "small"}) == {"policy_kwargs": {"net_arch": {"pi": [64, 64], "vf": [64, 64]}}}


def test_sampled_trials_stay_in_the_space() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    for _ in range(40):
        trial = study.ask()
        drawn.append(sample_mujoco_params(trial, 8, 2, {}))
        study.tell(trial, 0.0)
    for hyperparams in drawn:
        assert set(hyperparams) == DRAWN - {"net_arch"} | {"policy_kwargs"}
        for name, choices in MUJOCO_CHOICES.items():
            if name != "net_arch":
                assert hyperparams[name] in choices, name
        assert 0.005 <= hyperparams["target_kl"] <= 0.05 and 1e-4 <= hyperparams["learning_rate"] <= 3e-3
        assert isinstance(hyperparams["n_critic_updates"], int) and 5 <= hyperparams["n_critic_updates"] <= 30
    assert len({h["n_steps"] for h in drawn}) == 4 and len({str(h["policy_kwargs"]) for h in drawn}) == 2


def test_take_sampler_option() -> None:
    arguments = ["--algo", "trpo", SAMPLER_OPTION, "mujoco", "-optimize", "--env", "Ant-v5"]
    assert take_sampler_option(arguments) == ("mujoco", ["--algo", "trpo", "-optimize", "--env", "Ant-v5"])
    assert take_sampler_option([f"{SAMPLER_OPTION}=mujoco", "-optimize"]) == ("mujoco", ["-optimize"])
    assert take_sampler_option(["--algo", "trpo"]) == (None, ["--algo", "trpo"])


def test_install_sampler_replaces_rl_zoo3s(zoo_registries: tuple[dict, dict | None]) -> None:
    samplers, converters = zoo_registries
    zoo_sampler = samplers["trpo"]
    install_sampler("mujoco")
    assert samplers["trpo"] is sample_mujoco_params
    assert converters is None or converters["trpo"] is mujoco_hyperparams  # rl-zoo3 2.3: no converters to register
    assert samplers["trpo"] is not zoo_sampler and samplers["ppo"] is not sample_mujoco_params  # other algorithms untouched
    with pytest.raises(KeyError, match="unknown TRPO sampler 'wide'"):
        install_sampler("wide")
    assert set(SAMPLERS) == {"mujoco"}


def test_unknown_sampler_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--algo", "trpo", "--env", "Ant-v5", SAMPLER_OPTION, "wide", "-optimize"]) == 2
    assert "unknown --trpo-sampler 'wide'; choose from ['mujoco']" in capsys.readouterr().err


@pytest.mark.parametrize(
    "env_id, zoo_id, env_kwargs",
    [
        ("Ant-v5", "Ant-v4", {"include_cfrc_ext_in_observation": False}),
        ("Swimmer-v5", "Swimmer-v4", {}),
        ("Walker2d-v5", "Walker2d-v4", {}),
        ("Hopper-v5", "Hopper-v4", {}),
    ],
)
def test_the_searches_start_from_rl_zoo3s_settings(env_id: str, zoo_id: str, env_kwargs: dict[str, Any]) -> None:
    import inspect
    from pathlib import Path

    import yaml

    from benchmarks.tune_v5 import SEARCHES
    from sb3_trpo_plugin import TRPO

    search = SEARCHES[env_id]
    spec = importlib.util.find_spec("rl_zoo3")
    assert spec is not None and spec.submodule_search_locations is not None
    zoo_file = yaml.safe_load((Path(spec.submodule_search_locations[0]) / "hyperparams" / "trpo.yml").read_text())
    zoo = {key: value for key, value in zoo_file[zoo_id].items() if key != "<<"}
    base = yaml.safe_load((Path(__file__).resolve().parents[1] / search.base_conf).read_text())[env_id]
    # The observation rl-zoo3's values were tuned with, in the file and on rl-zoo3's command line (for its evaluation envs).
    assert base.pop("env_kwargs", {}) == env_kwargs
    assert search.env_kwargs == tuple(f"{name}:{value}" for name, value in env_kwargs.items())
    assert base == zoo
    # The first queued trial is the same point: the sampled knobs at rl-zoo3's values, TRPO's default target_kl and net.
    zoo_point = search.first_trials[0]
    queued = mujoco_hyperparams(dict(zoo_point))
    assert queued.pop("policy_kwargs") == {"net_arch": {"pi": [64, 64], "vf": [64, 64]}}
    assert queued.pop("target_kl") == inspect.signature(TRPO.__init__).parameters["target_kl"].default
    assert queued == {key: zoo[key] for key in queued}
    # Every other queued trial is rl-zoo3's point again or changes one knob of it, inside the sampler's space.
    later = [point for points in search.later_trials.values() for point in points]
    for point in (*search.first_trials, *later):
        changed = {name for name in zoo_point if point[name] != zoo_point[name]}
        assert set(point) == set(zoo_point) and len(changed) <= 1, point
        for name, choices in MUJOCO_CHOICES.items():
            assert point[name] in choices, name
        for name, (low, high, _) in MUJOCO_RANGES.items():
            assert low <= point[name] <= high, name
