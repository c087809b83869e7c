"""safe_load on files SB3 and sb3-contrib write: PPO, A2C and sb3-contrib's TRPO, rebuilt without unpickling anything."""

from __future__ import annotations

import base64
import contextlib
import json
import pathlib
import pickle
import re
import zipfile
from typing import Any

import cloudpickle
import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import TRPO as ContribTRPO
from sb3_contrib import RecurrentPPO
from stable_baselines3 import A2C, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.torch_layers import FlattenExtractor

from sb3_trpo_plugin import TRPO, safe_load
from sb3_trpo_plugin.compat.schedules import SCHEDULE_CLASSES, linear_schedule
from sb3_trpo_plugin.compat.spaces import DISCRETE_DTYPE, discrete_space
from sb3_trpo_plugin.envs import RandomEnv
from sb3_trpo_plugin.loading import UnsafeModelFileError
from sb3_trpo_plugin.loading.sb3_data import parse_array_text, space_from_repr

BOX = spaces.Box(-1.0, 1.0, (3,), np.float32)
ODD_BOX = spaces.Box(np.array([-1.5, 0.0, -np.inf]), np.array([1.0, 2.25, np.inf]), dtype=np.float64)
BYTES_DICT = spaces.Dict({"bytes": spaces.Box(0, 255, (2, 3), np.uint8), "mode": spaces.Discrete(3)})
SMALL = dict(net_arch=[8])


def readable_schedule(start: float, end: float, end_fraction: float) -> Any:
    """
    A linear schedule as SB3 ≥ 2.7 writes it readably (a class); older SB3's schedules are closures that only a
    pickle describes (test_compat.py checks their refusal), so its cases take the start value instead.
    """
    return linear_schedule(start, end, end_fraction) if SCHEDULE_CLASSES else start


#: What a PPO file of SB3 < 2.7 needs supplied: its clip_range is a closure that only the pickle describes (its
#: refusal asks for it, test_compat.py checks that); SB3 ≥ 2.7 writes a readable schedule.
PPO_CLOSURES: dict[str, Any] = {} if SCHEDULE_CLASSES else {"clip_range": 0.2, "clip_range_vf": 0.5}


#: (class, observation space, action space, keyword arguments): every space, schedules and classes in policy_kwargs.
CASES: dict[str, tuple[type[BaseAlgorithm], spaces.Space, spaces.Space, dict[str, Any]]] = {
    "contrib-trpo-box": (
        ContribTRPO,
        ODD_BOX,
        spaces.Box(-2.0, 2.0, (2,), np.float32),
        dict(n_steps=16, batch_size=16, target_kl=0.02, policy_kwargs=dict(net_arch=[8], activation_fn=torch.nn.ReLU)),
    ),
    "contrib-trpo-discrete-sde-free": (
        ContribTRPO,
        BOX,
        spaces.Discrete(3, start=1),
        dict(n_steps=16, batch_size=16, learning_rate=readable_schedule(1e-3, 1e-4, 0.5), policy_kwargs=SMALL),
    ),
    "ppo-multidiscrete": (
        PPO,
        BOX,
        spaces.MultiDiscrete([2, 3]),
        dict(n_steps=16, batch_size=16, n_epochs=1, clip_range=readable_schedule(0.3, 0.1, 1.0), policy_kwargs=SMALL),
    ),
    "ppo-sde": (
        PPO,
        BOX,
        spaces.Box(-1.0, 1.0, (2,), np.float32),
        dict(
            n_steps=16,
            batch_size=16,
            n_epochs=1,
            use_sde=True,
            clip_range_vf=0.5,
            policy_kwargs=dict(
                net_arch=dict(pi=[8], vf=[4]),
                optimizer_class=torch.optim.AdamW,
                optimizer_kwargs=dict(betas=(0.8, 0.95)),
                features_extractor_class=FlattenExtractor,
                log_std_init=-1.0,
            ),
        ),
    ),
    "contrib-trpo-sde": (
        ContribTRPO,
        BOX,
        spaces.Box(-1.0, 1.0, (2,), np.float32),
        dict(n_steps=16, batch_size=16, use_sde=True, sde_sample_freq=4, policy_kwargs=SMALL),
    ),
    "ppo-discrete-observations": (
        PPO,
        spaces.Discrete(5),
        spaces.Discrete(2),
        dict(n_steps=16, batch_size=8, policy_kwargs=SMALL),
    ),
    "a2c-multibinary": (A2C, BOX, spaces.MultiBinary(3), dict(n_steps=4, policy_kwargs=SMALL)),
    "a2c-dict": (A2C, BYTES_DICT, spaces.Discrete(2), dict(n_steps=4, use_rms_prop=False, policy_kwargs=SMALL)),
}


