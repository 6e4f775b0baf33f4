"""Decoding real (generated) videos: containers, sampling modes, exact timestamps, failures."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from schemas.errors import SampleError, UserError
from stages.base import CaptionInput, VideoTask
from stages.decode import (DecodeConfig, DecodeStage, decode_video, iter_frames, merge_windows,
                           output_size, pipe_format, probe, probe_info)
from tests.stages.video_fixtures import (CONTAINERS, make_bad_inputs, make_truncated, make_video,
                                         read_index)

SHARED = Path(os.environ.get("FINSTA_SHARED", Path(__file__).resolve().parents[2] / ".." / "shared"))
SHARED_VIDEOS = sorted((SHARED / "data" / "videos").glob("*.mp4"))

FPS, SECONDS, SIZE = 25, 2.0, (96, 64)
NATIVE = int(FPS * SECONDS)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {suffix: make_video(d / f"clip{suffix}", seconds=SECONDS, fps=FPS, size=SIZE)
            for suffix in CONTAINERS}


def nearest_frames(targets, native_fps=FPS, count=NATIVE):
    """Oracle for the sampling rule: nearest native frame, ties to the later one, no repeats."""
    picked = []
    for target in targets:
        n = min(range(count), key=lambda i: (abs(i / native_fps - target), -i))
        if not picked or n > picked[-1]:
            picked.append(n)
    return picked


def ffprobe_frame_times(path: Path) -> list[float]:
    """Independent oracle: every frame's timestamp as ffprobe reports it."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "frame=best_effort_timestamp_time", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, timeout=60).stdout
    return [float(line.strip().strip(",")) for line in out.splitlines() if line.strip()]


def check_frames(frames, images, expected_indices, times=None):
    got = [f.index for f in frames]
    assert got == expected_indices
    assert [read_index(im) for im in images] == expected_indices  # the pixels are those frames
    for frame in frames:
        expected_time = times[frame.index] if times else frame.index / FPS
        assert frame.timestamp == pytest.approx(expected_time, abs=1e-6)


# ---------------------------------------------------------------- probing
@pytest.mark.parametrize("suffix", CONTAINERS)
def test_probe_every_container(clips, suffix):
    meta = probe(str(clips[suffix]))
    assert (meta.width, meta.height) == SIZE
    assert meta.fps == pytest.approx(FPS)
    assert meta.duration == pytest.approx(SECONDS, abs=0.05)
    assert meta.num_frames in (NATIVE, -1) or abs(meta.num_frames - NATIVE) <= 1
    assert meta.codec == {".mp4": "h264", ".mkv": "h264", ".webm": "vp8", ".avi": "mpeg4",
                          ".gif": "gif"}[suffix]


def test_probe_reports_displayed_size_of_rotated_video(tmp_path, clips):
    rotated = tmp_path / "rotated.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clips[".mp4"]), "-c", "copy",
                    "-metadata:s:v:0", "rotate=90", str(rotated)], check=True, timeout=60)
    meta = probe(str(rotated))
    assert (meta.width, meta.height) == (SIZE[1], SIZE[0])
    _, _, images = decode_video(str(rotated), DecodeConfig(mode="uniform", num_frames=2))
    assert images[0].shape == (SIZE[0], SIZE[1], 3)


# ---------------------------------------------------------------- sampling modes
@pytest.mark.parametrize("suffix", CONTAINERS)
def test_fps_mode_returns_nearest_frames_with_exact_timestamps(clips, suffix):
    meta, frames, images = decode_video(str(clips[suffix]), DecodeConfig(mode="fps", fps=4))
    expected = nearest_frames([k / 4 for k in range(8)])
    assert expected == [0, 6, 13, 19, 25, 31, 38, 44]
    check_frames(frames, images, expected, ffprobe_frame_times(clips[suffix]))
    assert all(im.dtype == np.uint8 and im.shape == (SIZE[1], SIZE[0], 3) for im in images)


