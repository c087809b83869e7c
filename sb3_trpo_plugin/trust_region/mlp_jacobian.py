"""
Products with the Jacobian of a plain MLP's output in its weights, derived by hand (tensors only, no autograd).

For ``h_0 = x``, ``z_k = h_{k-1} W_kᵀ + b_k``, ``h_k = σ_k(z_k)`` (``k < L``) and the output ``y = z_L``:

* ``J v`` propagates tangents forward: ``dz_k = h_{k-1} dW_kᵀ + 1 db_kᵀ + dh_{k-1} W_kᵀ``, ``dh_k = σ'_k(z_k) ⊙ dz_k``;
* ``Jᵀ u`` propagates cotangents backward: ``g_L = u``, ``∂W_k = g_kᵀ h_{k-1}``, ``∂b_k = Σ_rows g_k``,
  ``g_{k-1} = σ'_{k-1}(z_{k-1}) ⊙ (g_k W_k)``,

with ``σ' = 1 - h²`` for tanh and ``σ' = [h > 0]`` for ReLU, written as a function of ``h``. Compared with
autograd's double backpropagation through a graph (which :class:`~sb3_trpo_plugin.trust_region.fisher.Linearization`
uses for any network), each product is one pass of a dozen matrix operations over activations computed once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

Activation = Literal["tanh", "relu"]


class MLPJacobian:
    """
    The forward pass of a plain MLP on a batch, kept for products with its Jacobian in the weights and biases.

    :param weights: ``W_1 … W_L``, each ``(out, in)``
    :param biases: ``b_1 … b_L`` (``None`` where a layer has none)
    :param activations: ``σ_1 … σ_{L-1}``, one between each pair of linear layers
    :param inputs: the batch ``x``, ``(B, in_1)``; it does not depend on the weights
    """

    def __init__(
        self,
        weights: Sequence[torch.Tensor],
        biases: Sequence[torch.Tensor | None],
        activations: Sequence[Activation],
        inputs: torch.Tensor,
    ) -> None:
        if len(biases) != len(weights) or len(activations) != len(weights) - 1:
            raise ValueError("an MLP of L linear layers has L biases and L - 1 activations")
        self.weights = [weight.detach() for weight in weights]
        self.biases = [None if bias is None else bias.detach() for bias in biases]
        self.activations = list(activations)
        with torch.no_grad():
            hidden = [inputs.detach()]  # h_0 … h_{L-1}
            for weight, bias, activation in zip(self.weights[:-1], self.biases[:-1], self.activations, strict=True):
                z = _affine(hidden[-1], weight, bias)
                hidden.append(torch.tanh(z) if activation == "tanh" else torch.relu(z))
            self.hidden = hidden
            #: ``y``, the MLP's output on the batch
            self.outputs = _affine(hidden[-1], self.weights[-1], self.biases[-1])

    def jvp(self, weight_tangents: Sequence[torch.Tensor], bias_tangents: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """
        ``dy = J (dW, db)``: the output's change along a direction in the weights and biases.

        :param weight_tangents: ``dW_k``, shaped like ``W_k``
        :param bias_tangents: ``db_k`` (``None`` for a layer without bias, or a bias held fixed)
        :return: ``dy``, shaped like :attr:`outputs`
        """
        tangent: torch.Tensor | None = None  # dh_{k-1}; the inputs do not move
        for k, (weight, weight_tangent, bias_tangent) in enumerate(
            zip(self.weights, weight_tangents, bias_tangents, strict=True)
        ):
            dz = _affine(self.hidden[k], weight_tangent, bias_tangent)
            if tangent is not None:
                dz.addmm_(tangent, weight.t())
            tangent = dz if k == len(self.weights) - 1 else self._activation_backward(dz, k)
        assert tangent is not None
        return tangent

    def vjp(self, cotangent: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """
        ``Jᵀ u``: the gradient in the weights and biases of ``Σ u ⊙ y``.

        :param cotangent: ``u``, shaped like :attr:`outputs`
        :return: ``(∂W_k, ∂b_k)`` for every layer (``None`` for a layer without bias)
        """
        weight_grads: list[torch.Tensor] = []
        bias_grads: list[torch.Tensor | None] = []
        g = cotangent
        for k in range(len(self.weights) - 1, -1, -1):
            weight_grads.append(g.t().mm(self.hidden[k]))
            bias_grads.append(None if self.biases[k] is None else g.sum(0))
            if k > 0:
                g = self._activation_backward(g.mm(self.weights[k]), k - 1)
        return weight_grads[::-1], bias_grads[::-1]

    def _activation_backward(self, tangent: torch.Tensor, k: int) -> torch.Tensor:
        """``σ'_k ⊙ tangent``, with ``σ'`` from the activation's output ``h_{k+1}``."""
        output = self.hidden[k + 1]
        if self.activations[k] == "tanh":
            return torch.ops.aten.tanh_backward(tangent, output)
        return torch.ops.aten.threshold_backward(tangent, output, 0)


def _affine(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x Wᵀ + b`` in one kernel."""
    if bias is None:
        return inputs.mm(weight.t())
    return torch.addmm(bias, inputs, weight.t())
