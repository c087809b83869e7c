"""
:func:`export_onnx`: a model's deterministic policy as an ONNX graph that takes raw observations, checked against
``predict()`` by onnxruntime before it is written.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import stable_baselines3
import torch
from stable_baselines3.common.vec_env import VecNormalize

from sb3_trpo_plugin.export.check import CheckReport, Predict, RunGraph, check_graph
from sb3_trpo_plugin.export.graph import PolicyGraph, exportable_policy
from sb3_trpo_plugin.export.observations import resolve_channels_last, resolve_normalization
from sb3_trpo_plugin.export.tensors import ExportError, GraphTensor
from sb3_trpo_plugin.export.tracing import DEFAULT_OPSET, METADATA_KEY, completed_graph, one_line, require_onnx, trace
from sb3_trpo_plugin.serialization.atomic import atomic_write_bytes
from sb3_trpo_plugin.version import __version__

#: Identifies the layout of the graph's metadata; bumped on incompatible changes.
METADATA_FORMAT = "sb3_trpo_plugin.onnx_policy/1"
#: The check's rollout: observations per step and steps (several only for recurrent policies).
CHECK_BATCH, CHECK_STEPS, CHECK_RECURRENT_BATCH, CHECK_RECURRENT_STEPS = 256, 1, 16, 24


@dataclass(frozen=True)
class ExportedPolicy:
    """
    What :func:`export_onnx` wrote.

    :param path: the ONNX file
    :param inputs: the graph's inputs, in order
    :param outputs: the graph's outputs, in order
    :param size_bytes: the file's size
    :param check: what the check compared (``None`` when it was skipped)
    :param metadata: the description stored in the graph (``custom_metadata_map[METADATA_KEY]``, JSON)
    """

    path: pathlib.Path
    inputs: tuple[GraphTensor, ...]
    outputs: tuple[GraphTensor, ...]
    size_bytes: int
    check: CheckReport | None
    metadata: dict[str, Any] = field(repr=False)

    def summary(self) -> str:
        """:return: a few lines for people: the file, its size, its inputs and outputs, the check"""
        lines = [f"{self.path} ({self.size_bytes / 1024:.1f} KiB, ONNX opset {self.metadata['opset']})"]
        lines += [f"  input  {tensor}" for tensor in self.inputs] + [f"  output {tensor}" for tensor in self.outputs]
        if self.metadata["vec_normalize"] is not None:
            clip = self.metadata["vec_normalize"]["clip_obs"]
            lines.append(f"  raw observations in: the VecNormalize statistics are folded in (clipped to ±{clip:g})")
        if self.check is None:
            lines.append("  not checked against predict()")
        else:
            lines.append(
                f"  checked: the same actions as predict(deterministic=True) on {self.check.observations} observations"
                + (f" over {self.check.steps} steps" if self.check.steps > 1 else "")
                + f" (largest float difference {self.check.max_difference:.1e})"
            )
        return "\n".join(lines)


def export_onnx(
    model: Any,
    path: str | os.PathLike[str],
    *,
    vec_normalize: VecNormalize | str | os.PathLike[str] | bool | None = None,
    stochastic: bool = False,
    channels_last: bool | None = None,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    seed: int = 0,
) -> ExportedPolicy:
    """
    Export a model's policy as an ONNX graph that acts as ``model.predict(obs, deterministic=True)`` on raw observations.

    The graph takes what the environment returns, batched (a single observation is a batch of one): with the
    ``VecNormalize`` statistics folded in, image observations in the environment's layout; plus ``action_masks``
    for maskable policies (``True`` = valid), and ``lstm_hidden``, ``lstm_cell``, ``episode_starts`` for recurrent
    ones. It returns ``actions`` as ``predict`` does (clipped into a Box's bounds, or unscaled for squashed gSDE
    policies; int64 for Discrete, MultiDiscrete and MultiBinary), ``next_lstm_hidden`` and ``next_lstm_cell`` for
    recurrent policies, and with ``stochastic=True`` the distribution's parameters (``action_mean`` and
    ``action_std``, or ``action_logits``). Its metadata (``custom_metadata_map["sb3_trpo_plugin"]``, JSON) describes
    all of them. See ``docs/export.md``.

    :param model: a TRPO, MaskableTRPO or RecurrentTRPO model (or any SB3 actor-critic algorithm: PPO, A2C...), or
        its policy
    :param path: the ONNX file to write (atomically, and only once the graph passed the check)
    :param vec_normalize: the ``VecNormalize`` whose observation statistics to fold in: a ``VecNormalize``, a
        statistics file (``.npz``, or SB3's ``.pkl`` read without unpickling code); ``None``: the model
        environment's ``VecNormalize`` if it has one; ``True``: that one, which must be there; ``False``: none (the
        graph takes normalised observations)
    :param stochastic: also output the action distribution's parameters, to sample outside
    :param channels_last: image observations with their channels last: ``None`` as the model's environment returns
        them (channels last where SB3 added ``VecTransposeImage``), ``True`` for every image, ``False`` for none
    :param opset: the ONNX operator set
    :param check: run the graph with onnxruntime against ``predict(deterministic=True)`` before writing it
    :param seed: seed of the check's observations
    :return: what was written
    :raises ExportError: for a policy that cannot be exported, or a graph that fails the check (nothing is written)
    :raises ImportError: without onnx and onnxruntime (the ``export`` extra)
    """
    require_onnx(check)
    policy = getattr(model, "policy", model)
    env = model.get_env() if hasattr(model, "get_env") else None
    traced = exportable_policy(policy)
    normalization = resolve_normalization(vec_normalize, env)
    graph = PolicyGraph(traced, resolve_channels_last(traced.observation_space, channels_last, env), normalization, stochastic)
    rng = np.random.default_rng(seed)
    example = graph.draw_inputs(rng, 2)
    outputs = graph.graph_outputs(example)
    content, tracer_warnings = trace(graph, example, outputs, opset)
    metadata = {
        "format": METADATA_FORMAT,
        "algorithm": type(model).__name__,
        "policy": type(policy).__name__,
        "opset": opset,
        "inputs": [tensor.describe() for tensor in graph.graph_inputs],
        "outputs": [tensor.describe() for tensor in outputs],
        "observations": graph.observations.describe(),
        "vec_normalize": None if normalization is None else {"clip_obs": normalization.clip_obs},
        "action_masks": None if graph.action_masks is None else graph.action_masks.describe(),
        "lstm": None if graph.lstm_states is None else graph.lstm_states.describe(),
        "actions": graph.action_outputs.describe(),
        "versions": {
            "sb3_trpo_plugin": __version__,
            "stable_baselines3": stable_baselines3.__version__,
            "torch": torch.__version__,
        },
    }
    doc_string = f"{type(model).__name__} policy: predict(deterministic=True) on raw observations (sb3-trpo-plugin)"
    content = completed_graph(content, graph.graph_inputs, metadata, doc_string)
    report = None
    if check:
        recurrent = graph.lstm_states is not None
        batch, steps = (CHECK_RECURRENT_BATCH, CHECK_RECURRENT_STEPS) if recurrent else (CHECK_BATCH, CHECK_STEPS)
        training = policy.training
        try:
            predict = reference_predict(model, policy, traced)
            report = check_graph(graph, onnxruntime_runner(content), predict, tracer_warnings, rng, batch, steps)
        finally:
            policy.set_training_mode(training)  # predict() puts the policy in evaluation mode
    atomic_write_bytes(path, content)
    return ExportedPolicy(pathlib.Path(path), tuple(graph.graph_inputs), tuple(outputs), len(content), report, metadata)


def reference_predict(model: Any, policy: Any, cpu_copy: Any) -> Predict:
    """
    What the graph is checked against: ``model.predict`` for a model on the CPU. For a model on another device, the
    same policy's ``predict`` on the CPU (the exported copy): a GPU's convolutions (TF32 by default in torch) differ
    from the CPU's by more than float32 rounding, which is not the graph's doing.

    :param model: the model (or policy) being exported
    :param policy: its policy
    :param cpu_copy: the policy's copy on the CPU
    """
    return model.predict if policy.device.type == "cpu" else cpu_copy.predict


def onnxruntime_runner(content: bytes) -> RunGraph:
    """
    :param content: a serialised ONNX graph
    :return: ``inputs by name -> outputs by name``, run by onnxruntime on the CPU
    """
    import onnxruntime  # require_onnx() checked that it is there

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings about unused initialisers concern the exporter
    try:
        session = onnxruntime.InferenceSession(content, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own error kinds: an operator it does not implement at this opset...
        raise ExportError(f"onnxruntime cannot load the graph: {one_line(error)}") from error
    names = [output.name for output in session.get_outputs()]

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = session.run(None, dict(inputs))
        except Exception as error:
            raise ExportError(f"onnxruntime cannot run the graph: {one_line(error)}") from error
        return dict(zip(names, outputs, strict=True))

    return run


__all__ = ["METADATA_KEY", "ExportedPolicy", "export_onnx"]
