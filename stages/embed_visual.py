"""Visual features of the host model: frame vectors, frame grid cells, crop vectors (``embed_visual.name``).

The host's visual side is picked by name from :data:`stages.registry.VISUAL_HOSTS`
(:mod:`stages.hosts`): ``efficientnet_lite0`` (default, offline: ImageNet
weights, 1280-d, the global average of the last feature map) or ``clip``
(CLIP's image tower, its options in ``embed_visual.clip``). Per sample:

* ``frame_features [n_frames, D]``: each sampled frame's pooled vector;
* ``frame_patch_features [n_frames · grid², Dp]``: each frame's final map
  average-pooled to ``grid × grid`` cells, frame after frame, row-major
  (``grid = 0``: none). What an SG-free host model reads as spatial tokens;
  ``grid`` trades disk for detail (docs/format.md, "Sizes");
* ``detection_features``: ``detection_features="detector"`` keeps the
  detector's own RoI features; ``"crop"`` replaces them with the host's vector
  of each box's crop; ``"auto"`` picks ``crop`` when the detector declares
  ``feature_dim == 0``.

Inputs are resized to the host's square input (a whole frame is squashed, not
cropped, so nothing at its edges is lost) and normalised with the host's
mean/std. The stored widths are config facts, :func:`visual_feature_dims`.

Example::

    cfg = EmbedVisualConfig(detection_features="crop")
    visual_feature_dims(cfg, detector_feature_dim=0)   # {'frame': 1280, 'detection': 1280, 'frame_patch': 1280}
    stage = EmbedVisualStage(cfg)
    stage.setup()
    stage.process_batch([task])   # task.frame_features, task.frame_patch_features, task.detection_features
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from schemas.errors import SampleError, UserError
from schemas.options import added, runtime
from stages.base import Resources, Stage, VideoTask
from stages.hosts import build_visual_host, visual_host_class
from stages.hosts.clip import ClipOptions
from stages.hosts.efficientnet import ENGINES, EFFICIENTNET_DIM, to_input  # noqa: F401  (re-exported for callers)
from stages.openvino_runtime import PRECISIONS

DETECTION_SOURCES = ("auto", "detector", "crop")


@dataclass
class EmbedVisualConfig:
    """Visual host options.

    ``name``: the visual host (``efficientnet_lite0`` | ``clip``); ``weights``:
    the ``efficientnet_lite0`` state-dict ``.pth`` ("" = the bundled one);
    ``grid``: frame cells per side stored as ``frame_patch`` (0 = none; at most
    the backbone's map side, 7 for both default models); ``cell_block``: the
    backbone depth the cells are read at (-1 = the final map, the pooled
    vector's; ``k ≥ 0`` = the output of ``efficientnet_lite0``'s MBConv block
    ``k``, e.g. 5: 80 channels at stride 16, a 14×14 map at 224 px, which reads
    an object's colour where the final map does not, docs/results.md); ``threads``: torch
    intra-op threads (0 = leave torch's default), or OpenVINO's single-threaded streams (0 = one per CPU);
    ``engine``: ``openvino`` or ``torch`` for ``efficientnet_lite0`` on the CPU; ``precision``: the ``openvino``
    engine's compute precision (``bf16`` where the CPU has it, else f32; or ``f32``); ``batch_size``: images per
    forward pass; ``crop_margin``: each crop is widened by this fraction of its
    box on every side, for context; ``detection_features``: one of
    ``DETECTION_SOURCES`` (see module doc); ``clip``: the ``clip`` host's
    options (:class:`stages.hosts.clip.ClipOptions`).
    """

    name: str = "efficientnet_lite0"
    weights: str = ""
    grid: int = 3
    cell_block: int = -1
    device: str = runtime("cpu")
    threads: int = runtime(1)
    gpus: float = runtime(0.5)
    batch_size: int = runtime(16)
    image_size: int = 224
    crop_margin: float = 0.1
    detection_features: str = "auto"
    clip: ClipOptions = field(default_factory=ClipOptions)
    # efficientnet_lite0 on the CPU: "openvino" (converted once, cached; equal to torch within 1e-4 in f32) or "torch"
    engine: str = runtime("openvino")
    # The openvino engine's compute precision: "bf16" (default; run as bf16 where the CPU lists BF16 among
    # OpenVINO's optimization capabilities, else f32) or "f32". bf16 moves the vectors: cosine to f32's >= 0.988
    # for frame vectors and >= 0.962 for 3x3 grid cells on the 211 1-fps frames of the ../shared clips (README;
    # tests/stages/test_embed_visual.py), so it is an output field, as detect.ssd.precision is; the torch engine
    # and a GPU always run f32.
    # (outputs made before the option existed were made in f32: schemas.options.added)
    precision: str = added("bf16", before="f32")

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise UserError(f"embed_visual.engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.precision not in PRECISIONS:
            raise UserError(f"embed_visual.precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.detection_features not in DETECTION_SOURCES:
            raise UserError(f"detection_features must be one of {', '.join(DETECTION_SOURCES)}, "
                            f"not {self.detection_features!r}")
        if self.batch_size < 1 or self.image_size < 32 or self.crop_margin < 0:
            raise UserError("visual embedding: batch_size ≥ 1, image_size ≥ 32 and crop_margin ≥ 0 are required")
        if not 0 <= self.grid <= 16:
            raise UserError(f"embed_visual.grid must be within [0, 16] cells per side, got {self.grid}")
        if self.cell_block < -1:
            raise UserError(f"embed_visual.cell_block must be -1 (the final map) or a block index ≥ 0, "
                            f"got {self.cell_block}")


def detection_feature_source(cfg: EmbedVisualConfig, detector_feature_dim: int) -> str:
    """``"detector"`` or ``"crop"``: where the stored detection features come from."""
    if cfg.detection_features == "auto":
        return "crop" if detector_feature_dim <= 0 else "detector"
    return cfg.detection_features


def visual_feature_dims(cfg: EmbedVisualConfig, detector_feature_dim: int) -> dict[str, int]:
    """Widths of ``frame``, ``detection`` and ``frame_patch`` features for this config (for the manifest)."""
    dims = visual_host_class(cfg.name).feature_dims(cfg)
    crop = detection_feature_source(cfg, detector_feature_dim) == "crop"
    return {"frame": dims["frame"], "detection": dims["frame"] if crop else int(detector_feature_dim),
            "frame_patch": dims["patch"]}


def crop_box(image: np.ndarray, box, margin: float) -> np.ndarray:
    """The pixels of normalised ``box`` (xyxy) widened by ``margin``; at least 1×1."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    c1 = int(np.floor(np.clip(x1 - dx, 0, 1) * w))
    r1 = int(np.floor(np.clip(y1 - dy, 0, 1) * h))
    c2 = int(np.ceil(np.clip(x2 + dx, 0, 1) * w))
    r2 = int(np.ceil(np.clip(y2 + dy, 0, 1) * h))
    c1, r1 = min(c1, w - 1), min(r1, h - 1)
    return image[r1:max(r2, r1 + 1), c1:max(c2, c1 + 1)]


class VisualEmbedder:
    """The configured visual host's pooled vectors (and grid cells) of RGB images."""

    def __init__(self, cfg: Optional[EmbedVisualConfig] = None):
        self.cfg = cfg or EmbedVisualConfig()
        self.host = build_visual_host(self.cfg)
        dims = visual_host_class(self.cfg.name).feature_dims(self.cfg)
        self.dim, self.patch_dim = dims["frame"], dims["patch"]
        self._ready = False

    def setup(self) -> None:
        if self._ready:
            return
        if self.cfg.threads > 0:
            import torch
            torch.set_num_threads(self.cfg.threads)
        self.host.setup()
        self._ready = True

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        """``float32 [len(images), dim]``; images are ``H×W×3`` uint8 RGB of any size."""
        return self.embed_with_cells(images, 0)[0]

    def embed_with_cells(self, images: list[np.ndarray], grid: int) -> tuple[np.ndarray, np.ndarray]:
        """Pooled vectors ``[n, dim]`` and grid cells ``[n · grid², patch_dim]`` (frame after frame)."""
        if not images:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, self.patch_dim), np.float32)
        if not self._ready:
            raise RuntimeError("VisualEmbedder.embed before setup()")
        pooled, cells = self.host.encode(list(images), grid)
        return np.asarray(pooled, np.float32), np.asarray(cells, np.float32).reshape(-1, self.patch_dim)


class EmbedVisualStage(Stage):
    """Decoded frames → ``task.frame_features`` ``[n_frames, D]``, ``task.frame_patch_features``
    ``[n_frames · grid², Dp]``, and crop features into ``task.detection_features`` when the source is ``crop``.

    Needs ``task.images`` aligned with ``task.dsg.frames`` (else
    ``task.frames``). ``detector_feature_dim`` resolves ``"auto"`` (see
    :func:`detection_feature_source`); leave it None to read the width of
    the task's own detector features.
    """

    name = "embed_visual"
    config_class = EmbedVisualConfig
    needs = ("images",)
    uses = ("dsg", "detection_features")
    produces = ("frame_features", "frame_patch_features", "detection_features")

    def __init__(self, cfg: Optional[EmbedVisualConfig] = None, detector_feature_dim: Optional[int] = None):
        super().__init__(cfg)
        self.detector_feature_dim = detector_feature_dim
        self.embedder = VisualEmbedder(self.cfg)

    @property
    def resources(self) -> Resources:
        return Resources.for_device(self.cfg.device, self.cfg.threads, self.cfg.gpus)

    def preflight(self) -> None:
        host = visual_host_class(self.cfg.name)
        if hasattr(host, "preflight"):
            host.preflight(self.cfg)
        side = host.feature_dims(self.cfg).get("map", 7)
        if self.cfg.grid > side:
            raise UserError(f"embed_visual.grid={self.cfg.grid} exceeds the {self.cfg.name} map ({side}×{side}); "
                            f"use at most {side}")

    def setup(self) -> None:
        self.embedder.setup()

    def process_one(self, task: VideoTask) -> VideoTask:
        frames = task.dsg.frames if task.dsg is not None else task.frames
        images = task.images
        if len(images) != len(frames):
            raise SampleError("frame_mismatch", f"{len(images)} images for {len(frames)} sampled frames")
        task.frame_features, task.frame_patch_features = self.embedder.embed_with_cells(list(images), self.cfg.grid)
        task.stage_frames[self.name] = len(images)
        detections = task.dsg.detections if task.dsg is not None else []
        width = self.detector_feature_dim
        if width is None:
            width = task.detection_features.shape[1] if task.detection_features is not None else 0
        if detection_feature_source(self.cfg, width) == "crop":
            crops = [crop_box(images[d.frame], d.box, self.cfg.crop_margin) for d in detections]
            task.detection_features = self.embedder.embed(crops)
        elif task.detection_features is None and not detections:
            task.detection_features = np.zeros((0, width), np.float32)
        elif task.detection_features is None or len(task.detection_features) != len(detections):
            have = "none" if task.detection_features is None else len(task.detection_features)
            raise SampleError("feature_mismatch", f"detector gave {have} feature rows for {len(detections)} detections")
        return task
