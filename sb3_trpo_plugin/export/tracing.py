"""
``torch.onnx.export`` of a :class:`~sb3_trpo_plugin.export.graph.PolicyGraph`, and the graph's metadata.

The exporter used is torch's TorchScript-based one (``dynamo=False``): it traces the module on an example batch
and needs nothing beyond torch, on every torch this package supports (before 2.5 ``torch.onnx.export`` has no
``dynamo`` keyword and is this exporter). The ``torch.export``-based exporter, torch's default since 2.9, needs
``onnxscript`` besides. Tracing records the operations one example ran; :mod:`.check` then proves the graph on
other inputs against ``predict()``, and the tracer's warnings (a tensor turned into a Python value, a frozen
branch) explain a graph that fails the check. Warnings from torch's, SB3's and sb3-contrib's own code (argument
validation, the LSTM's shape checks, masks turned into tensors) are about inputs the graph takes as inputs
anyway, and are left out.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from sb3_trpo_plugin.export.graph import PolicyGraph
from sb3_trpo_plugin.export.tensors import ExportError, GraphTensor

#: The ONNX operator set of the graph: torch 2.3's TorchScript exporter writes it, onnxruntime 1.23 (the last for
#: Python 3.10) runs it.
DEFAULT_OPSET = 17
#: The graph's metadata entry (``session.get_modelmeta().custom_metadata_map``): JSON describing inputs and outputs.
METADATA_KEY = "sb3_trpo_plugin"
#: Warnings the tracer gives about code it may have traced wrongly.
TRACER_WARNING = torch.jit.TracerWarning
#: The libraries whose tracer warnings are left out (see the module's docstring), as folder names in file paths.
LIBRARY_FOLDERS = ("/torch/", "/stable_baselines3/", "/sb3_contrib/")


def one_line(error: BaseException) -> str:
    """:return: an error's message on one line (the ONNX checker's and onnxruntime's span several)"""
    return " ".join(str(error).split())


def require_onnx(check: bool) -> None:
    """
    :param check: whether onnxruntime will run the graph too
    :raises ImportError: naming the ``export`` extra, when onnx (which torch's exporter needs) or onnxruntime is missing
    """
    for name in ("onnx", "onnxruntime") if check else ("onnx",):
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ImportError(
                f"ONNX export needs onnx and onnxruntime; {name} is not installed: pip install 'sb3-trpo-plugin[export]'"
            ) from error


def trace(
    graph: PolicyGraph, example: Mapping[str, np.ndarray], outputs: Sequence[GraphTensor], opset: int
) -> tuple[bytes, list[str]]:
    """
    Trace the module into an ONNX graph with a dynamic batch axis.

    :param graph: the module
    :param example: an example batch of inputs by name (a batch of 2, so that no size 1 is taken for the batch)
    :param outputs: the outputs, as :meth:`PolicyGraph.graph_outputs` describes them
    :param opset: the ONNX operator set
    :return: the serialised graph, and the tracer's warnings about the policy's code (``file:line: message``)
    :raises ExportError: when torch cannot trace the policy or translate one of its operations
    """
    tensors = tuple(torch.as_tensor(example[name]) for name in graph.input_names)
    dynamic_axes = {
        tensor.name: {tensor.batch_axis: tensor.shape[tensor.batch_axis]} for tensor in [*graph.graph_inputs, *outputs]
    }
    options: dict[str, Any] = dict(
        input_names=graph.input_names,
        output_names=graph.output_names,
        dynamic_axes=dynamic_axes,
        opset_version=opset,
        do_constant_folding=True,
    )
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = False
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = os.path.join(folder, "policy.onnx")
        try:
            torch.onnx.export(graph, tensors, path, **options)
        except Exception as error:  # the exporter raises many kinds: all mean the policy cannot be exported as it is
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            if type(error).__name__ == "CheckerError":  # torch 2.3 runs ONNX's checker inside export itself
                raise ExportError(f"the traced graph is not valid ONNX: {type(error).__name__}: {first_line}") from error
            raise ExportError(
                f"torch.onnx.export cannot turn the policy into an ONNX graph (opset {opset}): {type(error).__name__}: "
                f"{first_line} (an operation without an ONNX translation in this opset can be replaced in the policy, "
                "or a newer opset asked for)"
            ) from error
        with open(path, "rb") as file:
            content = file.read()
    tracer_warnings: list[str] = []
    for warning in caught:
        if issubclass(warning.category, TRACER_WARNING):
            found = f"{warning.filename}:{warning.lineno}: {warning.message}"
            in_library = any(folder in warning.filename.replace("\\", "/") for folder in LIBRARY_FOLDERS)
            if not in_library and found not in tracer_warnings:
                tracer_warnings.append(found)
        elif not _exporter_notice(warning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return content, tracer_warnings


def _exporter_notice(warning: warnings.WarningMessage) -> bool:
    """
    The exporter's notices about itself: the TorchScript exporter deprecated since torch 2.9 (this module's choice),
    advice on LSTM states (which the graph takes as inputs) and on weights as inputs below opset 9. What they warn of
    the check would find.
    """
    from_exporter = "torch/onnx" in warning.filename.replace("\\", "/")
    return from_exporter or "TorchScript-based ONNX export" in str(warning.message)


def completed_graph(content: bytes, inputs: Sequence[GraphTensor], metadata: Mapping[str, Any], doc_string: str) -> bytes:
    """
    The graph as the caller gets it: every declared input present, the description added, ONNX's checker passed.

    The tracer drops inputs the graph does not compute with (a Dict key a custom extractor ignores, or an
    observation a policy reads through NumPy, which the check then refuses); they are put back, unused, so that
    every graph takes the inputs its description lists.

    :param content: the serialised graph
    :param inputs: the inputs it must take, in order
    :param metadata: the description (JSON under :data:`METADATA_KEY`)
    :param doc_string: one line for the graph's ``doc_string``
    :return: the serialised graph
    """
    import onnx  # require_onnx() checked that it is there

    model = onnx.load_from_string(content)
    traced = {value.name: value for value in model.graph.input}
    declared = {tensor.name for tensor in inputs}
    ordered = [
        traced.get(tensor.name)
        or onnx.helper.make_tensor_value_info(
            tensor.name, onnx.helper.np_dtype_to_tensor_dtype(tensor.dtype), list(tensor.shape)
        )
        for tensor in inputs
    ]
    # Below opset 9 the weights are graph inputs too (ONNX IR 3): they stay, after the declared inputs.
    weights = [value for name, value in traced.items() if name not in declared]
    del model.graph.input[:]
    model.graph.input.extend([*ordered, *weights])
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(metadata)})
    model.doc_string = doc_string
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"the traced graph is not valid ONNX: {one_line(error)}") from error
    return model.SerializeToString()
