"""Shared normalisation, video lookup, mapping files, limit and the registry."""
from collections import Counter

import pytest

from pipeline.datasets import DATASETS, DatasetConfig, build_dataset
from pipeline.datasets.base import (STAT_KEYS, VideoIndex, as_time, count_overlapping, load_mapping,
                                    normalise_captions)
from schemas.errors import UserError
from stages.base import CaptionInput


def test_every_dataset_is_registered():
    assert DATASETS.names() == ["activitynet", "manifest", "msrvtt", "sample", "synthetic"]


def test_unknown_dataset_is_a_user_error():
    with pytest.raises(UserError, match="unknown dataset 'nope'; choose one of: activitynet"):
        build_dataset(DatasetConfig(name="nope"))


def test_each_quirk_is_fixed_and_counted():
    stats = Counter()
    out = normalise_captions([
        ("  A man  runs.\n", 0.0, 5.0),       # whitespace
        ("   ", 1.0, 2.0),                      # empty → dropped
        ("a dog sits", 8.0, 3.0),               # swapped
        ("a cat jumps", -1.0, 2.0),             # negative start
        ("a car drives", 9.0, 14.0),            # past duration
        ("untimed half", 2.0, None),            # only one bound
        ("no times", None, None),
    ], duration=10.0, stats=stats)
    assert [c.text for c in out] == ["A man runs.", "a dog sits", "a cat jumps", "a car drives",
                                     "untimed half", "no times"]
    assert (out[1].start, out[1].end) == (3.0, 8.0)
    assert (out[2].start, out[2].end) == (0.0, 2.0)
    assert (out[3].start, out[3].end) == (9.0, 10.0)
    assert out[4].start is None and out[4].end is None
    assert stats == Counter(captions_whitespace_stripped=2, captions_empty_dropped=1,
                            segments_invalid_swapped=1, segments_negative_start_clamped=1,
                            segments_clamped_to_duration=1, segments_partial_time_dropped=1,
                            # [0,5] overlaps [3,8] and [0,2]; [3,8] overlaps [0,5]; [9,10] alone
                            segments_overlapping=3)


def test_overlap_counts_segments_not_pairs_and_ignores_touching_ends():
    caps = [CaptionInput("a", 0, 10), CaptionInput("b", 2, 3), CaptionInput("c", 4, 5),
            CaptionInput("d", 10, 12), CaptionInput("e")]
    assert count_overlapping(caps) == 3
    assert count_overlapping([CaptionInput("a", 0, 4), CaptionInput("b", 4, 8)]) == 0


def test_as_time_rejects_junk():
    assert as_time("1.5") == 1.5 and as_time("") is None and as_time(None) is None
    for junk in ("abc", float("nan"), True):
        with pytest.raises(ValueError):
            as_time(junk)


def test_video_index_prefers_mp4_and_accepts_ids_without_prefix(tmp_path):
    for name in ("v_a.webm", "v_a.mp4", "b.mkv", "c.txt", "mapped/x.mp4"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    index = VideoIndex(tmp_path, {"v_m": "mapped/x.mp4"}, strip_prefix="v_")
    assert index.path_for("v_a") == tmp_path / "v_a.mp4"
    assert index.path_for("v_b") == tmp_path / "b.mkv"
    assert index.path_for("v_c") == tmp_path / "v_c.mp4"      # absent: where it should be
    assert index.path_for("v_m") == tmp_path / "mapped" / "x.mp4"


def test_mapping_files(tmp_path):
    (tmp_path / "m.json").write_text('{"v_a": "x/a.mp4"}')
    (tmp_path / "m.csv").write_text("id,path\nv_a,x/a.mp4\nv_b, b.webm\n")
    (tmp_path / "bad.csv").write_text("v_a\n")
    assert load_mapping(str(tmp_path / "m.json")) == {"v_a": "x/a.mp4"}
    assert load_mapping(str(tmp_path / "m.csv")) == {"v_a": "x/a.mp4", "v_b": "b.webm"}
    with pytest.raises(UserError, match="malformed"):
        load_mapping(str(tmp_path / "bad.csv"))
    with pytest.raises(UserError, match="not found"):
        load_mapping(str(tmp_path / "none.json"))


def test_limit_and_stats_shape(tmp_path):
    lines = [f'{{"id": "s{i}", "video": "s{i}.mp4", "captions": ["a man walks"]}}' for i in range(5)]
    (tmp_path / "m.jsonl").write_text("\n".join(lines))
    for i in range(5):
        (tmp_path / f"s{i}.mp4").write_bytes(b"x")
    ds = build_dataset(DatasetConfig("manifest", data_root=str(tmp_path / "m.jsonl"), limit=2))
    assert [t.key for t in ds.tasks()] == ["s0", "s1"]
    stats = ds.stats()
    assert set(stats) == set(STAT_KEYS)
    assert stats["videos"] == 2 and stats["captions"] == 2 and stats["videos_missing"] == 0
    assert [t.key for t in ds.tasks()] == ["s0", "s1"]        # a second pass restarts the counters
    assert ds.stats()["videos"] == 2


def test_a_missing_local_video_fails_in_the_listing_and_limit_counts_only_runnable_samples(tmp_path):
    lines = [f'{{"id": "s{i}", "video": "s{i}.mp4", "captions": ["a man walks"]}}' for i in range(6)]
    (tmp_path / "m.jsonl").write_text("\n".join(lines))
    for i in (1, 2, 4, 5):
        (tmp_path / f"s{i}.mp4").write_bytes(b"x")
    ds = build_dataset(DatasetConfig("manifest", data_root=str(tmp_path / "m.jsonl"), limit=3))
    tasks = list(ds.tasks())
    # s0 and s3 are missing: failure rows that come along; s1, s2 and s4 can run and make the limit of 3
    assert [(t.key, t.failure and t.failure.error_type) for t in tasks] == [
        ("s0", "missing_file"), ("s1", None), ("s2", None), ("s3", "missing_file"), ("s4", None)]
    assert tasks[0].failure.stage == "dataset" and tasks[0].failure.message == f"no such file: {tmp_path / 's0.mp4'}"
    assert ds.stats()["videos_missing"] == 2 and ds.stats()["videos"] == 5
