"""Real clips through the real DSG stages; class presence, tracks and relations against what a person sees.

Each clip listed in the truth file (default: ``tests/stages/data/real_clips.json``,
classes a person sees per clip) is decoded with :mod:`stages.decode` (1 fps,
native size, as ``build-sgs`` does) and run through ``detect → track →
relate``; or ``--shards OUT`` reads the DSGs an earlier ``build-sgs`` wrote.
Per clip it prints one JSON object:

* ``recall``: share of the truth's ``present`` classes that label at least one track;
* ``precision``: share of the distinct track labels that are ``present`` or
  ``plausible``; ``track_precision``: the same over tracks;
* ``tracks_per_object``: tracks ÷ the truth's ``visible_objects``;
* relations per frame and per detection, the most predicates on one ordered pair;
* ``detect_frames_per_s``: the detect stage's own frames/s (wall, this process);
* ``facts_seen``: share of the truth's ``facts`` (what a person sees happen) that the DSG
  states with the right labels; ``facts_seen_up_to_label`` also accepts the labels the
  detector gives those objects (``misread``); each missed fact is listed with its cause:
  ``label`` (stated up to the label), ``detector`` (an object of the fact is no track,
  even misread) or ``relations`` (both are tracks; no relation, track relation or
  attribute says it).

The last line is the facts summed over the clips.

    .venv/bin/python scripts/report_detections.py --videos ../shared/data/videos
    .venv/bin/python scripts/report_detections.py --videos ../shared/data/videos --set detect.name=lite
    .venv/bin/python scripts/report_detections.py --shards out/clips
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import BuildConfig, apply_overrides, finalize  # noqa: E402
from schemas.records import DynamicSceneGraph  # noqa: E402
from stages.relate import reverse_predicates  # noqa: E402
from stages.base import VideoTask  # noqa: E402
from stages.decode import DecodeStage  # noqa: E402
from stages.detect import DetectStage  # noqa: E402
from stages.relate import RelateStage  # noqa: E402
from stages.track import TrackStage  # noqa: E402

TRUTH = ROOT / "tests" / "stages" / "data" / "real_clips.json"


def clip_figures(dsg: DynamicSceneGraph, truth: dict) -> dict:
    """The figures above for one clip's DSG and its truth entry."""
    present, plausible = set(truth["present"]), set(truth["present"]) | set(truth.get("plausible", []))
    labels = Counter(t.label for t in dsg.tracks)
    per_pair = Counter((r.frame, r.subject, r.object) for r in dsg.relations)
    frames, detections = max(len(dsg.frames), 1), max(len(dsg.detections), 1)
    return {
        "frames": len(dsg.frames), "detections": len(dsg.detections), "tracks": len(dsg.tracks),
        "track_labels": dict(labels.most_common()),
        "recall": round(len(present & set(labels)) / len(present), 3),
        "precision": round(len(set(labels) & plausible) / len(labels), 3) if labels else None,
        "track_precision": round(sum(n for lab, n in labels.items() if lab in plausible) / len(dsg.tracks), 3)
        if dsg.tracks else None,
        "missed": sorted(present - set(labels)), "false": sorted(set(labels) - plausible),
        "tracks_per_object": round(len(dsg.tracks) / truth["visible_objects"], 2),
        "relations": len(dsg.relations), "relations_per_frame": round(len(dsg.relations) / frames, 2),
        "max_relations_in_a_frame": max(Counter(r.frame for r in dsg.relations).values(), default=0),
        "relations_per_detection": round(len(dsg.relations) / detections, 2),
        "max_predicates_per_ordered_pair": max(per_pair.values(), default=0),
        "predicates": dict(Counter(r.predicate for r in dsg.relations).most_common(6)),
        "track_relations": len(dsg.track_relations),
        "track_predicates": dict(Counter(r.predicate for r in dsg.track_relations).most_common()),
        **fact_figures(dsg, truth),
    }


