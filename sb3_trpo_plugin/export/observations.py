"""
The graph's observation inputs: raw observations as the environment returns them, turned into what ``predict()``
hands the policy.

``model.predict(obs)`` takes observations after the ``VecEnv`` wrappers: normalised by ``VecNormalize`` (when the
model was trained with it) and, for images, with the channels first (``VecTransposeImage``; ``predict`` also
transposes channel-last images itself). :class:`ObservationInputs` does those two steps inside the graph, so that
the graph takes what the environment returns:

* ``VecNormalize``: ``clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs)`` cast to float32, computed in
  float64 as ``VecNormalize.normalize_obs`` computes it (the same IEEE operations on the same float64 constants:
  the same float32 result, bit for bit), on the keys it normalises;
* channel-last images: transposed to the channels-first layout of the model's observation space.

The rest of SB3's preprocessing (float casts, image scaling by 1/255, one-hot encoding of discrete observations)
is the policy's own ``preprocess_obs``, traced with the policy.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize, VecTransposeImage
from torch import nn

from sb3_trpo_plugin.export.tensors import BATCH, ExportError, GraphTensor
from sb3_trpo_plugin.loading.vec_normalize import read_statistics_file

#: A key of a Dict observation space, or ``None`` for the single observation of any other space.
ObservationKey = str | None


def input_name(key: ObservationKey) -> str:
    """:return: the graph input of an observation (``observation``, or ``observation.<key>`` for a Dict space's key)"""
    return "observation" if key is None else f"observation.{key}"


def subspaces(space: spaces.Space[Any]) -> dict[ObservationKey, spaces.Space[Any]]:
    """:return: the observation spaces by key (one, under ``None``, unless ``space`` is a Dict)"""
    if not isinstance(space, spaces.Dict):
        return {None: space}
    found: dict[ObservationKey, spaces.Space[Any]] = {}
    found.update(space.spaces)
    return found


@dataclass(frozen=True)
class ObservationNormalization:
    """
    ``VecNormalize``'s normalisation of observations: ``clip((obs - mean) / std, -clip_obs, clip_obs)``, float32.

    :param means: the running means (float64), by key
    :param stds: ``sqrt(var + epsilon)`` (float64), by key, as ``VecNormalize._normalize_obs`` computes it
    :param clip_obs: the bound of the normalised observations
    """

    means: dict[ObservationKey, np.ndarray]
    stds: dict[ObservationKey, np.ndarray]
    clip_obs: float

    @classmethod
    def of(
        cls, settings: Mapping[str, Any], obs_rms: RunningMeanStd | Mapping[str, RunningMeanStd]
    ) -> ObservationNormalization | None:
        """
        :param settings: ``norm_obs``, ``norm_obs_keys``, ``clip_obs`` and ``epsilon`` of a ``VecNormalize``
        :param obs_rms: its observation statistics
        :return: the normalisation, or ``None`` when the wrapper does not normalise observations
        """
        if not settings["norm_obs"]:
            return None
        if isinstance(obs_rms, Mapping):
            keys = settings.get("norm_obs_keys") or list(obs_rms)
            statistics: dict[ObservationKey, RunningMeanStd] = {key: obs_rms[key] for key in keys}
        else:
            statistics = {None: obs_rms}
        means = {key: np.asarray(rms.mean, dtype=np.float64) for key, rms in statistics.items()}
        stds = {key: np.sqrt(np.asarray(rms.var, dtype=np.float64) + settings["epsilon"]) for key, rms in statistics.items()}
        return cls(means, stds, float(settings["clip_obs"]))

    @classmethod
    def from_vec_normalize(cls, vec_normalize: VecNormalize) -> ObservationNormalization | None:
        """:return: the normalisation of a ``VecNormalize`` (``None`` when it leaves observations alone)"""
        settings = {name: getattr(vec_normalize, name) for name in ("norm_obs", "norm_obs_keys", "clip_obs", "epsilon")}
        return cls.of(settings, vec_normalize.obs_rms)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ObservationNormalization | None:
        """:return: the normalisation of a statistics file (``.npz``, or SB3's ``.pkl`` read without unpickling code)"""
        statistics = read_statistics_file(path)
        return cls.of(statistics.settings, statistics.obs_rms)

    def normalize(self, observation: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        """
        ``VecNormalize.normalize_obs`` on NumPy observations (the check's reference; tested against SB3's).

        :param observation: raw observations (a dict for Dict spaces)
        :return: the normalised observations; keys the wrapper does not normalise are left as they are
        """

        def one(values: np.ndarray, key: ObservationKey) -> np.ndarray:
            return np.clip((values - self.means[key]) / self.stds[key], -self.clip_obs, self.clip_obs).astype(np.float32)

        if isinstance(observation, Mapping):
            return {key: one(values, key) if key in self.means else values for key, values in observation.items()}
        return one(observation, None)


def resolve_normalization(
    vec_normalize: VecNormalize | str | os.PathLike[str] | bool | None, env: VecEnv | None
) -> ObservationNormalization | None:
    """
    The normalisation to fold into the graph.

    :param vec_normalize: a ``VecNormalize`` or a statistics file to fold in; ``None`` for the model's own
        ``VecNormalize`` if its environment has one; ``True`` for the model's own, which must be there; ``False`` for
        none (the graph then takes normalised observations)
    :param env: the model's environment (``None`` when it has none)
    :return: the normalisation, or ``None``
    """
    if vec_normalize is False:
        return None
    if vec_normalize is None or vec_normalize is True:
        wrapper = _wrapper(env, VecNormalize)
        if wrapper is None and vec_normalize is True:
            raise ExportError("vec_normalize=True, but the model's environment has no VecNormalize: pass the statistics")
        return None if wrapper is None else ObservationNormalization.from_vec_normalize(wrapper)
    if isinstance(vec_normalize, VecNormalize):
        return ObservationNormalization.from_vec_normalize(vec_normalize)
    if isinstance(vec_normalize, (str, os.PathLike)):
        return ObservationNormalization.from_file(vec_normalize)
    raise TypeError(f"vec_normalize must be a VecNormalize, a statistics file, True, False or None, not {vec_normalize!r}")


def _wrapper(env: VecEnv | None, kind: type[VecEnvWrapper]) -> Any:
    """:return: the outermost wrapper of type ``kind`` around ``env``, or ``None``"""
    while isinstance(env, VecEnvWrapper):
        if isinstance(env, kind):
            return env
        env = env.venv
    return None


def resolve_channels_last(
    space: spaces.Space[Any], channels_last: bool | None, env: VecEnv | None
) -> frozenset[ObservationKey]:
    """
    The image observations the graph takes with their channels last (as the environment returns them).

    :param space: the model's observation space (images channels first, as SB3 keeps them)
    :param channels_last: ``True``: every image observation; ``False``: none; ``None``: those that the model's
        environment transposes (``VecTransposeImage``, which SB3 adds around a channel-last image environment)
    :param env: the model's environment (``None`` when it has none)
    :return: the keys
    """
    images = {key for key, subspace in subspaces(space).items() if is_image_space(subspace)}
    if channels_last is None:
        transpose = _wrapper(env, VecTransposeImage)
        if transpose is None or transpose.skip:
            return frozenset()
        transposed = getattr(transpose, "image_space_keys", None) if isinstance(space, spaces.Dict) else [None]
        return frozenset(images & set(transposed or []))
    return frozenset(images) if channels_last else frozenset()


class ObservationInputs(nn.Module):
    """
    The observation inputs of the graph and the steps from them to what ``predict()`` hands the policy.

    :param space: the model's observation space
    :param channels_last: the image observations that come in with their channels last
    :param normalization: ``VecNormalize``'s normalisation to apply first, or ``None``
    """

    def __init__(
        self,
        space: spaces.Space[Any],
        channels_last: Collection[ObservationKey] = (),
        normalization: ObservationNormalization | None = None,
    ) -> None:
        super().__init__()
        self.space = space
        self.subspaces = subspaces(space)
        self.channels_last = frozenset(channels_last)
        self.normalization = normalization
        self.inputs: dict[ObservationKey, GraphTensor] = {}
        for index, (key, subspace) in enumerate(self.subspaces.items()):
            if subspace.shape is None or subspace.dtype is None:
                raise ExportError(f"observation space {subspace} has no fixed shape and dtype, which a graph input needs")
            shape = tuple(subspace.shape)
            if key in self.channels_last:
                shape = (*shape[1:], shape[0])
            self.inputs[key] = GraphTensor(input_name(key), np.dtype(subspace.dtype), (BATCH, *shape))
            if normalization is not None and key in normalization.means:
                self._add_normalization(index, key, shape, normalization)
        if normalization is not None and not set(normalization.means) <= set(self.subspaces):
            raise ExportError(
                f"the VecNormalize statistics are for {sorted(map(str, normalization.means))}, "
                f"the observations {sorted(map(str, self.subspaces))}"
            )

    def _add_normalization(
        self, index: int, key: ObservationKey, shape: tuple[int, ...], normalization: ObservationNormalization
    ) -> None:
        mean = normalization.means[key]
        if mean.shape != shape:
            where = "observations" if key is None else f"observation {key!r}"
            raise ExportError(f"the VecNormalize statistics have shape {mean.shape}, the {where} {shape}")
        self.register_buffer(f"mean_{index}", torch.as_tensor(mean, dtype=torch.float64))
        self.register_buffer(f"std_{index}", torch.as_tensor(normalization.stds[key], dtype=torch.float64))

    @property
    def graph_inputs(self) -> list[GraphTensor]:
        """The graph's observation inputs, in the graph's order."""
        return list(self.inputs.values())

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
        """
        :param inputs: the graph's inputs by name
        :return: the observations as ``predict()`` hands them to the policy (a dict for Dict spaces)
        """
        observations: dict[ObservationKey, torch.Tensor] = {}
        for index, key in enumerate(self.subspaces):
            observation = inputs[self.inputs[key].name]
            if self.normalization is not None and key in self.normalization.means:
                centred = (observation.to(torch.float64) - getattr(self, f"mean_{index}")) / getattr(self, f"std_{index}")
                clip = self.normalization.clip_obs
                observation = torch.clamp(centred, -clip, clip).to(torch.float32)
            if key in self.channels_last:
                observation = observation.permute(0, 3, 1, 2)
            observations[key] = observation
        if isinstance(self.space, spaces.Dict):
            return {str(key): observation for key, observation in observations.items()}
        return observations[None]

    def draw(self, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
        """
        Raw observations drawn from the observation space (the check's inputs).

        :param rng: where the draws come from
        :param batch: how many
        :return: the graph's observation inputs by name
        """
        drawn: dict[str, np.ndarray] = {}
        for key, subspace in self.subspaces.items():
            space = copy.deepcopy(subspace)  # seeding the model's own space would change its random stream
            space.seed(int(rng.integers(2**31)))
            values = np.stack([np.asarray(space.sample()) for _ in range(batch)]).astype(subspace.dtype)
            if key in self.channels_last:
                values = np.ascontiguousarray(values.transpose(0, 2, 3, 1))
            drawn[self.inputs[key].name] = values
        return drawn

    def predict_observation(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        """
        What ``model.predict`` takes for the same observations: normalised as ``VecNormalize`` does, channels as they
        come (``predict`` transposes channel-last images itself).

        :param arrays: the graph's inputs by name
        :return: the observations for ``predict``
        """
        raw = {key: arrays[graph_input.name] for key, graph_input in self.inputs.items()}
        observation: np.ndarray | dict[str, np.ndarray]
        observation = {str(key): values for key, values in raw.items()} if isinstance(self.space, spaces.Dict) else raw[None]
        return observation if self.normalization is None else self.normalization.normalize(observation)

    def describe(self) -> list[dict[str, Any]]:
        """:return: the observation inputs as JSON (the graph's metadata)"""
        return [
            {
                **graph_input.describe(),
                "key": key,
                "channels_last": key in self.channels_last,
                "vec_normalize": self.normalization is not None and key in self.normalization.means,
            }
            for key, graph_input in self.inputs.items()
        ]
