#!/usr/bin/env bash
# Issue 31 pilots: representation distillation (scripts/pilots/rep_distill.json) vs its same-architecture
# baseline (scripts/pilots/slots.json --no-sg: the host with the same object slots, trained alone), 300
# training videos (world 11), 300 steps, seeds 0 1 2; the exported host evaluated on the validation world
# (seed 12) (and on its own training videos with EVAL_TRAIN=1). One training at a time, niced (2 shared cores).
# Variant rep-unc: rep + the uncaptioned videos of UNC_SET (scripts/pilots/rep_uncaptioned.json; the
# other variants skip them). The rep variants are exported with --video-sg-free: eval-host-val.json then
# holds the exported host's and the exported video-side model's figures.
# Variants box (rep + box supervision of the slots, scripts/pilots/rep_box.json) and box-only (the baseline +
# box supervision, no teacher: scripts/pilots/slot_box.json --no-sg): the slots' attention trained toward the
# detector's boxes at training time (TrainConfig.slot_box_weight); the exported hosts read no boxes.
# Variant units: box + the slots read over each caption's window (geometry, motion) and their directed pairs
# as the video-side score's units, trained by the teacher's unit OSC / PTC on the slots
# (scripts/pilots/rep_units.json, TrainConfig.slot_unit_weight, finsta_model/slot_units.py).
# Variant units-nobox: units without the box supervision (slots stand for tracks by cosine matching).
# The 900-video stage: TRAIN_SET=sgs-train STEPS=900 SPLITS="test val" (WORK built by
# `STAGE=data scripts/reproduce_results.sh WORK`: worlds 11 14 15 merged, validation 12, held-out test 13).
# Usage: scripts/pilots/run_rep_distill.sh WORK   (WORK holds sgs-train-11 and sgs-val, built as in docs/results.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
WORK=$1
STEPS=${STEPS:-300}
TRAIN_SET=${TRAIN_SET:-sgs-train-11}
SEEDS=${SEEDS:-"0 1 2"}
VARIANTS=${VARIANTS:-"baseline rep"}
UNC_SET=${UNC_SET:-sgs-train-11u}
SPLITS=${SPLITS:-val}      # evaluated on WORK/sgs-SPLIT: eval-host-SPLIT.json (exported), eval-SPLIT.json (the run)
RUNS=${RUNS:-$WORK/runs}
mkdir -p "$RUNS"
for seed in $SEEDS; do
  for name in $VARIANTS; do
    run="$RUNS/$name-seed$seed"
    last=${SPLITS##* }
    [[ -f $run/eval-host-$last.json ]] && continue
    train_set=$TRAIN_SET
    export_flags=()
    case $name in
      baseline) flags=(--config scripts/pilots/slots.json --no-sg) ;;
      rep) flags=(--config scripts/pilots/rep_distill.json); export_flags=(--video-sg-free) ;;
      rep-unc) flags=(--config scripts/pilots/rep_uncaptioned.json); export_flags=(--video-sg-free)
               train_set=$UNC_SET ;;
      finsta) flags=(--config scripts/pilots/slots.json) ;;
      box) flags=(--config scripts/pilots/rep_box.json); export_flags=(--video-sg-free) ;;
      units) flags=(--config scripts/pilots/rep_units.json); export_flags=(--video-sg-free) ;;
      units-nobox) flags=(--config scripts/pilots/rep_units_nobox.json); export_flags=(--video-sg-free) ;;
      box-only) flags=(--config scripts/pilots/slot_box.json --no-sg) ;;
      *) echo "unknown variant $name" >&2; exit 2 ;;
    esac
    if [[ ! -d $run/checkpoints/step-$(printf %07d "$STEPS") ]]; then    # a finished run is only evaluated
      /usr/bin/time -v nice -n 10 $PY cli.py train --shards "$WORK/$train_set" --out "$run" --steps "$STEPS" \
        --seed "$seed" "${flags[@]}" --overwrite > "$RUNS/$name-seed$seed.log" 2>&1
    fi
    nice -n 10 $PY cli.py export --checkpoint "$run" --out "$run/host" "${export_flags[@]}" > /dev/null
    if [[ -n ${EVAL_TRAIN:-} ]]; then
      nice -n 10 $PY cli.py eval --shards "$WORK/$TRAIN_SET" --checkpoint "$run/host" --json > "$run/eval-host-train.json"
    fi
    for split in $SPLITS; do
      nice -n 10 $PY cli.py eval --shards "$WORK/sgs-$split" --checkpoint "$run" --json > "$run/eval-$split.json"
      nice -n 10 $PY cli.py eval --shards "$WORK/sgs-$split" --checkpoint "$run/host" --json > "$run/eval-host-$split.json"
    done
  done
done
