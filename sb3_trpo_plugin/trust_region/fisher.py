"""
Fisher-vector products of the mean KL divergence, on tensors and callables only.

TRPO needs ``F v`` where ``F = ∇²_θ KL̄(θ_old ‖ θ)|θ=θ_old`` is the Hessian of the mean KL
divergence between the old and the new action distributions, which equals the Fisher information
matrix of the policy. Two ways are provided:

* :func:`kl_hessian_vector_product`: double backpropagation through ``∇KL̄`` (Pearlmutter's trick).
  Works for any distribution with a differentiable KL; it is the reference.
* :func:`gauss_newton_vector_product`: the closed form ``F = Jᵀ M J``, with ``J`` the Jacobian of the
  distribution parameters (logits, mean, standard deviation) with respect to the weights and ``M``
  the known Fisher matrix of the distribution in those parameters (:func:`categorical_fisher`,
  :func:`bernoulli_fisher`, :func:`normal_fisher`). At ``θ = θ_old`` the first derivative of the KL in
  the distribution parameters vanishes, so this Gauss-Newton form is the exact Hessian, not an
  approximation. Each product costs one Jacobian-vector and one vector-Jacobian product on a graph
  built once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

#: A linear map on a list of tensors (one per distribution parameter), e.g. the Fisher matrix ``M``.
TensorListMap = Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """
    Concatenate tensors into one 1-D vector (the layout used for all flat parameter vectors).

    :param tensors: tensors of any shapes
    :return: ``cat([t.reshape(-1) for t in tensors])``
    """
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten_like(vector: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """
    Split a flat vector into views shaped like ``like`` (the inverse of :func:`flatten`).

    :param vector: 1-D tensor with ``sum(t.numel() for t in like)`` elements
    :param like: tensors giving the shapes
    :return: views into ``vector``, no copies
    """
    chunks = torch.split(vector, [t.numel() for t in like])
    return [chunk.view_as(t) for chunk, t in zip(chunks, like, strict=True)]


def kl_hessian_vector_product(
    mean_kl: torch.Tensor, params: Sequence[torch.Tensor], damping: float = 0.0
) -> Callable[[torch.Tensor], torch.Tensor]:
    """
    Build ``v ↦ (∇²KL̄ + λI) v`` by double backpropagation.

    ``∇²KL̄ v = ∇_θ (∇_θ KL̄ · v)``: the gradient of the KL is built once with its graph, then each
    product is one backward pass through it.

    :param mean_kl: scalar mean KL divergence, differentiable in ``params``
    :param params: the parameters ``θ`` (all must influence ``mean_kl``)
    :param damping: ``λ >= 0`` added on the diagonal
    :return: function mapping a flat vector ``v`` to the flat product
    """
    grad_kl = flatten(torch.autograd.grad(mean_kl, params, create_graph=True))

    def product(vector: torch.Tensor) -> torch.Tensor:
        hessian_vector = flatten(torch.autograd.grad(grad_kl @ vector, params, retain_graph=True))
        return hessian_vector + damping * vector if damping else hessian_vector

    return product


class JacobianProducts(Protocol):
    """Products with a Jacobian ``J = ∂outputs/∂θ``: :class:`Linearization` (autograd) or a hand-derived one."""

    def jvp(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """``J v``, one tensor per output, for a flat tangent ``v`` in parameter space."""
        ...

    def vjp(self, cotangent: Sequence[torch.Tensor]) -> torch.Tensor:
        """``Jᵀ u``, flat in parameter space, for one cotangent tensor per output."""
        ...


class Linearization:
    """
    Products with the Jacobian ``J = ∂outputs/∂θ`` on a forward graph built once.

    Backpropagating a leaf cotangent ``u`` with ``create_graph=True`` gives ``Jᵀu`` as a function
    that is linear in ``u``; differentiating it in ``u`` along ``v`` gives ``J v``. So a single
    forward graph serves both products, with no second forward pass and no forward-mode AD.

    :param outputs: tensors computed from ``params`` (e.g. logits, or mean and standard deviation)
    :param params: the parameters ``θ``; each must influence some output
    :param cotangent: optional initial ``u``, one tensor per output; ``Jᵀu`` at it is available as
        :attr:`transposed_product_at_cotangent`. Passing the gradient of a loss in the outputs makes
        this the loss gradient in ``θ`` for free.
    """

    def __init__(
        self,
        outputs: Sequence[torch.Tensor],
        params: Sequence[torch.Tensor],
        cotangent: Sequence[torch.Tensor] | None = None,
    ) -> None:
        self.outputs = list(outputs)
        self.params = list(params)
        if cotangent is None:
            cotangent = [torch.zeros_like(output) for output in self.outputs]
        self._cotangent = [c.detach().clone().requires_grad_(True) for c in cotangent]
        transposed = torch.autograd.grad(self.outputs, self.params, grad_outputs=self._cotangent, create_graph=True)
        self._transposed_product = flatten(transposed)

    @property
    def transposed_product_at_cotangent(self) -> torch.Tensor:
        """``Jᵀu`` for the cotangent ``u`` given at construction, detached."""
        return self._transposed_product.detach()

    def jvp(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """
        ``J v``, one tensor per output.

        :param vector: flat tangent in parameter space
        :return: the directional derivative of each output along ``vector``
        """
        grads = torch.autograd.grad(
            self._transposed_product, self._cotangent, grad_outputs=vector, retain_graph=True, allow_unused=True
        )
        return [torch.zeros_like(c) if g is None else g for g, c in zip(grads, self._cotangent, strict=True)]

    def vjp(self, cotangent: Sequence[torch.Tensor]) -> torch.Tensor:
        """
        ``Jᵀ u``, flat.

        :param cotangent: one tensor per output
        :return: flat vector in parameter space
        """
        return flatten(torch.autograd.grad(self.outputs, self.params, grad_outputs=list(cotangent), retain_graph=True))


def gauss_newton_vector_product(
    linearization: JacobianProducts, metric: TensorListMap, damping: float = 0.0
) -> Callable[[torch.Tensor], torch.Tensor]:
    """
    Build ``v ↦ (Jᵀ M J + λI) v``.

    With ``M`` the Fisher matrix of the action distribution in its parameters (already divided by
    the batch size for a mean KL), this is the Hessian of the mean KL at the old policy.

    :param linearization: products with ``J`` (:class:`Linearization`, or a hand-derived equivalent)
    :param metric: ``u ↦ M u`` on one tensor per distribution parameter
    :param damping: ``λ >= 0`` added on the diagonal
    :return: function mapping a flat vector ``v`` to the flat product
    """

    def product(vector: torch.Tensor) -> torch.Tensor:
        fisher_vector = linearization.vjp(metric(linearization.jvp(vector)))
        return fisher_vector + damping * vector if damping else fisher_vector

    return product


def categorical_fisher(probs: torch.Tensor, scale: float = 1.0) -> TensorListMap:
    """
    Fisher matrix of a categorical distribution in its logits: ``M = diag(p) - p pᵀ``.

    The KL between categoricals with logits ``z`` and ``z + dz`` is ``½ dzᵀ M dz + O(dz³)``.

    :param probs: probabilities, shape ``(..., n)``, sum 1 over the last dimension
    :param scale: factor on ``M`` (``1/N`` for a mean over ``N`` states)
    :return: ``[u] ↦ [scale · (p ⊙ u - p (pᵀu))]``
    """
    probs = probs.detach()

    def metric(tangents: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        (u,) = tangents
        weighted = probs * u
        return [scale * (weighted - probs * weighted.sum(dim=-1, keepdim=True))]

    return metric


def bernoulli_fisher(probs: torch.Tensor, scale: float = 1.0) -> TensorListMap:
    """
    Fisher matrix of independent Bernoulli variables in their logits: ``M = diag(p (1 - p))``.

    :param probs: success probabilities, any shape
    :param scale: factor on ``M``
    :return: ``[u] ↦ [scale · p (1 - p) u]``
    """
    weight = scale * (probs * (1.0 - probs)).detach()

    def metric(tangents: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        (u,) = tangents
        return [weight * u]

    return metric


def normal_fisher(std: torch.Tensor, scale: float = 1.0) -> TensorListMap:
    """
    Fisher matrix of independent normal variables in (mean μ, standard deviation σ):
    ``M = diag(1/σ², 2/σ²)``.

    :param std: standard deviations σ, any shape (the mean has the same shape)
    :param scale: factor on ``M``
    :return: ``[u_μ, u_σ] ↦ [scale · u_μ / σ², scale · 2 u_σ / σ²]``
    """
    inverse_variance = scale * std.detach().pow(-2)

    def metric(tangents: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        u_mean, u_std = tangents
        return [inverse_variance * u_mean, 2.0 * inverse_variance * u_std]

    return metric


def block_diagonal(metrics: Sequence[TensorListMap], sizes: Sequence[int]) -> TensorListMap:
    """
    Combine metrics acting on consecutive groups of tensors into one block-diagonal metric.

    :param metrics: one metric per group
    :param sizes: how many tensors each metric takes
    :return: metric on the concatenated list
    """

    def metric(tangents: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        result: list[torch.Tensor] = []
        start = 0
        for block, size in zip(metrics, sizes, strict=True):
            result.extend(block(tangents[start : start + size]))
            start += size
        return result

    return metric
