"""Pixels for a :class:`~pipeline.synthetic.world.World`, and byte-reproducible mp4 encoding.

Frames are drawn with numpy (hard-edged shapes over a plain or textured,
unsaturated background) and piped as rawvideo into one ffmpeg process:
single-threaded libx264 with fixed GOP, ``-bitexact`` flags and no metadata,
so the same world always gives the same bytes.

Example::

    frames, visibility, vboxes = render_frames(world)
    encode_mp4(frames, "out.mp4", fps=world.config.fps)
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from pipeline.synthetic.world import COLORS, Background, World

FFMPEG = "ffmpeg"
ENCODE_CRF = 16


def background_image(bg: Background, width: int, height: int) -> np.ndarray:
    """The static background (``H×W×3`` uint8), grey-level texture on a tinted base."""
    y, x = np.mgrid[0:height, 0:width]
    if bg.kind == "plain":
        shade = np.zeros((height, width))
    elif bg.kind == "stripes":
        shade = (((x + y) // bg.period) % 2) * 2.0 - 1.0
    elif bg.kind == "checker":
        shade = ((x // bg.period + y // bg.period) % 2) * 2.0 - 1.0
    elif bg.kind == "noise":
        rng = np.random.default_rng(bg.seed)
        coarse = rng.uniform(-1, 1, size=(height // bg.period + 2, width // bg.period + 2))
        gy, gx = y / bg.period, x / bg.period
        y0, x0 = gy.astype(int), gx.astype(int)
        fy, fx = gy - y0, gx - x0
        shade = (coarse[y0, x0] * (1 - fy) * (1 - fx) + coarse[y0 + 1, x0] * fy * (1 - fx)
                 + coarse[y0, x0 + 1] * (1 - fy) * fx + coarse[y0 + 1, x0 + 1] * fy * fx)
    else:
        raise ValueError(f"unknown background kind {bg.kind!r}")
    img = np.asarray(bg.base, np.float64)[None, None, :] + (bg.contrast / 2.0) * shade[..., None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def shape_mask(shape: str, cx: float, cy: float, size: float, width: int, height: int
               ) -> tuple[np.ndarray, tuple[int, int]]:
    """Boolean mask of a shape inside its clipped bounding window, and the window's (x0, y0)."""
    half = size / 2.0
    x0, y0 = max(0, int(np.floor(cx - half))), max(0, int(np.floor(cy - half)))
    x1, y1 = min(width, int(np.ceil(cx + half)) + 1), min(height, int(np.ceil(cy + half)) + 1)
    y, x = np.mgrid[y0:max(y0, y1), x0:max(x0, x1)]
    px, py = x + 0.5 - cx, y + 0.5 - cy    # pixel centres relative to the shape's centre
    if shape == "circle":
        mask = px * px + py * py <= half * half
    elif shape == "square":
        mask = (np.abs(px) <= half) & (np.abs(py) <= half)
    elif shape == "triangle":
        depth = py + half                   # 0 at the apex, size at the base
        mask = (depth >= 0) & (depth <= size) & (np.abs(px) <= depth / 2.0)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return mask, (x0, y0)


def render_frames(world: World) -> tuple[list[np.ndarray], np.ndarray, list[list[Optional[tuple]]]]:
    """Draw every frame of ``world``.

    Returns the RGB frames, ``visibility[t, i]`` (visible fraction of object
    ``i``; 0 when absent) and ``visible_boxes[t][i]`` (pixel xyxy of the
    visible pixels, or None).
    """
    cfg = world.config
    w, h = cfg.width, cfg.height
    base = background_image(world.background, w, h)
    n = len(world.objects)
    visibility = np.zeros((world.num_frames, n))
    visible_boxes: list[list[Optional[tuple]]] = []
    frames = []
    for t in range(world.num_frames):
        img = base.copy()
        owner = np.full((h, w), -1, np.int16)
        masks = {}
        for i in world.z_order:
            if not world.visible(t, i):
                continue
            obj = world.objects[i]
            mask, (x0, y0) = shape_mask(obj.shape, *world.pos[t, i], obj.size_px, w, h)
            masks[i] = (mask, x0, y0)
            region = owner[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
            region[mask] = i
            img[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]][mask] = COLORS[obj.color]
        boxes: list[Optional[tuple]] = [None] * n
        for i, (mask, x0, y0) in masks.items():
            total = int(mask.sum())
            mine = owner[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]] == i
            visible = mine & mask
            count = int(visible.sum())
            visibility[t, i] = count / total if total else 0.0
            if count:
                ys, xs = np.nonzero(visible)
                boxes[i] = (float(x0 + xs.min()), float(y0 + ys.min()), float(x0 + xs.max() + 1),
                            float(y0 + ys.max() + 1))
        visible_boxes.append(boxes)
        frames.append(img)
    return frames, visibility, visible_boxes


def ffmpeg_encode_args(path: str, width: int, height: int, fps: int) -> list[str]:
    """The ffmpeg command line that turns rgb24 frames on stdin into a reproducible mp4."""
    return [
        FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0",
        "-an", "-c:v", "libx264", "-preset", "medium", "-crf", str(ENCODE_CRF), "-pix_fmt", "yuv420p",
        "-g", str(2 * fps), "-keyint_min", str(2 * fps), "-sc_threshold", "0", "-bf", "0",
        "-threads", "1", "-x264-params", "threads=1:lookahead-threads=1:sliced-threads=0",
        "-map_metadata", "-1", "-metadata", "creation_time=", "-fflags", "+bitexact",
        "-flags:v", "+bitexact", "-movflags", "+faststart", "-f", "mp4", path,
    ]


def encode_mp4(frames: Iterable[np.ndarray], path: str | Path, fps: int, timeout: float = 300.0) -> None:
    """Pipe ``frames`` (``H×W×3`` uint8, all the same size) into ffmpeg, writing ``path``."""
    if shutil.which(FFMPEG) is None:
        raise RuntimeError("ffmpeg not found on PATH; install it (Debian: apt-get install ffmpeg)")
    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    proc = subprocess.Popen(ffmpeg_encode_args(str(path), w, h, fps), stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(np.ascontiguousarray(first).tobytes())
        for frame in frames:
            proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"ffmpeg timed out after {timeout:.0f} s encoding {path}")
    except BrokenPipeError:
        _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed encoding {path}: {err.decode(errors='replace').strip()[-500:]}")
