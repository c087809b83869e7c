#!/usr/bin/env bash
# The learning-quality campaign: cheapest envs first, one run at a time.
cd /work/wt-learning
export PYTHONPATH=/work/wt-learning
PY=/work/main/.venv/bin/python
R=/work/main/benchmarks/results/learning
$PY benchmarks/learning.py run --jobs 1 --results $R --envs CartPole-v1 Acrobot-v1 Pendulum-v1 MountainCarContinuous-v0 LunarLander-v3 LunarLanderContinuous-v3 --algos trpo sb3_contrib_trpo ppo trpo_kl_per_dim
$PY benchmarks/learning.py run --jobs 1 --results $R --envs Hopper-v5 HalfCheetah-v5 --algos trpo sb3_contrib_trpo ppo
$PY benchmarks/learning.py run --jobs 1 --results $R --envs Hopper-v5 HalfCheetah-v5 --algos trpo_kl_per_dim
$PY benchmarks/learning.py run --jobs 1 --results $R --envs CartPole-v1 Acrobot-v1 Pendulum-v1 MountainCarContinuous-v0 LunarLander-v3 LunarLanderContinuous-v3 --algos trpo sb3_contrib_trpo ppo --seeds 3 4
