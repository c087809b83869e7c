#!/usr/bin/env bash
# The MuJoCo learning campaign of issue #24, most informative runs first, resumable (finished runs are skipped).
#
# Usage: benchmarks/mujoco_campaign.sh [CODE_DIR] [JOBS]
#   CODE_DIR: a checkout whose sb3_trpo_plugin is benchmarked (default: this repository); a separate worktree keeps
#   a campaign of hours on one version of the code. JOBS: runs at a time (default 2).
# Results: benchmarks/results/mujoco_1m of this repository; `python -m benchmarks.mujoco_report` renders them.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
CODE=${1:-$REPO}
JOBS=${2:-2}
PY=${PYTHON:-$REPO/.venv/bin/python}
R=$REPO/benchmarks/results/mujoco_1m
cd "$CODE"
export PYTHONPATH=$CODE
run() { "$PY" -m benchmarks.learning run --jobs "$JOBS" --results "$R" --timesteps 1000000 "$@"; }
# 1. Ant-v5 (Ant-v4's observation): ten seeds of both TRPOs.
run --envs Ant-v5 --algos trpo sb3_contrib_trpo --seeds 0 1 2 3 4 5 6 7 8 9
# 2. The 1M table: both TRPOs, three seeds.
run --envs Hopper-v5 HalfCheetah-v5 Walker2d-v5 Swimmer-v5 --algos trpo sb3_contrib_trpo --seeds 0 1 2
# 3. The ablations of this TRPO's fast paths on Ant-v5 (three seeds), two more seeds of the table, two of the ablations.
ABLATIONS="trpo_sb3_loop trpo_kl_hessian trpo_autograd_critic trpo_plain_adam"
run --envs Ant-v5 --algos $ABLATIONS --seeds 0 1 2
run --envs Hopper-v5 HalfCheetah-v5 Walker2d-v5 Swimmer-v5 --algos trpo sb3_contrib_trpo --seeds 3 4
run --envs Ant-v5 --algos $ABLATIONS --seeds 3 4
# 4. Humanoid-v5 at rl-zoo3's budget for it (2M steps): five seeds of both TRPOs.
"$PY" -m benchmarks.learning run --jobs "$JOBS" --results "$R" --timesteps 2000000 --envs Humanoid-v5 \
    --algos trpo sb3_contrib_trpo --seeds 0 1 2 3 4
# 5. Ten seeds of both TRPOs on Hopper-v5 and Walker2d-v5 (docs/benchmarks.md, "Against the published numbers").
run --envs Hopper-v5 Walker2d-v5 --algos trpo sb3_contrib_trpo --seeds 5 6 7 8 9
# 6. Ten seeds of both TRPOs on HalfCheetah-v5 (docs/benchmarks.md, "Ten seeds on HalfCheetah-v5").
run --envs HalfCheetah-v5 --algos trpo sb3_contrib_trpo --seeds 5 6 7 8 9
# 7. Ten more seeds of both TRPOs on HalfCheetah-v5 (docs/benchmarks.md, "Twenty seeds on HalfCheetah-v5").
run --envs HalfCheetah-v5 --algos trpo sb3_contrib_trpo --seeds 10 11 12 13 14 15 16 17 18 19
# 8. Ten seeds of both TRPOs on Swimmer-v5 (docs/benchmarks.md, "Ten seeds on Swimmer-v5").
run --envs Swimmer-v5 --algos trpo sb3_contrib_trpo --seeds 5 6 7 8 9
# 9. Seven seeds of both TRPOs on Humanoid-v5 at 2M steps (docs/benchmarks.md, "Humanoid-v5 at 2M steps").
"$PY" -m benchmarks.learning run --jobs "$JOBS" --results "$R" --timesteps 2000000 --envs Humanoid-v5 \
    --algos trpo sb3_contrib_trpo --seeds 5 6