def make_env(case: str) -> RandomEnv:
    _, observation_space, action_space, _ = CASES[case]
    return RandomEnv(action_space, observation_space, episode_length=8)


def trained(case: str, **overrides: Any) -> BaseAlgorithm:
    algorithm, observation_space, _, kwargs = CASES[case]
    policy = "MultiInputPolicy" if isinstance(observation_space, spaces.Dict) else "MlpPolicy"
    return algorithm(policy, make_env(case), seed=1, **{**kwargs, **overrides}).learn(32)


def observations(space: spaces.Space, n: int = 16) -> Any:
    space.seed(0)
    samples = [space.sample() for _ in range(n)]
    if isinstance(space, spaces.Dict):
        return {key: np.stack([sample[key] for sample in samples]) for key in space.spaces}
    return np.stack(samples)


def assert_same_predictions(reference: BaseAlgorithm, restored: BaseAlgorithm) -> None:
    batch = observations(reference.observation_space)
    expected = reference.predict(batch, deterministic=True)[0]
    np.testing.assert_array_equal(expected, restored.predict(batch, deterministic=True)[0])
    for key, value in reference.policy.state_dict().items():
        assert torch.equal(value, restored.policy.state_dict()[key]), key


@pytest.mark.parametrize("case", list(CASES))
def test_sb3_files_load_and_predict_like_their_own_loader(tmp_path: pathlib.Path, case: str) -> None:
    algorithm = CASES[case][0]
    if algorithm is PPO and not SCHEDULE_CLASSES:
        pytest.skip("SB3 < 2.7 keeps PPO's clip_range as a closure: such files load with custom_objects (test_compat.py)")
    model = trained(case)
    model.save(tmp_path / "model.zip")
    reference = algorithm.load(tmp_path / "model.zip")
    restored = safe_load(tmp_path / "model.zip")
    assert type(restored) is (TRPO if algorithm is ContribTRPO else algorithm)
    assert_same_predictions(reference, restored)
    assert restored.observation_space == reference.observation_space
    assert restored.action_space == reference.action_space
    for name in ("num_timesteps", "_n_updates", "n_steps", "gamma", "gae_lambda", "use_sde", "n_envs", "seed"):
        assert getattr(restored, name) == getattr(reference, name), name
    for name in ("target_kl", "cg_max_steps", "cg_damping", "n_critic_updates", "batch_size", "n_epochs", "ent_coef"):
        if hasattr(reference, name):
            assert getattr(restored, name) == getattr(reference, name), name
    for name in ("learning_rate", "clip_range", "clip_range_vf"):
        if callable(getattr(reference, name, None)):
            for progress in (1.0, 0.5, 0.0):
                assert getattr(restored, name)(progress) == getattr(reference, name)(progress), name
        elif hasattr(reference, name):
            assert getattr(restored, name) == getattr(reference, name), name
    assert type(restored.policy.optimizer) is type(reference.policy.optimizer)  # RMSprop for A2C, AdamW where chosen
    restored_group, reference_group = restored.policy.optimizer.param_groups[0], reference.policy.optimizer.param_groups[0]
    for key in ("lr", "betas", "alpha", "eps", "weight_decay"):
        if key in reference_group:
            assert restored_group[key] == reference_group[key], key


