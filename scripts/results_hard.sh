#!/usr/bin/env bash
# docs/results.md, "Look-alike objects": does OSC matter at 900 training videos when objects repeat colours?
#   hard-difficulty worlds 31-33 (train, merged to 900), 34 (val, 60), 35 (test, 100) → build-sgs →
#   baseline / full / no-osc × seeds 0 1 2 (900 steps, the TrainConfig defaults; the previous round's recipe: see git history) → eval → table
# Usage: scripts/results_hard.sh [WORK_DIR]   (default out/hard; ≈ 50 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
W=${1:-out/hard}
mkdir -p "$W/runs"
build() {  # name seed count
  [[ -f $W/sgs-$1/stats.json ]] && return
  $PY cli.py make-synthetic --out "$W/world-$1" --count "$3" --seed "$2" --difficulty hard
  $PY cli.py build-sgs --dataset synthetic --data-root "$W/world-$1" --out "$W/sgs-$1" --executor sequential \
    --set decode.fps=2 --quiet
}
build train-31 31 300 & build train-32 32 300 & wait
build train-33 33 300 & build val 34 60 & build test 35 100 & wait
[[ -e $W/sgs-train ]] || $PY scripts/merge_datasets.py "$W/sgs-train" "$W"/sgs-train-3{1,2,3}
for seed in 0 1 2; do
  for v in "baseline:--no-sg" "full:" "no-osc:--no-osc"; do
    name=${v%%:*}; flags=${v#*:}
    # shellcheck disable=SC2086
    $PY cli.py train --shards "$W/sgs-train" --out "$W/runs/$name-seed$seed" \
      --steps 900 --seed "$seed" $flags > "$W/runs/$name-seed$seed.log" 2>&1 &
  done
done
wait
for split in val test; do
  for run in "$W"/runs/*/; do
    $PY cli.py eval --shards "$W/sgs-$split" --checkpoint "${run%/}" --json > "${run%/}/eval-$split.json"
  done
done
$PY scripts/results_table.py "$W"
