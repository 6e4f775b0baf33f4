"""The detector protocol and ``build_detector``; the stage and its config are in :mod:`stages.detect`.

A backend is a class registered in :data:`stages.registry.DETECTORS`, built
from a :class:`stages.detect.DetectConfig`; one file per backend
(``color.py``, ``lite.py``, ``detectron2.py``). Its own options are a
dataclass in its file (``LiteOptions``…), a section of ``DetectConfig`` named
like the backend (``detect.lite.grid``). Contract::

    det = build_detector(DetectConfig(name="color"))
    det.setup()                                  # load weights once per worker
    out = det.detect(images)                     # list of H×W×3 uint8 RGB
    out[i].boxes     # float32 [n, 4] normalised xyxy
    out[i].labels    # list[str], n
    out[i].scores    # float32 [n]
    out[i].features  # float32 [n, det.feature_dim] (RoI / crop feature)
    out[i].attributes  # list[dict[str, str]], n: what the backend itself knows
                       # (e.g. {"color": "red", "shape": "circle"}); may be empty dicts

A backend class also declares ``default_score_threshold`` (used when
``detect.score_threshold`` is not set) and may define a classmethod
``preflight(cfg)``: cheap checks (packages, weight files) that the driver runs
before any worker starts, raising :class:`UserError` with the fix.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from stages.registry import DETECTORS

if TYPE_CHECKING:
    from stages.detect import DetectConfig


@dataclass
class FrameDetections:
    boxes: np.ndarray
    labels: list[str]
    scores: np.ndarray
    features: np.ndarray
    attributes: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


class Detector(Protocol):
    feature_dim: int
    default_score_threshold: float
    summary: str   # one line for --help: what the backend is for

    def setup(self) -> None: ...

    def detect(self, images: list[np.ndarray]) -> list[FrameDetections]: ...


def detector_class(name: str) -> type:
    """The backend class registered as ``name`` (importing the package registers every backend)."""
    import stages.detectors  # noqa: F401  (registers every backend)
    return DETECTORS.get(name)


def build_detector(cfg: "DetectConfig") -> Detector:
    """Instantiate the backend named by ``cfg.name`` with ``cfg`` resolved (see ``DetectConfig.resolved``)."""
    cfg = cfg.resolved()
    return detector_class(cfg.name)(cfg)
