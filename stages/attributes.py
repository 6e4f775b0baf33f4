"""Attributes of detections (colour, size) and of tracks (motion, speed).

All functions are pure; :class:`stages.relate.RelateStage` calls
them and writes :class:`schemas.records.Attribute` records.

============== ======== ===================================================== =========================
name           target   rule                                                  score
============== ======== ===================================================== =========================
color          detect.  most frequent basic colour term of the box's central  share of pixels with it
                        pixels (HSV naming, :func:`name_pixel_colors`)
size           detect.  box area / frame area: < ``small_area`` small,        distance from the nearer
                        > ``large_area`` large, else medium                   threshold, in [0.5, 1]
relative_size  detect.  box area / median area of the frame's other boxes:    same
                        < 1/``relative_ratio`` small, > ``relative_ratio``
                        large, else medium
motion         track    median box-centre speed (frame-normalised units per   same, on a log scale
                        second, from ``Frame.timestamp``) ≥ ``moving_speed``
                        moving, else still (relate makes a still track moving
                        when it was moved while unseen: stages/relate.py)
speed          track    moving tracks only: median speed ≥ ``fast_speed``     same
                        fast, else slow (captions' "quickly"/"slowly")
============== ======== ===================================================== =========================

Example::

    >>> import numpy as np
    >>> red = np.zeros((20, 20, 3), np.uint8); red[..., 0] = 220
    >>> box_color(red, (0.0, 0.0, 1.0, 1.0))
    ('red', 1.0)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

Box = tuple[float, float, float, float]

# Basic colour terms (Berlin & Kay's eleven), named from HSV. Hue in degrees.
COLOR_TERMS = ("black", "white", "gray", "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")
# (upper hue bound, name) for saturated, reasonably bright pixels; first match wins.
_HUE_NAMES = ((15, "red"), (40, "orange"), (70, "yellow"), (170, "green"), (260, "blue"), (300, "purple"),
              (335, "pink"), (361, "red"))


@dataclass
class AttributeConfig:
    """Thresholds of the attribute rules (see the module table)."""

    color_crop: float = 0.6          # central fraction of the box whose pixels are named
    color_min_share: float = 0.3     # below this, no colour attribute
    small_area: float = 0.02
    large_area: float = 0.15
    relative_ratio: float = 2.0
    moving_speed: float = 0.03       # frame widths (or heights) per second
    fast_speed: float = 0.25


def name_pixel_colors(rgb: np.ndarray) -> np.ndarray:
    """Basic colour term index (into ``COLOR_TERMS``) of every pixel of an ``…×3`` uint8 RGB array."""
    x = rgb.reshape(-1, 3).astype(np.float32) / 255.0
    top, bottom = x.max(axis=1), x.min(axis=1)
    chroma = top - bottom
    value = top
    saturation = np.where(top > 0, chroma / np.maximum(top, 1e-6), 0.0)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    safe = np.maximum(chroma, 1e-6)
    hue = np.where(top == r, ((g - b) / safe) % 6, np.where(top == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60
    names = np.full(len(x), COLOR_TERMS.index("gray"))
    for bound, name in reversed(_HUE_NAMES):
        names = np.where(hue < bound, COLOR_TERMS.index(name), names)
    # Dark oranges and reds are brown; pale reds are pink.
    names = np.where((hue >= 10) & (hue < 45) & (value < 0.65) & (saturation > 0.3), COLOR_TERMS.index("brown"), names)
    names = np.where(((hue < 15) | (hue >= 335)) & (saturation < 0.5) & (value > 0.7), COLOR_TERMS.index("pink"), names)
    achromatic = saturation < 0.2
    names = np.where(achromatic & (value > 0.8), COLOR_TERMS.index("white"), names)
    names = np.where(achromatic & (value <= 0.8), COLOR_TERMS.index("gray"), names)
    names = np.where(value < 0.2, COLOR_TERMS.index("black"), names)
    return names.reshape(rgb.shape[:-1])


def box_color(image: np.ndarray, box: Box, crop: float = 0.6, max_side: int = 32) -> Optional[tuple[str, float]]:
    """The dominant colour term inside the central ``crop`` of a normalised box, with its share."""
    height, width = image.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half_w, half_h = (box[2] - box[0]) * crop / 2, (box[3] - box[1]) * crop / 2
    x1, x2 = int(np.floor((cx - half_w) * width)), int(np.ceil((cx + half_w) * width))
    y1, y2 = int(np.floor((cy - half_h) * height)), int(np.ceil((cy + half_h) * height))
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(width, max(x2, x1 + 1)), min(height, max(y2, y1 + 1))
    patch = image[y1:y2, x1:x2]
    if patch.size == 0:
        return None
    step = max(1, int(np.ceil(max(patch.shape[:2]) / max_side)))  # strided subsample keeps it cheap
    counts = np.bincount(name_pixel_colors(patch[::step, ::step]).ravel(), minlength=len(COLOR_TERMS))
    best = int(counts.argmax())
    return COLOR_TERMS[best], float(counts[best] / counts.sum())


def _banded(value: float, low: float, high: float, names=("small", "medium", "large")) -> tuple[str, float]:
    """Name ``value`` by two thresholds; the score grows with the log-distance to the nearer one."""
    value = max(value, 1e-9)
    if value < low:
        name, margin = names[0], np.log(low / value)
    elif value > high:
        name, margin = names[2], np.log(value / high)
    else:
        name, margin = names[1], min(np.log(value / low), np.log(high / value))
    return name, float(min(1.0, 0.5 + margin / 2))


def box_area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def frame_size(box: Box, cfg: AttributeConfig) -> tuple[str, float]:
    """small / medium / large relative to the frame."""
    return _banded(box_area(box), cfg.small_area, cfg.large_area)


def relative_size(box: Box, others: Sequence[Box], cfg: AttributeConfig) -> Optional[tuple[str, float]]:
    """small / medium / large relative to the median of the frame's other boxes (None if alone)."""
    areas = [box_area(o) for o in others if box_area(o) > 0]
    if not areas:
        return None
    return _banded(box_area(box) / float(np.median(areas)), 1 / cfg.relative_ratio, cfg.relative_ratio)


def centre_speed(boxes: Sequence[Box], times: Sequence[float]) -> Optional[float]:
    """Median box-centre speed (normalised units per second) along a track; None under two boxes."""
    if len(boxes) < 2:
        return None
    centres = np.array([((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes])
    dt = np.diff(np.asarray(times, np.float64))
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    valid = dt > 0
    if not valid.any():
        return None
    return float(np.median(steps[valid] / dt[valid]))


def motion_attributes(speed: float, cfg: AttributeConfig) -> list[tuple[str, str, float]]:
    """``[(name, value, score)]``: motion=moving/still, and speed=fast/slow when moving."""
    speed = max(speed, 1e-9)
    moving = speed >= cfg.moving_speed
    margin = abs(np.log(speed / cfg.moving_speed))
    out = [("motion", "moving" if moving else "still", float(min(1.0, 0.5 + margin / 2)))]
    if moving:
        fast = speed >= cfg.fast_speed
        out.append(("speed", "fast" if fast else "slow",
                    float(min(1.0, 0.5 + abs(np.log(speed / cfg.fast_speed)) / 2))))
    return out
