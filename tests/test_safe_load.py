"""safe_load restores models saved by this package without unpickling anything, and refuses what it cannot."""

from __future__ import annotations

import base64
import io
import json
import pathlib
import pickle
import zipfile
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm

import sb3_trpo_plugin
from sb3_trpo_plugin import TRPO, safe_load
from sb3_trpo_plugin.compat.schedules import SCHEDULE_CLASSES, linear_schedule
from sb3_trpo_plugin.loading import UnsafeModelFileError
from sb3_trpo_plugin.serialization.description import DESCRIPTION_ENTRY, HYPERPARAMETER_ATTRIBUTES, hyperparameter_names


class SpacesEnv(gym.Env):
    """Random observations of any space; reward favours larger actions; 8-step episodes."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        self.observation_space, self.action_space = observation_space, action_space
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self.t += 1
        return self.observation_space.sample(), float(np.sum(action)) * 0.1, False, self.t >= 8, {}


BOX = spaces.Box(-1.0, 1.0, (3,), np.float32)
CASES = {
    "discrete": (BOX, spaces.Discrete(3, start=1), {}),
    "box": (spaces.Box(np.array([-1.0, 0.0, -np.inf]), np.array([1.0, 2.0, np.inf]), dtype=np.float64), BOX, {}),
    "box-sde": (BOX, spaces.Box(-2.0, 2.0, (2,), np.float32), {"use_sde": True}),
    "multidiscrete": (BOX, spaces.MultiDiscrete([2, 3]), {}),
    "multibinary": (BOX, spaces.MultiBinary(3), {}),
    "dict": (spaces.Dict({"position": BOX, "mode": spaces.Discrete(2)}), spaces.Discrete(2), {}),
}
KWARGS = dict(n_steps=16, batch_size=16, seed=3, target_kl=0.02, cg_max_steps=7)
POLICY_KWARGS = dict(net_arch=dict(pi=[8], vf=[8]), activation_fn=torch.nn.ReLU, optimizer_kwargs=dict(betas=(0.8, 0.95)))


def trained_model(case: str, **kwargs: Any) -> TRPO:
    observation_space, action_space, extra = CASES[case]
    policy = "MultiInputPolicy" if isinstance(observation_space, spaces.Dict) else "MlpPolicy"
    arguments = {**KWARGS, "policy_kwargs": POLICY_KWARGS, **extra, **kwargs}
    return TRPO(policy, SpacesEnv(observation_space, action_space), **arguments).learn(32)


def observations(model: TRPO, n: int = 16) -> Any:
    model.observation_space.seed(0)
    samples = [model.observation_space.sample() for _ in range(n)]
    if isinstance(model.observation_space, spaces.Dict):
        return {key: np.stack([s[key] for s in samples]) for key in model.observation_space.spaces}
    return np.stack(samples)


@pytest.mark.parametrize("case", list(CASES))
def test_safe_load_predicts_like_trpo_load(tmp_path: pathlib.Path, case: str) -> None:
    model = trained_model(case)
    model.save(tmp_path / "model")
    reference = TRPO.load(tmp_path / "model.zip")
    restored = safe_load(tmp_path / "model")
    batch = observations(model)
    expected = reference.predict(batch, deterministic=True)[0]
    np.testing.assert_array_equal(expected, restored.predict(batch, deterministic=True)[0])
    for key, value in reference.policy.state_dict().items():
        assert torch.equal(value, restored.policy.state_dict()[key]), key
    for name in ("num_timesteps", "_n_updates", "target_kl", "cg_max_steps", "seed", "n_steps", "use_sde", "n_envs"):
        assert getattr(restored, name) == getattr(reference, name), name
    assert restored.observation_space == reference.observation_space
    assert restored.action_space == reference.action_space
    assert restored.policy.optimizer.param_groups[0]["betas"] == (0.8, 0.95)
    assert restored.policy.optimizer.state_dict()["state"].keys() == reference.policy.optimizer.state_dict()["state"].keys()


def test_every_constructor_setting_is_restored(tmp_path: pathlib.Path) -> None:
    settings = dict(
        gamma=0.95,
        gae_lambda=0.9,
        cg_max_steps=5,
        cg_damping=0.05,
        cg_residual_tol=1e-8,
        line_search_shrinking_factor=0.7,
        line_search_max_iter=4,
        n_critic_updates=2,
        normalize_advantage=False,
        target_kl=0.03,
        sub_sampling_factor=2,
        stats_window_size=17,
        fisher_product="kl_hessian",
        verbose=0,
    )
    model = trained_model("discrete", **settings)
    model.save(tmp_path / "model.zip")
    restored = safe_load(tmp_path / "model.zip")
    names = hyperparameter_names(TRPO)
    assert set(settings) <= set(names)
    for name in names:
        attribute = HYPERPARAMETER_ATTRIBUTES.get(name, name)
        assert getattr(restored, attribute) == getattr(model, attribute), name


def test_safe_load_with_env_continues_training(tmp_path: pathlib.Path) -> None:
    # SB3 < 2.7 has no schedule classes: its schedules are closures that only a pickle describes (test_compat.py)
    learning_rate = linear_schedule(1e-3, 1e-4, 0.5) if SCHEDULE_CLASSES else 1e-3
    model = trained_model("discrete", learning_rate=learning_rate)
    model.save(tmp_path / "model.zip")
    restored = safe_load(tmp_path / "model.zip", env=SpacesEnv(*CASES["discrete"][:2]), device="cpu")
    if SCHEDULE_CLASSES:
        assert type(restored.learning_rate) is type(learning_rate) and restored.learning_rate.end == 1e-4
    else:
        assert restored.learning_rate == 1e-3
    restored.learn(32, reset_num_timesteps=False)
    assert restored.num_timesteps == 64 and restored._n_updates == 4
    assert all(torch.isfinite(p).all() for p in restored.policy.parameters())


def test_safe_load_refuses_an_env_with_other_spaces(tmp_path: pathlib.Path) -> None:
    trained_model("discrete").save(tmp_path / "model.zip")
    with pytest.raises(ValueError, match="Action spaces do not match"):
        safe_load(tmp_path / "model.zip", env=SpacesEnv(BOX, spaces.Discrete(4)))


def test_safe_load_never_unpickles(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trained_model("box").save(tmp_path / "model.zip")

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("safe_load unpickled something")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    for name in ("load", "loads"):
        monkeypatch.setattr(cloudpickle, name, forbidden)
    real_torch_load = torch.load
    calls = []

    def weights_only_torch_load(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("weights_only"))
        assert kwargs.get("weights_only") is True
        return real_torch_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", weights_only_torch_load)
    safe_load(tmp_path / "model.zip")
    assert calls == [True, True, True]  # policy, its optimiser, pytorch_variables (required empty)


class WriteMarker:
    """Unpickling this object writes a file: the stand-in for code a shared model file could run."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",)


