"""The scene-graph stages of real video (segment_shots, track, relate) against the whole pipeline, same run.

Each run takes the three ../shared clips (``$FINSTA_SHARED``, default ../shared), one caption each,
through every catalog stage in this process, one clip at a time, with the defaults of a real dataset
(``segment_shots`` = ffmpeg's scene score on CPU, reading the decode stage's shot stream); with ``--transnetv2``
``segment_shots`` again with TransNetV2 on the same tasks (decoding its own stream: ~70 CPU-s a run);
then ``decode`` alone without the shot stream on the same videos: what the shot stream adds to decode is counted as
segment_shots' (``segment_shots_share``). Per stage it measures CPU seconds (this process plus its finished ffmpeg children) and wall
seconds; model loads (``setup()``) are left out. Prints one JSON object: per stage the range over the
runs of CPU seconds and of the share of the pipeline's CPU seconds (the reference, measured in the same
run), ``segment_shots_share`` (target ≤ 0.10: its own CPU plus the shot stream's share of decode),
TransNetV2 / scene score by CPU (``--transnetv2``), and the load average before each run.

    .venv/bin/python bench/bench_scene_graphs.py [--repeats 3] [--transnetv2] [--set track.labels.engine=torch]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CAPTIONS = {"bottle-detection": "A hand picks up a bottle from the table.",
            "car-detection": "Cars drive through a parking lot.",
            "one-by-one-person-detection": "A man walks to a table and stands next to it."}


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def span(values: list[float], digits: int = 3) -> list[float]:
    return [round(min(values), digits), round(max(values), digits)]


def tasks(cfg) -> list:
    from pipeline.datasets.base import build_dataset
    return list(build_dataset(cfg.dataset).tasks())


def build(stages_cfg, names: list[str]) -> list:
    from stages.catalog import stage_class
    stages = [stage_class(name)(getattr(stages_cfg, name)) for name in names]
    for stage in stages:
        stage.setup()
    return stages


def timed(stages: list, todo: list) -> dict[str, list[float]]:
    """Each task through ``stages`` in order (in place): {stage: [cpu s, wall s]} summed over the tasks."""
    out = {stage.name: [0.0, 0.0] for stage in stages}
    for k, task in enumerate(todo):
        for stage in stages:
            cpu, wall = cpu_seconds(), time.perf_counter()
            [task] = stage.process_batch([task])
            out[stage.name][0] += cpu_seconds() - cpu
            out[stage.name][1] += time.perf_counter() - wall
            if task.failure is not None:
                raise SystemExit(f"{task.key}: {task.failure}")
        todo[k] = task
    return out


def summary(runs: list[dict], clips: list[str], method: str) -> dict:
    """The printed figures from the runs' {"load", "stages": {name: [cpu, wall]}, "transnetv2": [cpu, wall],
    "decode_alone": [cpu, wall]}."""
    total = [sum(cpu for cpu, _ in run["stages"].values()) for run in runs]
    names = list(runs[0]["stages"])
    stream = [r["stages"]["decode"][0] - r["decode_alone"][0] for r in runs]   # the shot stream's decode CPU
    shots = [r["stages"]["segment_shots"][0] + extra for r, extra in zip(runs, stream)]
    report = {
        "clips": clips, "repeats": len(runs), "load_average_1m": [round(r["load"], 1) for r in runs],
        "segment_shots_method": method,
        "pipeline_cpu_s": span(total, 2),
        "stage_cpu_s": {n: span([r["stages"][n][0] for r in runs], 2) for n in names},
        "stage_wall_s": {n: span([r["stages"][n][1] for r in runs], 2) for n in names},
        "stage_cpu_share": {n: span([r["stages"][n][0] / t for r, t in zip(runs, total)]) for n in names},
        "shot_stream_decode_cpu_s": span(stream, 2),
        "segment_shots_share": span([s / t for s, t in zip(shots, total)]),
        "segment_shots_share_target": 0.10,
    }
    if "transnetv2" in runs[0]:
        report.update({
            "transnetv2_cpu_s": span([r["transnetv2"][0] for r in runs], 2),
            "transnetv2_share_if_used": span([r["transnetv2"][0] / (t - s + r["transnetv2"][0])
                                              for r, t, s in zip(runs, total, shots)]),
            "transnetv2_vs_scene_score_cpu": span([r["transnetv2"][0] / max(s, 1e-9) for r, s in zip(runs, shots)], 2),
        })
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--transnetv2", action="store_true", help="also segment_shots with TransNetV2 (torch)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="a build-sgs option for every run, e.g. --set track.labels.engine=torch (repeatable)")
    args = parser.parse_args()
    shared = Path(os.environ.get("FINSTA_SHARED", REPO / ".." / "shared")) / "data" / "videos"
    clips = {name: shared / f"{name}.mp4" for name in CAPTIONS}
    if not all(p.is_file() for p in clips.values()):
        raise SystemExit(f"the clips are not all in {shared}: set FINSTA_SHARED")
    from pipeline.config import BuildConfig, apply_overrides, finalize
    from stages.catalog import STAGES

    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "clips.jsonl"
        manifest.write_text("".join(json.dumps({"id": name, "video": str(path), "captions": [
            {"text": CAPTIONS[name], "start": None, "end": None}]}) + "\n" for name, path in clips.items()))
        dataset = ["dataset.name=manifest", f"dataset.data_root={manifest}", *args.overrides]
        cfg, _ = finalize(apply_overrides(BuildConfig(), dataset))
        transnet_cfg, _ = finalize(apply_overrides(BuildConfig(), [*dataset, "segment_shots.method=transnetv2"]))
        pipeline = build(cfg, [stage.name for stage in STAGES])
        transnet = build(transnet_cfg, ["segment_shots"]) if args.transnetv2 else None
        plain_cfg = copy.deepcopy(cfg)
        plain_cfg.decode.shot_stream = False
        plain_decode = build(plain_cfg, ["decode"])
        runs = []
        for _ in range(args.repeats):
            load = os.getloadavg()[0]
            done = tasks(cfg)
            stages = timed(pipeline, done)
            runs.append({"load": load, "stages": stages, "decode_alone": timed(plain_decode, tasks(cfg))["decode"]})
            if transnet:
                runs[-1]["transnetv2"] = timed(transnet, done)["segment_shots"]   # the same tasks, shots by TransNetV2
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)   # each run as it ends
    print(json.dumps(summary(runs, sorted(clips), cfg.segment_shots.method), indent=1))


if __name__ == "__main__":
    main()
