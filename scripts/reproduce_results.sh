#!/usr/bin/env bash
# Reproduce docs/results.md: the exported SG-free host (Finsta-post-trained) vs the same host trained alone.
#   make-synthetic (train / validation / held-out test seeds) → build-sgs → train (5 variants × seeds)
#   → export each run's host → eval the exported host (host features only) and the run (Finsta teacher)
# Usage: scripts/reproduce_results.sh [WORK_DIR]   (default: out/host)
# Environment: TRAIN_SEEDS ("11 14 15": one synthetic world per seed, merged into sgs-train),
#              TRAIN_VIDEOS (300 per training world), VAL_VIDEOS (60), TEST_VIDEOS (100), STEPS (900),
#              SEEDS ("0 1 2"), VARIANTS (baseline full no-osc no-ptc no-stgd), STAGE (all|data|train|eval),
#              JOBS (parallel trainings, 1), TRAIN_SET (sgs-train), CONFIG (a TrainConfig file; default: none,
#              i.e. the TrainConfig defaults, which are this recipe; chosen on the validation world only)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${1:-out/host}
TRAIN_SEEDS=${TRAIN_SEEDS:-"11 14 15"}
TRAIN_VIDEOS=${TRAIN_VIDEOS:-300}
VAL_VIDEOS=${VAL_VIDEOS:-60}
TEST_VIDEOS=${TEST_VIDEOS:-100}
STEPS=${STEPS:-900}
JOBS=${JOBS:-1}
SEEDS=${SEEDS:-"0 1 2"}
STAGE=${STAGE:-all}
TRAIN_SET=${TRAIN_SET:-sgs-train}
VARIANTS=${VARIANTS:-"baseline full no-osc no-ptc no-stgd"}
config=(); [[ -n ${CONFIG:-} ]] && config=(--config "$CONFIG")
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

flags_of() {
  case $1 in baseline) echo --no-sg ;; full) echo "" ;; no-osc) echo --no-osc ;; no-ptc) echo --no-ptc ;;
    no-stgd) echo --no-stgd ;; *) echo "unknown variant $1" >&2; exit 2 ;; esac
}

if [[ $STAGE == all || $STAGE == train ]]; then
  mkdir -p "$WORK/runs"
  for seed in $SEEDS; do
    for name in $VARIANTS; do
      run="$WORK/runs/$name-seed$seed"
      if [[ -f $run/checkpoints/latest && $(cat "$run/checkpoints/latest") == step-$(printf %07d "$STEPS") ]]; then
        continue
      fi
      resume=""; [[ -f $run/checkpoints/latest ]] && resume="--resume"
      while [[ $(jobs -rp | wc -l) -ge $JOBS ]]; do wait -n; done
      # shellcheck disable=SC2086
      /usr/bin/time -v $PY cli.py train --shards "$WORK/$TRAIN_SET" --out "$run" "${config[@]}" --steps "$STEPS" \
        --seed "$seed" $(flags_of "$name") $resume > "$WORK/runs/$name-seed$seed.log" 2>&1 &
    done
  done
  wait
fi

if [[ $STAGE == all || $STAGE == eval ]]; then
  for seed in $SEEDS; do
    for name in $VARIANTS; do
      run="$WORK/runs/$name-seed$seed"
      $PY cli.py export --checkpoint "$run" --out "$run/host" > /dev/null
      for split in val test; do
        # the exported host, from host features only (the headline) …
        $PY cli.py eval --shards "$WORK/sgs-$split" --checkpoint "$run/host" --json > "$run/eval-host-$split.json"
        # … and the run itself (the Finsta teacher's score, and the host inside it: must equal the above)
        $PY cli.py eval --shards "$WORK/sgs-$split" --checkpoint "$run" --json > "$run/eval-$split.json"
      done
    done
  done
  $PY scripts/results_table.py "$WORK" > "$WORK/results.md"
  cat "$WORK/results.md"
fi
