#!/usr/bin/env bash
# Prepared device check (issues 7, 15; ≤ 10 min): Finsta training steps/s on a lent GPU, with the host model
# (temporal/text transformers over grid cells and token states) that Finsta post-trains and exports.
# Runs from a bare machine holding only the repository copy (no .venv): it uses the machine's own python
# with torch + CUDA (only if none is found and nvidia-smi exists: `pip install torch==2.13.0 numpy` into a throw-away venv), then
#   1. bench/bench_train_gpu.py — steps/s and graphs/s, bf16 autocast vs fp32 vs host-only, in one run
#      (needs only torch + numpy: batches are built in memory; 3×3 cells a frame, token states per caption);
#   2. if pyarrow, zarr, safetensors and typer are importable: the real CLI path on a small random dataset,
#      `cli.py train --device cuda` (+ --resume), `cli.py eval --device cuda`, `cli.py export` and
#      `cli.py eval --checkpoint EXPORTED --device cuda` (the SG-free host from host features only).
# Prints one JSON object per part; the summary JSON is also written to $OUT/gpu_train_steps.json when $OUT is set.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-/tmp/finsta_gpu}
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d)

PY=""
for candidate in python3 python /usr/bin/python3 /opt/conda/bin/python /usr/local/bin/python3; do
  if command -v "$candidate" >/dev/null 2>&1 && \
     timeout 120 "$candidate" -c "import torch, numpy; assert torch.cuda.is_available()" >/dev/null 2>&1; then
    PY=$candidate; break
  fi
done
if [[ -z $PY ]] && command -v nvidia-smi >/dev/null 2>&1; then
  # only on a GPU machine, and only into a throw-away venv: never into the machine's own python
  python3 -m venv "$WORK/venv" >/dev/null 2>&1 && \
    timeout 300 "$WORK/venv/bin/pip" install -q "torch==2.13.0" numpy >/dev/null 2>&1 && PY="$WORK/venv/bin/python"
fi
if [[ -z $PY ]] || ! timeout 120 "$PY" -c "import torch; assert torch.cuda.is_available()" >/dev/null 2>&1; then
  echo '{"error": "no python with torch + CUDA on this machine, and pip could not install torch==2.13.0"}' \
    | tee "$OUT_DIR/gpu_train_steps.json"
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1

bench=$(PYTHONPATH=. timeout 360 "$PY" bench/bench_train_gpu.py --device cuda --batch 64 --dim 128 --seconds 20 \
        2>"$WORK/bench.err" | tail -1)
if [[ -z $bench ]]; then
  bench=$(printf '{"error": "bench_train_gpu failed", "stderr_tail": %s}' \
          "$("$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read()[-1500:]))' <"$WORK/bench.err")")
fi
echo "$bench"

cli='{"skipped": "pyarrow/zarr/safetensors/typer not importable here"}'
if timeout 60 "$PY" -c "import pyarrow, zarr, safetensors, typer" >/dev/null 2>&1; then
  cat >"$WORK/make.py" <<'PYEOF'
import random, sys
sys.path.insert(0, "tests/finsta_model")
import finsta_samples
from finsta_samples import DIMS, make_sample
from schemas.store import DatasetWriter
DIMS.update({"frame": 1280, "detection": 32, "text_node": 384, "caption": 384, "caption_token": 384,
             "frame_patch": 1280})
finsta_samples.CELLS = 9
rng = random.Random(0)
w = DatasetWriter(sys.argv[1], config={"gpu_check": 1}, feature_dims=DIMS)
samples = [make_sample(rng, f"g{i:04d}", n_frames=16, max_objects=5, n_captions=4) for i in range(256)]
for s in range(0, 256, 64):
    w.write_shard(samples[s:s + 64], [])
PYEOF
  echo '{"dim": 128, "batch_size": 64, "log_every": 5, "checkpoint_every": 20}' >"$WORK/cfg.json"
  start=$(date +%s.%N)
  if PYTHONPATH=. timeout 60 "$PY" "$WORK/make.py" "$WORK/ds" 2>"$WORK/cli.err" && \
     PYTHONPATH=. timeout 150 "$PY" cli.py train --shards "$WORK/ds" --out "$WORK/run" --config "$WORK/cfg.json" \
       --steps 20 --device cuda >"$WORK/train1.json" 2>>"$WORK/cli.err" && \
     PYTHONPATH=. timeout 150 "$PY" cli.py train --shards "$WORK/ds" --out "$WORK/run" --resume --steps 40 \
       --device cuda >"$WORK/train2.json" 2>>"$WORK/cli.err" && \
     PYTHONPATH=. timeout 120 "$PY" cli.py eval --shards "$WORK/ds" --checkpoint "$WORK/run" --device cuda --json \
       >"$WORK/eval.json" 2>>"$WORK/cli.err" && \
     PYTHONPATH=. timeout 60 "$PY" cli.py export --checkpoint "$WORK/run" --out "$WORK/host" >/dev/null \
       2>>"$WORK/cli.err" && \
     PYTHONPATH=. timeout 120 "$PY" cli.py eval --shards "$WORK/ds" --checkpoint "$WORK/host" --device cuda --json \
       >"$WORK/eval-host.json" 2>>"$WORK/cli.err"; then
    cli=$("$PY" - "$WORK" "$start" <<'PYEOF'
import json, sys, time
work, start = sys.argv[1], float(sys.argv[2])
lines = [json.loads(l) for l in open(f"{work}/run/metrics.jsonl")]
ev = json.load(open(f"{work}/eval.json"))
host = json.load(open(f"{work}/eval-host.json"))
print(json.dumps({"cli_train_resume_eval_export": "ok", "steps": lines[-1]["step"],
                  "graphs_per_s_last": lines[-1]["graphs_per_s"], "loss_first": lines[0]["total"],
                  "loss_last": lines[-1]["total"], "eval_t2v_R@1": ev["t2v"]["R@1"],
                  "exported_host_t2v_R@1": host["t2v"]["R@1"],
                  "exported_equals_in_run_host": host["t2v"] == ev["no_sg"]["t2v"],
                  "wall_s": round(time.time() - start, 1)}))
PYEOF
)
  else
    cli=$(printf '{"error": "cli train/eval on cuda failed", "stderr_tail": %s}' \
          "$("$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read()[-2000:]))' <"$WORK/cli.err")")
  fi
fi
echo "$cli"
"$PY" -c 'import json,sys; print(json.dumps({"bench": json.loads(sys.argv[1]), "cli": json.loads(sys.argv[2])}))' \
  "$bench" "$cli" | tee "$OUT_DIR/gpu_train_steps.json"
rm -rf "$WORK"
