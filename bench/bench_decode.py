"""Decode benchmarks; each prints ONE JSON object (figure, reference measured in the same run, ratio).

    .venv/bin/python bench/bench_decode.py speed   [--video PATH | --seconds 60] [--repeats 10]
    .venv/bin/python bench/bench_decode.py memory  [--short-s 10] [--long-s 600]
    .venv/bin/python bench/bench_decode.py clips   [--dir ../shared/data/videos]

``speed``: frames/s of :func:`stages.decode.iter_frames` (Python reads every
frame from the pipe) against the ffmpeg CLI running the identical command
(same input, ``select``/``scale`` filters, rgb24 rawvideo) written to
``/dev/null`` without our ``showinfo`` timestamp logging (always ffmpeg's
rgb24 conversion, whatever ``pipe_format`` ours used). Best of
``--repeats`` runs each, interleaved. Target: ratio ≥ 0.85 in every case.
``cpu_ratio`` (CLI CPU seconds / ours, ffmpeg + Python) is reported too: on a
loaded machine it is steadier than wall time. ``bare_pipe_fps`` is the same
command into a pipe drained by a bare read loop: the cost of moving raw frames
between processes, which the ``/dev/null`` reference does not pay.

``memory``: peak RSS of decoding every frame of a short and a long video with
the same size and frame rate (generated with lavfi into a temp dir), each in a
fresh subprocess: the Python process (``RUSAGE_SELF``) and its ffmpeg child
(``RUSAGE_CHILDREN``). Target: long/short ≤ 1.2.

``clips``: probed metadata and decode speed (ours and the CLI's) on each real
clip in ``--dir``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages.decode import DecodeConfig, ffmpeg_args, iter_frames, output_size, pipe_format, probe_info  # noqa: E402

SHARED_VIDEOS = Path(os.environ.get("FINSTA_SHARED", ROOT / ".." / "shared")) / "data" / "videos"


def make_testsrc(path: Path, seconds: float, fps: float, size: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=s={size}:r={fps}:d={seconds}", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", str(path)], check=True, timeout=600)
    return path


def cpu_seconds() -> tuple[float, float]:
    """(this process, its waited-for children) user+system CPU seconds so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def time_ours(path: str, cfg: DecodeConfig, info) -> tuple[int, float, float]:
    """Frames, wall seconds, CPU seconds (Python + ffmpeg) of one iter_frames pass."""
    cpu0, started = sum(cpu_seconds()), time.perf_counter()
    count = sum(1 for _ in iter_frames(path, cfg, info=info))
    return count, time.perf_counter() - started, sum(cpu_seconds()) - cpu0


def time_cli(path: str, cfg: DecodeConfig, info) -> tuple[float, float]:
    """Wall and CPU seconds of the identical ffmpeg command writing to /dev/null."""
    url = "file:" + os.path.abspath(path)
    args = ffmpeg_args(url, info, cfg, output="/dev/null", showinfo=False, pix_fmt="rgb24")
    cpu0, started = cpu_seconds()[1], time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, timeout=cfg.timeout_s)
    return time.perf_counter() - started, cpu_seconds()[1] - cpu0


def time_pipe_floor(path: str, cfg: DecodeConfig, info) -> float:
    """Wall seconds of the same command into a pipe drained by a bare read loop: the IPC floor."""
    url = "file:" + os.path.abspath(path)
    width, height = output_size(info.meta.width, info.meta.height, cfg.short_side)
    frame = bytearray(width * height * 3)
    view = memoryview(frame)
    started = time.perf_counter()
    proc = subprocess.Popen(ffmpeg_args(url, info, cfg, showinfo=False), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, bufsize=0)
    while proc.stdout.readinto(view):
        pass
    proc.wait()
    proc.stdout.close()
    return time.perf_counter() - started


def compare(path: str, cfg: DecodeConfig, repeats: int) -> dict:
    """Best-of-``repeats`` (interleaved) frames/s of ours vs the CLI; CPU ratio alongside,
    as it is steadier than wall time on a shared machine."""
    info = probe_info(path)
    ours, cli, floor, frames = [], [], [], 0
    for _ in range(repeats):
        frames, wall, cpu = time_ours(path, cfg, info)
        ours.append((wall, cpu))
        cli.append(time_cli(path, cfg, info))
        floor.append(time_pipe_floor(path, cfg, info))
    ours_fps, cli_fps = frames / min(w for w, _ in ours), frames / min(w for w, _ in cli)
    floor_fps = frames / min(floor)
    ours_cpu, cli_cpu = min(c for _, c in ours), min(c for _, c in cli)
    return {"mode": cfg.mode, "fps": cfg.fps, "short_side": cfg.short_side, "frames": frames,
            "pipe_format": pipe_format(info, cfg),
            "iter_frames_fps": round(ours_fps, 1), "ffmpeg_cli_fps": round(cli_fps, 1),
            "ratio": round(ours_fps / cli_fps, 3),
            "bare_pipe_fps": round(floor_fps, 1), "ratio_vs_bare_pipe": round(ours_fps / floor_fps, 3),
            "iter_frames_cpu_s": round(ours_cpu, 3), "ffmpeg_cli_cpu_s": round(cli_cpu, 3),
            "cpu_ratio": round(cli_cpu / ours_cpu, 3) if ours_cpu else None}


