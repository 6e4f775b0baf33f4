"""The detector protocol, its config, ``build_detector`` and the detect stage.

A backend is a class registered in :data:`stages.registry.DETECTORS`, built
from a :class:`DetectorConfig`; one file per backend (``color.py``,
``lite.py``, ``detectron2.py``). Contract::

    det = build_detector(DetectorConfig(name="color"))
    det.setup()                                  # load weights once per worker
    out = det.detect(images)                     # list of H×W×3 uint8 RGB
    out[i].boxes     # float32 [n, 4] normalised xyxy
    out[i].labels    # list[str], n
    out[i].scores    # float32 [n]
    out[i].features  # float32 [n, det.feature_dim] (RoI / crop feature)
    out[i].attributes  # list[dict[str, str]], n: what the backend itself knows
                       # (e.g. {"color": "red", "shape": "circle"}); may be empty dicts
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol

import numpy as np

from schemas.records import Attribute, Detection, DynamicSceneGraph
from stages.base import Resources, Stage, VideoTask
from stages.registry import DETECTORS


@dataclass
class FrameDetections:
    boxes: np.ndarray
    labels: list[str]
    scores: np.ndarray
    features: np.ndarray
    attributes: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DetectorConfig:
    """Options every backend reads; backends ignore what does not apply to them."""

    name: str = "color"
    score_threshold: float = 0.5
    max_detections: int = 50
    device: str = "cpu"
    batch_frames: int = 8
    config: str = ""    # detectron2: model-zoo config name or yaml path
    weights: str = ""   # detectron2: checkpoint path or URL
    extra: dict = field(default_factory=dict)


class Detector(Protocol):
    feature_dim: int

    def setup(self) -> None: ...

    def detect(self, images: list[np.ndarray]) -> list[FrameDetections]: ...


def build_detector(cfg: DetectorConfig) -> Detector:
    """Instantiate the backend named by ``cfg.name`` (importing it registers it)."""
    import stages.detectors  # noqa: F401  (registers every backend)
    return DETECTORS.get(cfg.name)(cfg)


class DetectStage(Stage):
    """Decoded frames → ``task.dsg`` (detections) and ``task.detection_features``.

    Needs ``task.meta``, ``task.frames`` and ``task.images``; backend-reported
    attributes become detection :class:`Attribute` records.
    """

    name = "detect"

    def __init__(self, cfg: DetectorConfig, resources: Optional[Resources] = None):
        self.cfg = cfg
        self.resources = resources or Resources(cpus=1.0, gpus=0.0)
        self.detector: Optional[Detector] = None

    def setup(self) -> None:
        self.detector = build_detector(self.cfg)
        self.detector.setup()

    def process_one(self, task: VideoTask) -> VideoTask:
        if self.detector is None:
            self.setup()
        images = task.images or []
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
