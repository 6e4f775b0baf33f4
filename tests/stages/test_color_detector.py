"""The ``color`` detector: shapes, colours and sizes recovered from pixels alone."""
import cv2
import numpy as np
import pytest

from stages.detect import DetectConfig
from stages.detectors import build_detector
from stages.detectors.color import FEATURE_DIM, ColorDetector, classify_shape
from stages.registry import DETECTORS

COLOR = DetectConfig(name="color")

RGB = {"red": (220, 30, 30), "orange": (245, 135, 20), "yellow": (235, 215, 25), "green": (30, 170, 50),
       "blue": (35, 70, 225), "purple": (145, 45, 195)}


def draw(img, shape, color, cx, cy, size):
    half = size // 2
    if shape == "square":
        cv2.rectangle(img, (cx - half, cy - half), (cx + half - 1, cy + half - 1), RGB[color], -1)
    elif shape == "circle":
        cv2.circle(img, (cx, cy), half, RGB[color], -1)
    else:
        pts = np.array([[cx, cy - half], [cx - half, cy + half], [cx + half, cy + half]], np.int32)
        cv2.fillPoly(img, [pts], RGB[color])
    return (cx - half) / img.shape[1], (cy - half) / img.shape[0], (cx + half) / img.shape[1], (cy + half) / img.shape[0]


def scene(background=(190, 190, 185)):
    img = np.zeros((240, 320, 3), np.uint8)
    img[:] = background
    return img


def iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy)


def test_registered_and_built_by_name():
    assert DETECTORS.get("color") is ColorDetector
    det = build_detector(DetectConfig(name="color"))
    det.setup()
    assert det.feature_dim == FEATURE_DIM


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
@pytest.mark.parametrize("color", sorted(RGB))
@pytest.mark.parametrize("size", [26, 50])
def test_every_shape_colour_and_size(shape, color, size):
    img = scene()
    truth = draw(img, shape, color, 150, 110, size)
    found = ColorDetector(COLOR).detect([img])[0]
    assert found.labels == [shape]
    assert found.attributes == [{"color": color, "shape": shape, "size": "large" if size > 36 else "small"}]
    assert iou(found.boxes[0], truth) > 0.85
    assert found.boxes.dtype == np.float32 and found.scores.dtype == np.float32 and 0.5 <= found.scores[0] <= 1
    assert found.features.shape == (1, FEATURE_DIM) and found.features.dtype == np.float32


def test_several_objects_on_a_textured_background():
    img = scene()
    stripes = ((np.add.outer(np.arange(240), np.arange(320)) // 12) % 2 * 24).astype(np.uint8)
    img = np.clip(img.astype(int) - 12 + stripes[..., None], 0, 255).astype(np.uint8)
    boxes = [draw(img, "circle", "red", 60, 60, 30), draw(img, "square", "blue", 200, 70, 48),
             draw(img, "triangle", "yellow", 120, 180, 40), draw(img, "circle", "purple", 270, 190, 28)]
    found = ColorDetector(COLOR).detect([img])[0]
    assert len(found) == 4
    for truth in boxes:
        assert max(iou(truth, b) for b in found.boxes) > 0.85
    assert sorted(a["color"] for a in found.attributes) == ["blue", "purple", "red", "yellow"]


def test_same_colour_objects_apart_are_separate_and_noise_is_ignored():
    img = scene()
    draw(img, "square", "green", 60, 60, 30)
    draw(img, "square", "green", 220, 160, 30)
    img[5:7, 300:302] = RGB["red"]                     # a speck, below the minimum area
    found = ColorDetector(COLOR).detect([img])[0]
    assert found.labels == ["square", "square"]


def test_empty_and_grey_frames_give_no_detections_with_the_right_shapes():
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 255, (240, 320, 1), dtype=np.uint8), 3, axis=2)
    for img in (scene(), grey):
        found = ColorDetector(COLOR).detect([img])[0]
        assert len(found) == 0
        assert found.boxes.shape == (0, 4) and found.features.shape == (0, FEATURE_DIM) and found.scores.shape == (0,)


def test_survives_h264_compression(tmp_path):
    import subprocess
    img = scene()
    truth = draw(img, "triangle", "orange", 100, 100, 26)
    draw(img, "circle", "green", 220, 120, 26)
    path = tmp_path / "x.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "320x240",
                    "-i", "pipe:0", "-c:v", "libx264", "-crf", "23", "-pix_fmt", "yuv420p", str(path)],
                   input=img.tobytes(), check=True, timeout=60)
    raw = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt",
                          "rgb24", "-"], capture_output=True, check=True, timeout=60).stdout
    decoded = np.frombuffer(raw, np.uint8).reshape(240, 320, 3)
    found = ColorDetector(COLOR).detect([decoded])[0]
    assert sorted(zip(found.labels, [a["color"] for a in found.attributes])) == [("circle", "green"), ("triangle", "orange")]
    tri = found.labels.index("triangle")
    assert iou(found.boxes[tri], truth) > 0.75


def test_shape_rules_on_masks():
    y, x = np.mgrid[0:40, 0:40]
    assert classify_shape(np.ones((20, 20), bool))[0] == "square"
    assert classify_shape((x - 19.5) ** 2 + (y - 19.5) ** 2 <= 400)[0] == "circle"
    assert classify_shape(np.abs(x - 19.5) <= (y + 0.5) / 2)[0] == "triangle"


def test_features_are_stable_for_one_object_and_separate_colours():
    def feature(color, cx, cy):
        img = scene()
        draw(img, "circle", color, cx, cy, 30)
        return ColorDetector(COLOR).detect([img])[0].features[0]

    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    red, red_moved, orange = feature("red", 60, 60), feature("red", 200, 150), feature("orange", 60, 60)
    assert cos(red, red_moved) > 0.99
    assert cos(red, orange) < 0.5
