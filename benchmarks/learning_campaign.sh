#!/usr/bin/env bash
# The learning-quality campaign, most informative runs first, one run at a time (finished runs are skipped).
#
# Usage: benchmarks/learning_campaign.sh [CODE_DIR]
#   CODE_DIR: a checkout whose sb3_trpo_plugin is benchmarked (default: this repository). Running from a
#   separate worktree keeps a long campaign on one version of the code while this one changes.
# Results go to this repository's benchmarks/results/learning; `python -m benchmarks.learning report` writes the docs.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
CODE=${1:-$REPO}
PY=${PYTHON:-$REPO/.venv/bin/python}
R=$REPO/benchmarks/results/learning
CLASSIC="CartPole-v1 Acrobot-v1 Pendulum-v1 MountainCarContinuous-v0 LunarLander-v3 LunarLanderContinuous-v3"
cd "$CODE"
export PYTHONPATH=$CODE
run() { "$PY" -m benchmarks.learning run --jobs 1 --results "$R" "$@"; }
run --envs Hopper-v5 HalfCheetah-v5 --algos trpo sb3_contrib_trpo ppo
run --envs $CLASSIC --algos trpo sb3_contrib_trpo --seeds 3 4
run --envs Hopper-v5 HalfCheetah-v5 --algos trpo sb3_contrib_trpo --seeds 3 4
run --envs Pendulum-v1 --algos trpo sb3_contrib_trpo --seeds 5 6 7 8 9
run --envs $CLASSIC --algos ppo --seeds 3 4
