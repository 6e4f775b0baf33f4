"""The ``lite`` backend: its pure helpers, and the real weights on generated and real frames."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from stages.detect import DetectConfig, DetectStage
from stages.detectors import build_detector
from stages.detectors.boxes import class_nms, roi_average, tile_windows
from stages.detectors.lite import IMAGENET_MAP, LiteOptions, cam_boxes, load_label_groups
from schemas.errors import UserError

SHARED = Path(os.environ.get("FINSTA_SHARED", Path(__file__).resolve().parents[2] / ".." / "shared"))
BOTTLES = SHARED / "data" / "videos" / "bottle-detection.mp4"


def test_imagenet_map_names_known_classes():
    names, matrix = load_label_groups()
    assert matrix.shape == (1000, len(names))
    assert matrix.sum(axis=1).max() == 1.0                     # a class belongs to one name at most
    column = {n: i for i, n in enumerate(names)}
    for index, name in [(898, "bottle"), (817, "car"), (468, "car"), (656, "car"), (504, "cup"), (207, "dog")]:
        assert matrix[index, column[name]] == 1.0
    groups = json.loads(IMAGENET_MAP.read_text())["groups"]
    assert groups["bottle"]["898"] == "water_bottle" and groups["car"]["817"] == "sports_car"


def test_tile_windows_cover_the_frame_with_overlap():
    windows = tile_windows(432, 768, 2, 3, 0.25)
    assert len(windows) == 6
    assert min(w[0] for w in windows) == 0 and max(w[2] for w in windows) == 768
    assert min(w[1] for w in windows) == 0 and max(w[3] for w in windows) == 432
    (a, b) = windows[0], windows[1]
    assert b[0] < a[2]                                          # neighbours overlap
    assert tile_windows(100, 100, 0, 0, 0.25) == []


def test_cam_boxes_split_separate_blobs():
    cam = np.zeros((8, 8), np.float32)
    cam[1:3, 1:3] = 1.0
    cam[5:7, 4:8] = 0.8
    boxes = sorted(cam_boxes(cam, 0.5))
    assert boxes[0] == ((0.125, 0.125, 0.375, 0.375), 1.0)
    assert boxes[1][0] == (0.5, 0.625, 1.0, 0.875) and boxes[1][1] == pytest.approx(0.8)
    assert cam_boxes(-np.ones((4, 4)), 0.5) == []


def test_roi_average_reads_the_box_cells():
    fmap = np.zeros((2, 4, 4), np.float32)
    fmap[0, :2, :2] = 1.0
    fmap[1] = np.arange(16).reshape(4, 4)
    out = roi_average(fmap, np.array([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0.6, 0.6, 0.61, 0.61]]))
    np.testing.assert_allclose(out[0], [1.0, (0 + 1 + 4 + 5) / 4])
    np.testing.assert_allclose(out[1], [0.0, (10 + 11 + 14 + 15) / 4])
    np.testing.assert_allclose(out[2], [0.0, 10.0])            # a tiny box still reads one cell


def test_class_nms_is_per_label():
    boxes = np.array([[0, 0, 1, 1], [0, 0, 0.95, 0.95], [0, 0, 1, 1]], np.float32)
    keep = class_nms(boxes, ["car", "car", "person"], np.array([0.6, 0.9, 0.5]), 0.5)
    assert keep == [1, 2]


def test_lite_options_are_a_typed_config_section():
    from pipeline.config import BuildConfig, apply_overrides
    with pytest.raises(UserError, match="detect.lite.gird"):
        apply_overrides(BuildConfig(), ["detect.lite.gird=[2,2]"])
    assert apply_overrides(BuildConfig(), ["detect.lite.grid=[3,4]"]).detect.lite.grid == (3, 4)
    with pytest.raises(ValueError, match="grid"):
        LiteOptions(grid=(2,))


@pytest.fixture(scope="module")
def lite():
    det = build_detector(DetectConfig(name="lite", lite=LiteOptions(threads=1)))
    det.setup()
    return det


def test_detect_contract_on_generated_frames(lite):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), np.full((90, 200, 3), 128, np.uint8)]
    out = lite.detect(frames)
    assert len(out) == 2 and lite.feature_dim == 1280
    for found in out:
        n = len(found)
        assert found.boxes.shape == (n, 4) and found.scores.shape == (n,) and found.features.shape == (n, 1280)
        assert np.all((found.boxes >= 0) & (found.boxes <= 1)) and np.all(found.scores >= 0.3)
    assert lite.detect([]) == []


@pytest.mark.skipif(not BOTTLES.exists(), reason="../shared clips absent")
def test_finds_the_bottles_on_the_real_clip(lite):
    import cv2
    capture = cv2.VideoCapture(str(BOTTLES))
    capture.set(cv2.CAP_PROP_POS_MSEC, 4000)
    ok, bgr = capture.read()
    assert ok
    found = lite.detect([cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)])[0]
    assert "bottle" in found.labels
    assert "person" not in found.labels     # HOG fires on the bottles; the RoI classifier vetoes it
    bottles = found.boxes[[i for i, label in enumerate(found.labels) if label == "bottle"]]
    assert np.all(bottles[:, 3] > 0.3)       # the bottles stand in the frame's lower part


def test_detect_stage_with_lite(lite):
    from schemas.records import Frame, VideoMeta
    from stages.base import VideoTask
    stage = DetectStage(DetectConfig(name="lite", score_threshold=0.3, batch_frames=2))
    stage.detector = lite
    images = [np.full((64, 96, 3), v, np.uint8) for v in (30, 120, 200)]
    task = VideoTask("k", "test", "v", "v.mp4", meta=VideoMeta("v.mp4", 1.0, 3.0, 96, 64, "h264"),
                     frames=[Frame(i, i / 3) for i in range(3)], images=images)
    stage.process_batch([task])
    assert task.failure is None
    assert task.detection_features.shape == (len(task.dsg.detections), 1280)
