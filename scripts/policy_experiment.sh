#!/usr/bin/env bash
# The figures of docs/policy.md, on data from `sim2real render`:
#   quick pretrained on 2 CPU cores (<= 10 min), zero-shot action MSE on a `tabletop` render (random init
#   vs sim-pretrained), closed-loop coverage vs a random policy, data-loading speed.
#
#   SIM=/tmp/pol/sim100.zarr REAL=/tmp/pol/tabletop30.zarr RUNS=/tmp/pol bash scripts/policy_experiment.sh
set -euo pipefail
SIM=${SIM:-/tmp/pol/sim100.zarr}
REAL=${REAL:-/tmp/pol/tabletop30.zarr}
RUNS=${RUNS:-/tmp/pol}
S2R="python -m sim2real.cli"
export SIM2REAL_PROGRESS=${SIM2REAL_PROGRESS:-0}

[ -d "$SIM" ] || $S2R render --out "$SIM" --episodes 100 --seed 0
[ -d "$REAL" ] || $S2R render --out "$REAL" --episodes 30 --seed 5000 --appearance tabletop
python scripts/bench_policy_data.py --store "$SIM" --threads 1
# 1. quick preset, two CPU cores, ten minutes at most, then zero-shot on the tabletop render
$S2R pretrain-policy --train "$SIM" --out "$RUNS/quick_cpu" --eval-real "$REAL" \
  time_limit_min=10 num_threads=1
# 2. the same network untrained (random init) on the same real windows and noise seed
$S2R pretrain-policy --train "$SIM" --out "$RUNS/random_init" --eval-real "$REAL" steps=0 num_threads=1
# 3. closed loop in the simulator vs a random policy
$S2R eval-policy --ckpt "$RUNS/quick_cpu" --episodes 20 num_threads=1