def test_contrib_trpo_file_goes_on_training_as_this_trpo(tmp_path: pathlib.Path) -> None:
    model = trained("contrib-trpo-box")
    model.save(tmp_path / "model.zip")
    restored = safe_load(tmp_path / "model.zip", env=make_env("contrib-trpo-box"), device="cpu")
    assert isinstance(restored, TRPO)
    # sb3-contrib's optimiser covers every parameter but only the critic's have state; here it holds the critic's only.
    full_state = model.policy.optimizer.state_dict()["state"]
    index = {id(p): i for i, p in enumerate(model.policy.parameters())}
    restored_critic = [
        dict(model.policy.named_parameters())[name]
        for name, p in restored.policy.named_parameters()
        if any(p is q for q in restored._critic_params)
    ]
    state = restored.policy.optimizer.state_dict()["state"]
    assert len(state) == len(restored_critic) > 0
    for j, parameter in enumerate(restored_critic):
        assert torch.equal(state[j]["exp_avg"], full_state[index[id(parameter)]]["exp_avg"])
    restored.learn(32, reset_num_timesteps=False)
    assert restored.num_timesteps == 64 and restored._n_updates == 4
    assert all(torch.isfinite(p).all() for p in restored.policy.parameters())


def test_this_trpo_saved_by_sb3_save_loads_too(tmp_path: pathlib.Path) -> None:
    model = TRPO(
        "MlpPolicy", make_env("contrib-trpo-box"), n_steps=16, batch_size=16, cg_residual_tol=1e-8, policy_kwargs=SMALL
    )
    model.learn(32)
    BaseAlgorithm.save(model, tmp_path / "plain.zip")  # no sb3_trpo_plugin.json: what SB3's own save writes
    restored = safe_load(tmp_path / "plain.zip")
    assert isinstance(restored, TRPO) and restored.cg_residual_tol == 1e-8
    assert_same_predictions(model, restored)


