"""
Is the late lock-step disagreement on HalfCheetah-v5 (``target_kl`` 0.04) float32 rounding in the conjugate gradient?

The lock-step run of ``investigations/halfcheetah_kl_direction/`` fed this TRPO sb3-contrib's rollouts and weights at
each of 488 updates: the two step directions agreed to ``1 - cos`` of 5e-13 at the first updates but only to 1.1e-3 at
the worst late one (update 486), where Ant's lock-step stayed near 4e-11. Both compute ``x ≈ (F + λI)⁻¹ g`` by 25
conjugate-gradient iterations in float32, the Fisher products in two ways (this TRPO in closed form, sb3-contrib by
double backpropagation of the KL). If the disagreement is rounding, then at those late states:

* the same computation in float64 agrees with itself across the two Fisher products (closed form, double backprop) to
  near float64 precision, so the two methods are the same maths there too;
* each float32 direction, this TRPO's and sb3-contrib's, is about as far from the float64 one as they are from each
  other (neither is the better one);
* the system is ill-conditioned and 25 iterations leave it far from solved, which is what lets rounding of ~1e-7 in
  ``F v`` and ``g`` grow to ~1e-3 in the direction (the Krylov iterates depend on every product's rounding).

This script replays sb3-contrib's seed-0 leader of that lock-step run (same settings, seed and code path, so the same
trajectory: the lock-step tool restores the RNG around its followers) and at chosen updates takes its weights and
rollout, and computes: this TRPO's CG direction in float32 and float64, with each Fisher product; sb3-contrib's actual
step (the leader's update, float32); the float64 solve run to convergence (up to 500 iterations); the largest
eigenvalue of ``F`` by power iteration, hence the condition number's bound ``(λ_max + λ) / λ``. Rows are written as
they come (``--out``, JSON lines).

Usage: ``PYTHONPATH=. python investigations/halfcheetah_cg_rounding/cg_rounding.py --updates 20 100 200 300 440 442 486
--out results/cg_rounding_seed0.jsonl``
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common import policies, preprocessing
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from benchmarks.learning_setup import load_preset, make_envs, make_model
from benchmarks.lockstep import flat_state
from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.trust_region.conjugate_gradient import conjugate_gradient

ENV_ID = "HalfCheetah-v5"
ORIGINAL_PREPROCESS = policies.preprocess_obs
ITERATIONS = (5, 10, 15, 20)


def preprocess_as(dtype: torch.dtype) -> None:
    """SB3 casts observations to float32 in preprocessing; a float64 policy needs them as float64."""

    def preprocess(*args: Any, **kwargs: Any) -> Any:
        observations: Any = preprocessing.preprocess_obs(*args, **kwargs)  # a Box observation here: one tensor
        return observations.to(dtype)

    policies.preprocess_obs = preprocess if dtype == torch.float64 else ORIGINAL_PREPROCESS


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """:return: ``1 - cos(a, b)`` in float64"""
    a, b = a.double(), b.double()
    return float(1 - a @ b / (a.norm() * b.norm()))


def actor_names(model: TRPO) -> list[str]:
    """The state-dict names of the actor's parameters, in the order of this TRPO's flat vectors."""
    names = {id(p): name for name, p in model.policy.named_parameters()}
    return [names[id(p)] for p in model._actor_params]


def directions(
    follower: TRPO, weights: dict[str, torch.Tensor], buffer: Any, numpy_state: Any, cg_steps: int
) -> dict[str, Any]:
    """This TRPO's CG directions at the leader's weights and rollout, float32 and float64, both Fisher products."""
    out: dict[str, Any] = {}
    for dtype in (torch.float32, torch.float64):
        for fisher in ("auto", "kl_hessian"):
            follower.policy.float()
            follower.policy.load_state_dict(weights)
            follower.policy.to(dtype)
            preprocess_as(dtype)
            follower.fisher_product = fisher
            follower.rollout_buffer = copy.deepcopy(buffer)
            np.random.set_state(numpy_state)  # the row order the lock-step follower and the leader had
            rollout = next(follower.rollout_buffer.get(batch_size=None))
            rollout = type(rollout)(*(t.to(dtype) if t.is_floating_point() else t for t in rollout))
            batch = follower._policy_batch(rollout)
            linearized = follower.make_policy_step().linearize(batch)
            key = f"{'f32' if dtype == torch.float32 else 'f64'}_{'closed' if fisher == 'auto' else 'kl_hessian'}"
            solve = conjugate_gradient(linearized.fisher_product, linearized.gradient, cg_steps, follower.cg_residual_tol)
            out[key] = solve.solution.detach().double()
            out[key + "_residual"] = float(solve.residual_norm / linearized.gradient.norm())
            for k in ITERATIONS:  # the directions after fewer iterations: how the differences grow
                partial = conjugate_gradient(linearized.fisher_product, linearized.gradient, k, follower.cg_residual_tol)
                out[f"{key}_at_{k}"] = partial.solution.detach().double()
            if key == "f64_closed":
                long = conjugate_gradient(linearized.fisher_product, linearized.gradient, 500, 1e-28)
                out["f64_converged"] = long.solution.detach()
                out["f64_converged_steps"] = long.n_steps
                out["f64_converged_residual"] = float(long.residual_norm / linearized.gradient.norm())
                vector = torch.randn(linearized.gradient.shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
                for _ in range(60):  # power iteration: the largest eigenvalue of F + λI
                    image = linearized.fisher_product(vector)
                    vector = image / image.norm()
                out["lambda_max"] = float(vector @ linearized.fisher_product(vector)) - follower.cg_damping
                # float32's rounding, simulated in float64: g with each entry off by a relative 2^-24 (its unit
                # roundoff), and every product F v so too, fresh each time.
                noise = torch.Generator().manual_seed(1)
                gradient = linearized.gradient * (1 + 2**-24 * torch.randn(vector.shape, generator=noise, dtype=dtype))
                out["f64_perturbed_g"] = conjugate_gradient(
                    linearized.fisher_product, gradient, cg_steps, follower.cg_residual_tol
                ).solution.detach()

                def noisy_product(
                    v: torch.Tensor, product: Any = linearized.fisher_product, noise: Any = noise, dtype: Any = dtype
                ) -> torch.Tensor:
                    image = product(v)
                    return image * (1 + 2**-24 * torch.randn(image.shape, generator=noise, dtype=dtype))

                out["f64_noisy_products"] = conjugate_gradient(
                    noisy_product, linearized.gradient, cg_steps, follower.cg_residual_tol
                ).solution.detach()
    follower.policy.float()
    preprocess_as(torch.float32)
    return out


class Probe(BaseCallback):
    """At the chosen updates: this TRPO's directions at the leader's state, then the leader's own step."""

    def __init__(self, follower: TRPO, updates: set[int], out: Path, cg_steps: int) -> None:
        super().__init__()
        self.follower, self.updates, self.out, self.cg_steps = follower, updates, out, cg_steps
        self.names = actor_names(follower)
        self.pending: dict[str, Any] | None = None

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        leader = self.model
        assert isinstance(leader, OnPolicyAlgorithm)  # sb3-contrib's TRPO
        update = leader._n_updates + 1  # the lock-step table's number for the update about to run
        if update not in self.updates:
            return
        numpy_state, torch_state = np.random.get_state(), torch.get_rng_state()
        weights = copy.deepcopy(leader.policy.state_dict())
        found = directions(self.follower, weights, leader.rollout_buffer, numpy_state, self.cg_steps)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        self.pending = {"update": update, "before": flat_state(leader.policy, self.names), **found}

    def _on_rollout_start(self) -> None:
        if self.pending is None:
            return
        found, self.pending = self.pending, None
        leader_step = flat_state(self.model.policy, self.names) - found["before"]
        truth = found["f64_closed"]
        lam = self.follower.cg_damping
        row: dict[str, Any] = {
            "update": found["update"],
            "timesteps": self.model.num_timesteps,
            "leader_kl": float(self.model.logger.name_to_value.get("train/kl_divergence_loss", float("nan"))),
            "action_std": float(torch.exp(self.model.policy.state_dict()["log_std"]).mean()),
            "lambda_max": found["lambda_max"],
            "condition_bound": (found["lambda_max"] + lam) / lam,
            "cg_relative_residual_f32_closed": found["f32_closed_residual"],
            "cg_relative_residual_f64_closed": found["f64_closed_residual"],
            "converged_steps": found["f64_converged_steps"],
            "converged_relative_residual": found["f64_converged_residual"],
            # 1 - cos between directions
            "f32_closed_vs_sb3_contrib": cosine(found["f32_closed"], leader_step),
            "f32_closed_vs_f32_kl_hessian": cosine(found["f32_closed"], found["f32_kl_hessian"]),
            "f64_closed_vs_f64_kl_hessian": cosine(truth, found["f64_kl_hessian"]),
            "f32_closed_vs_f64": cosine(found["f32_closed"], truth),
            "f32_kl_hessian_vs_f64": cosine(found["f32_kl_hessian"], truth),
            "sb3_contrib_vs_f64": cosine(leader_step, truth),
            "f64_25_steps_vs_converged": cosine(truth, found["f64_converged"]),
            "f64_vs_f64_perturbed_g": cosine(truth, found["f64_perturbed_g"]),
            "f64_vs_f64_noisy_products": cosine(truth, found["f64_noisy_products"]),
        }
        for k in ITERATIONS:
            row[f"at_{k}_f32_closed_vs_f64"] = cosine(found[f"f32_closed_at_{k}"], found[f"f64_closed_at_{k}"])
            row[f"at_{k}_f64_closed_vs_f64_kl_hessian"] = cosine(found[f"f64_closed_at_{k}"], found[f"f64_kl_hessian_at_{k}"])
        with open(self.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(time.strftime("%H:%M:%S"), json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, nargs="+", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    preset = load_preset("sb3_contrib_trpo", ENV_ID)
    silent = Logger(folder=None, output_formats=[])
    leader = make_model("sb3_contrib_trpo", preset, make_envs(ENV_ID, preset, args.seed)[0], args.seed, silent)
    follower = make_model("trpo", preset, make_envs(ENV_ID, preset, args.seed + 1)[0], args.seed, silent)
    args.out.unlink(missing_ok=True)
    probe = Probe(follower, set(args.updates), args.out, preset.kwargs["cg_max_steps"])
    leader.learn(max(args.updates) * leader.n_steps * leader.n_envs + 1, callback=probe)


if __name__ == "__main__":
    main()
