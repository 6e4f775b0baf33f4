"""Detector stage throughput vs the bare backend; prints ONE JSON object.

    .venv/bin/python bench/bench_detect.py [--detector ssd] [--video PATH] [--frames 16] [--batch 8]
                                           [--repeats 5] [--threads 2] [--precision bf16|f32]

Frames are decoded once with :func:`stages.decode.decode_video` (1 fps, native
size, as ``build-sgs`` decodes by default) from ``--video`` (default: a
../shared clip, else a generated lavfi clip). Then, interleaved and best of
``--repeats``:

* reference: the backend's ``detect()`` (default ``ssd``, the real-data
  default) called directly on the same frames in chunks of ``--batch`` (the
  bare backend forward);
* figure: :class:`stages.detect.DetectStage` ``.process_batch`` on a task
  holding those frames, ``batch_frames = --batch``, sharing the same loaded
  backend (so the difference is the stage's own work: records, attributes,
  feature concatenation, failure handling).

* for ``ssd``, also the OpenCV DNN engine (``detect.ssd.engine=opencv``, the
  one-frame-at-a-time path before the OpenVINO engine) on the same frames, the
  same interleaving: ``opencv_frames_per_cpu_s`` and ``speedup_vs_opencv_cpu``.

Targets: ratio (stage frames/s ÷ bare frames/s) ≥ 0.95; ``ssd`` ≥ 20 frames per
CPU-second (3× the OpenCV engine's 6.7). ``ratio`` compares the
best wall times; ``median_paired_ratio`` is the median over repeats of
bare time ÷ stage time within one repeat (the two sides alternate which runs
first); ``cpu_ratio`` uses this process's CPU time, steadier on a shared
machine. ``stage_frames_per_cpu_s`` is frames per second of this process's CPU
time (all its threads): on an idle machine with ``--threads N`` the wall rate
approaches it times N when the backend scales; on a loaded one it is the
figure that does not depend on the neighbours.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages.base import VideoTask  # noqa: E402
from stages.decode import DecodeConfig, decode_video  # noqa: E402
from stages.detect import DetectConfig, DetectStage  # noqa: E402
from stages.detectors import build_detector  # noqa: E402
from stages.detectors.ssd import PRECISIONS, SSDOptions  # noqa: E402

SHARED_VIDEOS = Path(os.environ.get("FINSTA_SHARED", ROOT / ".." / "shared")) / "data" / "videos"


def default_video(workdir: str, seconds: int = 30) -> str:
    """The ../shared bottle clip (40 s) when there, else a ``seconds``-long 640×360 test card in ``workdir``."""
    clip = SHARED_VIDEOS / "bottle-detection.mp4"
    if clip.exists():
        return str(clip)
    path = os.path.join(workdir, "bench.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size=640x360:rate=25:duration={seconds}",
                    "-pix_fmt", "yuv420p", path], check=True, timeout=120)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--detector", default="ssd", help="a backend name (its threads option is set)")
    parser.add_argument("--precision", default=SSDOptions().precision, choices=PRECISIONS,
                        help="ssd's OpenVINO precision (default: the stage's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        video = args.video or default_video(workdir)
        meta, frames, images = decode_video(video, DecodeConfig(fps=1.0, max_frames=args.frames))
    cfg = DetectConfig(name=args.detector, batch_frames=args.batch)
    if hasattr(getattr(cfg, args.detector, None), "threads"):
        getattr(cfg, args.detector).threads = args.threads
    if args.detector == "ssd":
        cfg.ssd.precision = args.precision
    detector = build_detector(cfg)
    detector.setup()
    stage = DetectStage(cfg)
    stage.detector = detector
    detector.detect(images[: args.batch])  # warm-up: first-call allocations hit neither side
    reference = None
    if args.detector == "ssd" and cfg.ssd.engine != "opencv":
        reference = build_detector(DetectConfig(name="ssd", batch_frames=args.batch,
                                                ssd=type(cfg.ssd)(engine="opencv", threads=args.threads)))
        reference.setup()
        reference.detect(images[: args.batch])

    def bare(backend=detector) -> tuple[float, float, int]:
        started, cpu, boxes = time.perf_counter(), time.process_time(), 0
        for first in range(0, len(images), args.batch):
            boxes += sum(len(found) for found in backend.detect(images[first:first + args.batch]))
        return time.perf_counter() - started, time.process_time() - cpu, boxes

    def opencv() -> tuple[float, float, int]:
        return bare(reference)

    def staged() -> tuple[float, float, int]:
        task = VideoTask("bench", "bench", "bench", video, meta=meta, frames=list(frames), images=list(images))
        started, cpu = time.perf_counter(), time.process_time()
        stage.process_batch([task])
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        if task.failure is not None:
            raise SystemExit(f"detect stage failed: {task.failure}")
        return elapsed, cpu, len(task.dsg.detections)

    bare_s, stage_s, bare_cpu, stage_cpu, ref_cpu = [], [], [], [], []
    ref_boxes = None
    for repeat in range(args.repeats):
        # Alternate which side runs first, so a load change on a shared machine hits both alike.
        sides = [bare, staged] + ([opencv] if reference is not None else [])
        for side in (sides if repeat % 2 == 0 else sides[::-1]):
            seconds, cpu, boxes = side()
            if side is bare:
                bare_s.append(seconds), bare_cpu.append(cpu)
                bare_boxes = boxes
            elif side is staged:
                stage_s.append(seconds), stage_cpu.append(cpu)
                stage_boxes = boxes
            else:
                ref_cpu.append(cpu)
                ref_boxes = boxes
    bare_fps, stage_fps = len(images) / min(bare_s), len(images) / min(stage_s)
    paired = sorted(b / s for b, s in zip(bare_s, stage_s))
    print(json.dumps({
        "benchmark": "detect_stage_vs_bare_backend", "backend": args.detector, "video": Path(video).name,
        "frames": len(images), "frame_size": list(images[0].shape[:2]), "batch_frames": args.batch,
        "repeats": args.repeats, "threads": args.threads,
        "stage_frames_per_s": round(stage_fps, 3), "bare_frames_per_s": round(bare_fps, 3),
        "ratio": round(stage_fps / bare_fps, 3), "target_ratio": 0.95,
        "median_paired_ratio": round(paired[len(paired) // 2], 3),
        "stage_cpu_s": round(min(stage_cpu), 3), "bare_cpu_s": round(min(bare_cpu), 3),
        "cpu_ratio": round(min(bare_cpu) / min(stage_cpu), 3),
        "stage_frames_per_cpu_s": round(len(images) / min(stage_cpu), 3),
        "bare_frames_per_cpu_s": round(len(images) / min(bare_cpu), 3),
        "cpu_frames_ranges": {"stage": [round(len(images) / max(stage_cpu), 2), round(len(images) / min(stage_cpu), 2)],
                              "bare": [round(len(images) / max(bare_cpu), 2), round(len(images) / min(bare_cpu), 2)]},
        "target_frames_per_cpu_s": 20.0 if args.detector == "ssd" else None,
        "engine": getattr(getattr(cfg, args.detector, None), "engine", None),
        "precision": getattr(getattr(detector, "net", None), "precision", None),
        **({"opencv_frames_per_cpu_s": round(len(images) / min(ref_cpu), 3),
            "speedup_vs_opencv_cpu": round(min(ref_cpu) / min(stage_cpu), 3)} if ref_cpu else {}),
        "boxes": {"stage": stage_boxes, "bare": bare_boxes, **({"opencv": ref_boxes} if ref_cpu else {})},
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }))


if __name__ == "__main__":
    main()
