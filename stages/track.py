"""Link detections across sampled frames into tracks (the DSG's temporal coreference).

Online tracking-by-detection, one sampled frame at a time:

1. Every live track predicts its box on the current frame by constant
   velocity (smoothed over its last observations), so objects keep their
   identity while crossing and across gaps.
2. Each (track, detection) pair gets a similarity in ``[0, 1]``::

       spatial = max(IoU(predicted, box), 0.5 · max(0, 1 − centre_distance / (max_center_jump · size)))
       score   = (iou_weight · spatial + feature_weight · cosine) / (iou_weight + feature_weight)

   ``cosine`` (clipped to ``[0, 1]``) compares the detection's feature with the
   track's running mean feature; without features ``score = spatial``. Pairs
   with different labels (when ``require_same_label``) or ``score <
   min_match_score`` cannot be linked.
3. Hungarian assignment (:func:`scipy.optimize.linear_sum_assignment`)
   maximises the total score; unmatched detections start tracks (birth); a
   track unmatched for more than ``max_gap`` sampled frames ends (death).

Finally tracks with fewer than ``min_track_length`` detections are dropped
(their detections keep ``track_id = -1``) and the rest are numbered
``0..n-1`` in order of birth (first frame, then detection order), so ids are
deterministic.

Example::

    ids, tracks = Tracker(TrackConfig(max_gap=2)).track(dsg.detections, features)
    # ids[i] is detections[i]'s track id; tracks[k] = Track(k, label, first, last)
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from schemas.errors import UserError
from schemas.records import Detection, Track
from stages.base import Stage, VideoTask
from stages.geometry import iou_matrix

_FORBIDDEN = 1e6


@dataclass
class TrackConfig:
    """Association weights and track life rules (see the module docstring)."""

    iou_weight: float = 1.0
    feature_weight: float = 0.5
    require_same_label: bool = True
    min_match_score: float = 0.2
    max_gap: int = 2
    min_track_length: int = 1
    max_center_jump: float = 1.5
    use_motion: bool = True
    feature_momentum: float = 0.8

    def __post_init__(self) -> None:
        if self.iou_weight < 0 or self.feature_weight < 0 or self.iou_weight + self.feature_weight <= 0:
            raise UserError("tracker weights must be >= 0 and not both 0")
        if self.max_gap < 0 or self.min_track_length < 1:
            raise UserError("tracker max_gap must be >= 0 and min_track_length >= 1")


@dataclass
class _TrackState:
    birth: tuple[int, int]                 # (frame, detection index): orders track ids
    members: list[int] = field(default_factory=list)
    labels: Counter = field(default_factory=Counter)
    box: np.ndarray = field(default_factory=lambda: np.zeros(4))
    frame: int = 0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    feature: Optional[np.ndarray] = None

    def predict(self, frame: int, use_motion: bool) -> np.ndarray:
        return self.box + self.velocity * (frame - self.frame) if use_motion else self.box

    def add(self, index: int, frame: int, box: np.ndarray, label: str,
            feature: Optional[np.ndarray], momentum: float) -> None:
        if self.members:
            step = (box - self.box) / max(1, frame - self.frame)
            self.velocity = step if len(self.members) == 1 else 0.5 * self.velocity + 0.5 * step
        self.members.append(index)
        self.labels[label] += 1
        self.box, self.frame = box, frame
        if feature is not None:
            mixed = feature if self.feature is None else momentum * self.feature + (1 - momentum) * feature
            self.feature = mixed / (np.linalg.norm(mixed) + 1e-12)

    def label(self) -> str:
        # majority label; ties go to the label seen first (Counter keeps insertion order)
        best = max(self.labels.values())
        return next(name for name, n in self.labels.items() if n == best)




class Tracker:
    """Hungarian tracking-by-detection; stateless between calls to :meth:`track`."""

    def __init__(self, cfg: Optional[TrackConfig] = None):
        self.cfg = cfg or TrackConfig()

    def track(self, detections: Sequence[Detection], features: Optional[np.ndarray] = None
              ) -> tuple[list[int], list[Track]]:
        """Track ids per detection (``-1`` = dropped) and the tracks, numbered by birth.

        ``features`` (optional) has one row per detection; rows are L2-normalised here.
        """
        cfg = self.cfg
        feats = None
        if features is not None and len(features) == len(detections) and cfg.feature_weight > 0:
            feats = np.asarray(features, np.float64).reshape(len(detections), -1)
            feats = feats / (np.linalg.norm(feats, axis=1, keepdims=True) + 1e-12)
        boxes = np.asarray([d.box for d in detections], np.float64).reshape(-1, 4)
        by_frame: dict[int, list[int]] = {}
        for i, det in enumerate(detections):
            by_frame.setdefault(det.frame, []).append(i)

        live: list[_TrackState] = []
        finished: list[_TrackState] = []
        for frame in sorted(by_frame):
            still = [t for t in live if frame - t.frame - 1 <= cfg.max_gap]
            finished += [t for t in live if frame - t.frame - 1 > cfg.max_gap]
            live = still
            current = by_frame[frame]
            matched_tracks: set[int] = set()
            matched_dets: set[int] = set()
            if live:
                score = self._scores(live, current, frame, boxes, feats, detections)
                rows, cols = linear_sum_assignment(1.0 - score)
                for r, c in zip(rows, cols):
                    if score[r, c] >= cfg.min_match_score:
                        live[r].add(current[c], frame, boxes[current[c]], detections[current[c]].label,
                                    None if feats is None else feats[current[c]], cfg.feature_momentum)
                        matched_tracks.add(r)
                        matched_dets.add(c)
            for c, index in enumerate(current):
                if c not in matched_dets:
                    born = _TrackState(birth=(frame, index))
                    born.add(index, frame, boxes[index], detections[index].label,
                             None if feats is None else feats[index], cfg.feature_momentum)
                    live.append(born)
        finished += live

        kept = sorted((t for t in finished if len(t.members) >= cfg.min_track_length),
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
        if cfg.require_same_label:
            same = np.array([[t.labels.most_common(1)[0][0] == detections[i].label for i in current]
                             for t in live])
            score = np.where(same, score, -_FORBIDDEN)
        return np.where(score >= cfg.min_match_score, score, -_FORBIDDEN)


class TrackStage(Stage):
    """Sets ``Detection.track_id`` on ``task.dsg.detections`` and fills ``task.dsg.tracks``.

    Uses ``task.detection_features`` for the cosine term when present.
    """

    name = "track"
    config_class = TrackConfig
    needs = ("dsg",)
    uses = ("detection_features",)
    produces = ("dsg",)

    def __init__(self, cfg: Optional[TrackConfig] = None):
        super().__init__(cfg)
        self.tracker = Tracker(self.cfg)

    def process_one(self, task: VideoTask) -> VideoTask:
        ids, tracks = self.tracker.track(task.dsg.detections, task.detection_features)
        for detection, track_id in zip(task.dsg.detections, ids):
            detection.track_id = track_id
        task.dsg.tracks = tracks
        task.stage_frames[self.name] = len(task.dsg.frames)
        return task
