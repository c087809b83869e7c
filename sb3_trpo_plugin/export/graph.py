"""
The module that is traced into the ONNX graph: ``predict(deterministic=True)`` of an SB3 actor-critic policy, from
raw observations to actions, as one ``forward`` over named tensors.

The forward is the one ``predict`` runs, in the policy's own modules::

    observations   (raw) → VecNormalize, channels first                           ObservationInputs
    features       = policy.extract_features(observations, pi_features_extractor)  (preprocess_obs, the extractor)
    [features      = one step of the actor's LSTM, states in and out]              LstmStateInputs, when it has one
    latent         = policy.mlp_extractor.forward_actor(features)
    distribution   = policy._get_action_dist_from_latent(latent)
    [distribution.apply_masking(action_masks)]                                     ActionMaskInput, when it masks
    actions        = the mode, reshaped, clipped or unscaled                       ActionOutputs

Each optional part is recognised on its own (an LSTM by the policy's ``lstm_actor``, masking by its distribution's
``apply_masking``), so a policy with both, a masked recurrent policy, gets both parts and nothing else. The module
runs on a copy of the policy, so exporting leaves the model as it was.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.policies import BasePolicy
from torch import nn

from sb3_trpo_plugin.export.action_masks import ActionMaskInput, takes_action_masks
from sb3_trpo_plugin.export.actions import ActionOutputs
from sb3_trpo_plugin.export.lstm_states import EPISODE_STARTS, LstmStateInputs, has_actor_lstm
from sb3_trpo_plugin.export.observations import ObservationInputs, ObservationKey, ObservationNormalization
from sb3_trpo_plugin.export.tensors import BATCH, ExportError, GraphTensor

#: What the traced forward uses of a policy: SB3's ``ActorCriticPolicy`` and sb3-contrib's maskable and recurrent
#: policies all have them (the maskable one derives from ``BasePolicy`` directly).
ACTOR_PARTS = (
    "pi_features_extractor",
    "mlp_extractor.forward_actor",
    "_get_action_dist_from_latent",
    "action_dist",
    "squash_output",
)


def exportable_policy(policy: Any) -> BasePolicy:
    """
    A copy of the policy, on the CPU, in evaluation mode, to trace (the model's own policy is left untouched).

    :param policy: the model's policy
    :raises ExportError: for anything but an actor-critic policy of SB3's design (TRPO's, PPO's, A2C's, sb3-contrib's
        maskable and recurrent ones)
    """
    refusal = (
        "the exporter takes actor-critic policies of SB3's design (TRPO, MaskableTRPO, RecurrentTRPO, PPO, A2C), "
        f"not {type(policy).__name__}"
    )
    if not isinstance(policy, BasePolicy):
        raise ExportError(refusal)
    missing = [name for name in ACTOR_PARTS if not _has(policy, name)]
    if missing:
        raise ExportError(f"{refusal}: it has no {', '.join(missing)}")
    # Tensors computed with gradients (gSDE's noise matrices) refuse deepcopy: they are copied detached.
    memo: dict[int, Any] = {id(tensor): tensor.detach().clone() for tensor in _computed_tensors(policy)}
    policy = copy.deepcopy(policy, memo).to("cpu")
    policy.set_training_mode(False)
    return policy


def _has(root: Any, dotted: str) -> bool:
    """:return: whether ``root`` has the attribute path ``dotted`` (``a.b``)"""
    for name in dotted.split("."):
        if not hasattr(root, name):
            return False
        root = getattr(root, name)
    return True


def _computed_tensors(root: Any) -> list[torch.Tensor]:
    """The tensors that are not graph leaves among the attributes of ``root``, at any depth."""
    found, seen, pending = [], set(), [root]
    while pending:
        value = pending.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            if not value.is_leaf:
                found.append(value)
        elif isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, (list, tuple)):
            pending.extend(value)
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            pending.extend(vars(value).values())
    return found


class PolicyGraph(nn.Module):
    """
    ``predict(deterministic=True)`` of an actor-critic policy as one forward over the graph's named inputs.

    :param policy: the policy to trace (:func:`exportable_policy`'s copy: it is modified while traced)
    :param channels_last: the image observations that come in with their channels last
    :param normalization: ``VecNormalize``'s observation normalisation to fold in, or ``None``
    :param stochastic: also output the action distribution's parameters
    """

    def __init__(
        self,
        policy: Any,
        channels_last: frozenset[ObservationKey] = frozenset(),
        normalization: ObservationNormalization | None = None,
        stochastic: bool = False,
    ) -> None:
        super().__init__()
        self.policy = policy
        self.observations = ObservationInputs(policy.observation_space, channels_last, normalization)
        self.action_masks = ActionMaskInput(policy.action_space) if takes_action_masks(policy) else None
        self.lstm_states = LstmStateInputs(policy.lstm_actor) if has_actor_lstm(policy) else None
        self.action_outputs = ActionOutputs(policy, stochastic)
        self.graph_inputs: list[GraphTensor] = [
            *self.observations.graph_inputs,
            *([self.action_masks.graph_input] if self.action_masks is not None else []),
            *(self.lstm_states.graph_inputs if self.lstm_states is not None else []),
        ]
        self.output_names = [*self.action_outputs.names, *(self.lstm_states.names if self.lstm_states is not None else [])]

    @property
    def input_names(self) -> list[str]:
        return [graph_input.name for graph_input in self.graph_inputs]

    def named_forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """
        :param inputs: the graph's inputs by name
        :return: the graph's outputs by name
        """
        policy = self.policy
        observations = self.observations(inputs)
        # BasePolicy's extract_features, as the maskable and recurrent policies call it: preprocess_obs, the extractor.
        latent = BasePolicy.extract_features(policy, observations, policy.pi_features_extractor)
        outputs: dict[str, torch.Tensor] = {}
        if self.lstm_states is not None:
            latent, next_states = self.lstm_states(latent, inputs)
            outputs.update(next_states)
        latent = policy.mlp_extractor.forward_actor(latent)
        distribution = policy._get_action_dist_from_latent(latent)
        if self.action_masks is not None:
            self.action_masks.apply(distribution, inputs)
        return {**self.action_outputs.outputs(distribution), **outputs}

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """
        :param tensors: the graph's inputs, in :attr:`graph_inputs`' order
        :return: the graph's outputs, in ``output_names``' order
        """
        outputs = self.named_forward(dict(zip(self.input_names, tensors, strict=True)))
        return tuple(outputs[name] for name in self.output_names)

    def draw_inputs(self, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
        """
        Inputs for a batch: observations and masks drawn at random, zero LSTM states, episode starts drawn.

        :param rng: where the draws come from
        :param batch: the batch size
        :return: the graph's inputs by name
        """
        arrays = self.observations.draw(rng, batch)
        if self.action_masks is not None:
            arrays[self.action_masks.graph_input.name] = self.action_masks.draw(rng, batch)
        if self.lstm_states is not None:
            arrays.update(self.lstm_states.initial_states(batch))
            arrays[EPISODE_STARTS] = rng.random(batch) < 0.5
        return arrays

    def run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """
        The module itself on NumPy inputs (what the ONNX graph must reproduce).

        :param arrays: the graph's inputs by name
        :return: the graph's outputs by name
        """
        with torch.no_grad():
            outputs = self(*(torch.as_tensor(arrays[name]) for name in self.input_names))
        return {name: output.numpy() for name, output in zip(self.output_names, outputs, strict=True)}

    def graph_outputs(self, example: dict[str, np.ndarray]) -> list[GraphTensor]:
        """
        The outputs' names, dtypes and shapes, read off the module's outputs for an example batch.

        :param example: the graph's inputs by name, for a batch
        """
        batch_axes = {name: 1 for name in (self.lstm_states.names if self.lstm_states is not None else [])}
        described = []
        for name, value in self.run(example).items():
            shape: list[int | str] = list(value.shape)
            shape[batch_axes.get(name, 0)] = BATCH
            described.append(GraphTensor(name, value.dtype, tuple(shape)))
        return described