def test_timestamps_match_container_pts_at_30fps_in_millisecond_timebase(tmp_path):
    # Matroska stores milliseconds, so 1/30 s steps are rounded: we must return the stored pts.
    path = make_video(tmp_path / "c30.mkv", seconds=2, fps=30, size=SIZE)
    times = ffprobe_frame_times(path)
    assert times[1] == pytest.approx(0.033) and times[2] == pytest.approx(0.067)
    _, frames, images = decode_video(str(path), DecodeConfig(mode="fps", fps=7))
    assert len(frames) == 14
    for frame, image in zip(frames, images):
        assert read_index(image) == frame.index
        assert frame.timestamp == pytest.approx(times[frame.index], abs=1e-9)


def test_fps_above_native_rate_returns_each_frame_once(clips):
    _, frames, images = decode_video(str(clips[".mp4"]), DecodeConfig(mode="fps", fps=100))
    check_frames(frames, images, list(range(NATIVE)))


def test_uniform_mode_takes_segment_centres(clips):
    _, frames, images = decode_video(str(clips[".mkv"]), DecodeConfig(mode="uniform", num_frames=5))
    check_frames(frames, images, nearest_frames([0.2, 0.6, 1.0, 1.4, 1.8]))
    assert [f.index for f in frames] == [5, 15, 25, 35, 45]


def test_uniform_mode_with_more_frames_than_the_video_has(clips):
    _, frames, images = decode_video(str(clips[".webm"]), DecodeConfig(mode="uniform", num_frames=80))
    check_frames(frames, images, list(range(NATIVE)))


def test_windows_mode_samples_inside_the_union_of_windows(clips):
    windows = [(0.3, 0.9), (1.5, 1.7), (0.5, 0.7), (5.0, 6.0)]  # overlap and one past the end
    _, frames, images = decode_video(str(clips[".mp4"]), DecodeConfig(mode="windows", fps=5), windows)
    # first frame of each window, then the frames nearest the 0.2 s grid
    check_frames(frames, images, [8, 10, 15, 20, 38, 40])
    assert all(0.3 <= f.timestamp <= 0.9 or 1.5 <= f.timestamp <= 1.7 for f in frames)


def test_a_point_window_still_gets_a_frame(clips):
    _, frames, images = decode_video(str(clips[".mp4"]), DecodeConfig(mode="windows", fps=1), [(1.01, 1.01)])
    check_frames(frames, images, [26])


def test_windows_mode_without_windows_is_fps_mode(clips):
    _, a, _ = decode_video(str(clips[".avi"]), DecodeConfig(mode="windows", fps=2))
    _, b, _ = decode_video(str(clips[".avi"]), DecodeConfig(mode="fps", fps=2))
    assert a == b and [f.index for f in a] == [0, 13, 25, 38]


def test_windows_past_the_end_fail_with_empty_window(clips):
    with pytest.raises(SampleError) as err:
        decode_video(str(clips[".mp4"]), DecodeConfig(mode="windows"), [(10.0, 12.0)])
    assert err.value.reason == "empty_window"


def test_merge_windows():
    assert merge_windows([(3, 4), (-1, 1), (0.5, 2), (5, 4)]) == [(0.0, 2.0), (3.0, 4.0)]


def test_max_frames_caps_the_output(clips):
    _, frames, _ = decode_video(str(clips[".gif"]), DecodeConfig(mode="fps", fps=25, max_frames=7))
    assert [f.index for f in frames] == list(range(7))


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_resize_to_short_side_keeps_aspect_and_content(clips, suffix):
    _, frames, images = decode_video(str(clips[suffix]), DecodeConfig(fps=2, short_side=32))
    assert images[0].shape == (32, 48, 3)
    assert [read_index(im) for im in images] == [f.index for f in frames]


def test_pipe_carries_yuv420p_only_for_native_size_bt601_streams(clips):
    info = probe_info(str(clips[".mp4"]))
    assert (info.pix_fmt, info.meta.width % 2, info.meta.height % 2) == ("yuv420p", 0, 0)
    assert pipe_format(info, DecodeConfig()) == "yuv420p"
    assert pipe_format(info, DecodeConfig(transport="rgb24")) == "rgb24"
    assert pipe_format(info, DecodeConfig(short_side=32)) == "rgb24"            # resized: ffmpeg converts
    assert pipe_format(probe_info(str(clips[".gif"])), DecodeConfig()) == "rgb24"
    for change in ({"color_space": "bt709"}, {"color_range": "pc"}, {"pix_fmt": "yuv420p10le"},
                   {"meta": dataclasses.replace(info.meta, width=95)}):
        assert pipe_format(dataclasses.replace(info, **change), DecodeConfig()) == "rgb24", change


