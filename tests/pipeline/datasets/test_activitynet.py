"""ActivityNet Captions: layout, quirks, missing/duplicate/malformed entries, the real val_2.json."""
import json
import os
import re
from pathlib import Path

import pytest

from pipeline.datasets import DatasetConfig, build_dataset
from pipeline.datasets.base import MISSING_FILE
from schemas.errors import UserError

SHARED = Path(os.environ.get("FINSTA_SHARED") or Path(__file__).resolve().parents[3] / ".." / "shared")
VAL_2 = SHARED / "data" / "activitynet" / "val_2.json"

ENTRIES = {
    "v_aaa": {"duration": 10.0, "timestamps": [[0, 4], [3, 12.5]],
              "sentences": ["  A man opens a door.", "He walks  in and sits down. "]},
    "v_bbb": {"duration": 5.0, "timestamps": [[4, 1]], "sentences": ["A dog barks."]},
    "v_ccc": {"duration": 5.0, "timestamps": [[0, 1]], "sentences": ["one", "two"]},   # malformed
}


def make_root(tmp_path: Path, text: str | None = None) -> Path:
    (tmp_path / "captions").mkdir(parents=True)
    (tmp_path / "videos").mkdir()
    (tmp_path / "captions" / "train.json").write_text(text or json.dumps(ENTRIES))
    (tmp_path / "videos" / "v_aaa.mp4").write_bytes(b"x")
    (tmp_path / "videos" / "bbb.webm").write_bytes(b"x")  # id without the v_ prefix
    return tmp_path


def test_tasks_in_file_order_with_quirks_fixed_and_counted(tmp_path):
    ds = build_dataset(DatasetConfig("activitynet", data_root=str(make_root(tmp_path))))
    tasks = list(ds.tasks())
    assert [t.key for t in tasks] == ["v_aaa", "v_bbb", "v_ccc"]
    a, b, c = tasks
    assert a.video_path == str(tmp_path / "videos" / "v_aaa.mp4") and a.source == "activitynet"
    assert [(x.text, x.start, x.end) for x in a.captions] == [
        ("A man opens a door.", 0.0, 4.0), ("He walks in and sits down.", 3.0, 10.0)]
    assert b.video_path == str(tmp_path / "videos" / "bbb.webm")
    assert (b.captions[0].start, b.captions[0].end) == (1.0, 4.0)
    assert c.failure is not None and c.failure.error_type == "bad_record"
    assert "2 sentences but 1 timestamps" in c.failure.message and c.failure.stage == "dataset"
    stats = ds.stats()
    assert stats["captions_whitespace_stripped"] == 2
    assert stats["segments_overlapping"] == 2
    assert stats["segments_clamped_to_duration"] == 1
    assert stats["segments_invalid_swapped"] == 1
    assert stats["malformed_entries"] == 1 and stats["videos"] == 3 and stats["captions"] == 3


def test_missing_video_yields_a_missing_file_failure_and_is_counted(tmp_path):
    root = make_root(tmp_path)
    (root / "videos" / "v_aaa.mp4").unlink()
    ds = build_dataset(DatasetConfig("activitynet", data_root=str(root)))
    task = next(ds.tasks())
    assert task.failure.error_type == "missing_file" and task.video_path == str(root / "videos" / "v_aaa.mp4")
    assert ds.stats()["videos_missing"] == 1


def test_duplicate_id_keeps_the_first_and_fails_the_second(tmp_path):
    one = '{"duration": 3, "timestamps": [[0, 1]], "sentences": ["first"]}'
    two = '{"duration": 3, "timestamps": [[0, 1]], "sentences": ["second"]}'
    ds = build_dataset(DatasetConfig("activitynet", data_root=str(make_root(tmp_path, f'{{"v_aaa": {one}, "v_aaa": {two}}}'))))
    first, second = ds.tasks()
    assert first.failure is None and first.captions[0].text == "first"
    assert second.key == "v_aaa" and second.failure.error_type == "duplicate_key"
    assert ds.stats()["duplicate_ids"] == 1


def test_split_captions_and_videos_overrides(tmp_path):
    root = make_root(tmp_path)
    (root / "captions" / "val_1.json").write_text('{"v_zzz": {"duration": 2, "sentences": ["untimed"]}}')
    ds = build_dataset(DatasetConfig("activitynet", data_root=str(root), split="val_1"))
    assert [(t.key, t.captions[0].start) for t in ds.tasks()] == [("v_zzz", None)]
    ds = build_dataset(DatasetConfig("activitynet", captions=str(root / "captions" / "train.json"),
                                     videos=str(root / "videos"), limit=1))
    assert [t.key for t in ds.tasks()] == ["v_aaa"]


def test_mapping_file_points_ids_at_videos(tmp_path):
    root = make_root(tmp_path)
    (root / "map.csv").write_text("v_ccc,sub/c.mkv\n")
    ds = build_dataset(DatasetConfig("activitynet", data_root=str(root), mapping=str(root / "map.csv")))
    assert list(ds.tasks())[2].video_path.endswith("videos/sub/c.mkv")


