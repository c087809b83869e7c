"""
Hash of a short Ant-v5 training (rl-zoo3's settings, Ant-v4's observation, seed 0, the critic fitted in-process) to tell
whether two checkouts train bit for bit alike: ``PYTHONPATH=<checkout> python same_code_hash.py 102400`` at each.
The settings are written out rather than read from ``benchmarks.learning_setup``, whose functions changed between the
checkouts compared: only the package is imported from the checkout.
"""

import hashlib
import sys

import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

import sb3_trpo_plugin
from sb3_trpo_plugin import TRPO


def main(steps: int) -> None:
    torch.set_num_threads(1)  # as the campaign's runs
    env = make_vec_env("Ant-v5", n_envs=2, seed=0, env_kwargs={"include_cfrc_ext_in_observation": False})
    model = TRPO(
        "MlpPolicy", VecNormalize(env), n_steps=1024, batch_size=128, n_critic_updates=20, learning_rate=1e-3,
        cg_max_steps=25, cg_damping=0.1, gae_lambda=0.95, gamma=0.99, target_kl=0.01, seed=0, verbose=0,
    )  # fmt: skip
    if hasattr(model, "pipeline_critic"):  # bit for bit the same weights either way; in-process is simpler
        model.pipeline_critic = False
    model.learn(steps)
    digest = hashlib.sha256()
    for tensor in model.policy.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    print(sb3_trpo_plugin.__file__, digest.hexdigest()[:16])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8192)