def dsg_statements(dsg: DynamicSceneGraph) -> set[tuple]:
    """What ``dsg`` says, by labels: ``(subject, predicate, object)`` of every per-frame relation (and of its
    reverse reading), ``(subject, predicate, None)`` of unary track relations, ``(track, "name=value", None)``."""
    label = {t.id: t.label for t in dsg.tracks}
    name = {i: label.get(d.track_id, d.label) for i, d in enumerate(dsg.detections)}
    out: set[tuple] = set()
    for r in dsg.relations:
        out.add((name[r.subject], r.predicate, name[r.object]))
        out |= {(name[r.object], p, name[r.subject]) for p in reverse_predicates(r.predicate)}
    for r in dsg.track_relations:
        obj = label.get(r.object) if r.object >= 0 else None
        out.add((label.get(r.subject), r.predicate, obj))
        out |= {(obj, p, label.get(r.subject)) for p in reverse_predicates(r.predicate)}
    out |= {(label.get(a.target), f"{a.name}={a.value}", None) for a in dsg.attributes if a.target_kind == "track"}
    return out


def fact_figures(dsg: DynamicSceneGraph, truth: dict) -> dict:
    """``facts_seen`` (right labels), ``facts_seen_up_to_label`` (``misread`` labels too) and each missed fact
    with its cause."""
    said, tracks = dsg_statements(dsg), {t.label for t in dsg.tracks}
    misread = truth.get("misread", {})

    def stated(fact: dict, aliases: dict) -> bool:
        subjects = {fact["subject"], *aliases.get(fact["subject"], [])}
        objects = {fact["object"], *aliases.get(fact["object"], [])} if "object" in fact else {None}
        predicates = [fact["attribute"]] if "attribute" in fact else fact["predicates"]
        return any((s, p, o) in said for s in subjects for p in predicates for o in objects)

    facts = truth.get("facts", [])
    seen = [stated(f, {}) for f in facts]
    loose = [stated(f, misread) for f in facts]
    def cause(fact: dict, up_to_label: bool) -> str:
        if up_to_label:
            return "label"
        labels = [{lab, *misread.get(lab, [])} for lab in (fact["subject"], fact.get("object", fact["subject"]))]
        return "detector" if any(not (options & tracks) for options in labels) else "relations"

    missed = {f["fact"]: cause(f, ok_loose) for f, ok, ok_loose in zip(facts, seen, loose) if not ok}
    return {"facts": len(facts), "facts_seen": sum(seen), "facts_seen_up_to_label": sum(loose),
            "facts_missed": missed}


def run_stages(video: Path, cfg) -> tuple[DynamicSceneGraph, float]:
    task = VideoTask(video.stem, "report", video.stem, str(video))
    stages = [DecodeStage(cfg.decode), DetectStage(cfg.detect), TrackStage(cfg.track), RelateStage(cfg.relate)]
    detect_s = 0.0
    for stage in stages:
        stage.setup()
        started = time.perf_counter()
        [task] = stage.process_batch([task])
        if stage.name == "detect":
            detect_s = time.perf_counter() - started
        if task.failure is not None:
            raise SystemExit(f"{video.name}: {task.failure}")
    return task.dsg, len(task.dsg.frames) / max(detect_s, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truth", type=Path, default=TRUTH)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--videos", type=Path, help="folder holding the truth file's clips")
    source.add_argument("--shards", type=Path, help="a build-sgs output of those clips")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="a build-sgs option, e.g. --set detect.name=lite (repeatable)")
    args = parser.parse_args()
    truth = json.loads(args.truth.read_text())["clips"]
    report = {}
    if args.shards:
        from schemas.store import open_dataset
        dataset = open_dataset(args.shards)
        for key in dataset.keys():
            dsg = dataset.get(key)[0].dsg
            name = Path(dsg.meta.path).name
            if name in truth:
                report[name] = clip_figures(dsg, truth[name])
    else:
        cfg, _ = finalize(apply_overrides(BuildConfig(), args.overrides))
        for name in truth:
            dsg, fps = run_stages(args.videos / name, cfg)
            report[name] = {"detector": cfg.detect.name, "detect_frames_per_s": round(fps, 2),
                            **clip_figures(dsg, truth[name])}
    total = {key: sum(clip[key] for clip in report.values())
             for key in ("facts", "facts_seen", "facts_seen_up_to_label")}
    print(json.dumps(report, indent=1))
    print(json.dumps({**total, "facts_seen_share": round(total["facts_seen"] / max(total["facts"], 1), 3),
                      "up_to_label_share": round(total["facts_seen_up_to_label"] / max(total["facts"], 1), 3)}))


if __name__ == "__main__":
    main()
