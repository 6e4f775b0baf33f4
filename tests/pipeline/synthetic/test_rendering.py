"""Pixels and mp4 encoding: shape masks, occlusion, byte-identical output."""
import hashlib
import subprocess

import numpy as np
import pytest

from pipeline.synthetic.render import background_image, encode_mp4, render_frames, shape_mask
from pipeline.synthetic.world import Background, WorldConfig, sample_world, world_truth


@pytest.mark.parametrize("shape,fill", [("square", 1.0), ("circle", np.pi / 4), ("triangle", 0.5)])
def test_shape_masks_fill_their_box_as_expected(shape, fill):
    mask, _ = shape_mask(shape, 50.0, 50.0, 40.0, 100, 100)
    ys, xs = np.nonzero(mask)
    box_area = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
    assert mask.sum() / box_area == pytest.approx(fill, abs=0.05)
    assert xs.max() - xs.min() + 1 == pytest.approx(40, abs=1)


@pytest.mark.parametrize("kind", ["plain", "stripes", "checker", "noise"])
def test_backgrounds_are_unsaturated(kind):
    img = background_image(Background(kind, (180, 175, 185), 30, 12, 7), 64, 48).astype(int)
    assert img.shape == (48, 64, 3)
    assert (img.max(axis=2) - img.min(axis=2)).max() <= 12      # no hue for the detector to pick up
    if kind != "plain":
        assert img.std() > 1


def test_occlusion_lowers_visibility_and_shrinks_the_visible_box():
    cfg = WorldConfig(duration=1.0, difficulty="hard", objects_min=2, objects_max=2)
    w = sample_world(cfg, np.random.default_rng(0), "occ")
    w.events = []
    w.objects[0].appear_frame = w.objects[1].appear_frame = 0
    w.objects[0].disappear_frame = w.objects[1].disappear_frame = -1
    w.pos[:] = 0
    w.pos[:, 0] = (100, 100)
    w.pos[:, 1] = (100 + w.objects[1].size_px / 2, 100)        # covers part of object 0
    w.z_order = [0, 1]
    frames, visibility, vboxes = render_frames(w)
    assert visibility[0, 1] == pytest.approx(1.0) and 0 < visibility[0, 0] < 1
    truth = world_truth(w, visibility, vboxes)
    first = truth["frames"][0]["objects"][0]
    assert first["visible_box"][2] < first["box"][2] or first["visible_box"][0] > first["box"][0] \
        or visibility[0, 0] < 1


def test_encoding_is_byte_identical_and_decodes_to_every_frame(tmp_path):
    cfg = WorldConfig(duration=2.0)
    w = sample_world(cfg, np.random.default_rng([9, 1]), "v")
    frames, _, _ = render_frames(w)
    encode_mp4(frames, tmp_path / "a.mp4", cfg.fps)
    encode_mp4(frames, tmp_path / "b.mp4", cfg.fps)
    a, b = (tmp_path / "a.mp4").read_bytes(), (tmp_path / "b.mp4").read_bytes()
    assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest()
    raw = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(tmp_path / "a.mp4"), "-f",
                          "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True, timeout=60).stdout
    decoded = np.frombuffer(raw, np.uint8).reshape(-1, cfg.height, cfg.width, 3)
    assert len(decoded) == len(frames) == cfg.num_frames
    assert np.abs(decoded.astype(int) - np.stack(frames)).mean() < 3      # near-lossless


def test_encoder_failure_is_reported(tmp_path):
    with pytest.raises(RuntimeError, match="ffmpeg failed"):
        encode_mp4([np.zeros((48, 64, 3), np.uint8)], tmp_path / "missing" / "x.mp4", 8)