def rewrite_zip(source: pathlib.Path, target: pathlib.Path, replacements: dict[str, bytes | None]) -> None:
    """Copy a zip archive, replacing (or, with ``None``, dropping) some entries."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as crafted:
        for name in original.namelist():
            if name not in replacements:
                crafted.writestr(name, original.read(name))
        for name, content in replacements.items():
            if content is not None:
                crafted.writestr(name, content)


def test_crafted_data_entry_runs_code_with_trpo_load_but_not_with_safe_load(tmp_path: pathlib.Path) -> None:
    model = trained_model("discrete")
    model.save(tmp_path / "model.zip")
    marker = tmp_path / "marker.txt"
    data = json.loads(zipfile.ZipFile(tmp_path / "model.zip").read("data"))
    payload = base64.b64encode(pickle.dumps(WriteMarker(marker))).decode()
    for key in ("observation_space", "action_space", "policy_class", "lr_schedule"):
        data[key][":serialized:"] = payload
    rewrite_zip(tmp_path / "model.zip", tmp_path / "crafted.zip", {"data": json.dumps(data).encode()})

    restored = safe_load(tmp_path / "crafted.zip")
    assert not marker.exists()
    batch = observations(model)
    np.testing.assert_array_equal(model.predict(batch, deterministic=True)[0], restored.predict(batch, deterministic=True)[0])

    # The same file does run the payload through SB3's loader: the test above would notice if safe_load used it.
    with pytest.raises(Exception):  # noqa: B017 - whatever SB3 makes of the payload's return value
        TRPO.load(tmp_path / "crafted.zip")
    assert marker.read_text() == "unpickled"


def test_crafted_weights_entry_is_refused(tmp_path: pathlib.Path) -> None:
    trained_model("discrete").save(tmp_path / "model.zip")
    marker = tmp_path / "marker.txt"
    buffer = io.BytesIO()
    torch.save({"weights": WriteMarker(marker)}, buffer)
    rewrite_zip(tmp_path / "model.zip", tmp_path / "crafted.zip", {"policy.pth": buffer.getvalue()})
    with pytest.raises(UnsafeModelFileError, match=r"policy.pth holds objects other than tensors"):
        safe_load(tmp_path / "crafted.zip")
    assert not marker.exists()


def description_of(path: pathlib.Path) -> dict[str, Any]:
    return json.loads(zipfile.ZipFile(path).read(DESCRIPTION_ENTRY))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(policy_class={"class": "os:system"}), r"policy_class = 'os:system': safe loading only restores"),
        (
            lambda d: d["policy_kwargs"].update(activation_fn={"class": "builtins:eval"}),
            r"activation_fn = 'builtins:eval': safe loading only restores",
        ),
        (
            lambda d: d["policy_kwargs"].update(activation_fn={"class": "torch.nn:Module.__subclasses__"}),
            r"safe loading only restores",
        ),
        (lambda d: d["hyperparameters"].update(exec="print(1)"), r"hyperparameters has an unknown entry 'exec'"),
        (lambda d: d["hyperparameters"].update(target_kl=-1.0), r"not valid TRPO settings \(target_kl must be > 0"),
        (lambda d: d["state"].update(num_timesteps="1"), r"'state' entry must map known counters to numbers"),
        (lambda d: d.update(format="other/9"), r"unknown description format 'other/9'"),
        (lambda d: d.update(algorithm="PPO"), r"holds a 'PPO' model, not one of TRPO, MaskableTRPO, RecurrentTRPO"),
        (
            lambda d: d.update(policy_class={"class": "sb3_contrib.common.maskable.policies:MaskableActorCriticPolicy"}),
            r"policy_class = 'sb3_contrib.common.maskable.policies:MaskableActorCriticPolicy': safe loading only restores",
        ),
        (lambda d: d.update(observation_space={"type": "Tuple"}), r"space type 'Tuple' is not supported"),
    ],
)
def test_tampered_descriptions_are_refused(tmp_path: pathlib.Path, edit: Any, message: str) -> None:
    trained_model("discrete").save(tmp_path / "model.zip")
    description = description_of(tmp_path / "model.zip")
    edit(description)
    rewrite_zip(tmp_path / "model.zip", tmp_path / "crafted.zip", {DESCRIPTION_ENTRY: json.dumps(description).encode()})
    with pytest.raises(UnsafeModelFileError, match=message):
        safe_load(tmp_path / "crafted.zip")


def test_files_without_description_load_from_their_readable_parts(tmp_path: pathlib.Path) -> None:
    model = trained_model("discrete")
    BaseAlgorithm.save(model, tmp_path / "plain.zip")  # what SB3's own save writes: no description
    restored = safe_load(tmp_path / "plain.zip")  # tests/test_safe_load_sb3.py covers these files in depth
    assert isinstance(restored, TRPO) and restored.cg_max_steps == model.cg_max_steps
    batch = observations(model)
    np.testing.assert_array_equal(model.predict(batch, deterministic=True)[0], restored.predict(batch, deterministic=True)[0])
    (tmp_path / "garbage.zip").write_bytes(b"not a zip")
    with pytest.raises(UnsafeModelFileError, match="not a zip archive"):
        safe_load(tmp_path / "garbage.zip")


def test_what_needs_pickle_is_refused_unless_supplied(tmp_path: pathlib.Path) -> None:
    class Softsign(torch.nn.Softsign):
        """A user's own class: safe_load will not import it."""

    def schedule(progress: float) -> float:
        return 1e-3 * progress

    model = trained_model("discrete", learning_rate=schedule, policy_kwargs=dict(activation_fn=Softsign))
    model.save(tmp_path / "model.zip")  # saving still works, and TRPO.load can read it
    assert TRPO.load(tmp_path / "model.zip").learning_rate(0.5) == 5e-4
    with pytest.raises(UnsafeModelFileError, match=r"learning_rate could not be saved without pickle \(.* is a function"):
        safe_load(tmp_path / "model.zip")
    with pytest.raises(UnsafeModelFileError, match=r"activation_fn = '.*Softsign': safe loading only restores"):
        safe_load(tmp_path / "model.zip", custom_objects={"learning_rate": 1e-3})
    restored = safe_load(
        tmp_path / "model.zip", custom_objects={"learning_rate": 1e-3, "policy_kwargs": dict(activation_fn=Softsign)}
    )
    batch = observations(model)
    np.testing.assert_array_equal(model.predict(batch, deterministic=True)[0], restored.predict(batch, deterministic=True)[0])


def test_non_finite_weights_are_refused(tmp_path: pathlib.Path) -> None:
    model = trained_model("discrete")
    with torch.no_grad():
        model.policy.action_net.bias[0] = float("nan")
    model.save(tmp_path / "model.zip")
    with pytest.raises(UnsafeModelFileError, match=r"'action_net.bias' holds non-finite values"):
        safe_load(tmp_path / "model.zip")


def test_safe_load_is_exported() -> None:
    assert sb3_trpo_plugin.safe_load is safe_load
    assert "safe_load" in sb3_trpo_plugin.__all__
