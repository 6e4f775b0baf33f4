#!/usr/bin/env bash
# Prepared device check for issues 7, 15 and 16 (≤ 10 min): Finsta training steps/s on a lent GPU, with the host
# model (temporal/text transformers over grid cells and token states) that Finsta post-trains and exports, in-process
# and on Ray Train.
# Runs from a bare machine holding only the repository copy (no .venv): it uses the machine's own python
# with torch + CUDA (only if none is found and nvidia-smi exists: `pip install torch==2.13.0 numpy` into a throw-away venv), then
#   1. bench/bench_train_gpu.py — steps/s and graphs/s, bf16 autocast vs fp32 vs host-only, in one run
#      (needs only torch + numpy: batches are built in memory; 3×3 cells a frame, token states per caption);
#   2. if pyarrow, zarr, safetensors and typer are importable: the real CLI path on a small random dataset,
#      `cli.py train --device cuda` (+ --resume), `cli.py eval --device cuda`, `cli.py export` and
#      `cli.py eval --checkpoint EXPORTED --device cuda` (the SG-free host from host features only);
#   3. if Ray Train is importable too: `train --ray-workers 1 --device cuda` (TorchTrainer, NCCL, one GPU) vs the
#      in-process loop on the same dataset, steps/s in one run (bench/bench_train.py --ray-workers 1 --device cuda),
#      then `cli.py train --ray-workers 1 --device cuda` (+ --resume) and eval of its checkpoint.
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

ray='{"skipped": "ray[train] (or the store packages) not importable here"}'
if [[ -d $WORK/ds ]] && timeout 120 "$PY" -c "import ray.train.torch, pyarrow, zarr, safetensors, typer" >/dev/null 2>&1; then
  rbench=$(PYTHONPATH=. timeout 240 "$PY" bench/bench_train.py --shards "$WORK/ds" --ray-workers 1 --device cuda \
           --batch 64 --steps 40 --repeats 2 2>"$WORK/ray.err" | tail -1)
  if PYTHONPATH=. timeout 120 "$PY" cli.py train --shards "$WORK/ds" --out "$WORK/rrun" --config "$WORK/cfg.json" \
       --steps 20 --device cuda --ray-workers 1 >"$WORK/rtrain1.json" 2>>"$WORK/ray.err" && \
     PYTHONPATH=. timeout 120 "$PY" cli.py train --shards "$WORK/ds" --out "$WORK/rrun" --resume --steps 30 \
       --device cuda --ray-workers 1 >"$WORK/rtrain2.json" 2>>"$WORK/ray.err" && \
     PYTHONPATH=. timeout 60 "$PY" cli.py eval --shards "$WORK/ds" --checkpoint "$WORK/rrun" --device cuda --json \
       >"$WORK/reval.json" 2>>"$WORK/ray.err"; then
    rcli='"ok"'
  else
    rcli='"failed"'
  fi
  ray=$("$PY" - "$WORK" "${rbench:-null}" "$rcli" <<'PYEOF'
import json, sys
work, bench, cli = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    bench = json.loads(bench)
except ValueError:
    bench = None
out = {"bench_ray_1_gpu_vs_in_process": bench, "cli_ray_train_resume_eval": json.loads(cli)}
if out["cli_ray_train_resume_eval"] == "ok":
    lines = [json.loads(l) for l in open(f"{work}/rrun/metrics.jsonl")]
    out.update({"steps": lines[-1]["step"], "world_size": json.load(open(f"{work}/rtrain2.json"))["ray_workers"],
                "eval_t2v_R@1": json.load(open(f"{work}/reval.json"))["t2v"]["R@1"]})
if bench is None or out["cli_ray_train_resume_eval"] != "ok":
    out["stderr_tail"] = open(f"{work}/ray.err").read()[-2000:]
print(json.dumps(out))
PYEOF
)
fi
echo "$ray"
"$PY" -c 'import json,sys; print(json.dumps({"bench": json.loads(sys.argv[1]), "cli": json.loads(sys.argv[2]),
                                              "ray_train": json.loads(sys.argv[3])}))' \
  "$bench" "$cli" "$ray" | tee "$OUT_DIR/gpu_train_steps.json"
rm -rf "$WORK"
