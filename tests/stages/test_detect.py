"""The detect stage: backend output → DSG detections, attributes and features; backend choice and thresholds."""
import pytest

from schemas.records import Frame, VideoMeta
from stages.base import VideoTask
from stages.detect import REAL_DATA_BACKEND, DetectConfig, DetectStage
from tests.stages.test_color_detector import draw, scene


def decoded(images):
    return VideoTask("k", "test", "v", "v.mp4", meta=VideoMeta("v.mp4", 2.0, 1.0, 320, 240, "h264", len(images)),
                     frames=[Frame(i, float(i)) for i in range(len(images))], images=images)


@pytest.fixture(scope="module")
def stage():
    s = DetectStage(DetectConfig(name="color"))
    s.setup()
    return s


def test_detect_stage_turns_backend_attributes_into_records(stage):
    img = scene()
    draw(img, "circle", "red", 60, 60, 30)
    [task] = stage.process_batch([decoded([scene(), img])])   # first frame empty
    assert task.failure is None
    assert [(d.frame, d.label) for d in task.dsg.detections] == [(1, "circle")]
    assert {(a.name, a.value) for a in task.dsg.attributes} == {("color", "red"), ("shape", "circle"), ("size", "small")}


def test_a_video_with_no_detections_gives_an_empty_dsg_and_zero_rows(stage):
    [task] = stage.process_batch([decoded([scene(), scene()])])
    assert task.failure is None and task.dsg.detections == []
    assert task.detection_features.shape == (0, stage.detector.feature_dim)


def test_auto_and_unset_threshold_resolve_per_dataset_and_backend():
    assert DetectConfig().resolved("synthetic").name == "color"
    real = DetectConfig().resolved("activitynet")
    assert real.name == REAL_DATA_BACKEND and real.score_threshold is not None
    assert DetectConfig(name="color", score_threshold=0.7).resolved().score_threshold == 0.7


def test_missing_frames_fail_the_sample_not_the_stage(stage):
    [task] = stage.process_batch([VideoTask("k", "test", "v", "v.mp4")])
    assert task.failure.error_type == "missing_input"