def bench_speed(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video or str(make_testsrc(Path(tmp) / "speed.mp4", args.seconds, 30, "640x360"))
        meta = probe_info(video).meta
        cases = [DecodeConfig(mode="fps", fps=meta.fps or 30),            # every frame, native size
                 DecodeConfig(mode="fps", fps=5, short_side=224),        # the pipeline's usual setting
                 DecodeConfig(mode="uniform", num_frames=16, short_side=224)]
        results = [compare(video, cfg, args.repeats) for cfg in cases]
    return {"benchmark": "decode_speed", "video": args.video or f"testsrc 640x360 30fps {args.seconds:g}s (h264)",
            "load_average_1m": os.getloadavg()[0], "cpus": os.cpu_count(), "cases": results, "figure": "iter_frames frames/s", "reference": "ffmpeg CLI frames/s",
            "ratio": min(r["ratio"] for r in results), "target": ">= 0.85"}


def rss_worker(path: str) -> None:
    """Decode every frame of ``path`` and print this process's and ffmpeg's peak RSS (KiB)."""
    info = probe_info(path)
    count = sum(1 for _ in iter_frames(path, DecodeConfig(mode="fps", fps=info.meta.fps), info=info))
    print(json.dumps({"frames": count,
                      "python_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "ffmpeg_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))


def measure_rss(path: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "_rss_worker", str(path)], check=True,
                          capture_output=True, text=True, timeout=1200)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_memory(args) -> dict:
    size, fps = "320x240", 5
    with tempfile.TemporaryDirectory() as tmp:
        short = measure_rss(make_testsrc(Path(tmp) / "short.mp4", args.short_s, fps, size))
        long = measure_rss(make_testsrc(Path(tmp) / "long.mp4", args.long_s, fps, size))
    total_short = short["python_kib"] + short["ffmpeg_kib"]
    total_long = long["python_kib"] + long["ffmpeg_kib"]
    return {"benchmark": "decode_peak_rss", "video": f"testsrc {size} {fps}fps h264, every frame decoded",
            "short": {"seconds": args.short_s, **short}, "long": {"seconds": args.long_s, **long},
            "figure": "peak RSS long video (python + ffmpeg, KiB)", "reference": "same, short video",
            "python_ratio": round(long["python_kib"] / short["python_kib"], 3),
            "ffmpeg_ratio": round(long["ffmpeg_kib"] / short["ffmpeg_kib"], 3),
            "ratio": round(total_long / total_short, 3), "target": "<= 1.2"}


def bench_clips(args) -> dict:
    clips = []
    for path in sorted(Path(args.dir).glob("*.mp4")):
        meta = probe_info(str(path)).meta
        clips.append({"file": path.name, "meta": {k: getattr(meta, k) for k in
                                                  ("duration", "fps", "width", "height", "codec", "num_frames")},
                      "every_frame": compare(str(path), DecodeConfig(mode="fps", fps=meta.fps), args.repeats),
                      "fps5_224": compare(str(path), DecodeConfig(mode="fps", fps=5, short_side=224),
                                          args.repeats)})
    return {"benchmark": "decode_real_clips", "dir": str(args.dir), "clips": clips,
            "ratio": min((min(c["every_frame"]["ratio"], c["fps5_224"]["ratio"]) for c in clips), default=None)}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_rss_worker":
        rss_worker(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("which", choices=["speed", "memory", "clips"])
    parser.add_argument("--video", default="")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="length of the generated speed video: ffmpeg's ~80 ms start-up and the VM's "
                             "timing noise swamp runs of a few hundred ms")
    parser.add_argument("--short-s", type=float, default=10.0)
    parser.add_argument("--long-s", type=float, default=600.0)
    parser.add_argument("--dir", default=str(SHARED_VIDEOS))
    args = parser.parse_args()
    run = {"speed": bench_speed, "memory": bench_memory, "clips": bench_clips}[args.which]
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
