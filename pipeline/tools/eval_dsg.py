"""Score built DSGs/HSGs against the synthetic world's ground truth (``eval-dsg``).

Usage::

    python cli.py make-synthetic --count 16 --seed 0 --out out/world
    python cli.py build-sgs --dataset synthetic --data-root out/world --detector color --out out/world-sgs
    python cli.py eval-dsg out/world-sgs --truth out/world --json

What is measured (all over every sampled frame that matches a truth frame):

* **Frame matching.** A DSG frame is paired with the truth frame of the same
  native index (``Frame.index``) when their timestamps agree within half a
  frame period, else with the truth frame nearest its timestamp (within half
  a period); unmatched frames are left out and counted.
* **Targets.** Objects with visible fraction ≥ 0.5 (``MIN_VISIBILITY``),
  boxed by their visible pixels. A detection overlapping a less visible
  object (IoU ≥ 0.5 with its visible box) is ignored, neither TP nor FP.
* **Detection** precision/recall at IoU ≥ 0.5, one-to-one (Hungarian on IoU).
* **Tracking**: CLEAR-MOT by :func:`stages.tracking_metrics.mot_metrics`
  per video over its matched frames (truth ids vs track ids, visible boxes,
  IoU ≥ 0.5; ignored detections left out), counts summed over videos:
  ``id_switches_per_100`` = 100 · switches / truth object-frames;
  ``MOTA = 1 − (FN + FP + IDSW) / truth object-frames``. Null when no
  detection carries a track id.
* **Relations** R@K: per frame, the predicted relations ranked by score, top
  K, each read with its meaning (:func:`stages.relate.reverse_predicates`: a
  stored ``A near B`` also says ``B near A``, ``A left of B`` says ``B right
  of A``); a truth triplet ``(s, predicate, o)`` is recalled when one of them
  has the same predicate, the subject's and object's labels and both boxes at
  IoU ≥ 0.5 (the relate stage stores one predicate per ordered pair and a
  symmetric one once; on the synthetic dataset it relates every pair, as the
  truth does: ``relate.pairs=auto``). Null when no DSG has any relation (no
  relation stage ran).
* **Attributes**: for each detection matched to a truth object, ``color``
  always (a missing colour is wrong) plus ``shape`` and ``size`` when
  predicted; a detection's own attribute wins over its track's; of several
  values the highest score wins.
* **HSG link accuracy**: for each real caption (not a negative) whose text
  matches a truth caption, each parsed object node that corresponds to a
  gold object node (same lemma, overlapping character span, else the same
  occurrence order) is correct when its best-scoring link goes to the track
  whose majority truth object is the one the gold node refers to; no link is
  wrong. Null when no sample has links.
"""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

from schemas.errors import UserError
from schemas.records import DynamicSceneGraph, VideoSample
from stages.geometry import iou_matrix
from stages.relate import reverse_predicates
from stages.tracking_metrics import mot_metrics

IOU_THRESHOLD = 0.5
MIN_VISIBILITY = 0.5
RECALL_AT = (20, 50)
ATTRIBUTE_NAMES = ("color", "shape", "size")


# ------------------------------------------------------------- truth
def load_truth(truth_dir: str | Path) -> dict[str, dict]:
    """``{video_id: truth}`` from a synthetic folder or its ``truth/`` subfolder."""
    root = Path(truth_dir)
    folder = root / "truth" if (root / "truth").is_dir() else root
    if not folder.is_dir():
        raise UserError(f"truth folder {root} not found; pass the folder made by 'python cli.py make-synthetic'")
    truth = {}
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except ValueError as error:
            raise UserError(f"{path} is not valid JSON ({error})") from None
        if not isinstance(record, dict) or "frames" not in record or "video_id" not in record:
            continue   # world.json and other files that are not a video's truth
        truth[record["video_id"]] = record
    if not truth:
        raise UserError(f"no truth files in {folder}; pass the folder made by 'python cli.py make-synthetic'")
    return truth


def iou(a, b) -> float:
    return float(iou_matrix([a], [b])[0, 0])


def _assign(ious: np.ndarray, threshold: float = IOU_THRESHOLD) -> list[tuple[int, int]]:
    """One-to-one pairs with IoU ≥ threshold maximising total IoU."""
    if ious.size == 0:
        return []
    rows, cols = linear_sum_assignment(-ious)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if ious[r, c] >= threshold]


def match_frames(dsg: DynamicSceneGraph, truth: dict) -> dict[int, int]:
    """DSG frame position → truth frame index (see the module docstring)."""
    fps = float(truth["fps"])
    half = 0.5 / fps + 1e-6
    stamps = np.array([f["timestamp"] for f in truth["frames"]])
    out = {}
    for k, frame in enumerate(dsg.frames):
        if 0 <= frame.index < len(stamps) and abs(stamps[frame.index] - frame.timestamp) <= half:
            out[k] = frame.index
            continue
        nearest = int(np.argmin(np.abs(stamps - frame.timestamp))) if len(stamps) else -1
        if nearest >= 0 and abs(stamps[nearest] - frame.timestamp) <= half:
            out[k] = nearest
    return out


