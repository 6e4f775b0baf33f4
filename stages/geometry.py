"""Box geometry shared by detectors, the tracker and the metrics.

Example::

    >>> iou_matrix([[0, 0, 2, 2]], [[1, 1, 3, 3], [5, 5, 6, 6]]).round(3).tolist()
    [[0.143, 0.0]]
"""
from __future__ import annotations

import numpy as np


def iou_matrix(a, b) -> np.ndarray:
    """Pairwise IoU of ``[n, 4]`` and ``[m, 4]`` xyxy boxes → ``[n, m]`` (0 where the union is empty)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
