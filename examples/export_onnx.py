"""
Deploy a TRPO policy without Python RL libraries: train it, export it to ONNX, run it with onnxruntime alone.

1. Train TRPO on CartPole-v1 under VecNormalize (briefly: the policy only has to do something).
2. Export it: ``export_onnx(model, "cartpole.onnx")`` writes ``predict(obs, deterministic=True)`` as an ONNX
   graph that takes raw observations, the VecNormalize statistics folded in, after checking it against
   ``predict()`` with onnxruntime.
3. Run the graph in a fresh Python process that imports numpy, gymnasium and onnxruntime only (no torch, no
   Stable-Baselines3, not this package), and compare its episode returns with ``predict()``'s on the same seeds.
4. Report the graph's size and its per-step latency on the CPU against ``predict()``'s, measured alternately in
   one process (batches of one observation; onnxruntime on one thread, torch on its default threads).

Needs the export extra (``pip install 'sb3-trpo-plugin[export]'``)::

    python examples/export_onnx.py --timesteps 20000 --output runs/export_onnx
    python examples/export_onnx.py --run-onnx runs/export_onnx/cartpole.onnx   # the deployment side alone

This module imports only the standard library and numpy at the top: the deployment side (``--run-onnx``) is the
code a robot controller or a game server would run, and imports nothing from the training stack.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ENV_ID = "CartPole-v1"
#: Modules the deployment process must not have imported.
TRAINING_STACK = ("torch", "stable_baselines3", "sb3_contrib", "sb3_trpo_plugin")


# --- the deployment side: numpy, gymnasium and onnxruntime only ----------------------------------------------------


def run_onnx_episodes(onnx_path: str, seeds: Sequence[int]) -> dict[str, Any]:
    """
    Play one episode per seed with the ONNX graph (raw observations in, actions out), as a deployment would.

    :param onnx_path: the exported graph
    :param seeds: one environment seed per episode
    :return: the returns, and which modules of the training stack this process imported (none, if all is well)
    """
    import gymnasium as gym
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    env = gym.make(ENV_ID)
    returns = []
    for seed in seeds:
        observation, _ = env.reset(seed=seed)
        done, total = False, 0.0
        while not done:
            # A batch of one raw observation; the graph normalises it with the statistics it was exported with.
            (actions,) = session.run(["actions"], {"observation": observation[None]})
            observation, reward, terminated, truncated, _ = env.step(int(actions[0]))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    imported = sorted(name for name in sys.modules if name.split(".")[0] in TRAINING_STACK)
    return {"returns": returns, "training_stack_imported": imported}


# --- the training side ---------------------------------------------------------------------------------------------


def predict_episodes(model: Any, vec_normalize: Any, seeds: Sequence[int]) -> list[float]:
    """The same episodes with ``model.predict`` on the observations normalised as during training."""
    import gymnasium as gym

    env = gym.make(ENV_ID)
    returns = []
    for seed in seeds:
        observation, _ = env.reset(seed=seed)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(vec_normalize.normalize_obs(observation), deterministic=True)
            observation, reward, terminated, truncated, _ = env.step(int(action))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def step_latencies(
    model: Any, vec_normalize: Any, onnx_path: Path, observations: np.ndarray, rounds: int
) -> tuple[list[float], list[float]]:
    """
    Per-step latency of the graph and of ``predict``, in microseconds, alternating rounds of the same observations.

    :return: one median per round for each: onnxruntime, ``predict`` (with ``normalize_obs``, which the graph includes)
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    batches = [observation[None] for observation in observations]

    def onnx_step(batch: np.ndarray) -> Any:
        return session.run(["actions"], {"observation": batch})

    def predict_step(batch: np.ndarray) -> Any:
        return model.predict(vec_normalize.normalize_obs(batch), deterministic=True)

    timings: dict[str, list[float]] = {"onnx": [], "predict": []}
    for _ in range(rounds):
        for name, step in (("onnx", onnx_step), ("predict", predict_step)):
            per_step = []
            for batch in batches:
                start = time.perf_counter()
                step(batch)
                per_step.append(time.perf_counter() - start)
            timings[name].append(1e6 * statistics.median(per_step))
    return timings["onnx"], timings["predict"]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """
    :param argv: command line arguments (default: ``sys.argv[1:]``)
    :return: the graph's size, both sides' returns, the deployment process's imports, both latencies (µs per step)
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=20_000, help="training budget in environment steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/export_onnx"), help="folder for the model and the graph")
    parser.add_argument("--episodes", type=int, default=5, help="episodes played by each side")
    parser.add_argument("--latency-rounds", type=int, default=5, help="alternating timing rounds of 200 steps each")
    parser.add_argument("--no-progress-bar", action="store_true", help="hide the progress bar")
    parser.add_argument("--run-onnx", metavar="GRAPH", help="only play the episodes with this graph (the deployment side)")
    args = parser.parse_args(argv)
    seeds = [args.seed + 10_000 + episode for episode in range(args.episodes)]
    if args.run_onnx:
        result = run_onnx_episodes(args.run_onnx, seeds)
        print(json.dumps(result))
        return result

    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_trpo_plugin import TRPO, export_onnx

    # 1. Train.
    env = VecNormalize(make_vec_env(ENV_ID, n_envs=4, seed=args.seed), norm_reward=False)
    model = TRPO("MlpPolicy", env, n_steps=512, seed=args.seed)
    model.learn(args.timesteps, progress_bar=not args.no_progress_bar)
    args.output.mkdir(parents=True, exist_ok=True)
    model.save(args.output / "trpo_cartpole")

    # 2. Export: the model's VecNormalize is folded in; the graph is checked against predict() before it is written.
    exported = export_onnx(model, args.output / "cartpole.onnx")
    print(exported.summary())

    # 3. The deployment side, in a fresh process: this very file with --run-onnx.
    command = [sys.executable, __file__, "--run-onnx", str(exported.path), "--episodes", str(args.episodes)]
    command += ["--seed", str(args.seed)]
    deployed = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    vec_normalize = model.get_vec_normalize_env()
    assert vec_normalize is not None
    predicted = predict_episodes(model, vec_normalize, seeds)
    imported = deployed["training_stack_imported"]
    print(f"returns with onnxruntime alone: {deployed['returns']} (training stack imported: {imported})")
    print(f"returns with model.predict():   {predicted}")

    # 4. Size and latency: 200 observations of one episode, alternating rounds.
    observations = []
    sample_env = make_vec_env(ENV_ID, n_envs=1, seed=args.seed)
    observation = sample_env.reset()
    for _ in range(200):
        observations.append(observation[0])
        observation, *_ = sample_env.step(model.predict(vec_normalize.normalize_obs(observation), deterministic=True)[0])
    onnx_us, predict_us = step_latencies(model, vec_normalize, exported.path, np.array(observations), args.latency_rounds)
    onnx_median, predict_median = statistics.median(onnx_us), statistics.median(predict_us)
    print(f"graph: {exported.size_bytes / 1024:.1f} KiB")
    print(
        f"per step (batch of 1, median of {args.latency_rounds} alternating rounds): onnxruntime {onnx_median:.1f} µs, "
        f"predict() {predict_median:.1f} µs ({predict_median / onnx_median:.1f}x); noisy on a busy machine"
    )
    return {
        "size_bytes": exported.size_bytes,
        "onnx_returns": deployed["returns"],
        "predict_returns": predicted,
        "training_stack_imported": deployed["training_stack_imported"],
        "onnx_us": onnx_us,
        "predict_us": predict_us,
    }


if __name__ == "__main__":
    main()
