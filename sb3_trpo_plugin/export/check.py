"""
The exported graph, run by onnxruntime, against ``model.predict(deterministic=True)`` before it is written.

Tracing records what the policy did on one example; a policy whose forward is not the one traced (it overrides
``predict`` or ``get_distribution``) or branches on its data in Python gives a graph that is wrong elsewhere. The
check runs the graph on observations drawn from the observation space (and masks, and episode starts) and asks:

* are its actions ``predict``'s: exactly for integer actions, within float32 rounding for continuous ones
  (:data:`RTOL`, :data:`ATOL`), batched and for a single observation (``predict`` without a batch axis)?
* for recurrent policies, over a rollout of several steps, each side carrying its own states and resetting them at
  the episode starts it is given: are its new states ``predict``'s?
* are all its outputs (the distribution's parameters too) those of the traced module run by torch?
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sb3_trpo_plugin.export.action_masks import ACTION_MASKS
from sb3_trpo_plugin.export.actions import ACTIONS
from sb3_trpo_plugin.export.graph import PolicyGraph
from sb3_trpo_plugin.export.lstm_states import EPISODE_STARTS, LSTM_CELL, LSTM_HIDDEN, NEXT_LSTM_CELL, NEXT_LSTM_HIDDEN
from sb3_trpo_plugin.export.tensors import ExportError

#: How far float32 outputs of onnxruntime may be from torch's: different kernels sum in different orders.
RTOL, ATOL = 1e-4, 1e-5

#: ``(observation, *, state, episode_start, deterministic, action_masks) -> (actions, state)``, as ``model.predict``.
Predict = Callable[..., tuple[Any, Any]]
#: ``(inputs by name) -> outputs by name``: the ONNX graph as onnxruntime runs it.
RunGraph = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class CheckReport:
    """
    What the check compared.

    :param observations: observations compared (batched and single, over every step)
    :param steps: steps of the rollout (1 for policies without states)
    :param max_difference: the largest absolute difference of continuous actions and states from ``predict``'s
    """

    observations: int
    steps: int
    max_difference: float


def _differences(found: np.ndarray, expected: np.ndarray) -> tuple[np.ndarray, float]:
    """:return: which rows differ (exactly for integers, beyond float32 rounding for floats), the largest difference"""
    rows = found.reshape(len(found), -1)
    reference = expected.reshape(rows.shape)
    if np.issubdtype(found.dtype, np.floating):
        far = ~np.isclose(rows, reference, rtol=RTOL, atol=ATOL)
        largest = float(np.max(np.abs(rows - reference), initial=0.0))
    else:
        far = rows != reference
        largest = 0.0
    return far.any(axis=1), largest


class GraphCheck:
    """
    Compares the graph with ``predict`` and with the traced module.

    :param graph: the traced module
    :param run_graph: the ONNX graph, as onnxruntime runs it
    :param predict: the model's ``predict``
    :param tracer_warnings: what the tracer warned of, for the refusal's message
    """

    def __init__(self, graph: PolicyGraph, run_graph: RunGraph, predict: Predict, tracer_warnings: list[str]) -> None:
        self.graph, self.run_graph, self.predict, self.tracer_warnings = graph, run_graph, predict, tracer_warnings
        self.max_difference = 0.0

    def refuse(self, difference: str, against_predict: bool) -> ExportError:
        if against_predict:
            cause = (
                "the policy does not compute its actions as the exporter traces them (features, actor MLP, action "
                "distribution, as SB3's ActorCriticPolicy; a policy overriding predict, _predict or get_distribution is "
                "not followed), or it branches on its inputs in Python or computes outside torch, which a trace freezes"
            )
        else:
            cause = (
                "the trace does not hold for other inputs (Python branches or values the tracer froze), or an "
                "operation's ONNX translation computes otherwise in this opset"
            )
        message = f"the ONNX graph's {difference}: {cause}"
        if self.tracer_warnings:
            message += ". The tracer warned: " + " | ".join(self.tracer_warnings)
        return ExportError(message)

    def compare(self, what: str, found: np.ndarray, expected: Any, against_predict: bool = True) -> None:
        """
        :param what: the outputs compared, for the refusal
        :param found: the graph's
        :param expected: ``predict``'s, or the traced module's
        :param against_predict: whether ``expected`` is ``predict``'s
        :raises ExportError: when they differ
        """
        where = "predict(deterministic=True)'s" if against_predict else "the traced module's"
        expected = np.asarray(expected)
        if found.shape != expected.shape:
            raise self.refuse(f"{what} have shape {found.shape} where {where} have {expected.shape}", against_predict)
        rows, largest = _differences(found, expected)
        if rows.any():
            raise self.refuse(f"{what} differ from {where} on {int(rows.sum())} of {len(rows)} observations", against_predict)
        self.max_difference = max(self.max_difference, largest)

    def step(self, inputs: Mapping[str, np.ndarray], predict_state: Any, single: bool) -> tuple[dict[str, np.ndarray], Any]:
        """
        One step of both, on the same inputs.

        :param inputs: the graph's inputs by name
        :param predict_state: ``predict``'s LSTM states (``None`` for policies without)
        :param single: give ``predict`` the one observation without its batch axis
        :return: the graph's outputs, and ``predict``'s new states
        """
        graph = self.graph
        found = self.run_graph(inputs)
        observation = graph.observations.predict_observation(inputs)
        keywords: dict[str, Any] = {"deterministic": True}
        if graph.action_masks is not None:
            keywords["action_masks"] = inputs[ACTION_MASKS]
        if graph.lstm_states is not None:
            keywords.update(state=predict_state, episode_start=inputs[EPISODE_STARTS])
        if single:
            observation = _first(observation)
            keywords = {
                key: _first(value) if key in ("action_masks", "episode_start") else value for key, value in keywords.items()
            }
        try:
            actions, next_state = self.predict(observation, **keywords)
        except ValueError as error:  # e.g. torch's check of a distribution's parameters, on NaN the policy computed
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise self.refuse(f"inputs make predict(deterministic=True) raise ({first_line})", True) from error
        self.compare("actions", found[ACTIONS], np.asarray(actions)[None] if single else actions)
        if graph.lstm_states is not None:  # rows are observations: the batch axis first
            for name, state in zip((NEXT_LSTM_HIDDEN, NEXT_LSTM_CELL), next_state, strict=True):
                self.compare(f"LSTM states ({name})", np.swapaxes(found[name], 0, 1), np.swapaxes(state, 0, 1))
        for name, expected in graph.run(dict(inputs)).items():
            self.compare(f"{name} outputs", found[name], expected, against_predict=False)
        return found, next_state

    def rollout(self, rng: np.random.Generator, batch: int, steps: int) -> int:
        """
        ``steps`` steps of ``batch`` observations (the first step starts every episode), each side carrying its states.

        :return: the number of observations compared
        """
        inputs = self.graph.draw_inputs(rng, batch)
        predict_state = None
        if self.graph.lstm_states is not None:
            inputs[EPISODE_STARTS] = np.ones(batch, dtype=bool)
            predict_state = (inputs[LSTM_HIDDEN], inputs[LSTM_CELL])
        for _ in range(steps):
            found, predict_state = self.step(inputs, predict_state, single=False)
            fresh = self.graph.draw_inputs(rng, batch)
            if self.graph.lstm_states is not None:  # the graph's own states go on; fresh starts, observations, masks
                fresh[LSTM_HIDDEN], fresh[LSTM_CELL] = found[NEXT_LSTM_HIDDEN], found[NEXT_LSTM_CELL]
            inputs = fresh
        return batch * steps


def _first(value: Any) -> Any:
    """The first row of a batch (each key's for Dict observations)."""
    return {key: array[0] for key, array in value.items()} if isinstance(value, Mapping) else np.asarray(value)[0]


def check_graph(
    graph: PolicyGraph,
    run_graph: RunGraph,
    predict: Predict,
    tracer_warnings: list[str],
    rng: np.random.Generator,
    batch: int = 256,
    steps: int = 1,
) -> CheckReport:
    """
    The check of the module's docstring.

    :param graph: the traced module
    :param run_graph: the ONNX graph, as onnxruntime runs it
    :param predict: the model's ``predict``
    :param tracer_warnings: what the tracer warned of
    :param rng: where the inputs come from
    :param batch: observations per step
    :param steps: steps of the rollout (more than one only matters for recurrent policies)
    :return: what was compared
    :raises ExportError: when the graph does not act as ``predict`` does
    """
    check = GraphCheck(graph, run_graph, predict, tracer_warnings)
    compared = check.rollout(rng, batch, steps)
    single = graph.draw_inputs(rng, 1)
    predict_state = None
    if graph.lstm_states is not None:
        predict_state = (single[LSTM_HIDDEN], single[LSTM_CELL])
    check.step(single, predict_state, single=True)
    return CheckReport(observations=compared + 1, steps=steps, max_difference=check.max_difference)