# ------------------------------------------------------------- accumulation
@dataclass
class _Totals:
    frames: int = 0
    frames_unmatched: int = 0
    samples: int = 0
    samples_without_truth: int = 0
    gt: int = 0
    tp: int = 0
    pred: int = 0
    ignored: int = 0
    tracked: bool = False
    mot_fn: int = 0
    mot_fp: int = 0
    idsw: int = 0
    mot_gt: int = 0
    rel_gt: int = 0
    rel_hit: dict[int, int] = field(default_factory=lambda: {k: 0 for k in RECALL_AT})
    any_relations: bool = False
    attr_checked: Counter = field(default_factory=Counter)
    attr_correct: Counter = field(default_factory=Counter)
    link_checked: int = 0
    link_correct: int = 0
    any_links: bool = False
    captions_matched: int = 0
    captions_unmatched: int = 0


def _attribute_lookup(dsg: DynamicSceneGraph) -> tuple[dict, dict]:
    """(detection index, name) → value and (track id, name) → value, highest score first."""
    best: dict[tuple[str, int, str], tuple[float, int, str]] = {}
    for order, a in enumerate(dsg.attributes):
        key = (a.target_kind, a.target, a.name)
        if key not in best or a.score > best[key][0]:
            best[key] = (a.score, order, a.value)
    det = {(t, n): v[2] for (kind, t, n), v in best.items() if kind == "detection"}
    trk = {(t, n): v[2] for (kind, t, n), v in best.items() if kind == "track"}
    return det, trk


def _evaluate_sample(sample: VideoSample, truth: dict, tot: _Totals) -> None:
    dsg = sample.dsg
    frames = match_frames(dsg, truth)
    tot.frames += len(frames)
    tot.frames_unmatched += len(dsg.frames) - len(frames)
    labels = {o["id"]: o["label"] for o in truth["objects"]}
    objects = {o["id"]: o for o in truth["objects"]}
    by_frame: dict[int, list[int]] = defaultdict(list)
    for d, det in enumerate(dsg.detections):
        by_frame[det.frame].append(d)
    rel_by_frame = defaultdict(list)
    for r in dsg.relations:
        rel_by_frame[r.frame].append(r)
    tot.any_relations |= bool(dsg.relations)
    tracked = any(det.track_id >= 0 for det in dsg.detections)
    tot.tracked |= tracked
    det_attr, trk_attr = _attribute_lookup(dsg)
    mot_gt: list[list] = []                    # per matched frame: (truth id, box) and (track id, box)
    mot_pred: list[list] = []
    track_votes: dict[int, Counter] = defaultdict(Counter)   # track → truth objects it matched

    for k in sorted(frames):
        tframe = truth["frames"][frames[k]]
        targets = [o for o in tframe["objects"] if o["visibility"] >= MIN_VISIBILITY and o["visible_box"]]
        faint = [o for o in tframe["objects"] if o["visibility"] < MIN_VISIBILITY and o["visible_box"]]
        dets = by_frame.get(k, [])
        boxes = [dsg.detections[d].box for d in dets]
        ious = iou_matrix([o["visible_box"] for o in targets], boxes)
        pairs = _assign(ious)
        matched = {j for _, j in pairs}
        ignored = {j for j in range(len(dets)) if j not in matched and any(
            iou(boxes[j], o["visible_box"]) >= IOU_THRESHOLD for o in faint)}
        tot.gt += len(targets)
        tot.tp += len(pairs)
        tot.pred += len(dets) - len(ignored)
        tot.ignored += len(ignored)

        # attributes of matched detections
        for i, j in pairs:
            d = dets[j]
            obj = objects[targets[i]["id"]]
            track = dsg.detections[d].track_id
            for name in ATTRIBUTE_NAMES:
                value = det_attr.get((d, name)) or (trk_attr.get((track, name)) if track >= 0 else None)
                if value is None and name != "color":
                    continue
                tot.attr_checked[name] += 1
                tot.attr_correct[name] += int(value == obj[name])

        if tracked:
            live = [j for j in range(len(dets)) if j not in ignored]
            # an untracked detection (-1) is its own one-frame hypothesis
            mot_gt.append([(o["id"], o["visible_box"]) for o in targets])
            mot_pred.append([(dsg.detections[dets[j]].track_id if dsg.detections[dets[j]].track_id >= 0
                              else ("untracked", dets[j]), boxes[j]) for j in live])
            for i, j in pairs:
                if dsg.detections[dets[j]].track_id >= 0:
                    track_votes[dsg.detections[dets[j]].track_id][targets[i]["id"]] += 1

        # relations R@K
        visible = {o["id"]: o for o in targets}
        gt_triplets = [(s, p, o) for s, p, o in tframe["relations"] if s in visible and o in visible]
        tot.rel_gt += len(gt_triplets)
        if gt_triplets:
            ranked = sorted(rel_by_frame.get(k, []), key=lambda r: -r.score)
            for K in RECALL_AT:
                said = _read_relations(ranked[:K])
                for s, p, o in gt_triplets:
                    if any(predicate == p
                           and dsg.detections[subj].label == labels[s]
                           and dsg.detections[obj].label == labels[o]
                           and iou(dsg.detections[subj].box, visible[s]["visible_box"]) >= IOU_THRESHOLD
                           and iou(dsg.detections[obj].box, visible[o]["visible_box"]) >= IOU_THRESHOLD
                           for subj, predicate, obj in said):
                        tot.rel_hit[K] += 1

    if tracked:
        mot = mot_metrics(mot_gt, mot_pred, IOU_THRESHOLD)
        tot.mot_gt += mot["num_gt"]
        tot.mot_fn += mot["misses"]
        tot.mot_fp += mot["false_positives"]
        tot.idsw += mot["id_switches"]

    # HSG links
    track_object = {tid: votes.most_common(1)[0][0] for tid, votes in track_votes.items() if votes}
    gold = {_norm_text(c["text"]): c for c in truth.get("captions", [])}
    for hsg in sample.hsgs:
        if hsg.negative_of is not None:
            continue
        tot.any_links |= bool(hsg.links)
        caption = gold.get(_norm_text(hsg.tsg.text))
        if caption is None:
            tot.captions_unmatched += 1
            continue
        tot.captions_matched += 1
        best_link: dict[int, tuple[float, int]] = {}
        for link in hsg.links:
            if link.text_node not in best_link or link.score > best_link[link.text_node][0]:
                best_link[link.text_node] = (link.score, link.track_id)
        for node_id, object_id in _align_objects(hsg.tsg, caption).items():
            tot.link_checked += 1
            if node_id in best_link and track_object.get(best_link[node_id][1]) == object_id:
                tot.link_correct += 1