@pytest.mark.parametrize("setup, problem", [
    (lambda root: None, "data root .* is not a folder"),
    (lambda root: root.mkdir(), "captions file .*train.json not found"),
    (lambda root: (root.mkdir(), (root / "captions").mkdir(), (root / "captions" / "train.json").write_text("{}")),
     "videos folder .* not found"),
])
def test_bad_layout_is_one_user_error_showing_the_layout(tmp_path, setup, problem):
    root = tmp_path / "root"
    setup(root)
    with pytest.raises(UserError) as error:
        build_dataset(DatasetConfig("activitynet", data_root=str(root)))
    message = str(error.value)
    assert "\n" not in message
    assert "expected DATA_ROOT/captions/train.json" in message and "DATA_ROOT/videos/" in message
    assert re.search(problem, message)


def test_malformed_json_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"train.json is not valid JSON .*expected DATA_ROOT/captions"):
        build_dataset(DatasetConfig("activitynet", data_root=str(make_root(tmp_path, '{"v_a": [1,'))))
    with pytest.raises(UserError, match="holds a list"):
        build_dataset(DatasetConfig("activitynet", data_root=str(make_root(tmp_path / "b", "[]"))))


@pytest.mark.skipif(not VAL_2.exists(), reason="../shared/data/activitynet/val_2.json not present")
def test_real_val_2(tmp_path):
    ds = build_dataset(DatasetConfig("activitynet", captions=str(VAL_2), videos=str(tmp_path)))
    tasks = list(ds.tasks())
    stats = ds.stats()
    print(json.dumps(stats))
    # no video is in tmp_path: each task is failed up front as a missing file (one stat, no worker)
    assert len(tasks) == 4885 and all(t.failure and t.failure.error_type == MISSING_FILE for t in tasks)
    assert sum(len(t.captions) for t in tasks) == 17031 == stats["captions"]
    assert tasks[0].key == "v_uqiMw7tQ1Cc"
    assert stats["captions_whitespace_stripped"] == 11511   # 11,483 with stray ends, 28 more inside only
    assert stats["segments_clamped_to_duration"] == 111
    assert stats["segments_overlapping"] == 8359
    assert stats["segments_invalid_swapped"] == 0 and stats["captions_empty_dropped"] == 0
    assert stats["videos_missing"] == 4885
    for task in tasks:
        for c in task.captions:
            assert c.text == c.text.strip() and "  " not in c.text
            assert 0 <= c.start <= c.end


# ------------------------------------------------------------------ on S3 and HTTP (real servers on 127.0.0.1)
from tests.storage_servers import make_bucket, make_gcs_bucket  # noqa: E402


def test_a_data_root_on_s3_lists_its_videos_like_a_folder(s3_env, tmp_path, monkeypatch):
    from pipeline.datasets import base

    root = make_root(tmp_path)
    (root / "videos" / "bbb.webm").unlink()   # v_bbb: missing
    files = {f"anet/{p.relative_to(root)}": p for p in root.rglob("*") if p.is_file()}
    bucket = make_bucket(s3_env, "anet", files)
    local = [(t.key, t.video_path, t.captions, t.failure and t.failure.error_type) for t in build_dataset(
        DatasetConfig("activitynet", data_root=str(root))).tasks()]
    monkeypatch.setattr(base, "object_version", None)   # the folder's listing gives every version: no HEAD
    tasks = list(build_dataset(DatasetConfig("activitynet", data_root=f"{bucket}/anet/")).tasks())
    remote = [(t.key, t.video_path, t.captions, t.failure and t.failure.error_type) for t in tasks]
    assert remote == [(k, v.replace(str(root), f"{bucket}/anet"), c, f) for k, v, c, f in local]
    assert [f for *_, f in local] == [None, "missing_file", "bad_record"] and all(t.fingerprint for t in tasks)
    with pytest.raises(UserError, match="data root s3://anet/nothing is not a folder"):
        build_dataset(DatasetConfig("activitynet", data_root=f"{bucket}/nothing"))


def test_a_data_root_on_gs_lists_its_videos_like_a_folder(gcs_env, tmp_path):
    root = make_root(tmp_path)
    bucket = make_gcs_bucket(gcs_env, "ganet", {f"anet/{p.relative_to(root)}": p for p in root.rglob("*")
                                                if p.is_file()})
    local = [(t.key, t.video_path, t.captions) for t in build_dataset(
        DatasetConfig("activitynet", data_root=str(root))).tasks()]
    remote = [(t.key, t.video_path, t.captions) for t in build_dataset(
        DatasetConfig("activitynet", data_root=f"{bucket}/anet")).tasks()]
    assert remote == [(k, v.replace(str(root), f"{bucket}/anet"), c) for k, v, c in local]


def test_captions_by_https_and_videos_on_s3(s3_env, http_server, tmp_path):
    base, folder = http_server
    (folder / "train.json").write_text(json.dumps(ENTRIES))
    bucket = make_bucket(s3_env, "anet-videos", {"v/v_aaa.mp4": b"x"})
    tasks = list(build_dataset(DatasetConfig("activitynet", captions=f"{base}/train.json",
                                             videos=f"{bucket}/v")).tasks())
    assert [t.video_path for t in tasks[:2]] == [f"{bucket}/v/v_aaa.mp4", f"{bucket}/v/v_bbb.mp4"]
