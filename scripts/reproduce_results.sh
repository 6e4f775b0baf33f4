#!/usr/bin/env bash
# Reproduce docs/results.md: the §6 experiment of issue 7 on the synthetic world.
#   make-synthetic (train / validation / held-out test seeds) → build-sgs → train (5 variants × 3 seeds) → eval
# Usage: scripts/reproduce_results.sh [WORK_DIR]   (default: out/results; ~2.5 h on 2 CPU cores)
# Environment: TRAIN_SEEDS ("11 14 15": one synthetic world per seed, merged into sgs-train),
#              TRAIN_VIDEOS (300 per training world), VAL_VIDEOS (60), TEST_VIDEOS (100), STEPS (900),
#              SEEDS ("0 1 2"), STAGE (all|data|train|eval), JOBS (parallel trainings, 1)
# Model/optimiser settings: scripts/results_config.json (chosen on the validation world, never on the test one).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${1:-out/results}
TRAIN_SEEDS=${TRAIN_SEEDS:-"11 14 15"}
TRAIN_VIDEOS=${TRAIN_VIDEOS:-300}
VAL_VIDEOS=${VAL_VIDEOS:-60}
TEST_VIDEOS=${TEST_VIDEOS:-100}
STEPS=${STEPS:-900}
JOBS=${JOBS:-1}
CONFIG=${CONFIG:-scripts/results_config.json}
SEEDS=${SEEDS:-"0 1 2"}
STAGE=${STAGE:-all}
mkdir -p "$WORK"

if [[ $STAGE == all || $STAGE == data ]]; then
  # world seeds: 11, 14, 15 = train (merged), 12 = validation (model choices), 13 = held-out test (reported only)
  splits=("val:12:$VAL_VIDEOS" "test:13:$TEST_VIDEOS")
  for seed in $TRAIN_SEEDS; do splits+=("train-$seed:$seed:$TRAIN_VIDEOS"); done
  for split in "${splits[@]}"; do
    IFS=: read -r name seed count <<<"$split"
    [[ -f $WORK/sgs-$name/manifest.json ]] && continue
    $PY cli.py make-synthetic --out "$WORK/world-$name" --count "$count" --seed "$seed"
    $PY cli.py build-sgs --dataset synthetic --data-root "$WORK/world-$name" --out "$WORK/sgs-$name" \
      --executor sequential --set decode.fps=2 --quiet
  done
  if [[ ! -e $WORK/sgs-train ]]; then
    sources=(); for seed in $TRAIN_SEEDS; do sources+=("$WORK/sgs-train-$seed"); done
    $PY scripts/merge_datasets.py "$WORK/sgs-train" "${sources[@]}"
  fi
fi

variants=("baseline:--no-sg" "full:" "no-osc:--no-osc" "no-ptc:--no-ptc" "no-stgd:--no-stgd")
if [[ $STAGE == all || $STAGE == train ]]; then
  mkdir -p "$WORK/runs"
  for seed in $SEEDS; do
    for v in "${variants[@]}"; do
      name=${v%%:*}; flags=${v#*:}
      run="$WORK/runs/$name-seed$seed"
      if [[ -f $run/checkpoints/latest && $(cat "$run/checkpoints/latest") == step-$(printf %07d "$STEPS") ]]; then
        continue
      fi
      resume=""; [[ -f $run/checkpoints/latest ]] && resume="--resume"
      while [[ $(jobs -rp | wc -l) -ge $JOBS ]]; do wait -n; done
      # shellcheck disable=SC2086
      $PY cli.py train --shards "$WORK/sgs-train" --out "$run" --config "$CONFIG" --steps "$STEPS" --seed "$seed" \
        $flags $resume > "$WORK/runs/$name-seed$seed.log" 2>&1 &
    done
  done
  wait
fi

if [[ $STAGE == all || $STAGE == eval ]]; then
  for split in val test; do
    for seed in $SEEDS; do
      for v in "${variants[@]}"; do
        name=${v%%:*}
        $PY cli.py eval --shards "$WORK/sgs-$split" --checkpoint "$WORK/runs/$name-seed$seed" --json \
          > "$WORK/runs/$name-seed$seed/eval-$split.json"
      done
    done
  done
  $PY scripts/results_table.py "$WORK" > "$WORK/results.md"
  cat "$WORK/results.md"
fi
