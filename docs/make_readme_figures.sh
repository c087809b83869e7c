#!/usr/bin/env bash
# Regenerates docs/cartpole_trpo_vs_ppo.png, the learning curves of docs/cli.md (about 10 minutes on 2 cores):
# TRPO through `sb3-trpo train`, PPO through rl-zoo3, both with rl-zoo3's tuned CartPole-v1 settings, 3 seeds each.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
RUNS=${RUNS:-runs/readme}
export OMP_NUM_THREADS=1  # small networks: one thread per run is fastest
for seed in 0 1 2; do
    $PYTHON -m sb3_trpo_plugin train --env CartPole-v1 --seed "$seed" --log-folder "$RUNS/trpo_seed$seed" --no-progress-bar
    $PYTHON -m rl_zoo3.train --algo ppo --env CartPole-v1 --seed "$seed" -f "$RUNS/zoo" --eval-freq -1 --verbose 0
done
$PYTHON -m sb3_trpo_plugin plot "$RUNS" -o docs/cartpole_trpo_vs_ppo.png --title "CartPole-v1: TRPO (sb3-trpo train) vs PPO (rl-zoo3), 3 seeds"
