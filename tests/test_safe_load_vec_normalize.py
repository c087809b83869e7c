"""safe_load_vec_normalize: VecNormalize statistics from SB3's pickle or the pickle-free .npz, without running code."""

from __future__ import annotations

import io
import pathlib
import pickle
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

import sb3_trpo_plugin
from sb3_trpo_plugin import TRPO, safe_load_vec_normalize
from sb3_trpo_plugin.envs import RandomEnv
from sb3_trpo_plugin.loading import UnsafeStatisticsFileError
from sb3_trpo_plugin.serialization.checkpoints import CheckpointCallback, find_latest_checkpoint
from sb3_trpo_plugin.serialization.vec_normalize_statistics import statistics_path, write_vec_normalize_statistics

BOX = spaces.Box(-np.inf, np.inf, (3,), np.float32)
DICT = spaces.Dict({"position": spaces.Box(-5.0, 5.0, (2,), np.float32), "mode": spaces.Discrete(2), "speed": BOX})


def make_venv(observation_space: spaces.Space, n_envs: int = 2) -> DummyVecEnv:
    return DummyVecEnv([lambda: RandomEnv(spaces.Box(-1.0, 1.0, (1,), np.float32), observation_space)] * n_envs)


def stepped_vec_normalize(observation_space: spaces.Space, **kwargs: Any) -> VecNormalize:
    """A VecNormalize whose statistics moved away from their initial values (and whose spaces were sampled)."""
    vec_normalize = VecNormalize(make_venv(observation_space), **kwargs)
    vec_normalize.seed(0)
    vec_normalize.reset()
    vec_normalize.observation_space.sample()  # gives the pickled space a random generator, as after env checks
    for _ in range(12):
        vec_normalize.step(np.ones((2, 1), dtype=np.float32))
    return vec_normalize


def assert_same_normalisation(expected: VecNormalize, actual: VecNormalize) -> None:
    for name in ("training", "norm_obs", "norm_reward", "clip_obs", "clip_reward", "gamma", "epsilon", "norm_obs_keys"):
        assert getattr(actual, name) == getattr(expected, name), name
    pairs: list[tuple[RunningMeanStd, RunningMeanStd]] = [(expected.ret_rms, actual.ret_rms)]
    if isinstance(expected.obs_rms, dict):
        assert isinstance(actual.obs_rms, dict) and actual.obs_rms.keys() == expected.obs_rms.keys()
        pairs += [(expected.obs_rms[key], actual.obs_rms[key]) for key in expected.obs_rms]
    else:
        pairs.append((expected.obs_rms, actual.obs_rms))  # type: ignore[arg-type]
    for reference, restored in pairs:
        np.testing.assert_array_equal(restored.mean, reference.mean)
        np.testing.assert_array_equal(restored.var, reference.var)
        assert restored.count == reference.count > 1
    space = expected.observation_space
    space.seed(1)
    batch = [space.sample() for _ in range(2)]
    observations: Any = (
        {key: np.stack([b[key] for b in batch]) * 3 for key in space.spaces}
        if isinstance(space, spaces.Dict)
        else np.stack(batch) * 3
    )
    normalized, reference_normalized = actual.normalize_obs(observations), expected.normalize_obs(observations)
    if isinstance(normalized, dict):
        for key in normalized:
            np.testing.assert_array_equal(normalized[key], reference_normalized[key])
    else:
        np.testing.assert_array_equal(normalized, reference_normalized)
    rewards = np.array([0.5, -2.0])
    np.testing.assert_array_equal(actual.normalize_reward(rewards), expected.normalize_reward(rewards))


@pytest.mark.parametrize(
    ("observation_space", "kwargs"),
    [(BOX, dict(gamma=0.9, clip_obs=4.0)), (DICT, dict(norm_obs_keys=["position", "speed"], clip_reward=3.0, training=False))],
)
@pytest.mark.parametrize("file_format", ["pkl", "npz"])
def test_statistics_load_like_vec_normalize_load(
    tmp_path: pathlib.Path, observation_space: spaces.Space, kwargs: dict[str, Any], file_format: str
) -> None:
    original = stepped_vec_normalize(observation_space, **{**kwargs, "training": True})
    original.training = kwargs.get("training", True)
    original.save(str(tmp_path / "statistics.pkl"))
    write_vec_normalize_statistics(original, tmp_path / "statistics.npz")
    reference = VecNormalize.load(str(tmp_path / "statistics.pkl"), make_venv(observation_space))
    restored = safe_load_vec_normalize(tmp_path / f"statistics.{file_format}", make_venv(observation_space))
    assert restored.venv.num_envs == 2
    assert_same_normalisation(reference, restored)


def test_statistics_must_fit_the_environment(tmp_path: pathlib.Path) -> None:
    stepped_vec_normalize(BOX).save(str(tmp_path / "statistics.pkl"))
    write_vec_normalize_statistics(stepped_vec_normalize(BOX), tmp_path / "statistics.npz")
    for name in ("statistics.pkl", "statistics.npz"):
        with pytest.raises(
            UnsafeStatisticsFileError, match=r"obs_rms has shape \(3,\), the environment's observations \(4,\)"
        ):
            safe_load_vec_normalize(tmp_path / name, make_venv(spaces.Box(-1.0, 1.0, (4,), np.float32)))


