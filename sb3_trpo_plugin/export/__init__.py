"""
ONNX export of TRPO, MaskableTRPO and RecurrentTRPO policies: :func:`export_onnx`, ``sb3-trpo export``.

The graph is ``predict(deterministic=True)`` on raw observations, traced from the policy's own modules
(:mod:`.graph`), its parts recognised one by one: observations with the ``VecNormalize`` statistics and the image
layout (:mod:`.observations`), action masks (:mod:`.action_masks`), the actor LSTM's states
(:mod:`.lstm_states`), actions and the distribution's parameters (:mod:`.actions`). It is traced by torch's
TorchScript exporter (:mod:`.tracing`) and run by onnxruntime against ``predict`` before it is written
(:mod:`.check`). onnx and onnxruntime, the optional ``export`` extra, are imported only when exporting.
"""

from sb3_trpo_plugin.export.check import CheckReport
from sb3_trpo_plugin.export.exporter import METADATA_KEY, ExportedPolicy, export_onnx
from sb3_trpo_plugin.export.tensors import ExportError, GraphTensor

__all__ = ["METADATA_KEY", "CheckReport", "ExportError", "ExportedPolicy", "GraphTensor", "export_onnx"]
