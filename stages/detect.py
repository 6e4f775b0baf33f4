"""The detect stage: decoded frames → detections with per-box features (``task.dsg``).

Backends live in :mod:`stages.detectors` (one file each, picked by
``detect.name``); each backend's own options are a section named like it
(``--set detect.ssd.tiles=[1,2]``, ``--set detect.detectron2.weights=PATH``).
``name = "auto"`` picks ``color`` for the synthetic world and the real-data
default (:data:`REAL_DATA_BACKEND`) for everything else; an unset
``score_threshold`` takes the backend's own default.

Example::

    stage = DetectStage(DetectConfig(name="color"))
    stage.setup()
    [task] = stage.process_batch([decoded_task])
    task.dsg.detections[0].label, task.detection_features.shape
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from schemas.options import runtime
from schemas.records import Attribute, Detection, DynamicSceneGraph
from stages.base import Resources, Stage, VideoTask
from stages.detectors.base import Detector, build_detector, detector_class
from stages.detectors.detectron2 import Detectron2Options
from stages.detectors.lite import LiteOptions
from stages.detectors.ssd import SSDOptions

AUTO = "auto"
SYNTHETIC_BACKEND = "color"
REAL_DATA_BACKEND = "ssd"


@dataclass
class DetectConfig:
    """``name``: a backend (``color`` | ``ssd`` | ``lite`` | ``detectron2``) or ``auto``;
    ``score_threshold``: keep boxes scoring at least this (None = the backend's default);
    ``max_detections``: per frame, best first; ``device``: ``cpu`` | ``cuda[:N]``;
    ``gpus``: GPUs per worker when on CUDA (0.5 = two workers share one);
    ``batch_frames``: frames per forward pass."""

    name: str = AUTO
    score_threshold: Optional[float] = None
    max_detections: int = 50
    device: str = runtime("cpu")
    gpus: float = runtime(1.0)
    batch_frames: int = runtime(8)
    ssd: SSDOptions = field(default_factory=SSDOptions)
    lite: LiteOptions = field(default_factory=LiteOptions)
    detectron2: Detectron2Options = field(default_factory=Detectron2Options)

    def __post_init__(self) -> None:
        if self.score_threshold is not None and not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if self.max_detections < 1 or self.batch_frames < 1:
            raise ValueError("max_detections and batch_frames must be >= 1")
        if not 0.0 < self.gpus <= 8.0:
            raise ValueError(f"gpus must be in (0, 8], got {self.gpus}")

    def resolved(self, dataset: Optional[str] = None) -> "DetectConfig":
        """A copy with ``auto`` and an unset threshold replaced by what they stand for."""
        cfg = copy.deepcopy(self)
        if cfg.name == AUTO:
            cfg.name = SYNTHETIC_BACKEND if dataset == "synthetic" else REAL_DATA_BACKEND
        if cfg.score_threshold is None:
            cfg.score_threshold = float(detector_class(cfg.name).default_score_threshold)
        return cfg


class DetectStage(Stage):
    """``task.images`` → ``task.dsg`` (detections; backend-reported attributes become
    detection :class:`Attribute` records) and ``task.detection_features``."""

    name = "detect"
    config_class = DetectConfig
    needs = ("meta", "frames", "images")
    produces = ("dsg", "detection_features")

    def __init__(self, cfg: Optional[DetectConfig] = None):
        super().__init__(cfg)
        self.detector: Optional[Detector] = None

    @property
    def resources(self) -> Resources:
        return Resources.for_device(self.cfg.device, gpus=self.cfg.gpus)

    def preflight(self) -> None:
        cfg = self.cfg.resolved()
        check = getattr(detector_class(cfg.name), "preflight", None)
        if check is not None:
            check(cfg)

    def setup(self) -> None:
        self.detector = build_detector(self.cfg)
        self.detector.setup()

    def process_one(self, task: VideoTask) -> VideoTask:
        images = task.images
        detections: list[Detection] = []
        attributes: list[Attribute] = []
        features: list[np.ndarray] = []
        step = max(1, self.cfg.batch_frames)
        for first in range(0, len(images), step):
            for offset, found in enumerate(self.detector.detect(images[first:first + step])):
                frame = first + offset
                for j in range(len(found)):
                    attrs = found.attributes[j] if found.attributes else {}
                    for name, value in sorted(attrs.items()):
                        attributes.append(Attribute("detection", len(detections), name, value, 1.0))
                    detections.append(Detection(frame, tuple(float(v) for v in found.boxes[j]),
                                                found.labels[j], float(found.scores[j])))
                if len(found):
                    features.append(np.asarray(found.features, np.float32).reshape(len(found), -1))
        task.dsg = DynamicSceneGraph(task.video_id, task.meta, list(task.frames), detections, attributes)
        dim = max(0, self.detector.feature_dim)
        task.detection_features = np.concatenate(features) if detections else np.zeros((0, dim), np.float32)
        task.stage_frames[self.name] = len(images)
        return task