def _align_objects(tsg, caption: dict) -> dict[int, int]:
    """Parsed object node id → referred truth object id, via the gold TSG's object nodes."""
    gold_nodes = {n["id"]: n for n in caption["tsg"]["nodes"] if n["kind"] == "object"}
    refs = {int(k): v for k, v in caption["refs"].items()}
    shift = caption["text"].find(tsg.text.strip()[:20]) if tsg.text.strip() else 0
    shift = max(shift, 0)
    out: dict[int, int] = {}
    taken: set[int] = set()
    parsed = [n for n in tsg.nodes if n.kind == "object"]
    for node in parsed:
        for gid, g in gold_nodes.items():
            if gid in taken or gid not in refs or g["lemma"] != node.lemma:
                continue
            gs, ge = g["span"]
            if node.span[0] + shift < ge and gs < node.span[1] + shift:
                out[node.id] = refs[gid]
                taken.add(gid)
                break
    for node in parsed:        # no span overlap: fall back to occurrence order per lemma
        if node.id in out:
            continue
        for gid, g in sorted(gold_nodes.items()):
            if gid not in taken and gid in refs and g["lemma"] == node.lemma:
                out[node.id] = refs[gid]
                taken.add(gid)
                break
    return out


_SPACES = re.compile(r"\s+")


