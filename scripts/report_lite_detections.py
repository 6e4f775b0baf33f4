"""Run the ``lite`` detector on clips sampled at a fixed rate; print what it finds.

Per clip: label → number of sampled frames with at least one box of it, plus
frames, seconds and frames/s. Decoding here is OpenCV's (a report tool only;
the pipeline decodes with ``stages.decode``).

    .venv/bin/python scripts/report_lite_detections.py ../shared/data/videos/*.mp4 --fps 1
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402

from stages.detect import DetectConfig  # noqa: E402
from stages.detectors import build_detector  # noqa: E402


def sample_frames(path: str, fps: float):
    """RGB frames nearest to t = 0, 1/fps, 2/fps, … (sequential read, no seeking)."""
    capture = cv2.VideoCapture(path)
    native = capture.get(cv2.CAP_PROP_FPS) or 25.0
    index, next_time = 0, 0.0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        if index / native >= next_time - 0.5 / native:
            yield index / native, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            next_time += 1.0 / fps
        index += 1
    capture.release()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    detector = build_detector(DetectConfig(name="lite", score_threshold=args.score_threshold))
    detector.setup()
    report = {}
    for video in args.videos:
        frames_with = Counter()
        boxes = Counter()
        count, seconds, batch = 0, 0.0, []

        def flush():
            nonlocal seconds
            started = time.perf_counter()
            found = detector.detect(batch)
            seconds += time.perf_counter() - started
            for one in found:
                frames_with.update(set(one.labels))
                boxes.update(one.labels)
            batch.clear()

        for _, image in sample_frames(video, args.fps):
            batch.append(image)
            count += 1
            if len(batch) == args.batch:
                flush()
        if batch:
            flush()
        report[Path(video).name] = {"frames": count, "detect_s": round(seconds, 2),
                                    "frames_per_s": round(count / max(seconds, 1e-9), 2),
                                    "frames_with_label": dict(frames_with.most_common()),
                                    "boxes_per_label": dict(boxes.most_common())}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
