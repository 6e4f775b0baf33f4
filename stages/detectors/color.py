"""``color``: an exact detector for flat coloured shapes (the synthetic world), from pixels only.

Saturated pixels are split by hue into basic colour terms, each colour's mask
is cleaned and cut into connected components, and each component becomes one
box whose shape (circle / square / triangle) follows from its fill ratio
(area / box area: ≈1, ≈π/4, ≈1/2). Labels are the shape noun and the colour
is an attribute, so the caption "red circle" links object "circle" with
attribute "red". It never reads ground truth.

Example::

    det = build_detector(DetectConfig(name="color"))
    det.setup()
    found = det.detect([rgb_frame])[0]
    found.labels, found.attributes   # ['circle'], [{'color': 'red', 'shape': 'circle', 'size': 'small'}]
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy import ndimage

from stages.detectors.base import FrameDetections
from stages.registry import DETECTORS

if TYPE_CHECKING:
    from stages.detect import DetectConfig

# Hue ranges in OpenCV units (0–180) for basic colour terms; red wraps around 0.
HUE_RANGES: tuple[tuple[str, int, int], ...] = (
    ("red", 0, 8), ("orange", 8, 21), ("yellow", 21, 40), ("green", 40, 95),
    ("blue", 95, 128), ("purple", 128, 163), ("red", 163, 180),
)
COLOR_NAMES = ("red", "orange", "yellow", "green", "blue", "purple")
MIN_SATURATION = 90
MIN_VALUE = 60
# Fill-ratio cut points: square ≈ 1.0, circle ≈ 0.785, triangle ≈ 0.5.
SQUARE_MIN_FILL = 0.89
CIRCLE_MIN_FILL = 0.64
# (bottom-third width − top-third width) / box width: ≈0.67 for a triangle, ≈0 for a circle.
TRIANGLE_MIN_TAPER = 0.3
SHAPE_FILL = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}
# A box whose side exceeds this fraction of min(H, W) is "large".
LARGE_SIDE_FRACTION = 0.15
# Components smaller than this fraction of the frame are noise.
MIN_AREA_FRACTION = 0.0008
HUE_BINS = 18
COLOR_WEIGHT = 3.0
FEATURE_DIM = 32


@DETECTORS.register("color")
class ColorDetector:
    """Colour segmentation + shape classification; ``feature_dim`` = 32 (see :func:`blob_features`)."""

    feature_dim = FEATURE_DIM
    default_score_threshold = 0.5
    summary = "the synthetic world's flat coloured shapes"

    def __init__(self, cfg: "DetectConfig"):
        self.cfg = cfg.resolved()   # no default built here: stages.detect imports this package (no cycle)

    def setup(self) -> None:
        """Nothing to load."""

    def detect(self, images: list[np.ndarray]) -> list[FrameDetections]:
        return [self.detect_one(image) for image in images]

    def detect_one(self, image: np.ndarray) -> FrameDetections:
        image = _as_rgb(image)
        h, w = image.shape[:2]
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
        saturated = (sat >= MIN_SATURATION) & (val >= MIN_VALUE)
        min_area = max(12.0, MIN_AREA_FRACTION * h * w)
        blobs = []
        for color in COLOR_NAMES:
            in_range = np.zeros_like(saturated)
            for name, lo, hi in HUE_RANGES:
                if name == color:
                    in_range |= (hue >= lo) & (hue < hi)
            mask = ndimage.binary_opening(saturated & in_range, structure=np.ones((3, 3), bool))
            labels, count = ndimage.label(mask)
            if not count:
                continue
            for index, window in enumerate(ndimage.find_objects(labels), start=1):
                component = ndimage.binary_fill_holes(labels[window] == index)
                area = float(component.sum())
                if area < min_area:
                    continue
                blobs.append((area, color, window, component))
        blobs.sort(key=lambda b: (-b[0], b[1], b[2][0].start, b[2][1].start))
        blobs = blobs[:self.cfg.max_detections]

        boxes, labels, scores, features, attributes = [], [], [], [], []
        for area, color, (ys, xs), component in blobs:
            bh, bw = component.shape
            shape, fill = classify_shape(component)
            score = float(np.clip(1.0 - abs(fill - SHAPE_FILL[shape]) * 2.0, 0.0, 1.0)) * 0.5 + 0.5
            if score < self.cfg.score_threshold:
                continue
            side = np.sqrt(bw * bh) / float(min(h, w))
            boxes.append((xs.start / w, ys.start / h, xs.stop / w, ys.stop / h))
            labels.append(shape)
            scores.append(score)
            features.append(blob_features(image[ys, xs], hue[ys, xs], component, fill, side))
            attributes.append({"color": color, "shape": shape,
                               "size": "large" if side > LARGE_SIDE_FRACTION else "small"})
        return FrameDetections(
            boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
            labels=labels,
            scores=np.asarray(scores, np.float32),
            features=np.asarray(features, np.float32).reshape(-1, FEATURE_DIM),
            attributes=attributes,
        )


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """Shape of a blob (boolean mask cropped to its box) and its fill ratio.

    Fill ratio (area / box area) separates square (≈1) from circle (≈π/4) and
    triangle (≈1/2); an upright triangle is also much wider in its bottom
    third than in its top third, which rescues small, blurred triangles whose
    fill creeps toward a circle's.
    """
    bh, bw = mask.shape
    fill = float(mask.sum()) / float(bh * bw)
    if fill >= SQUARE_MIN_FILL:
        return "square", fill
    if fill < CIRCLE_MIN_FILL or _taper(mask) > TRIANGLE_MIN_TAPER:
        return "triangle", fill
    return "circle", fill


def blob_features(rgb: np.ndarray, hue: np.ndarray, mask: np.ndarray, fill: float, side: float) -> np.ndarray:
    """A fixed 32-d appearance descriptor, stable from frame to frame for the same object.

    Hue histogram of the blob's pixels (18 bins of 20°, scaled by
    ``COLOR_WEIGHT`` so colour dominates the cosine), mean and std RGB (6), fill ratio, aspect ratio, taper and size (4), centroid offset
    in the box (2), the first Hu moment and the mean chroma (2). Only shape
    invariants that are well defined for these shapes take part, so that
    ``cosine`` is ≈1 for one object over time and clearly lower between
    objects of different colour (what the tracker's feature term relies on).
    """
    pixels = rgb[mask].astype(np.float32) / 255.0
    hist = np.bincount((hue[mask].astype(np.int32) * HUE_BINS) // 180, minlength=HUE_BINS)[:HUE_BINS]
    hist = hist.astype(np.float32) / max(1.0, float(hist.sum()))
    bh, bw = mask.shape
    ys, xs = np.nonzero(mask)
    centroid = [xs.mean() / bw - 0.5, ys.mean() / bh - 0.5]
    hu1 = float(cv2.HuMoments(cv2.moments(mask.astype(np.uint8), binaryImage=True))[0, 0])
    saturation = float(np.mean(pixels.max(axis=1) - pixels.min(axis=1)))
    out = np.concatenate([COLOR_WEIGHT * hist, pixels.mean(0), pixels.std(0),
                          [fill, bw / float(bh), _taper(mask), side], centroid, [hu1, saturation]]).astype(np.float32)
    return out


def _taper(mask: np.ndarray) -> float:
    """(bottom-third width − top-third width) / box width."""
    bh, bw = mask.shape
    widths = mask.sum(axis=1).astype(np.float64)
    third = max(1, bh // 3)
    return float((widths[-third:].mean() - widths[:third].mean()) / float(bw))


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an H×W×3 RGB image, got shape {image.shape}")
    image = image[..., :3]
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)
