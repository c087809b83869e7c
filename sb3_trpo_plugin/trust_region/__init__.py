"""
The maths of one trust-region step, on tensors and callables only (nothing here knows SB3).

- :mod:`.conjugate_gradient`: solve ``F x = g`` from products ``v ↦ F v``;
- :mod:`.fisher`: Fisher-vector products of the mean KL (closed form and double backprop);
- :mod:`.line_search`: maximal step ``β = sqrt(2δ / xᵀFx)`` and the backtracking line search.
"""

from sb3_trpo_plugin.trust_region.conjugate_gradient import (
    ConjugateGradientResult,
    ConjugateGradientStatus,
    conjugate_gradient,
)
from sb3_trpo_plugin.trust_region.fisher import (
    Linearization,
    bernoulli_fisher,
    block_diagonal,
    categorical_fisher,
    flatten,
    gauss_newton_vector_product,
    kl_hessian_vector_product,
    normal_fisher,
    unflatten_like,
)
from sb3_trpo_plugin.trust_region.line_search import LineSearchResult, backtracking_line_search, max_step_size

__all__ = [
    "ConjugateGradientResult",
    "ConjugateGradientStatus",
    "LineSearchResult",
    "Linearization",
    "backtracking_line_search",
    "bernoulli_fisher",
    "block_diagonal",
    "categorical_fisher",
    "conjugate_gradient",
    "flatten",
    "gauss_newton_vector_product",
    "kl_hessian_vector_product",
    "max_step_size",
    "normal_fisher",
    "unflatten_like",
]
