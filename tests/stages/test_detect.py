"""The detect stage: backend output → DSG detections, attributes and features; backend choice and thresholds;
every later stage on a video with no detections and on a real clip (skipped without ../shared)."""
import copy
import os
from pathlib import Path

import pytest

from schemas.records import Frame, VideoMeta
from stages.base import CaptionInput, VideoTask
from stages.catalog import STAGES
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


# ---------------------------------------------------------------- every stage after detection, real data default
SHARED = Path(os.environ.get("FINSTA_SHARED", Path(__file__).resolve().parents[2] / ".." / "shared"))
BOTTLES = SHARED / "data" / "videos" / "bottle-detection.mp4"
STAGE_NAMES = [stage.name for stage in STAGES]


@pytest.fixture(scope="module")
def catalog_stages():
    """Every catalog stage with the real-data defaults (dataset "sample"), set up once."""
    from pipeline.config import BuildConfig, finalize
    cfg, _ = finalize(BuildConfig())
    cfg.decode.max_frames = 4
    stages = [stage_class(getattr(cfg, stage_class.name)) for stage_class in STAGES]
    for stage in stages:
        stage.setup()
    return stages


def run_catalog(stages, video: Path) -> dict:
    """``stages`` in order on ``video``; per stage, its failure and what the task holds after it."""
    task = VideoTask("k", "test", "v", str(video), captions=[CaptionInput("A person holds a bottle.", 0.0, 4.0)])
    outcome = {}
    for stage in stages:
        [task] = stage.process_batch([task])
        outcome[stage.name] = (task.failure, copy.deepcopy(task.dsg), task.detection_features)
    return outcome


@pytest.fixture(scope="module")
def empty_video_run(catalog_stages, tmp_path_factory):
    from tests.stages.video_fixtures import make_video
    video = make_video(tmp_path_factory.mktemp("empty") / "bands.mp4", seconds=4, fps=4, size=(320, 240))
    return run_catalog(catalog_stages, video)


@pytest.fixture(scope="module")
def real_clip_run(catalog_stages):
    if not BOTTLES.exists():
        pytest.skip("../shared clips absent")
    return run_catalog(catalog_stages, BOTTLES)


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_every_stage_survives_a_video_with_no_detections(empty_video_run, name):
    failure, dsg, features = empty_video_run[name]
    assert failure is None
    if dsg is not None:
        assert dsg.detections == [] and dsg.relations == [] and dsg.tracks == []
        assert features.shape == (0, 1280)


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_every_stage_runs_on_a_real_clip(real_clip_run, name):
    failure, dsg, features = real_clip_run[name]
    assert failure is None
    if dsg is not None:
        assert "bottle" in {d.label for d in dsg.detections}
        assert features.shape == (len(dsg.detections), 1280)