def test_yuv420p_pipe_gives_the_frames_of_ffmpeg_rgb24_within_rounding(tmp_path):
    path = make_video(tmp_path / "card.mp4", seconds=1.0, fps=FPS, size=SIZE, pattern="testsrc")
    auto = decode_video(str(path), DecodeConfig(mode="fps", fps=FPS))
    rgb = decode_video(str(path), DecodeConfig(mode="fps", fps=FPS, transport="rgb24"))
    assert [f.timestamp for f in auto[1]] == [f.timestamp for f in rgb[1]]
    ours, theirs = np.stack(auto[2]).astype(int), np.stack(rgb[2]).astype(int)
    assert ours.shape == theirs.shape == (FPS, SIZE[1], SIZE[0], 3)
    assert np.abs(ours - theirs).max() <= 8 and np.abs(ours - theirs).mean() < 1.5


def test_yuv420p_conversion_leaves_opencvs_thread_setting_as_it_was(tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = make_video(tmp_path / "card.mp4", seconds=0.5, fps=FPS, size=SIZE, pattern="testsrc")
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)  # what a detector in the same process might have set
        assert pipe_format(probe_info(str(path)), DecodeConfig()) == "yuv420p"
        assert len(decode_video(str(path), DecodeConfig(mode="fps", fps=FPS))[1]) > 0
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)


def test_output_size():
    assert output_size(640, 360, 224) == (398, 224)
    assert output_size(360, 640, 224) == (224, 398)
    assert output_size(640, 360, 0) == (640, 360)


def test_frames_are_streamed_and_the_iterator_can_stop_early(clips):
    frames = iter_frames(str(clips[".mkv"]), DecodeConfig(fps=25))
    first, image = next(frames)
    assert first.index == 0 and read_index(image) == 0
    frames.close()  # kills ffmpeg; must not hang or raise


def test_bad_config_is_a_user_error():
    with pytest.raises(UserError):
        DecodeConfig(mode="every_other")
    with pytest.raises(UserError):
        DecodeConfig(fps=0)
    with pytest.raises(UserError, match="transport"):
        DecodeConfig(transport="yuv444p")


