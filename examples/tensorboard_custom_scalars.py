"""
Custom TensorBoard scalars through an SB3 callback.

TRPO already logs SB3's rollout and time scalars plus its own under ``train/`` (KL of the step, line-search and
conjugate-gradient diagnostics, value loss). A callback can add any other quantity: here, per rollout, the
policy's mean entropy on the states it visited and the mean absolute pole angle of CartPole. Values recorded
with ``self.logger.record`` go wherever the model logs (TensorBoard, stdout, CSV).

Run, then view: ``python examples/tensorboard_custom_scalars.py`` and ``tensorboard --logdir runs/tensorboard_custom``.
Shortened run: ``python examples/tensorboard_custom_scalars.py --timesteps 1024 --output /tmp/tb``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_trpo_plugin import TRPO

POLE_ANGLE = 2  # index of the pole angle in CartPole's observation


class RolloutScalarsCallback(BaseCallback):
    """Records ``custom/policy_entropy`` and ``custom/mean_abs_pole_angle`` once per rollout."""

    def _on_rollout_start(self) -> None:
        self._pole_angles: list[np.ndarray] = []

    def _on_step(self) -> bool:
        # self.locals holds the rollout loop's variables: new_obs, rewards, dones, infos, actions...
        self._pole_angles.append(np.abs(self.locals["new_obs"][:, POLE_ANGLE]))
        return True  # False would stop training

    def _on_rollout_end(self) -> None:
        # The rollout buffer holds the states just visited; evaluate the policy's distribution on them.
        observations = torch.as_tensor(self.model.rollout_buffer.observations, device=self.model.device)
        with torch.no_grad():
            entropy = self.model.policy.get_distribution(observations.flatten(0, 1)).entropy()
        self.logger.record("custom/policy_entropy", float(entropy.mean()))
        self.logger.record("custom/mean_abs_pole_angle", float(np.mean(self._pole_angles)))


def main(argv: Sequence[str] | None = None) -> Path:
    """
    :param argv: command line arguments (default: ``sys.argv[1:]``)
    :return: the folder of this run's TensorBoard event file
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=50_000, help="training budget in environment steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/tensorboard_custom"), help="TensorBoard log folder")
    parser.add_argument("--no-progress-bar", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    env = make_vec_env("CartPole-v1", n_envs=2, seed=args.seed)
    model = TRPO("MlpPolicy", env, n_steps=512, batch_size=512, seed=args.seed, tensorboard_log=str(args.output))
    model.learn(
        args.timesteps, callback=RolloutScalarsCallback(), tb_log_name="TRPO_custom", progress_bar=not args.no_progress_bar
    )
    log_dir = Path(model.logger.get_dir())
    print(f"TensorBoard logs (custom/policy_entropy, custom/mean_abs_pole_angle) in {log_dir}")
    print(f"View them with: tensorboard --logdir {args.output}")
    return log_dir


if __name__ == "__main__":
    main()
