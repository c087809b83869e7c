"""
Ant-v5 (Ant-v4's observation, rl-zoo3's TRPO preset, seed 0): three checks of where this TRPO's training can part
from sb3-contrib's, besides the update itself (``benchmarks/lockstep.py`` compares that).

1. ``start``: the initial weights, the first rollout buffer and the random generators' states at its end, against
   sb3-contrib's TRPO with the same seed.
2. ``loops``: this TRPO with its lean rollout against the same TRPO with SB3's own loop (``lean_rollout = False``),
   ten updates: bit for bit when a callback reads each step's values (the per-step path), and apart by the float32
   rounding of the batched values otherwise.
3. ``divergence``: how far two runs that differ only by that rounding are apart, update by update: the weights, and
   the largest difference in each rollout's observations, actions, values and returns.

Usage::

    python investigations/ant_learning_gap/trajectory_checks.py start loops divergence
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from sb3_contrib import TRPO as ContribTRPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_trpo_plugin import TRPO

PRESET = dict(batch_size=128, n_steps=1024, gamma=0.99, gae_lambda=0.95, cg_max_steps=25, cg_damping=0.1, n_critic_updates=20)
FIELDS = ("observations", "actions", "rewards", "values", "log_probs", "returns", "advantages")


def model(cls: type, seed: int = 0) -> object:
    env = make_vec_env("Ant-v5", n_envs=2, seed=seed, env_kwargs={"include_cfrc_ext_in_observation": False})
    return cls("MlpPolicy", VecNormalize(env, gamma=0.99), seed=seed, device="cpu", learning_rate=1e-3, **PRESET)


class Recorder(BaseCallback):
    """Keeps the weights at each rollout's start and each rollout's buffer at its end."""

    reads_step_outputs = False  # the lean rollout may batch the values (see ReadingRecorder)

    def __init__(self) -> None:
        super().__init__()
        self.weights: list[torch.Tensor] = []
        self.buffers: list[dict[str, np.ndarray]] = []
        self.generators: tuple[torch.Tensor, np.ndarray] | None = None

    def _on_rollout_start(self) -> None:
        self.weights.append(torch.nn.utils.parameters_to_vector(self.model.policy.parameters()).detach().clone())

    def _on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer
        self.buffers.append({field: getattr(buffer, field).copy() for field in FIELDS})
        if self.generators is None:
            self.generators = (torch.get_rng_state().clone(), np.random.get_state()[1].copy())

    def _on_step(self) -> bool:
        return True


class ReadingRecorder(Recorder):
    """The same, declared as reading the step's values: the lean rollout computes them per step, as SB3's loop."""

    reads_step_outputs = True


def start() -> None:
    runs = {}
    for cls in (TRPO, ContribTRPO):
        m = model(cls)
        initial = {k: v.clone() for k, v in m.policy.state_dict().items()}  # type: ignore[attr-defined]
        recorder = ReadingRecorder()
        m.learn(2048, callback=recorder)  # type: ignore[attr-defined]
        runs[cls.__module__] = (initial, recorder)
    (ours, our_recorder), (theirs, their_recorder) = runs.values()
    print("start: initial weights equal:", all(torch.equal(ours[k], theirs[k]) for k in ours))
    for field in FIELDS:
        difference = np.abs(our_recorder.buffers[0][field] - their_recorder.buffers[0][field]).max()
        print(f"start: first rollout, largest difference in {field}: {difference}")
    assert our_recorder.generators is not None and their_recorder.generators is not None
    print(
        "start: torch and NumPy generators equal at the first rollout's end:",
        torch.equal(our_recorder.generators[0], their_recorder.generators[0]),
        np.array_equal(our_recorder.generators[1], their_recorder.generators[1]),
    )


def loops() -> None:
    for recorder_class, name in ((ReadingRecorder, "per-step values"), (Recorder, "batched values")):
        final = []
        for lean in (True, False):
            m = model(TRPO)
            m.lean_rollout = lean  # type: ignore[attr-defined]
            m.learn(10 * 2048, callback=recorder_class())  # type: ignore[attr-defined]
            final.append(torch.nn.utils.parameters_to_vector(m.policy.parameters()).detach())  # type: ignore[attr-defined]
        difference = (final[0] - final[1]).abs().max()
        print(f"loops ({name}): after 10 updates, largest weight difference lean vs SB3's loop: {difference:.3g}")


def divergence() -> None:
    recorders = []
    for recorder_class in (Recorder, ReadingRecorder):  # batched values against per-step values
        m = model(TRPO)
        recorder = recorder_class()
        m.learn(6 * 2048, callback=recorder)  # type: ignore[attr-defined]
        recorders.append(recorder)
    a, b = recorders
    for i, (wa, wb) in enumerate(zip(a.weights, b.weights, strict=True)):
        differences = " ".join(f"{f} {np.abs(a.buffers[i][f] - b.buffers[i][f]).max():.3g}" for f in FIELDS[:4] + FIELDS[5:6])
        print(f"divergence: rollout {i}: weights {(wa - wb).abs().max():.3g}; {differences}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    for check in sys.argv[1:] or ["start", "loops", "divergence"]:
        {"start": start, "loops": loops, "divergence": divergence}[check]()