def _norm_text(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


def _read_relations(relations) -> list[tuple[int, str, int]]:
    """Stored relations as the triplets they state, reverse readings included (``A near B`` → ``B near A``)."""
    out = []
    for r in relations:
        predicate = _norm_pred(r.predicate)
        out.append((r.subject, predicate, r.object))
        out += [(r.object, reverse, r.subject) for reverse in sorted(reverse_predicates(predicate))]
    return out


def _norm_pred(predicate: str) -> str:
    return _SPACES.sub(" ", predicate.replace("_", " ")).strip().lower()


# ------------------------------------------------------------- entry points
def evaluate_samples(samples: Iterable[VideoSample], truth: dict[str, dict]) -> dict:
    """The ``eval-dsg`` summary of ``samples`` against ``truth`` (see :func:`load_truth`).

    Returns ``{"detection": {"precision", "recall"}, "tracking": {"id_switches_per_100", "mota"},
    "relations": {"R@20", "R@50"}, "attributes": {"accuracy"}, "hsg": {"link_accuracy"}}``
    plus a ``"details"`` dict of counts (dropped by ``--json``).
    """
    tot = _Totals()
    for sample in samples:
        record = truth.get(sample.dsg.video_id) or truth.get(sample.key)
        if record is None:
            tot.samples_without_truth += 1
            continue
        tot.samples += 1
        _evaluate_sample(sample, record, tot)
    if tot.samples == 0:
        raise UserError("no built sample has a truth file: is --truth the synthetic folder these DSGs came from?")
    checked = sum(tot.attr_checked.values())
    return {
        "detection": {"precision": _ratio(tot.tp, tot.pred), "recall": _ratio(tot.tp, tot.gt)},
        "tracking": {
            "id_switches_per_100": (100.0 * tot.idsw / tot.mot_gt) if tot.tracked and tot.mot_gt else None,
            "mota": (1.0 - (tot.mot_fn + tot.mot_fp + tot.idsw) / tot.mot_gt) if tot.tracked and tot.mot_gt
            else None,
        },
        "relations": {f"R@{k}": _ratio(tot.rel_hit[k], tot.rel_gt) if tot.any_relations else None
                      for k in RECALL_AT},
        "attributes": {"accuracy": _ratio(sum(tot.attr_correct.values()), checked)},
        "hsg": {"link_accuracy": _ratio(tot.link_correct, tot.link_checked) if tot.any_links else None},
        "details": {
            "samples": tot.samples, "samples_without_truth": tot.samples_without_truth,
            "frames": tot.frames, "frames_unmatched": tot.frames_unmatched,
            "truth_objects": tot.gt, "detections": tot.pred, "true_positives": tot.tp,
            "detections_ignored": tot.ignored, "id_switches": tot.idsw, "misses": tot.mot_fn,
            "false_positives": tot.mot_fp, "truth_relations": tot.rel_gt,
            "relations_recalled": {f"R@{k}": tot.rel_hit[k] for k in RECALL_AT},
            "attributes": {n: {"checked": tot.attr_checked[n], "correct": tot.attr_correct[n],
                               "accuracy": _ratio(tot.attr_correct[n], tot.attr_checked[n])}
                           for n in ATTRIBUTE_NAMES},
            "captions_matched": tot.captions_matched, "captions_unmatched": tot.captions_unmatched,
            "links_checked": tot.link_checked, "links_correct": tot.link_correct,
        },
    }


def _ratio(num: int, den: int) -> Optional[float]:
    return num / den if den else None


def evaluate_dataset(out_dir: str | Path, truth_dir: str | Path) -> dict:
    """:func:`evaluate_samples` over a dataset folder written by ``build-sgs``."""
    from schemas.store import open_dataset
    truth = load_truth(truth_dir)
    dataset = open_dataset(out_dir)
    return evaluate_samples((sample for sample, _ in dataset.iter_samples()), truth)


def headline(summary: dict) -> dict:
    """The five-section summary ``--json`` prints, without the details."""
    return {k: v for k, v in summary.items() if k != "details"}


def format_summary(summary: dict) -> str:
    def show(value: Optional[float], digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    d = summary["details"]
    lines = [
        f"samples {d['samples']} ({d['samples_without_truth']} without truth), frames {d['frames']} "
        f"({d['frames_unmatched']} unmatched)",
        f"detection   precision {show(summary['detection']['precision'])}  "
        f"recall {show(summary['detection']['recall'])}  "
        f"(tp {d['true_positives']} / {d['detections']} detections / {d['truth_objects']} truth objects)",
        f"tracking    id switches per 100 {show(summary['tracking']['id_switches_per_100'], 2)}  "
        f"MOTA {show(summary['tracking']['mota'])}  (switches {d['id_switches']}, misses {d['misses']}, "
        f"false positives {d['false_positives']})",
        f"relations   R@20 {show(summary['relations']['R@20'])}  R@50 {show(summary['relations']['R@50'])}  "
        f"({d['truth_relations']} truth triplets)",
        f"attributes  accuracy {show(summary['attributes']['accuracy'])}  ("
        + ", ".join(f"{n} {show(v['accuracy'])} of {v['checked']}" for n, v in d["attributes"].items()) + ")",
        f"hsg         link accuracy {show(summary['hsg']['link_accuracy'])}  "
        f"({d['links_correct']}/{d['links_checked']} object mentions; {d['captions_matched']} captions matched, "
        f"{d['captions_unmatched']} not)",
    ]
    return "\n".join(lines)


def run_eval_dsg(out_dir: Path, truth_dir: Path, as_json: bool) -> str:
    """What ``python cli.py eval-dsg`` prints."""
    if not Path(out_dir).exists():
        raise UserError(f"{out_dir} not found; build it with 'python cli.py build-sgs --dataset synthetic ...'")
    summary = evaluate_dataset(out_dir, truth_dir)
    return json.dumps(headline(summary)) if as_json else format_summary(summary)
