"""
One MountainCarContinuous-style training run as ``benchmarks/learning.py`` does it, with per-update diagnostics
(goal episodes reached, the policy's pre-clipping action std, VecNormalize's return std, the train/ log keys)
and one change at a time (reward clip, reward normalisation, algorithm keywords). Used for
``docs/mcc_investigation.md``; results append to ``results.jsonl`` beside this script.

A finished investigation, kept to reproduce it: it imports ``load_preset`` and ``EVAL_SEED_OFFSET`` from
``benchmarks/learning.py``.

Usage, from the repository root: ``python -m investigations.mountain_car_continuous.mcc_investigation
MountainCarContinuous-v0 {ours|contrib} SEED [--clip-reward 1e9 | --norm-reward 0 |
--kw '{"normalize_advantage": false}'] [--trace FILE]``
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.vec_env import VecNormalize, sync_envs_normalization

from benchmarks.learning_setup import EVAL_SEED_OFFSET, load_preset  # the benchmark whose runs this one repeats

torch.set_num_threads(1)  # as benchmarks/learning.py

p = argparse.ArgumentParser()
p.add_argument("env")
p.add_argument("algo")
p.add_argument("seed", type=int)
p.add_argument("--variant", default="base")
p.add_argument("--kw", default="{}", help="JSON overrides of algorithm kwargs")
p.add_argument("--norm-reward", default=None, choices=["0", "1"])
p.add_argument("--clip-reward", type=float, default=None)
p.add_argument("--timesteps", type=int, default=None)
p.add_argument("--out", default=str(Path(__file__).parent / "results.jsonl"))
p.add_argument("--trace", default=None)
a = p.parse_args()

preset = load_preset("trpo" if a.algo != "ppo" else "ppo", a.env)
budget = a.timesteps or preset.n_timesteps
nk = dict(preset.normalize_kwargs)
if a.norm_reward is not None:
    nk["norm_reward"] = a.norm_reward == "1"
if a.clip_reward is not None:
    nk["clip_reward"] = a.clip_reward
train_env = make_vec_env(a.env, n_envs=preset.n_envs, seed=a.seed)
eval_env = make_vec_env(a.env, n_envs=1, seed=a.seed + EVAL_SEED_OFFSET)
if preset.normalize:
    train_env = VecNormalize(train_env, **nk)
    eval_env = VecNormalize(eval_env, **{**nk, "training": False, "norm_reward": False})
kwargs = dict(preset.kwargs)
kwargs.update(json.loads(a.kw))
if a.algo == "ours":
    from sb3_trpo_plugin import TRPO as cls
elif a.algo == "contrib":
    from sb3_contrib import TRPO as cls
else:
    from stable_baselines3 import PPO as cls


class Cap(KVWriter):
    def __init__(self):
        self.rows = []

    def write(self, kv, ex, step=0):
        self.rows.append(
            {
                k: (float(v) if isinstance(v, (int, float, np.floating)) else None)
                for k, v in kv.items()
                if k.startswith("train/") or k.startswith("rollout/")
            }
        )

    def close(self):
        pass


cap = Cap()
model = cls(preset.policy, train_env, seed=a.seed, verbose=0, device="cpu", **kwargs)
model.set_logger(Logger(folder=None, output_formats=[cap]))


class Trace(BaseCallback):
    def __init__(self):
        super().__init__()
        self.goal_rewards = []
        self.eps = []
        self.upd = []
        self.n_goal = 0
        self.first_goal = None

    def _on_step(self):
        for info, done in zip(self.locals["infos"], self.locals["dones"], strict=True):
            if "episode" in info:
                r, length = info["episode"]["r"], info["episode"]["l"]
                goal = bool(done and not info.get("TimeLimit.truncated", False))
                self.eps.append((self.num_timesteps, float(r), int(length), goal))
                if goal:
                    self.goal_rewards.append(
                        float(self.locals["rewards"][len(self.goal_rewards) * 0 + list(self.locals["infos"]).index(info)])
                    )
                    self.n_goal += 1
                    if self.first_goal is None:
                        self.first_goal = self.num_timesteps
        return True

    def _on_rollout_end(self):
        pol = self.model.policy
        std = (
            float(pol.action_dist.get_std(pol.log_std).mean())
            if getattr(pol, "use_sde", False)
            else (float(torch.exp(pol.log_std).mean()) if hasattr(pol, "log_std") else float("nan"))
        )
        rec = {
            "ret_std": float(np.sqrt(self.training_env.ret_rms.var)) if hasattr(self.training_env, "ret_rms") else None,
            "t": self.num_timesteps,
            "std_before": std,
            "goals_so_far": self.n_goal,
        }
        if isinstance(self.model.action_space, __import__("gymnasium").spaces.Box):
            with torch.no_grad():
                obs = torch.as_tensor(self.model.rollout_buffer.observations.reshape(-1, *self.model.observation_space.shape))
                d = pol.get_distribution(obs).distribution
                rec["act_std"] = float(d.stddev.mean())
                rec["abs_mean"] = float(d.mean.abs().mean())
        self.upd.append(rec)


tr = Trace()
t0 = time.time()
model.learn(total_timesteps=budget, callback=tr)
model.logger.dump(model.num_timesteps)
if preset.normalize:
    sync_envs_normalization(train_env, eval_env)
rets, _ = evaluate_policy(model, eval_env, n_eval_episodes=20, deterministic=True, return_episode_rewards=True)
res = {
    "env": a.env,
    "algo": a.algo,
    "seed": a.seed,
    "variant": a.variant,
    "final": float(np.mean(rets)),
    "n_goal_episodes": tr.n_goal,
    "n_episodes": len(tr.eps),
    "first_goal_step": tr.first_goal,
    "goal_norm_r_first5": [round(x, 2) for x in tr.goal_rewards[:5]],
    "wall": time.time() - t0,
}
print(json.dumps(res), flush=True)
with open(a.out, "a") as f:
    f.write(json.dumps(res) + "\n")
if a.trace:
    Path(a.trace).write_text(json.dumps({"res": res, "eps": tr.eps, "upd": tr.upd, "log": cap.rows}))
