"""The ``clip`` host backend: its real loading and feature code, run on ``tiny_clip_double`` (fake weights)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from schemas.errors import UserError
from stages.base import VideoTask
from stages.embed_text import EmbedTextConfig, EmbedTextStage, text_feature_dims
from stages.embed_visual import EmbedVisualConfig, EmbedVisualStage, visual_feature_dims
from stages.hosts.clip import ClipOptions, clip_dims

from .clip_double import GRID, PROJECTION, tiny_clip_double

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return str(tiny_clip_double(tmp_path_factory.mktemp("clip") / "tiny"))


def test_text_side(clip_folder):
    from schemas.records import TextSceneGraph
    cfg = EmbedTextConfig(name="clip", clip=ClipOptions(model=clip_folder))
    assert text_feature_dims(cfg) == {"text_node": PROJECTION, "caption": PROJECTION, "caption_token": PROJECTION,
                                      "token_span": 3}
    stage = EmbedTextStage(cfg)
    stage.preflight()
    stage.setup()
    texts = ["a red cube", "the ball rolls fast"]
    task = VideoTask("k", "test", "v", "v.mp4", tsgs=[TextSceneGraph(f"v#{i}", t) for i, t in enumerate(texts)])
    [out] = stage.process_batch([task])
    assert out.failure is None
    assert out.caption_features.shape == (2, PROJECTION)
    assert np.allclose(np.linalg.norm(out.caption_features, axis=1), 1, atol=1e-5)
    spans = out.caption_token_spans
    first = spans[spans[:, 0] == 0]
    # <start> a r e d c u b e <end>: letter-level BPE, every letter's span inside its word
    assert (first[[0, -1], 1:] == 0).all() and "".join(texts[0][a:b] for _, a, b in first[1:-1]) == "aredcube"
    # the sentence vector is CLIP's text embedding of the same forward pass (batch of one: no padding)
    alone = stage.embedder.embed(["a red cube"])
    assert np.allclose(alone[0], out.caption_features[0], atol=1e-5)


def test_visual_side(clip_folder):
    import torch
    cfg = EmbedVisualConfig(name="clip", grid=2, detection_features="crop", clip=ClipOptions(model=clip_folder))
    assert visual_feature_dims(cfg, 0) == {"frame": PROJECTION, "detection": PROJECTION, "frame_patch": PROJECTION}
    stage = EmbedVisualStage(cfg)
    stage.preflight()
    stage.setup()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 48, 3), dtype=np.uint8) for _ in range(3)]
    pooled, cells = stage.embedder.embed_with_cells(images, 2)
    assert pooled.shape == (3, PROJECTION) and cells.shape == (3 * 4, PROJECTION)
    # cells at the full patch grid average back to the mean projected patch token
    host = stage.embedder.host
    _, full = stage.embedder.embed_with_cells(images[:1], GRID)
    from stages.hosts.clip import CLIP_MEAN, CLIP_STD
    from stages.hosts.efficientnet import to_input
    with torch.no_grad():
        out = host.model.vision_model(pixel_values=torch.from_numpy(to_input(images[0], 32, CLIP_MEAN, CLIP_STD)[None]))
        tokens = host.model.visual_projection(host.model.vision_model.post_layernorm(out.last_hidden_state[0, 1:]))
        expected = host.model.visual_projection(out.pooler_output)[0]
    assert np.allclose(full, tokens.numpy(), atol=1e-5) and np.allclose(pooled[0], expected.numpy(), atol=1e-5)
    with pytest.raises(UserError, match="at most 4"):
        EmbedVisualStage(EmbedVisualConfig(name="clip", grid=5, clip=ClipOptions(model=clip_folder))).preflight()


def test_user_mistakes_are_one_line(tmp_path, monkeypatch):
    assert clip_dims(ClipOptions()) == (512, 7)                     # ViT-B/32 by name, nothing loaded
    with pytest.raises(UserError, match="neither a known CLIP name"):
        clip_dims(ClipOptions(model=str(tmp_path / "nowhere")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")                       # no network: the download fails at once
    stage = EmbedTextStage(EmbedTextConfig(name="clip"))
    with pytest.raises(UserError, match="cannot load CLIP 'openai/clip-vit-base-patch32'") as error:
        stage.setup()
    assert "\n" not in str(error.value)
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a))
    with pytest.raises(UserError, match="pip install transformers"):
        EmbedVisualStage(EmbedVisualConfig(name="clip")).preflight()


def test_a_build_records_its_host(clip_folder, tmp_path):
    """build-sgs with the CLIP host (the double's weights) on two synthetic videos."""
    from cli import main
    assert main(["make-synthetic", "--out", str(tmp_path / "w"), "--count", "2", "--seed", "3"]) == 0
    args = ["build-sgs", "--dataset", "synthetic", "--data-root", str(tmp_path / "w"), "--out", str(tmp_path / "o"),
            "--executor", "sequential", "--quiet", "--set", "decode.fps=1",
            "--set", "embed_visual.name=clip", "--set", f"embed_visual.clip.model={clip_folder}",
            "--set", "embed_visual.grid=2",
            "--set", "embed_text.name=clip", "--set", f"embed_text.clip.model={clip_folder}"]
    assert main(args) == 0
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["host"]["embed_visual"]["clip"] == {"model": clip_folder}
    assert manifest["host"]["embed_text"]["name"] == "clip"
    assert manifest["feature_dims"]["frame_patch"] == manifest["feature_dims"]["caption_token"] == PROJECTION
    from schemas.store import open_dataset
    ds = open_dataset(tmp_path / "o")
    _, features = ds.get(ds.keys()[0])
    assert len(features.frame_patch) == 4 * len(features.frame) and len(features.caption_token) > 0
