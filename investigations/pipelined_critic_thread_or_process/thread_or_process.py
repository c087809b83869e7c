"""
Issue #30 asked for the critic's fit in another process or a thread, whichever measures faster. This script times
``learn()`` three ways, alternating round by round in one process: the pipelined critic with the package's worker
process, the same with a thread of this process fitting the critic (``CriticHead.fit`` on the same jobs, swapped in for
the worker class), and the sequential update (``pipeline_critic = False``).

Usage (from the repository root, on a quiet machine)::

    python investigations/pipelined_critic_thread_or_process/thread_or_process.py cartpole hopper
"""

import statistics
import sys
import threading
import time

import torch
from stable_baselines3.common.env_util import make_vec_env

from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.trpo import critic_pipeline
from sb3_trpo_plugin.trpo.critic_job import CriticHead


class ThreadWorker:
    def __init__(self):
        self._head, self._thread, self._out = CriticHead(), None, None
        self.process = None

    def ready(self):
        return True

    def wait_until_ready(self, timeout):
        return True

    was_ready = True
    alive = True

    def submit(self, job):
        def run():
            self._out = self._head.fit(job)

        self._thread = threading.Thread(target=run)
        self._thread.start()

    def result(self):
        self._thread.join()
        return self._out

    def close(self):
        pass


def run(kind, env_id, steps, kw):
    critic_pipeline.CriticWorker = ThreadWorker if kind == "thread" else ProcessWorker
    m = TRPO("MlpPolicy", make_vec_env(env_id, n_envs=2, seed=0), seed=1, **kw)
    m.pipeline_critic = kind != "sequential"
    if kind != "sequential":
        assert m.critic_pipeline.wait_until_ready(60)
    t = time.perf_counter()
    m.learn(steps)
    dt = time.perf_counter() - t
    m.critic_pipeline.close()
    return dt


torch.set_num_threads(1)  # as the speed benchmarks
ProcessWorker = critic_pipeline.CriticWorker
configs = {
    "cartpole": ("CartPole-v1", 40960, dict(n_steps=512, batch_size=32, n_critic_updates=20, gamma=0.98, gae_lambda=0.8)),
    "hopper": (
        "Hopper-v5",
        40960,
        dict(n_steps=1024, batch_size=128, n_critic_updates=20, cg_max_steps=25, learning_rate=1e-3),
    ),
}
for name in sys.argv[1:]:
    env_id, steps, kw = configs[name]
    times = {"process": [], "thread": [], "sequential": []}
    for r in range(3):
        for kind in list(times) if r % 2 == 0 else list(reversed(times)):
            times[kind].append(run(kind, env_id, steps, kw))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        name,
        {k: [round(x, 2) for x in v] for k, v in times.items()},
        "sequential/process",
        round(med["sequential"] / med["process"], 3),
        "sequential/thread",
        round(med["sequential"] / med["thread"], 3),
        flush=True,
    )
