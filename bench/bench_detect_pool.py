"""The detect stage in a Ray actor pool vs the bare batched forward, same frames, same run; ONE JSON object.

    .venv/bin/python bench/bench_detect_pool.py [--device cuda] [--backend lite] [--videos 8] [--frames 32]

Frames are decoded once (1 fps, short side 320) from ``--video`` (default: a ../shared clip, else a
generated clip) and copied into ``--videos`` tasks. Then:

* reference: the backend's ``detect()`` in this process, in chunks of ``--batch`` frames (bare forward);
* figure: the same tasks through the pipeline's Ray executor with one pool holding only the detect
  stage (``pipeline.plan.Pool``, the stage's own ``resources``: on CUDA one GPU per actor), frames
  shipped to the actor as the pipeline ships them to a GPU pool. Ray and actor start-up are excluded: the
  clock starts when the first task comes back (that task is not counted).

With ``--device cuda``, GPU utilisation is sampled by ``nvidia-smi`` every 0.2 s during both phases.
Target: ``ratio`` (pool frames/s ÷ bare frames/s) ≥ 0.9. Used by scripts/gpu_detect_pool.sh on a lent
GPU; on CPU it measures the same overhead with ``--device cpu``.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import BuildConfig, apply_overrides, finalize  # noqa: E402
from pipeline.executors import make_executor  # noqa: E402
from pipeline.plan import Pool  # noqa: E402
from schemas.stop import StopSignals  # noqa: E402
from stages.base import VideoTask  # noqa: E402
from stages.decode import DecodeConfig, decode_video  # noqa: E402
from stages.detect import DetectStage  # noqa: E402

from bench_detect import default_video  # noqa: E402  (bench/ is this script's folder)


class GpuSampler:
    """``nvidia-smi`` utilisation samples in the background (empty where there is no nvidia-smi)."""

    def __init__(self, period: float = 0.2):
        self.period, self.samples, self._stop = period, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True) if shutil.which("nvidia-smi") else None

    def _run(self) -> None:
        while not self._stop.is_set():
            done = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=10)
            if done.returncode == 0 and done.stdout.strip():
                self.samples.append(float(done.stdout.split()[0]))
            self._stop.wait(self.period)

    def __enter__(self) -> "GpuSampler":
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {}
        ordered = sorted(self.samples)
        return {"mean": round(sum(ordered) / len(ordered), 1), "median": ordered[len(ordered) // 2],
                "samples": len(ordered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video")
    parser.add_argument("--backend", default="")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--num-cpus", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        video = args.video or default_video(workdir, seconds=40)
        meta, frames, images = decode_video(video, DecodeConfig(fps=1.0, short_side=320, max_frames=args.frames))
    backend = args.backend or ("detectron2" if _importable("detectron2") else "lite")
    cfg, _ = finalize(apply_overrides(BuildConfig(), [
        "dataset.name=manifest", f"detect.name={backend}", f"detect.device={args.device}",
        f"detect.batch_frames={args.batch}", f"run.num_cpus={args.num_cpus}", "run.quiet=true"]))
    stage = DetectStage(cfg.detect)
    stage.setup()
    tasks = [VideoTask(f"v{i}", "bench", f"v{i}", video, meta=copy.deepcopy(meta), frames=list(frames),
                       images=list(images)) for i in range(args.videos + 1)]
    stage.detector.detect(images[:args.batch])   # warm-up (CUDA kernels, allocations)

    with GpuSampler() as bare_gpu:
        started = time.perf_counter()
        for _ in range(args.videos):
            for first in range(0, len(images), args.batch):
                stage.detector.detect(images[first:first + args.batch])
        bare_s = time.perf_counter() - started
    del stage   # free the device for the actor

    detect = DetectStage(cfg.detect)
    pool = Pool(name="detect", stage_names=["detect"], sections=[cfg.detect], resources=detect.resources,
                batch_size=1, workers=1, drop_images_after="detect", images_leave=False,
                time_budgets=[detect.time_budget_s(cfg.run.stage_timeout_s)])
    with GpuSampler() as pool_gpu, StopSignals() as stop:
        executor = make_executor(cfg, [pool], stop)
        try:
            stream = (task for task in executor.run(tasks) if task is not None)   # None: the executor's heartbeat
            first = next(stream)   # Ray, actor start and the first video: not timed
            if first.failure is not None:
                raise SystemExit(f"detect stage failed in the pool: {first.failure}")
            started = time.perf_counter()
            done = sum(1 for task in stream if task.failure is None)
            pool_s = time.perf_counter() - started
        finally:
            executor.close()
    bare_fps = args.videos * len(images) / bare_s
    pool_fps = done * len(images) / pool_s
    print(json.dumps({
        "benchmark": "detect_stage_in_ray_pool_vs_bare_forward", "backend": backend, "device": args.device,
        "video": Path(video).name, "videos": args.videos, "frames_per_video": len(images),
        "frame_size": list(images[0].shape[:2]), "batch_frames": args.batch, "pool_resources": vars(pool.resources),
        "pool_frames_per_s": round(pool_fps, 2), "bare_frames_per_s": round(bare_fps, 2),
        "ratio": round(pool_fps / bare_fps, 3), "target_ratio": 0.9,
        "gpu_utilisation_pct": {"bare": bare_gpu.summary(), "pool": pool_gpu.summary()},
    }))


def _importable(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    main()