def test_sb3_file_never_unpickles(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trained("ppo-sde").save(tmp_path / "model.zip")

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
        return real_torch_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", weights_only_torch_load)
    assert isinstance(safe_load(tmp_path / "model.zip", custom_objects=PPO_CLOSURES), PPO)
    assert calls == [True, True, True]  # policy, its optimiser, pytorch_variables


class WriteMarker:
    """Unpickling this object writes a file: the stand-in for code a shared model file could run."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",)


def rewrite_data(source: pathlib.Path, target: pathlib.Path, data: dict[str, Any]) -> None:
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as crafted:
        for name in original.namelist():
            crafted.writestr(name, json.dumps(data) if name == "data" else original.read(name))


@pytest.mark.parametrize("case", ["contrib-trpo-discrete-sde-free", "ppo-sde", "a2c-dict"])
def test_payload_in_every_serialized_field_never_runs(tmp_path: pathlib.Path, case: str) -> None:
    algorithm = CASES[case][0]
    model = trained(case)
    model.save(tmp_path / "model.zip")
    marker = tmp_path / "marker.txt"
    data = json.loads(zipfile.ZipFile(tmp_path / "model.zip").read("data"))
    payload = base64.b64encode(pickle.dumps(WriteMarker(marker))).decode()
    serialized = [key for key, value in data.items() if isinstance(value, dict) and ":serialized:" in value]
    assert {"observation_space", "action_space", "policy_class", "lr_schedule", "_last_obs", "ep_info_buffer"} <= set(
        serialized
    )
    for key in serialized:
        data[key][":serialized:"] = payload
    rewrite_data(tmp_path / "model.zip", tmp_path / "crafted.zip", data)

    restored = safe_load(tmp_path / "crafted.zip", custom_objects=PPO_CLOSURES if algorithm is PPO else {})
    assert not marker.exists()
    assert_same_predictions(algorithm.load(tmp_path / "model.zip"), restored)
    # The same file runs the payload through the ordinary loader: the check above would notice if safe_load used it.
    with contextlib.suppress(Exception):  # whatever SB3 makes of the payload's return value
        algorithm.load(tmp_path / "crafted.zip")
    assert marker.read_text() == "unpickled"


def data_of(path: pathlib.Path) -> dict[str, Any]:
    return json.loads(zipfile.ZipFile(path).read("data"))


@pytest.mark.parametrize(
    ("field", "attribute", "value", "message"),
    [
        ("policy_class", "__module__", "os", r"policy_class = 'os:ActorCriticPolicy': safe loading only restores"),
        ("policy_class", "__init__", "<function system at 0x1>", r"policy_class: its readable attributes do not name a class"),
        (
            "policy_kwargs",
            "activation_fn",
            "<class 'subprocess.Popen'>",
            r"activation_fn = 'subprocess:Popen': safe loading only",
        ),
        ("policy_kwargs", "net_arch", "<function f at 0x1>", r"policy_kwargs\['net_arch'\] is readable only as the text"),
        (
            "observation_space",
            ":type:",
            "<class 'gymnasium.spaces.tuple.Tuple'>",
            r"observation_space is a gymnasium.spaces.tuple.Tuple",
        ),
        ("observation_space", "low", "[-1. 0. ...]", r"observation_space.low: .*'\.\.\.'.*pass env="),
        ("observation_space", "dtype", "object", r"dtype 'object' is not one safe loading rebuilds"),
        ("action_space", "n", "__import__('os')", r"action_space.n: .* is not an integer"),
        ("lr_schedule", ":type:", "<class 'function'>", None),  # lr_schedule is rebuilt from learning_rate: never read
    ],
)
def test_tampered_readable_attributes_are_refused(
    tmp_path: pathlib.Path, field: str, attribute: str, value: str, message: str | None
) -> None:
    model = trained("contrib-trpo-box", policy_kwargs=dict(net_arch=[8], activation_fn=torch.nn.Tanh))
    if field == "action_space":
        model = trained("contrib-trpo-discrete-sde-free")
    model.save(tmp_path / "model.zip")
    data = data_of(tmp_path / "model.zip")
    data[field][attribute] = value
    rewrite_data(tmp_path / "model.zip", tmp_path / "crafted.zip", data)
    if message is None:
        assert_same_predictions(model, safe_load(tmp_path / "crafted.zip"))
    else:
        with pytest.raises(UnsafeModelFileError, match=message):
            safe_load(tmp_path / "crafted.zip")


def test_what_exists_only_as_a_pickle_is_refused_unless_supplied(tmp_path: pathlib.Path) -> None:
    class Softsign(torch.nn.Softsign):
        """A user's own class: safe_load will not import it."""

    def schedule(progress: float) -> float:
        return 3e-4 * progress

    model = trained("ppo-multidiscrete", learning_rate=schedule, clip_range=lambda _: 0.1)
    model.save(tmp_path / "model.zip")
    with pytest.raises(
        UnsafeModelFileError, match=r"learning_rate cannot be rebuilt .*custom_objects=\{'learning_rate': 0.0\}"
    ):
        safe_load(tmp_path / "model.zip")
    with pytest.raises(UnsafeModelFileError, match=r"clip_range cannot be rebuilt .*custom_objects=\{'clip_range': 0.2\}"):
        safe_load(tmp_path / "model.zip", custom_objects={"learning_rate": 0.0})
    restored = safe_load(tmp_path / "model.zip", custom_objects={"learning_rate": 0.0, "clip_range": 0.2, "n_epochs": 3})
    assert_same_predictions(model, restored)
    assert restored.n_epochs == 3 and restored.learning_rate == 0.0  # the caller's values replace the file's

    data = data_of(tmp_path / "model.zip")
    data["exploration_hook"] = {":type:": "<class 'function'>", ":serialized:": "gAU="}
    rewrite_data(tmp_path / "model.zip", tmp_path / "extra.zip", data)
    with pytest.raises(
        UnsafeModelFileError, match=r"only pickles hold exploration_hook, .*custom_objects=\{'exploration_hook'"
    ):
        safe_load(tmp_path / "extra.zip")

    model = trained("ppo-multidiscrete", policy_kwargs=dict(net_arch=[8], activation_fn=Softsign))
    model.save(tmp_path / "custom.zip")
    with pytest.raises(
        UnsafeModelFileError,
        match=r"policy_kwargs cannot be rebuilt .*activation_fn = '.*Softsign': safe loading only restores.*"
        r"custom_objects=\{'policy_kwargs'",
    ):
        safe_load(tmp_path / "custom.zip", custom_objects=PPO_CLOSURES)
    supplied = {**PPO_CLOSURES, "policy_kwargs": dict(net_arch=[8], activation_fn=Softsign)}
    restored = safe_load(tmp_path / "custom.zip", custom_objects=supplied)
    assert_same_predictions(model, restored)


def test_summarised_image_bounds_take_the_environment_space(tmp_path: pathlib.Path) -> None:
    image = spaces.Box(0, 255, (36, 36, 1), np.uint8)  # 1296 elements: NumPy prints the bounds with '...'
    model = A2C(
        "CnnPolicy",
        RandomEnv(spaces.Discrete(2), image, episode_length=8),
        n_steps=4,
        seed=1,
        policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=8)),
    )
    model.save(tmp_path / "model.zip")
    try:
        whole = safe_load(tmp_path / "model.zip")
    except UnsafeModelFileError as refusal:
        assert re.search(r"observation_space cannot be rebuilt .*summarised.*pass env=", str(refusal))
    else:  # a release whose data prints these bounds whole (seen with gymnasium 0.29): read from the file itself
        assert whole.observation_space == model.observation_space  # transposed to channels first, as SB3 keeps it
        return  # nothing is summarised: no environment's space is needed
    wrong = spaces.Box(0, 255, (36, 36, 1), np.float32)
    with pytest.raises(UnsafeModelFileError, match="observation_space"):
        safe_load(tmp_path / "model.zip", env=RandomEnv(spaces.Discrete(2), wrong))
    restored = safe_load(tmp_path / "model.zip", env=RandomEnv(spaces.Discrete(2), image))
    reference = A2C.load(tmp_path / "model.zip")
    assert restored.observation_space == reference.observation_space == spaces.Box(0, 255, (1, 36, 36), np.uint8)
    assert_same_predictions(reference, restored)
    # Once the space has been printed, gymnasium keeps its short repr ("0", "255"), which SB3 saves: readable then.
    repr(model.observation_space)
    model.save(tmp_path / "printed.zip")
    assert safe_load(tmp_path / "printed.zip").observation_space == reference.observation_space


