"""
Exact replicas of SB3 and torch computations, each faster than the computation it replicates, and the proofs that
they still replicate it under the releases installed.

Each module says what it replicates; each replica serves only what :mod:`.plain` (the one recogniser of plain modules)
and its own recogniser accept, and only once it has been proved against the upstream computation on a small probe
where it runs (:mod:`.proofs`: a mismatch leaves the model to the upstream computation and warns once with a
:class:`FastPathMismatchWarning`). The pure maths they rest on stays in :mod:`sb3_trpo_plugin.trust_region` and
:mod:`sb3_trpo_plugin.critic`; this package connects SB3's and torch's objects to it.

- :mod:`.plain`: which modules compute what their class's ``forward`` computes, and plain MLPs;
- :mod:`.proofs`: the verdicts of each object's fast paths, the comparisons, the warnings;
- :mod:`.layers`, :mod:`.heads`, :mod:`.eligibility`, :mod:`.inference`: the lean rollout inference (SB3's modules as
  torch calls, the sampling heads, which policies it replicates, the inference itself), replicating
  ``ActorCriticPolicy.forward``;
- :mod:`.actor_jacobian`: the Jacobian of a plain MLP actor's distribution parameters, replicating autograd's;
- :mod:`.critic_gradient`: the gradient of a plain MLP critic's regression, replicating autograd's;
- :mod:`.fused_adam`: the critic's optimiser step, replicating ``Adam.step`` around torch's fused kernel.
"""

from sb3_trpo_plugin.replicas.proofs import CPUOnlyRolloutWarning, FastPathMismatchWarning, FastPathWarning

__all__ = ["CPUOnlyRolloutWarning", "FastPathMismatchWarning", "FastPathWarning"]
