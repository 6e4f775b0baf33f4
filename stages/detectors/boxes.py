"""Box helpers shared by the detector backends (pure numpy; no model code).

Example::

    >>> tile_windows(100, 200, 1, 2, 0.0)
    [(0, 0, 100, 100), (100, 0, 200, 100)]
"""
from __future__ import annotations

import numpy as np

from stages.geometry import iou_matrix


def tile_windows(height: int, width: int, rows: int, cols: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """Pixel windows ``(x1, y1, x2, y2)`` of a ``rows × cols`` grid whose neighbours overlap."""
    if rows <= 0 or cols <= 0:
        return []
    tile_h = height / (rows - (rows - 1) * overlap)
    tile_w = width / (cols - (cols - 1) * overlap)
    windows = []
    for r in range(rows):
        for c in range(cols):
            x1 = int(round(c * tile_w * (1 - overlap)))
            y1 = int(round(r * tile_h * (1 - overlap)))
            windows.append((x1, y1, min(width, int(round(x1 + tile_w))), min(height, int(round(y1 + tile_h)))))
    return windows


def roi_average(feature_map: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Mean of ``feature_map`` (``C × h × w``) inside each normalised box; ``n × C``.

    A box smaller than one cell still reads the cell under its centre.
    """
    channels, h, w = feature_map.shape
    out = np.zeros((len(boxes), channels), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        c1, c2 = int(np.floor(x1 * w)), int(np.ceil(x2 * w))
        r1, r2 = int(np.floor(y1 * h)), int(np.ceil(y2 * h))
        c1, r1 = min(max(c1, 0), w - 1), min(max(r1, 0), h - 1)
        c2, r2 = max(c2, c1 + 1), max(r2, r1 + 1)
        out[i] = feature_map[:, r1:r2, c1:c2].mean(axis=(1, 2))
    return out


def class_nms(boxes: np.ndarray, labels: list[str], scores: np.ndarray, iou: float) -> list[int]:
    """Indices kept by greedy per-label NMS, highest score first."""
    keep: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        same = [k for k in keep if labels[k] == labels[i]]
        if same and iou_matrix(boxes[i:i + 1], boxes[same]).max() > iou:
            continue
        keep.append(int(i))
    return keep


def cross_label_duplicates(boxes: np.ndarray, scores: np.ndarray, kept: list[int], iou: float) -> list[int]:
    """The subset of ``kept`` (score order) not covering a better-scoring kept box at IoU > ``iou``.

    A detector may put two labels on one object ("bottle" 0.8 and "vase" 0.3
    on the same box); the weaker one is dropped, whatever its label.
    """
    out: list[int] = []
    for i in sorted(kept, key=lambda k: -scores[k]):
        if out and iou_matrix(boxes[i:i + 1], boxes[out]).max() > iou:
            continue
        out.append(i)
    return out