def test_other_algorithms_are_refused(tmp_path: pathlib.Path) -> None:
    RecurrentPPO("MlpLstmPolicy", make_env("a2c-multibinary"), n_steps=8, batch_size=8, n_epochs=1).save(tmp_path / "lstm.zip")
    with pytest.raises(UnsafeModelFileError) as refusal:
        safe_load(tmp_path / "lstm.zip")
    # sb3-contrib 2.3's file is refused at its LSTM states, which it lists before the policy class
    assert re.search(r"policy_class = 'sb3_contrib\..*RecurrentActorCriticPolicy': safe loading only", str(refusal.value)) or (
        "only pickles hold _last_lstm_states" in str(refusal.value)
    )
    SAC("MlpPolicy", RandomEnv(spaces.Box(-1.0, 1.0, (2,), np.float32)), buffer_size=10, policy_kwargs=SMALL).save(
        tmp_path / "sac.zip"
    )
    with pytest.raises(UnsafeModelFileError, match=r"not a file of TRPO .*PPO or A2C"):
        safe_load(tmp_path / "sac.zip")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as archive:
        archive.writestr("other.txt", "")
    with pytest.raises(UnsafeModelFileError, match=r"neither a 'sb3_trpo_plugin.json' nor SB3's 'data' entry"):
        safe_load(tmp_path / "empty.zip")


def test_printed_numbers_are_read_only_when_exact() -> None:
    np.testing.assert_array_equal(parse_array_text("[ -1.   0. -inf]", "float64", (3,), "low"), [-1.0, 0.0, -np.inf])
    # CartPole's float32 bound: 8 digits, yet no other float32 is that close to the text.
    assert parse_array_text("-0.41887903", "float32", (), "low") == np.float32(-0.41887902047863906)
    for text, dtype in (("[0.12345679 2.]", "float64"), ("[0. 0. ... 0.]", "float32"), ("[1 x]", "int64")):
        with pytest.raises(ValueError, match="low"):
            parse_array_text(text, dtype, None, "low")
    nested = spaces.Dict(
        {
            "a": ODD_BOX,
            "b": spaces.MultiDiscrete([[2, 3], [4, 5]], start=[[1, 1], [0, 0]]),
            "c": spaces.MultiBinary([2, 2]),
            "d": BYTES_DICT,
            "e": discrete_space(4, start=-1, dtype=np.int32 if DISCRETE_DTYPE else np.int64),
        }
    )
    assert space_from_repr(repr(nested), "x") == nested
    assert space_from_repr(str(nested.spaces), "x") == list(nested.spaces.items())
