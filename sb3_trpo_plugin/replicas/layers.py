"""
SB3's policy modules as the torch calls their ``forward`` makes, without ``nn.Module.__call__``: the layers of the lean
rollout inference (:mod:`~sb3_trpo_plugin.replicas.inference`).

``nn.Linear`` becomes the ``addmm`` that ``F.linear`` calls, ``nn.Conv2d`` its ``F.conv2d``, activations ``torch.tanh``
/ ``torch.relu``, ``nn.Flatten`` its ``flatten``, ``nn.Sequential`` its children in order; SB3's features extractors
(``FlattenExtractor``, ``NatureCNN``, ``CombinedExtractor``) and ``preprocess_obs`` are written out the same way. A
module of any other type is its own ``forward`` (which is what calling it runs when it is plain: the caller checks
that with :mod:`.plain`). The modules' parameters are used through detached views: updates in place are seen, and no
autograd graph is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import is_image_space, preprocess_obs
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor, MlpExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.common.utils import obs_as_tensor
from torch import nn

Layer = Callable[[Any], Any]


def chain(layers: Sequence[Layer]) -> Layer:
    """The composition of ``layers``, applied first to last (a single layer is returned as it is)."""
    if len(layers) == 1:
        return layers[0]

    def run(x: Any) -> Any:
        for layer in layers:
            x = layer(x)
        return x

    return run


def _linear(module: nn.Linear) -> Layer:
    # Detached views of the module's own parameters: updates in place are seen, and no autograd graph is recorded.
    weight = module.weight.detach()
    if module.bias is None:
        return lambda x: F.linear(x, weight)
    bias, weight_t = module.bias.detach(), weight.t()
    # F.linear computes a batch of vectors with bias as addmm(bias, x, weightᵀ): the same call, without the detour.
    return lambda x: torch.addmm(bias, x, weight_t) if x.dim() == 2 else F.linear(x, weight, bias)


def _conv2d(module: nn.Conv2d) -> Layer:
    # Conv2d.forward with zero padding: F.conv2d on the module's parameters and settings (detached, as in _linear).
    weight = module.weight.detach()
    bias = None if module.bias is None else module.bias.detach()
    stride, padding, dilation, groups = module.stride, module.padding, module.dilation, module.groups
    return lambda x: F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _flatten(module: nn.Flatten) -> Layer:
    start_dim, end_dim = module.start_dim, module.end_dim
    if (start_dim, end_dim) == (1, -1):
        # torch returns a tensor of two dimensions as it is (e.g. a batch of vector observations): skip the call.
        return lambda x: x if x.dim() == 2 else x.flatten(1, -1)
    return lambda x: x.flatten(start_dim, end_dim)


def torch_layers(module: nn.Module) -> list[Layer]:
    """
    The calls that ``module(x)`` makes, in order, without ``nn.Module.__call__``.

    ``nn.Sequential`` is unrolled; ``nn.Linear``, ``nn.Tanh``, ``nn.ReLU``, ``nn.Flatten`` and ``nn.Identity``
    become the ``torch`` calls their ``forward`` makes; any other module is its own ``forward``, which is
    what ``__call__`` runs when the module has no hooks (the caller checks that).

    :param module: a module without hooks
    :return: functions of one tensor, to apply first to last
    """
    # Exact types: a subclass may compute something else in its forward.
    if type(module) is nn.Sequential:
        return [layer for child in module for layer in torch_layers(child)]
    if type(module) is nn.Linear:
        return [_linear(module)]
    if type(module) is nn.Conv2d and module.padding_mode == "zeros":
        return [_conv2d(module)]
    if type(module) is nn.Tanh:
        return [torch.tanh]
    if type(module) is nn.ReLU and not module.inplace:
        return [torch.relu]
    if type(module) is nn.Flatten:
        return [_flatten(module)]
    if type(module) is nn.Identity:
        return []
    return [module.forward]


#: Modules that :func:`torch_layers` and :func:`features_extractor` turn into calls on detached parameters.
_WRITTEN_OUT = (nn.Sequential, nn.Linear, nn.Tanh, nn.Flatten, nn.Identity, MlpExtractor, FlattenExtractor, NatureCNN)


def runs_without_graph(policy: ActorCriticPolicy) -> bool:
    """
    Whether every module of ``policy`` is written out on detached parameters (so its inference records no
    autograd graph even outside ``torch.no_grad()``); a module run through its own ``forward`` uses its parameters.
    """
    for module in policy.modules():
        if module is policy or type(module) in _WRITTEN_OUT or (type(module) is nn.ReLU and not module.inplace):
            continue
        if type(module) is nn.Conv2d and module.padding_mode == "zeros":
            continue
        if type(module) is CombinedExtractor:
            continue
        return False
    return True


def preprocessor(space: spaces.Space, normalize_images: bool) -> Layer:
    """SB3's ``preprocess_obs`` for ``space``, its branch chosen once (the Box branches written out)."""
    if isinstance(space, spaces.Dict):
        parts = {key: preprocessor(subspace, normalize_images) for key, subspace in space.spaces.items()}
        return lambda obs: {key: parts[key](value) for key, value in obs.items()}
    if isinstance(space, spaces.Box):
        if normalize_images and is_image_space(space):
            return lambda obs: obs.float() / 255.0
        # Tensor.float() returns a float32 tensor as it is: skip the call then.
        return lambda obs: obs if obs.dtype is torch.float32 else obs.float()
    return lambda obs: preprocess_obs(obs, space, normalize_images=normalize_images)


def features_extractor(module: nn.Module) -> Layer:
    """``module(preprocessed_obs)`` for SB3's features extractors written out, or the module's own ``forward``."""
    if type(module) is FlattenExtractor:
        return chain(torch_layers(module.flatten))
    if type(module) is NatureCNN:
        return chain([*torch_layers(module.cnn), *torch_layers(module.linear)])
    if type(module) is CombinedExtractor:
        extractors = {key: chain(torch_layers(extractor)) for key, extractor in module.extractors.items()}
        return lambda obs: torch.cat([extractor(obs[key]) for key, extractor in extractors.items()], dim=1)
    return module.forward


def only_flattens(extractor: nn.Module) -> bool:
    """Whether a features extractor only flattens (SB3's ``FlattenExtractor``, or a ``CombinedExtractor`` of flattenings)."""
    if type(extractor) is FlattenExtractor:
        return True
    if type(extractor) is CombinedExtractor:
        return all(type(part) is nn.Flatten for part in extractor.extractors.values())
    return False


def obs_as_cpu_tensor(obs: np.ndarray | dict[str, np.ndarray]) -> PyTorchObs:
    """
    SB3's ``obs_as_tensor(obs, "cpu")``: for NumPy arrays ``torch.from_numpy`` makes the same tensor (sharing the
    array's memory, as ``torch.as_tensor`` does on the CPU) at a fraction of ``as_tensor``'s cost.

    :param obs: the observations of a VecEnv, an array or a dict of arrays (Dict spaces)
    """
    if type(obs) is np.ndarray:
        return torch.from_numpy(obs)
    if isinstance(obs, dict):
        return {
            key: torch.from_numpy(value) if type(value) is np.ndarray else torch.as_tensor(value) for key, value in obs.items()
        }
    return obs_as_tensor(obs, torch.device("cpu"))
