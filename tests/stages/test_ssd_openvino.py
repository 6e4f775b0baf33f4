"""The ``ssd`` detector's OpenVINO engine (stages/detectors/ssd_openvino.py): its anchors and DetectionOutput
against OpenCV's, and its detections equal to OpenCV DNN's on the ../shared clips (skipped without OpenVINO or
without ../shared)."""
import os
from pathlib import Path

import numpy as np
import pytest

from schemas.errors import UserError
from stages.detect import DetectConfig
from stages.detectors import build_detector, ssd_openvino
from stages.detectors.boxes import iou_matrix
from stages.detectors.ssd import SSDDetector, SSDOptions, model_files

SHARED = Path(os.environ.get("FINSTA_SHARED", Path(__file__).resolve().parents[2] / ".." / "shared"))
CLIPS = sorted((SHARED / "data" / "videos").glob("*.mp4")) if SHARED.exists() else []
needs_openvino = pytest.mark.skipif(not ssd_openvino.available(), reason="OpenVINO not installed")


def test_anchors_are_opencvs_prior_boxes():
    import cv2
    graph, text = model_files()
    net = cv2.dnn.readNetFromTensorflow(str(graph), str(text))
    width, height = 544, 300
    net.setInput(cv2.dnn.blobFromImage(np.zeros((height, width, 3), np.uint8), size=(width, height)))
    reference = net.forward("PriorBox/concat")[0, 0].reshape(-1, 4)
    heads = [(19, 34), (10, 17), (5, 9), (3, 5), (2, 3), (1, 2)]      # the six maps at 300 × 544 (stride 16 … 512)
    ours = ssd_openvino.prior_boxes(ssd_openvino.prior_specs(text), heads, width, height)
    assert ours.shape == reference.shape and np.abs(ours - reference).max() < 1e-5


def test_detection_output_is_per_class_nms_above_the_score_floor():
    priors = np.array([[0.1, 0.1, 0.3, 0.3], [0.11, 0.1, 0.31, 0.3], [0.6, 0.6, 0.9, 0.9]], np.float32)
    encodings = np.zeros((1, 3, 4), np.float32)                      # boxes = their anchors
    logits = np.full((1, 3, ssd_openvino.NUM_CLASSES), -10.0, np.float32)
    logits[0, 0, 1], logits[0, 1, 1] = 3.0, 2.0                      # two overlapping persons: the weaker goes
    logits[0, 1, 44] = 1.0                                           # the same box as a bottle stays (other class)
    logits[0, 2, 3] = -0.1                                           # a car under 0.5
    rows = ssd_openvino.detection_output(encodings, logits, priors, 0.5)
    assert [(int(r[1]), round(float(r[2]), 3)) for r in rows] == [(1, 0.953), (44, 0.731)]
    assert np.allclose(rows[0, 3:], priors[0]) and np.allclose(rows[1, 3:], priors[1])
    assert len(ssd_openvino.detection_output(encodings, logits, priors, 0.4)) == 3
    assert ssd_openvino.detection_output(encodings[:0], logits[:0], priors, 0.5).shape == (0, 7)


def test_a_missing_runtime_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setattr(ssd_openvino, "available", lambda: False)
    with pytest.raises(UserError, match="pip install openvino==.*engine=opencv"):
        SSDDetector.preflight(DetectConfig(name="ssd"))
    SSDDetector.preflight(DetectConfig(name="ssd", ssd=SSDOptions(engine="opencv")))
    with pytest.raises(ValueError, match="engine"):
        SSDOptions(engine="tensorrt")


def _frames(clip: Path, count: int) -> list[np.ndarray]:
    from stages.decode import DecodeConfig, decode_video
    return decode_video(str(clip), DecodeConfig(fps=1.0, max_frames=count))[2]


def _matched_frames(reference, ours):
    """Both detectors on the first 6 frames of each ../shared clip: per frame, the same labels (checked here), and
    for frames with boxes ``(clip name, reference's, ours, ours' box matched to each reference box, its IoU)``."""
    for clip in CLIPS:
        images = _frames(clip, 6)
        for expected, found in zip(reference.detect(images), ours.detect(images)):
            assert sorted(expected.labels) == sorted(found.labels), clip.name
            if len(expected):
                iou = iou_matrix(expected.boxes, found.boxes)
                yield clip.name, expected, found, iou.argmax(axis=1), iou.max(axis=1)


@needs_openvino
@pytest.mark.skipif(not CLIPS, reason="../shared clips absent")
def test_openvino_equals_opencv_dnn_on_the_shared_clips():
    """The default engine (OpenVINO) in f32 (Winograd class heads, concurrent streams) vs OpenCV DNN: matched
    boxes IoU >= 0.99, scores within 0.01, the same labels, and the RoI features of the same pass."""
    engines = {name: build_detector(DetectConfig(name="ssd", ssd=SSDOptions(**options)))
               for name, options in (("opencv", {"engine": "opencv", "threads": 1}),
                                     ("openvino", {"threads": 2, "precision": "f32"}))}  # 2 streams: batches split
    assert engines["openvino"].opts.engine == "openvino"
    for detector in engines.values():
        detector.setup()
    matched = 0
    for clip, reference, ours, pair, iou in _matched_frames(engines["opencv"], engines["openvino"]):
        assert iou.min() >= 0.99, clip
        assert [ours.labels[j] for j in pair] == reference.labels
        assert np.abs(ours.scores[pair] - reference.scores).max() <= 0.01
        assert np.abs(ours.features[pair] - reference.features).max() <= 1e-3
        matched += len(reference)
    assert matched >= 10      # the clips hold bottles, cars and people: the comparison is not vacuous


def test_the_default_precision_is_bf16_where_the_cpu_has_it():
    assert SSDOptions().precision == "bf16"
    assert ssd_openvino.resolved_precision("bf16", ["FP32", "BF16"]) == "bf16"
    assert ssd_openvino.resolved_precision("bf16", ["FP32", "INT8"]) == "f32"
    assert ssd_openvino.resolved_precision("f32", ["FP32", "BF16"]) == "f32"


@needs_openvino
@pytest.mark.skipif(not CLIPS, reason="../shared clips absent")
def test_bf16_finds_what_f32_finds_on_the_shared_clips():
    """bf16 (the default where the CPU has it) against f32 on the clips' first frames: the same labels per frame,
    matched boxes IoU >= 0.7 and scores within 0.07 (on all 211 frames: IoU >= 0.74, scores within 0.058, one
    frame gains a one-frame "frisbee"; README). Skipped on a CPU without bf16 (there the default is f32)."""
    engines = {p: build_detector(DetectConfig(name="ssd", ssd=SSDOptions(threads=1, precision=p)))
               for p in ("f32", "bf16")}
    for detector in engines.values():
        detector.setup()
    if engines["bf16"].net.precision != "bf16":
        pytest.skip("this CPU has no bf16 instructions: bf16 runs as f32")
    matched = 0
    for clip, reference, ours, pair, iou in _matched_frames(engines["f32"], engines["bf16"]):
        assert iou.min() >= 0.7, clip
        assert np.abs(ours.scores[pair] - reference.scores).max() <= 0.07
        matched += len(reference)
    assert matched >= 10