# ---------------------------------------------------------------- failures
@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    return make_bad_inputs(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("reason", ["missing_file", "empty_file", "not_a_video", "no_video_stream",
                                    "corrupt_video", "unreadable"])
def test_each_bad_input_fails_with_its_reason(bad_inputs, reason):
    with pytest.raises(SampleError) as err:
        decode_video(str(bad_inputs[reason]), DecodeConfig())
    assert err.value.reason == reason


@pytest.mark.parametrize("suffix", CONTAINERS)
@pytest.mark.parametrize("fraction", [0.4, 0.9])
def test_truncated_files_fail_instead_of_returning_fewer_frames(tmp_path, suffix, fraction):
    whole = make_video(tmp_path / f"whole{suffix}", seconds=3, fps=10, size=(160, 120), pattern="testsrc")
    cut = make_truncated(tmp_path / f"cut{suffix}", whole, fraction)
    with pytest.raises(SampleError) as err:
        decode_video(str(cut), DecodeConfig(fps=10))
    assert err.value.reason == "corrupt_video"


def test_garbage_in_the_middle_of_a_file_is_corrupt(tmp_path):
    path = make_video(tmp_path / "g.mp4", seconds=3, fps=10, size=(160, 120), pattern="testsrc")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = np.random.default_rng(0).integers(0, 256, 2000, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(SampleError) as err:
        decode_video(str(path), DecodeConfig(fps=10))
    assert err.value.reason == "corrupt_video"


def test_text_file_with_video_suffix_is_not_a_video_but_cut_container_is_corrupt(bad_inputs):
    # Both make ffprobe fail the same way ("moov atom not found"); the file signature decides.
    reasons = []
    for key in ("not_a_video", "corrupt_video"):
        with pytest.raises(SampleError) as err:
            probe(str(bad_inputs[key]))
        reasons.append(err.value.reason)
    assert reasons == ["not_a_video", "corrupt_video"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_file_without_read_permission_is_unreadable(tmp_path, clips):
    path = tmp_path / "locked.mp4"
    path.write_bytes(clips[".mp4"].read_bytes())
    path.chmod(0)
    with pytest.raises(SampleError) as err:
        probe(str(path))
    assert err.value.reason == "unreadable"


def test_fifo_is_unreadable_and_does_not_block(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(SampleError) as err:
        probe(str(fifo))
    assert err.value.reason == "unreadable"


def test_decoding_past_the_timeout_is_killed_and_reported(tmp_path):
    # A slow consumer makes the run outlast the deadline on any machine, however fast or loaded: the deadline
    # is four times the first frame's measured arrival, and the consumer takes twice the deadline over the
    # 100 frames, so the kill lands mid-stream.
    path = make_video(tmp_path / "long.mp4", seconds=10, fps=10, size=(160, 120), pattern="testsrc")
    info = probe_info(str(path))
    started = time.monotonic()
    frames = iter_frames(str(path), DecodeConfig(fps=10), info=info)
    next(frames)
    timeout_s = max(0.5, 4 * (time.monotonic() - started))
    frames.close()
    seen = 0
    with pytest.raises(SampleError) as err:
        for _ in iter_frames(str(path), DecodeConfig(fps=10, timeout_s=timeout_s), info=info):
            seen += 1
            time.sleep(2 * timeout_s / 100)
    assert err.value.reason == "timeout"
    assert 0 < seen < 100      # cut before the end: progress, not a wall-clock bound, shows the kill (load-proof)


def test_decode_stage_fills_the_task_and_turns_errors_into_failures(clips, bad_inputs):
    good = VideoTask("k1", "test", "v1", str(clips[".mp4"]),
                     captions=[CaptionInput("a", 0.3, 0.9), CaptionInput("b")])
    bad = VideoTask("k2", "test", "v2", str(bad_inputs["no_video_stream"]))
    DecodeStage(DecodeConfig(mode="windows", fps=5)).process_batch([good, bad])
    assert good.failure is None
    assert [f.index for f in good.frames] == [8, 10, 15, 20]
    assert len(good.images) == 4 and good.meta.width == SIZE[0]
    assert good.stage_frames["decode"] == 4
    assert bad.failure is not None and bad.failure.stage == "decode"
    assert bad.failure.error_type == "no_video_stream"


# ---------------------------------------------------------------- shared real clips
@pytest.mark.skipif(not SHARED_VIDEOS, reason="../shared/data/videos not present")
@pytest.mark.parametrize("path", SHARED_VIDEOS, ids=lambda p: p.name)
def test_real_clips_probe_and_decode(path):
    meta = probe(str(path))
    assert meta.codec == "h264" and meta.width >= 640 and meta.fps > 5 and meta.duration > 20
    _, frames, images = decode_video(str(path), DecodeConfig(fps=0.5, short_side=128))
    assert len(frames) == pytest.approx(meta.duration / 2, abs=1.5)
    assert all(b.timestamp > a.timestamp for a, b in zip(frames, frames[1:]))
    for frame in frames:
        assert frame.index == round(frame.timestamp * meta.fps)
        assert abs(frame.timestamp - 2 * round(frame.timestamp / 2)) <= 0.5 / meta.fps + 1e-6
    assert images[0].shape[0] == 128 and images[0].std() > 5  # real picture content


# ------------------------------------------------------------------ URL inputs (real servers on 127.0.0.1)
from tests.storage_servers import make_bucket, make_gcs_bucket  # noqa: E402


def test_s3_and_https_inputs_decode_like_the_local_file(clips, s3_env, http_server):
    local = clips[".mp4"]   # moov after mdat: ffmpeg must seek, i.e. range-read the object
    cfg = DecodeConfig(fps=5)
    want_meta, want_frames, want_images = decode_video(str(local), cfg)
    bucket = make_bucket(s3_env, "videos", {"clips/a.mp4": local})
    base, folder = http_server
    (folder / "a.mp4").write_bytes(local.read_bytes())
    for url in (f"{bucket}/clips/a.mp4", f"{base}/a.mp4"):
        meta, frames, images = decode_video(url, cfg)
        assert meta.path == url and (meta.width, meta.height) == (want_meta.width, want_meta.height)
        assert [f.timestamp for f in frames] == [f.timestamp for f in want_frames]
        assert all(np.array_equal(a, b) for a, b in zip(images, want_images)) and len(images) == len(want_images)


def test_a_gs_video_decodes_like_the_local_file_through_a_spool_removed_after(clips, gcs_env, tmp_path, monkeypatch):
    local = clips[".mp4"]
    cfg = DecodeConfig(fps=5)
    want_meta, want_frames, want_images = decode_video(str(local), cfg)
    bucket = make_gcs_bucket(gcs_env, "gvideos", {"clips/a.mp4": local})
    monkeypatch.setenv("TMPDIR", str(tmp_path))   # where the spool goes
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    meta, frames, images = decode_video(f"{bucket}/clips/a.mp4", cfg)
    assert meta.path == f"{bucket}/clips/a.mp4" and [f.timestamp for f in frames] == [f.timestamp for f in want_frames]
    assert all(np.array_equal(a, b) for a, b in zip(images, want_images)) and len(images) == len(want_images)
    assert list(tmp_path.iterdir()) == []   # the spool is gone
    with pytest.raises(SampleError) as error:
        decode_video(f"{bucket}/none.mp4", cfg)
    assert error.value.reason == "missing_file" and "gs://gvideos/none.mp4" in error.value.message


def test_missing_s3_and_https_objects_are_missing_file_rows_naming_the_url(s3_env, http_server):
    make_bucket(s3_env, "holes")
    base, _ = http_server
    for url in ("s3://holes/none.mp4", "s3://no-such-bucket/a.mp4", f"{base}/none.mp4"):
        with pytest.raises(SampleError) as error:
            decode_video(url, DecodeConfig())
        assert error.value.reason == "missing_file" and url in error.value.message
        assert "Signature" not in error.value.message and "finsta-test" not in error.value.message


def test_a_failing_s3_decode_names_the_s3_url_not_the_presigned_one(s3_env):
    bucket = make_bucket(s3_env, "junk", {"x.mp4": b"not a video at all"})
    with pytest.raises(SampleError) as error:
        decode_video(f"{bucket}/x.mp4", DecodeConfig())
    assert "s3://junk/x.mp4" in error.value.message and "X-Amz" not in error.value.message


def test_an_unreachable_url_is_retried_then_a_network_error_row(http_server, clips, monkeypatch):
    from schemas import storage
    monkeypatch.setattr(storage, "BACKOFF_S", 0.01)
    base, folder = http_server
    (folder / "a.mp4").write_bytes(clips[".mp4"].read_bytes())
    assert len(decode_video(f"{base}/flaky/2/a.mp4", DecodeConfig(fps=5))[1]) > 0   # two 503s, then read
    with pytest.raises(SampleError) as error:
        decode_video(f"{base}/flaky/99/a.mp4", DecodeConfig(fps=5))
    assert error.value.reason == "network_error" and f"{base}/flaky/99/a.mp4" in error.value.message


def test_the_shot_stream_is_decode_smalls_frames_from_the_same_run(clips):
    from stages.segment_shots import decode_small
    path = str(clips[".mp4"])
    task = VideoTask("k", "test", "v", path)
    DecodeStage(DecodeConfig(fps=5, max_frames=3, shot_stream=True)).process_batch([task])
    assert task.failure is None
    small, fps, start = task.shot_stream
    want, want_fps, want_start = decode_small(path)
    assert small.shape == (NATIVE, 27, 48, 3) and np.array_equal(small, want)   # every native frame, past max_frames
    assert (fps, start) == (want_fps, want_start)
    _, frames, images = decode_video(path, DecodeConfig(fps=5, max_frames=3))
    assert task.frames == frames and all(np.array_equal(a, b) for a, b in zip(task.images, images))
    plain = VideoTask("k", "test", "v", path)
    DecodeStage(DecodeConfig(fps=5)).process_batch([plain])
    assert plain.shot_stream is None