class WriteMarker:
    """Unpickling this object writes a file: the stand-in for code a shared statistics file could run."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",)


def test_crafted_pickles_are_refused_and_run_nothing(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "marker.txt"
    (tmp_path / "bare.pkl").write_bytes(pickle.dumps(WriteMarker(marker)))
    # A genuine VecNormalize whose state carries the payload: it comes after the allowed globals.
    vec_normalize = stepped_vec_normalize(BOX)
    vec_normalize.payload = WriteMarker(marker)  # type: ignore[attr-defined]
    vec_normalize.save(str(tmp_path / "inside.pkl"))
    for name in ("bare.pkl", "inside.pkl"):
        with pytest.raises(
            UnsafeStatisticsFileError, match=r"global builtins.exec is not one a VecNormalize statistics file needs"
        ):
            safe_load_vec_normalize(tmp_path / name, make_venv(BOX))
        assert not marker.exists()
    # The ordinary loader runs it: the check above would notice if safe_load_vec_normalize unpickled freely.
    VecNormalize.load(str(tmp_path / "inside.pkl"), make_venv(BOX))
    assert marker.read_text() == "unpickled"


def test_object_arrays_and_foreign_classes_are_refused(tmp_path: pathlib.Path) -> None:
    vec_normalize = stepped_vec_normalize(BOX)
    vec_normalize.obs_rms.mean = np.array([1, "x", None], dtype=object)
    (tmp_path / "objects.pkl").write_bytes(pickle.dumps(vec_normalize))
    with pytest.raises(UnsafeStatisticsFileError, match="arrays of Python objects are refused"):
        safe_load_vec_normalize(tmp_path / "objects.pkl", make_venv(BOX))
    (tmp_path / "other.pkl").write_bytes(pickle.dumps(RunningMeanStd(shape=(3,))))
    with pytest.raises(UnsafeStatisticsFileError, match="it does not hold a VecNormalize"):
        safe_load_vec_normalize(tmp_path / "other.pkl", make_venv(BOX))
    (tmp_path / "list.pkl").write_bytes(pickle.dumps(io.BytesIO(b"")))
    with pytest.raises(UnsafeStatisticsFileError, match=r"global _io.BytesIO is not one"):
        safe_load_vec_normalize(tmp_path / "list.pkl", make_venv(BOX))


def test_malformed_npz_files_are_refused(tmp_path: pathlib.Path) -> None:
    np.savez(tmp_path / "objects.npz", settings=np.array([{"format": 1}], dtype=object))
    with pytest.raises(UnsafeStatisticsFileError, match="not a NumPy archive of plain arrays"):
        safe_load_vec_normalize(tmp_path / "objects.npz", make_venv(BOX))
    write_vec_normalize_statistics(stepped_vec_normalize(BOX), tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["obs_rms.var"] = -arrays["obs_rms.var"]
    np.savez(tmp_path / "negative.npz", **arrays)
    with pytest.raises(UnsafeStatisticsFileError, match=r"obs_rms: the statistics must be finite, the variance >= 0"):
        safe_load_vec_normalize(tmp_path / "negative.npz", make_venv(BOX))
    arrays["settings"] = np.array('{"format": "other/2"}')
    np.savez(tmp_path / "format.npz", **arrays)
    with pytest.raises(UnsafeStatisticsFileError, match="unknown format 'other/2'"):
        safe_load_vec_normalize(tmp_path / "format.npz", make_venv(BOX))


def test_checkpoints_write_pickle_free_statistics(tmp_path: pathlib.Path) -> None:
    env = VecNormalize(make_venv(BOX))
    model = TRPO("MlpPolicy", env, n_steps=8, batch_size=16, seed=0, policy_kwargs=dict(net_arch=[8]))
    model.learn(32, callback=CheckpointCallback(save_freq=8, save_path=str(tmp_path), save_vecnormalize=True))
    checkpoint = find_latest_checkpoint(tmp_path, require_vec_normalize=True)
    assert checkpoint is not None and checkpoint.num_timesteps == 32
    assert checkpoint.vec_normalize_statistics_path == tmp_path / "rl_model_vecnormalize_32_steps.npz"
    assert checkpoint.vec_normalize_statistics_path == statistics_path(checkpoint.vec_normalize_path)  # type: ignore[arg-type]
    reference = VecNormalize.load(str(checkpoint.vec_normalize_path), make_venv(BOX))
    assert_same_normalisation(reference, safe_load_vec_normalize(checkpoint.vec_normalize_statistics_path, make_venv(BOX)))
    (tmp_path / "rl_model_vecnormalize_32_steps.npz").unlink()  # as SB3's own callback leaves them
    assert find_latest_checkpoint(tmp_path).vec_normalize_statistics_path is None  # type: ignore[union-attr]


def test_safe_load_vec_normalize_is_exported() -> None:
    assert sb3_trpo_plugin.safe_load_vec_normalize is safe_load_vec_normalize
    assert "safe_load_vec_normalize" in sb3_trpo_plugin.__all__
