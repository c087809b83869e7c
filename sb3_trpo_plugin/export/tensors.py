"""What the exported graph's inputs and outputs are: a name, a NumPy dtype and a shape whose batch axis is named."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: The name of every graph tensor's dynamic batch axis (observations, environments).
BATCH = "batch"


class ExportError(ValueError):
    """A policy that cannot be exported faithfully, or a graph that does not act as ``predict()`` does."""


@dataclass(frozen=True)
class GraphTensor:
    """
    One input or output of the exported graph.

    :param name: the name onnxruntime's ``session.run`` takes and returns it by
    :param dtype: its NumPy dtype (what to feed, what comes back)
    :param shape: its shape, :data:`BATCH` standing for the batch axis
    """

    name: str
    dtype: np.dtype
    shape: tuple[int | str, ...]

    @property
    def batch_axis(self) -> int:
        """The position of the batch axis in ``shape``."""
        return self.shape.index(BATCH)

    def describe(self) -> dict[str, Any]:
        """:return: the tensor as JSON (the graph's metadata)"""
        return {"name": self.name, "dtype": self.dtype.name, "shape": list(self.shape)}

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype.name}[{', '.join(map(str, self.shape))}]"
