"""
Per-step latency of exported ONNX graphs on the CPU against ``model.predict(deterministic=True)``, and their sizes.

For each kind of policy (untrained: the cost does not depend on the weights) the graph is exported, then one
observation at a time goes through onnxruntime and through ``predict``, both on one thread (``--torch-threads``:
on a loaded machine torch's thread pool waits for busy cores, which would be measured instead of the policy), in
alternating rounds of the same observations in one process, so that both see the same machine load.
``predict`` is given what the graph takes care of itself: ``VecNormalize.normalize_obs``, the masks, the LSTM
states. Prints a Markdown table (medians over rounds of each round's median step)::

    python -m benchmarks.onnx_latency --rounds 7 --steps 300
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnvWrapper, VecNormalize

from sb3_trpo_plugin import TRPO, MaskableTRPO, RecurrentTRPO, export_onnx
from sb3_trpo_plugin.envs import RandomEnv

#: A step of one side: the observation's index → anything (the result is dropped).
Step = Callable[[int], Any]


@dataclass(frozen=True)
class Kind:
    """
    One kind of policy to time.

    :param label: the table's row
    :param make: builds the model
    :param masks: the graph takes action masks (all valid here)
    """

    label: str
    make: Callable[[], Any]
    masks: bool = False


def _pendulum_normalized() -> Any:
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=0))
    env.reset()
    return TRPO("MlpPolicy", env, use_sde=True, n_steps=64, batch_size=64, seed=0)


KINDS = {
    "mlp_discrete": Kind("TRPO MlpPolicy, CartPole-v1 (Discrete)", lambda: TRPO("MlpPolicy", "CartPole-v1", seed=0)),
    "mlp_gsde_vecnormalize": Kind("TRPO MlpPolicy + gSDE, Pendulum-v1 under VecNormalize (Box)", _pendulum_normalized),
    "masked": Kind(
        "MaskableTRPO MlpPolicy, 20 actions (masks)",
        lambda: MaskableTRPO("MlpPolicy", make_vec_env(lambda: RandomEnv(spaces.Discrete(20)), n_envs=1), seed=0),
        masks=True,
    ),
    "recurrent": Kind(
        "RecurrentTRPO MlpLstmPolicy (LSTM 256), CartPole-v1", lambda: RecurrentTRPO("MlpLstmPolicy", "CartPole-v1", seed=0)
    ),
    "cnn": Kind(
        "TRPO CnnPolicy (NatureCNN), 84x84x3 images",
        lambda: TRPO(
            "CnnPolicy",
            make_vec_env(lambda: RandomEnv(spaces.Discrete(6), spaces.Box(0, 255, (84, 84, 3), np.uint8)), n_envs=1),
            n_steps=64,
            batch_size=64,
            seed=0,
        ),
    ),
}


def median_step_microseconds(step: Step, n_steps: int) -> float:
    """:return: the median over ``n_steps`` calls of ``step(i)``, in microseconds"""
    durations = []
    for index in range(n_steps):
        start = time.perf_counter()
        step(index)
        durations.append(time.perf_counter() - start)
    return 1e6 * statistics.median(durations)


def alternate(steps: dict[str, Step], n_steps: int, rounds: int) -> dict[str, list[float]]:
    """
    Time the sides in alternating rounds (the first side of each round rotates), so that load drifts hit both.

    :return: each side's per-round median step, in microseconds
    """
    names = list(steps)
    timings: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
            timings[name].append(median_step_microseconds(steps[name], n_steps))
    return timings


def sides(model: Any, path: Path, kind: Kind, n_steps: int) -> dict[str, Step]:
    """The graph's step and ``predict``'s, on the same observations (one at a time, as an agent acts)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    env = model.get_env()
    while isinstance(env, VecEnvWrapper):  # the raw observations: below VecNormalize and VecTransposeImage
        env = env.venv
    space = env.observation_space
    space.seed(0)
    observations = [np.asarray(space.sample())[None] for _ in range(n_steps)]
    vec_normalize = model.get_vec_normalize_env()
    inputs: dict[str, np.ndarray] = {}
    keywords: dict[str, Any] = {}
    if kind.masks:
        inputs["action_masks"] = np.ones((1, int(model.action_space.n)), dtype=bool)
        keywords["action_masks"] = inputs["action_masks"]
    lstm = getattr(model.policy, "lstm_actor", None)
    if lstm is not None:
        zeros = np.zeros((lstm.num_layers, 1, lstm.hidden_size), dtype=np.float32)
        inputs.update(lstm_hidden=zeros, lstm_cell=zeros, episode_starts=np.zeros(1, dtype=bool))
        keywords.update(state=(zeros, zeros), episode_start=np.zeros(1, dtype=bool))

    def onnx_step(index: int) -> Any:
        return session.run(None, {"observation": observations[index], **inputs})

    def predict_step(index: int) -> Any:
        observation = observations[index] if vec_normalize is None else vec_normalize.normalize_obs(observations[index])
        return model.predict(observation, deterministic=True, **keywords)

    return {"onnx": onnx_step, "predict": predict_step}


def table(rows: Sequence[tuple[str, int, float, float]]) -> str:
    """
    :param rows: label, graph size in bytes, onnxruntime's and ``predict``'s median step in microseconds
    :return: the Markdown table
    """
    lines = ["| policy | graph | onnxruntime | `predict()` | ratio |", "| --- | ---: | ---: | ---: | ---: |"]
    for label, size, onnx_us, predict_us in rows:
        lines.append(
            f"| {label} | {size / 1024:.0f} KiB | {onnx_us:.0f} µs | {predict_us:.0f} µs | {predict_us / onnx_us:.1f}× |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[tuple[str, int, float, float]]:
    """
    :param argv: command line arguments (default: ``sys.argv[1:]``)
    :return: the table's rows
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds")
    parser.add_argument("--steps", type=int, default=300, help="single-observation steps per round and side")
    parser.add_argument("--only", nargs="+", choices=list(KINDS), default=list(KINDS), help="the kinds to time")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch's intra-op threads (onnxruntime: one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.torch_threads)  # a benchmark's own setting, never the library's
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.only:
            kind = KINDS[name]
            model = kind.make()
            exported = export_onnx(model, Path(folder) / f"{name}.onnx")
            timings = alternate(sides(model, exported.path, kind, args.steps), args.steps, args.rounds)
            rows.append(
                (kind.label, exported.size_bytes, statistics.median(timings["onnx"]), statistics.median(timings["predict"]))
            )
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
