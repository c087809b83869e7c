"""
Least-squares regression of a plain multilayer perceptron with its gradient derived by hand.

The critic of an actor-critic policy is usually ``Linear → activation → … → Linear`` and is fitted by
many small minibatch steps of ``mean (V(s) - R̂)²``. On a CPU each such step is bound by per-operation
overhead: the autograd engine records every operation of the forward pass and replays it backwards.
For this one architecture the backward pass is short enough to write out, so one step here is a handful
of matrix products with no graph at all. Nothing of Stable-Baselines3 is known here: the network is
given as its sequence of layers.

Forward, for layers ``k = 1..L`` with ``h₀ = x``::

    z_k = h_{k-1} W_kᵀ + b_k,      h_k = σ(z_k)  (no activation after the last layer),  V = z_L

Loss and backward (``B`` samples, ``r = V - R̂``)::

    loss = (1/B) Σ r²
    ∂loss/∂z_L = (2/B) r
    ∂loss/∂W_k = (∂loss/∂z_k)ᵀ h_{k-1},      ∂loss/∂b_k = Σ_samples ∂loss/∂z_k
    ∂loss/∂h_{k-1} = (∂loss/∂z_k) W_k,        ∂loss/∂z_{k-1} = σ'(z_{k-1}) ⊙ ∂loss/∂h_{k-1}

with ``σ' = 1 - h²`` for tanh and ``σ' = [h > 0]`` for ReLU, both read from the layer's output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class MLPRegression:
    """
    ``mean (f(x) - y)²`` and its gradient for ``f`` a chain of ``nn.Linear`` layers with ``nn.Tanh`` or
    ``nn.ReLU`` activations between them, ending with an ``nn.Linear`` of one output.

    The caller recognises the architecture (``sb3_trpo_plugin.replicas.critic_gradient.plain_regression``: exact
    module types, no hooks, which autograd would run and this code would not) and uses autograd for any other.

    :param linears: the linear layers, first to last
    :param activations: ``"tanh"`` or ``"relu"`` after each linear layer but the last
    """

    def __init__(self, linears: Sequence[nn.Linear], activations: Sequence[str]):
        if len(activations) != len(linears) - 1:
            raise ValueError(f"{len(linears)} linear layers need {len(linears) - 1} activations, got {len(activations)}")
        self.linears = list(linears)
        self.activations = list(activations)
        # Detached views of the weights (same memory, so optimiser steps show through): operations on them
        # record no graph. Build the regression again if the parameters themselves are replaced.
        self._weights = [linear.weight.detach() for linear in self.linears]
        self._biases = [None if linear.bias is None else linear.bias.detach() for linear in self.linears]
        trained_weights = [linear.weight if linear.weight.requires_grad else None for linear in self.linears]
        trained_biases = [linear.bias if linear.bias is not None and linear.bias.requires_grad else None for linear in linears]
        # The gradients of the trained parameters live in one flat buffer, each parameter's ``.grad`` a view of it:
        # each step writes them in place, and one reduction tells whether they are all finite.
        trained = [p for pair in zip(trained_weights, trained_biases, strict=True) for p in pair if p is not None]
        reference = self._weights[0]
        if any(p.dtype != reference.dtype or p.device != reference.device for p in trained):
            raise ValueError("the layers' parameters must share one dtype and one device")
        self._gradient = torch.zeros(sum(p.numel() for p in trained), dtype=reference.dtype, device=reference.device)
        views = dict(zip(map(id, trained), torch.split(self._gradient, [p.numel() for p in trained]), strict=True))
        #: Per layer, the trained weight (bias) with its view of the flat gradient; ``None`` when it is frozen.
        self._weight_grads = [None if w is None else (w, views[id(w)].view_as(w)) for w in trained_weights]
        self._bias_grads = [None if b is None else (b, views[id(b)].view_as(b)) for b in trained_biases]
        # NumPy's tanh applies to CPU tensors of these dtypes (activations are contiguous: addmm's outputs)
        self._numpy_tanh = reference.device.type == "cpu" and reference.dtype in (torch.float32, torch.float64)

    def parameters(self) -> list[nn.Parameter]:
        """The weights and biases, first layer to last."""
        return [p for linear in self.linears for p in linear.parameters()]

    def loss_and_gradients(self, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        """
        ``loss = (1/B) Σ (f(x) - y)²``; writes ``∂loss/∂θ`` into ``.grad`` of every weight and bias that
        requires a gradient (replacing what was there) and leaves the others' ``.grad`` untouched.

        :param inputs: ``(B, in_features)``, without gradient history
        :param targets: ``(B,)``, without gradient history
        :return: the loss
        """
        layer_inputs = [inputs]  # h_{k-1} for each linear layer k
        hidden = self._hidden(inputs.detach(), layer_inputs)
        residual = _affine(hidden, self._weights[-1], self._biases[-1]).view(-1).sub_(targets.detach())
        n_samples = residual.shape[0]
        loss = torch.dot(residual, residual).item() / n_samples

        grad_z = residual.mul_(2.0 / n_samples).view(-1, 1)  # ∂loss/∂z_L
        for k in range(len(self.linears) - 1, -1, -1):
            h_in, trained_weight, trained_bias = layer_inputs[k], self._weight_grads[k], self._bias_grads[k]
            if trained_weight is not None:
                weight, weight_grad = trained_weight
                torch.mm(grad_z.t(), h_in, out=weight_grad)
                if weight.grad is not weight_grad:
                    weight.grad = weight_grad
            if trained_bias is not None:
                bias, bias_grad = trained_bias
                torch.sum(grad_z, 0, out=bias_grad)
                if bias.grad is not bias_grad:
                    bias.grad = bias_grad
            if k == 0:
                break
            grad_h = grad_z.mm(self._weights[k])
            if self.activations[k - 1] == "tanh":
                grad_z = torch.ops.aten.tanh_backward(grad_h, h_in)
            else:
                grad_z = torch.ops.aten.threshold_backward(grad_h, h_in, 0)
        return loss

    def gradients_are_finite(self) -> bool:
        """
        Whether the gradient of the last :meth:`loss_and_gradients` is finite: one sum over all of it (a NaN or an
        inf anywhere makes it non-finite; so do finite values so large that their sum overflows, which no usable
        step holds).
        """
        return math.isfinite(float(self._gradient.sum()))

    def values(self, inputs: torch.Tensor) -> torch.Tensor:
        """
        ``f(x)``, flattened to ``(B,)``, without gradient.

        :param inputs: ``(B, in_features)``
        """
        return _affine(self._hidden(inputs.detach()), self._weights[-1], self._biases[-1]).view(-1)

    def _hidden(self, inputs: torch.Tensor, layer_inputs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The last hidden layer ``h_{L-1}``; appends every ``h_k`` to ``layer_inputs`` when given."""
        hidden = inputs
        for weight, bias, activation in zip(self._weights[:-1], self._biases[:-1], self.activations, strict=True):
            hidden = _affine(hidden, weight, bias)
            if activation != "tanh":
                hidden = hidden.relu_()
            elif self._numpy_tanh:
                # NumPy's SIMD tanh in place on the tensor's memory: faster than torch's CPU kernel on minibatch-sized
                # activations, as accurate (a few ulp in float32); NumPy's element-wise functions use one thread.
                activations = hidden.numpy()
                np.tanh(activations, out=activations)
            else:
                hidden = hidden.tanh_()
            if layer_inputs is not None:
                layer_inputs.append(hidden)
        return hidden


def _affine(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x Wᵀ + b`` in one kernel."""
    if bias is None:
        return inputs.mm(weight.t())
    return torch.addmm(bias, inputs, weight.t())
