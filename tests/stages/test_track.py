"""Tracker and CLEAR-MOT metrics on constructed sequences (jitter, dropouts, crossings)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from schemas.errors import UserError
from schemas.records import Attribute, Detection, DynamicSceneGraph, Frame, VideoMeta
from stages.base import VideoTask
from stages.geometry import iou_matrix
from stages.track import Tracker, TrackConfig, TrackStage
from stages.tracking_metrics import mot_metrics


@dataclass
class Mover:
    """A ground-truth object: box at ``first`` frame, per-frame velocity, lifetime."""

    box: tuple[float, float, float, float]
    velocity: tuple[float, float] = (0.0, 0.0)
    label: str = "person"
    first: int = 0
    last: int = 10 ** 9


def simulate(movers: list[Mover], num_frames: int, *, jitter: float = 0.0, dropout: float = 0.0,
             seed: int = 0, feature_dim: int = 0, feature_noise: float = 0.3):
    """Ground truth per frame, noisy detections (shuffled within a frame) and optional features."""
    rng = np.random.default_rng(seed)
    identities = rng.normal(size=(len(movers), max(feature_dim, 1)))
    gt, detections, features = [], [], []
    for f in range(num_frames):
        frame_gt, frame_dets = [], []
        for k, m in enumerate(movers):
            if not m.first <= f <= m.last:
                continue
            dx, dy = m.velocity[0] * (f - m.first), m.velocity[1] * (f - m.first)
            box = np.array(m.box) + [dx, dy, dx, dy]
            frame_gt.append((k, tuple(box)))
            if rng.random() < dropout:
                continue
            noisy = box + rng.normal(0, jitter, 4) if jitter else box
            feature = identities[k] + rng.normal(0, feature_noise, identities.shape[1])
            frame_dets.append((Detection(f, tuple(float(v) for v in noisy), m.label, 0.9), feature))
        for j in rng.permutation(len(frame_dets)):
            detections.append(frame_dets[j][0])
            features.append(frame_dets[j][1])
        gt.append(frame_gt)
    return gt, detections, (np.array(features) if feature_dim and features else None)


def run(gt, detections, features=None, cfg: Optional[TrackConfig] = None) -> dict:
    ids, tracks = Tracker(cfg).track(detections, features)
    pred = [[] for _ in gt]
    for det, track_id in zip(detections, ids):
        if track_id >= 0:
            pred[det.frame].append((track_id, det.box))
    metrics = mot_metrics(gt, pred)
    metrics["num_tracks"] = len(tracks)
    return metrics


def crossing_pair(speed: float = 0.03) -> list[Mover]:
    # two people walking towards each other on the same line; they overlap mid-sequence
    return [Mover((0.05, 0.40, 0.20, 0.80), (speed, 0.0)), Mover((0.80, 0.42, 0.95, 0.82), (-speed, 0.0))]


def crossings(cfg: TrackConfig, *, speed=0.03, dropout=0.0, with_features=False, seeds=range(10)):
    """Totals over several random crossings: id switches, ground-truth boxes, worst MOTA."""
    switches = num_gt = 0
    worst = 1.0
    for seed in seeds:
        gt, dets, feats = simulate(crossing_pair(speed), int(0.75 / speed) + 1, jitter=0.003,
                                   dropout=dropout, seed=seed, feature_dim=32)
        m = run(gt, dets, feats if with_features else None, cfg)
        switches, num_gt, worst = switches + m["id_switches"], num_gt + m["num_gt"], min(worst, m["mota"])
    return switches, num_gt, worst


# ---------------------------------------------------------------- tracker quality
def test_static_objects_with_jitter_keep_their_ids():
    movers = [Mover((0.1 + 0.22 * i, 0.3, 0.28 + 0.22 * i, 0.6)) for i in range(4)]
    gt, dets, _ = simulate(movers, 40, jitter=0.01, seed=1)
    m = run(gt, dets)
    assert m["id_switches"] == 0 and m["num_tracks"] == 4
    assert m["mota"] >= 0.99


def test_moving_objects_with_dropouts():
    movers = [Mover((0.05, 0.05 + 0.18 * i, 0.17, 0.2 + 0.18 * i), (0.012 + 0.002 * i, 0.0))
              for i in range(5)]
    gt, dets, _ = simulate(movers, 60, jitter=0.004, dropout=0.2, seed=2)
    m = run(gt, dets, cfg=TrackConfig(max_gap=3))
    assert m["id_switches_per_100"] <= 2.0
    assert m["false_positives"] == 0
    assert m["mota"] >= 0.75  # ~20% of boxes are missing from the detections by construction
    assert m["mota"] == pytest.approx(m["recall"] - m["id_switches"] / m["num_gt"])


def test_crossing_objects_keep_identity_with_motion_prediction():
    switches, _, worst = crossings(TrackConfig(use_motion=True))
    assert switches == 0 and worst >= 0.99
    # the same crossings tracked on IoU alone swap identities: the scenario is a real test
    iou_switches, _, _ = crossings(TrackConfig(use_motion=False, max_center_jump=0))
    assert iou_switches >= 10


def test_crossing_with_dropouts_keeps_identity_through_gaps():
    switches, num_gt, worst = crossings(TrackConfig(max_gap=3), speed=0.02, dropout=0.25)
    assert 100 * switches / num_gt <= 1.0
    assert worst >= 0.5  # a quarter of the boxes are missing by construction


def test_appearance_features_resolve_a_crossing_without_motion():
    cfg = TrackConfig(use_motion=False, max_center_jump=0, feature_weight=2.0)
    assert crossings(cfg, with_features=True)[0] == 0


# ---------------------------------------------------------------- tracker rules
def test_birth_death_and_deterministic_ids_in_birth_order():
    movers = [Mover((0.6, 0.1, 0.8, 0.4), label="cup", first=5, last=14),
              Mover((0.1, 0.1, 0.3, 0.4), label="dog", first=0, last=9),
              Mover((0.6, 0.1, 0.8, 0.4), label="cup", first=20, last=29)]  # gap 5 > max_gap
    gt, dets, _ = simulate(movers, 30, seed=6)
    cfg = TrackConfig(max_gap=2, reid_max_gap=0)
    ids, tracks = Tracker(cfg).track(dets)
    assert [(t.id, t.label, t.first_frame, t.last_frame) for t in tracks] == [
        (0, "dog", 0, 9), (1, "cup", 5, 14), (2, "cup", 20, 29)]
    assert ids == Tracker(cfg).track(dets)[0]
    assert sorted(set(ids)) == [0, 1, 2]
    # with re-identification the second cup, standing where the first one stood, is the same track
    assert [(t.label, t.first_frame, t.last_frame) for t in Tracker(TrackConfig(max_gap=2)).track(dets)[1]] == [
        ("dog", 0, 9), ("cup", 5, 29)]


def test_an_occluded_still_object_is_re_identified_but_not_after_it_moved_or_too_late():
    table = (0.45, 0.1, 0.65, 0.8)
    dets = [Detection(f, table, "chair", 0.8) for f in range(5)] + [Detection(f, table, "chair", 0.8)
                                                                   for f in range(15, 18)]
    assert Tracker(TrackConfig(max_gap=2, reid_max_gap=12)).track(dets)[0] == [0] * 8
    assert Tracker(TrackConfig(max_gap=2, reid_max_gap=9)).track(dets)[0] == [0] * 5 + [1] * 3  # gap 10 > 9
    moved = [Detection(f, (0.05, 0.1, 0.25, 0.8), "chair", 0.8) for f in range(15, 18)]
    assert Tracker(TrackConfig(max_gap=2)).track(dets[:5] + moved)[0] == [0] * 5 + [1] * 3
    other = [Detection(f, table, "person", 0.8) for f in range(15, 18)]
    assert Tracker(TrackConfig(max_gap=2)).track(dets[:5] + other)[0] == [0] * 5 + [1] * 3


def test_gap_within_max_gap_continues_the_track():
    dets = [Detection(f, (0.1, 0.1, 0.3, 0.3), "cat", 0.9) for f in (0, 1, 4, 5)]  # missed 2, 3
    assert Tracker(TrackConfig(max_gap=2)).track(dets)[0] == [0, 0, 0, 0]
    assert Tracker(TrackConfig(max_gap=1, reid_max_gap=0)).track(dets)[0] == [0, 0, 1, 1]


def test_a_label_flicker_joins_the_track_which_keeps_its_majority_label():
    dets = [Detection(0, (0.1, 0.1, 0.3, 0.3), "bottle", 0.9), Detection(1, (0.1, 0.1, 0.3, 0.3), "vase", 0.6),
            Detection(2, (0.1, 0.1, 0.3, 0.3), "bottle", 0.9)]
    ids, tracks = Tracker().track(dets)
    assert ids == [0, 0, 0] and [t.label for t in tracks] == ["bottle"]
    never = TrackConfig(label_mismatch_weight=0.0, min_track_length=1, reid_max_gap=0)
    assert Tracker(never).track(dets)[0] == [0, 1, 0]


def test_someone_stepping_in_front_of_a_table_does_not_take_its_track():
    table, person = (0.45, 0.1, 0.65, 0.8), (0.47, 0.05, 0.69, 0.95)     # IoU ≈ 0.6 < relabel_min_iou
    dets = [Detection(f, table, "chair", 0.8) for f in range(3)] + [Detection(f, person, "person", 0.99)
                                                                   for f in range(3, 6)]
    ids, tracks = Tracker().track(dets)
    assert ids == [0, 0, 0, 1, 1, 1] and [t.label for t in tracks] == ["chair", "person"]


def test_the_majority_label_is_weighted_by_score():
    dets = [Detection(0, (0.1, 0.1, 0.3, 0.3), "vase", 0.45), Detection(1, (0.1, 0.1, 0.3, 0.3), "vase", 0.45),
            Detection(2, (0.1, 0.1, 0.3, 0.3), "bottle", 0.95)]
    assert [t.label for t in Tracker().track(dets)[1]] == ["bottle"]     # 0.95 > 0.45 + 0.45
    with pytest.raises(UserError):
        TrackConfig(label_mismatch_weight=1.5)


def test_one_frame_flickers_are_dropped_unless_confident_and_ids_stay_dense():
    dets = [Detection(0, (0.7, 0.7, 0.9, 0.9), "bird", 0.5)] + [
        Detection(f, (0.1, 0.1, 0.3, 0.3), "cat", 0.9) for f in range(4)] + [
        Detection(2, (0.5, 0.0, 0.6, 0.1), "car", 0.95)]
    ids, tracks = Tracker(TrackConfig(min_track_length=2, keep_short_score=0.7)).track(dets)
    assert ids == [-1, 0, 0, 0, 0, 1] and [t.label for t in tracks] == ["cat", "car"]
    ids, tracks = Tracker(TrackConfig(min_track_length=2, keep_short_score=1.1)).track(dets)
    assert ids == [-1, 0, 0, 0, 0, -1]


def test_far_jump_is_a_new_track():
    dets = [Detection(0, (0.0, 0.0, 0.1, 0.1), "car", 0.9), Detection(1, (0.8, 0.8, 0.9, 0.9), "car", 0.9)]
    assert Tracker().track(dets)[0] == [0, 1]


def test_iou_matrix():
    m = iou_matrix(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]]))
    assert m[0] == pytest.approx([1 / 7, 1.0, 0.0])


def test_tracking_stage_sets_track_ids_and_tracks():
    movers = [Mover((0.1, 0.1, 0.3, 0.3), (0.01, 0), "cup"), Mover((0.6, 0.6, 0.8, 0.8), (0, -0.01), "man")]
    _, dets, feats = simulate(movers, 6, jitter=0.002, seed=7, feature_dim=8)
    meta = VideoMeta("v.mp4", 6.0, 1.0, 64, 64, "h264", 6)
    task = VideoTask("k", "test", "v", "v.mp4")
    task.dsg = DynamicSceneGraph("v", meta, [Frame(i, float(i)) for i in range(6)], dets)
    task.detection_features = feats
    TrackStage().process_batch([task])
    assert task.failure is None
    assert sorted({d.track_id for d in task.dsg.detections}) == [0, 1]
    assert [(t.label, t.first_frame, t.last_frame) for t in task.dsg.tracks] == [("cup", 0, 5), ("man", 0, 5)] \
        or [(t.label, t.first_frame, t.last_frame) for t in task.dsg.tracks] == [("man", 0, 5), ("cup", 0, 5)]
    for d in task.dsg.detections:
        assert task.dsg.tracks[d.track_id].label == d.label


def _task(detections, features=None, attributes=(), frames=6) -> VideoTask:
    task = VideoTask("k", "test", "v", "v.mp4")
    task.dsg = DynamicSceneGraph("v", VideoMeta("v.mp4", 6.0, 1.0, 64, 64, "h264", frames),
                                 [Frame(i, float(i)) for i in range(frames)], list(detections), list(attributes))
    task.detection_features = features
    return task


def test_the_stage_removes_flickers_with_their_feature_rows_and_attributes_and_relabels():
    dets = [Detection(f, (0.1, 0.1, 0.3, 0.3), "bottle" if f != 2 else "vase", 0.9) for f in range(4)]
    dets.insert(1, Detection(0, (0.7, 0.7, 0.9, 0.9), "tie", 0.4))   # a one-frame flicker
    features = np.arange(5 * 3, dtype=np.float32).reshape(5, 3) + 1
    attrs = [Attribute("detection", 1, "color", "red", 0.9), Attribute("detection", 4, "color", "blue", 0.8)]
    [task] = TrackStage().process_batch([_task(dets, features, attrs)])
    assert task.failure is None
    assert [(d.frame, d.label, d.track_id) for d in task.dsg.detections] == [(f, "bottle", 0) for f in range(4)]
    np.testing.assert_array_equal(task.detection_features, features[[0, 2, 3, 4]])
    assert [(a.target, a.value) for a in task.dsg.attributes] == [(3, "blue")]


def test_the_stage_survives_no_detections_and_zero_row_features():
    for features in (None, np.zeros((0, 1280), np.float32)):
        [task] = TrackStage().process_batch([_task([], features)])
        assert task.failure is None and task.dsg.detections == [] and task.dsg.tracks == []
    # features that do not match the detections are ignored, not a crash
    dets = [Detection(f, (0.1, 0.1, 0.3, 0.3), "cup", 0.9) for f in range(3)]
    [task] = TrackStage().process_batch([_task(dets, np.zeros((0, 8), np.float32))])
    assert task.failure is None and [d.track_id for d in task.dsg.detections] == [0, 0, 0]


# ---------------------------------------------------------------- CLEAR-MOT
def test_mot_metrics_perfect_tracking():
    gt = [[(1, (0, 0, 1, 1)), (2, (2, 2, 3, 3))]] * 3
    pred = [[("a", (0, 0, 1, 1)), ("b", (2, 2, 3, 3))]] * 3
    m = mot_metrics(gt, pred)
    assert (m["matches"], m["misses"], m["false_positives"], m["id_switches"]) == (6, 0, 0, 0)
    assert m["mota"] == 1.0 and m["motp"] == 1.0 and m["precision"] == 1.0 and m["recall"] == 1.0


def test_mot_metrics_counts_switch_miss_and_false_positive():
    gt = [[(1, (0, 0, 10, 10))], [(1, (0, 0, 10, 10))], [(1, (0, 0, 10, 10))], [(1, (0, 0, 10, 10))]]
    pred = [[(7, (0, 0, 10, 10))], [],                    # miss
            [(8, (0, 0, 10, 10)), (9, (50, 50, 60, 60))],  # switch 7→8 and a false positive
            [(8, (1, 0, 11, 10))]]
    m = mot_metrics(gt, pred)
    assert (m["matches"], m["misses"], m["false_positives"], m["id_switches"]) == (3, 1, 1, 1)
    assert m["mota"] == pytest.approx(1 - 3 / 4)
    assert m["id_switches_per_100"] == pytest.approx(25.0)
    assert m["precision"] == pytest.approx(3 / 4) and m["recall"] == pytest.approx(3 / 4)


def test_mot_metrics_keeps_an_established_match_over_a_better_newcomer():
    gt = [[(1, (0, 0, 10, 10))], [(1, (0, 0, 10, 10))]]
    pred = [[(7, (0, 0, 10, 10))], [(7, (0, 0, 10, 12)), (8, (0, 0, 10, 10))]]
    m = mot_metrics(gt, pred)
    assert m["id_switches"] == 0 and m["false_positives"] == 1


def test_mot_metrics_below_threshold_is_not_a_match():
    m = mot_metrics([[(1, (0, 0, 10, 10))]], [[(1, (6, 0, 16, 10))]], iou_threshold=0.5)
    assert (m["matches"], m["misses"], m["false_positives"]) == (0, 1, 1)
    with pytest.raises(ValueError):
        mot_metrics([[]], [])


# ---------------------------------------------------------------- invariants
_box = st.tuples(st.floats(0, 0.8), st.floats(0, 0.8), st.floats(0.05, 0.2), st.floats(0.05, 0.2)).map(
    lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3]))
_detections = st.lists(st.tuples(st.integers(0, 12), _box, st.sampled_from(["cat", "dog"])), max_size=40)


@settings(max_examples=60, deadline=None)
@given(_detections, st.integers(0, 3), st.integers(1, 3))
def test_tracker_invariants(raw, max_gap, min_len):
    dets = [Detection(f, box, label, 0.9) for f, box, label in raw]
    cfg = TrackConfig(max_gap=max_gap, min_track_length=min_len, keep_short_score=1.1, reid_max_gap=0,
                      label_mismatch_weight=0.0)
    ids, tracks = Tracker(cfg).track(dets)
    assert len(ids) == len(dets)
    assert [t.id for t in tracks] == list(range(len(tracks)))       # dense, 0..n-1
    births = [min(d.frame for d, i in zip(dets, ids) if i == t.id) for t in tracks]
    assert births == sorted(births)                                  # numbered in birth order
    for t in tracks:
        members = [d for d, i in zip(dets, ids) if i == t.id]
        frames = [d.frame for d in members]
        assert len(frames) == len(set(frames)) >= min_len            # one box per frame per track
        assert (t.first_frame, t.last_frame) == (min(frames), max(frames))
        assert {d.label for d in members} == {t.label}               # labels never mix at weight 0
        gaps = np.diff(sorted(frames))
        assert (gaps <= max_gap + 1).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 5), _box), max_size=5), max_size=10))
def test_mot_metrics_of_ground_truth_against_itself_is_perfect(frames):
    gt = [list({g: (g, b) for g, b in frame}.values()) for frame in frames]  # unique ids per frame
    for frame in gt:  # two objects that overlap ≥ 0.5 are ambiguous for any matcher
        overlap = iou_matrix(np.array([b for _, b in frame]), np.array([b for _, b in frame]))
        assume(not (overlap - np.eye(len(frame)) >= 0.5).any())
    relabelled = [[(f"t{g}", b) for g, b in frame] for frame in gt]
    m = mot_metrics(gt, relabelled)
    assert m["id_switches"] == 0 and m["misses"] == 0 and m["false_positives"] == 0
    if m["num_gt"]:
        assert m["mota"] == 1.0


def test_no_track_spans_a_cut():
    """The same box on both sides of a cut (a new shot framed alike) starts a new track."""
    detections = [Detection(f, (0.4, 0.4, 0.6, 0.6), "person", 0.9) for f in range(6)]
    ids, tracks = Tracker().track(detections)
    assert len(tracks) == 1
    ids, tracks = Tracker().track(detections, frame_shots=[0, 0, 0, 1, 1, 1])
    assert ids == [0, 0, 0, 1, 1, 1] and [(t.first_frame, t.last_frame) for t in tracks] == [(0, 2), (3, 5)]
