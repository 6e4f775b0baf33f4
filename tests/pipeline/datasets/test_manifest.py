"""Manifest (JSON Lines and CSV): paths, bad lines, duplicates, layout errors."""
import json

import pytest

from pipeline.datasets import DatasetConfig, build_dataset
from schemas.errors import UserError


def write_jsonl(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_jsonl_paths_times_and_bad_lines(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"x")
    manifest = write_jsonl(tmp_path / "m.jsonl", [
        {"id": "a", "video": "clips/a.mp4", "captions": [{"text": "a man opens the fridge", "start": 0, "end": 4.5},
                                                         {"text": "he drinks milk"}]},
        {"id": "b", "video": "/abs/b.mp4", "captions": ["a cat sleeps"]},
        "{not json",
        "",
        {"id": "c", "captions": []},
        {"id": "a", "video": "clips/a.mp4", "captions": []},
        {"id": "d", "video": "d.mp4", "captions": [{"text": "x", "start": "soon", "end": 1}]},
        {"id": "../x", "video": "x.mp4", "captions": []},
    ])
    ds = build_dataset(DatasetConfig("manifest", data_root=str(manifest)))
    tasks = list(ds.tasks())
    assert [t.key for t in tasks] == ["a", "b", "m.jsonl:3", "c", "a", "d", "../x"]
    a, b, bad, c, dup, d, escape = tasks
    assert a.video_path == str(tmp_path / "clips" / "a.mp4") and a.failure is None
    assert [(x.text, x.start, x.end) for x in a.captions] == [("a man opens the fridge", 0.0, 4.5),
                                                            ("he drinks milk", None, None)]
    assert b.video_path == "/abs/b.mp4"
    assert bad.failure.error_type == "malformed_line" and "m.jsonl line 3" in bad.failure.message
    assert c.failure.error_type == "malformed_line" and "line 5" in c.failure.message and "'video'" in c.failure.message
    assert dup.failure.error_type == "duplicate_key" and "line 6" in dup.failure.message
    assert d.failure.error_type == "malformed_line" and "soon" in d.failure.message
    assert escape.failure is None and escape.key == "../x"   # the pipeline, not the dataset, refuses it
    stats = ds.stats()
    assert stats["malformed_entries"] == 3 and stats["duplicate_ids"] == 1 and stats["videos_missing"] == 2


def test_videos_override_is_the_base_for_relative_paths(tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"id": "a", "video": "a.mp4", "captions": []}])
    ds = build_dataset(DatasetConfig("manifest", data_root=str(manifest), videos="/data/vids"))
    assert next(ds.tasks()).video_path == "/data/vids/a.mp4"


def test_csv_groups_rows_by_id(tmp_path):
    (tmp_path / "m.csv").write_text(
        "id,video,caption,start,end\n"
        "k1,k1.mp4,a man opens the fridge,0.0,4.5\n"
        "k2,k2.mp4,a woman sings,,\n"
        "k1,k1.mp4,  he drinks milk ,4.5,8\n"
        "k1,other.mp4,conflict,,\n"
        "k3,k3.mp4,bad time,x,2\n")
    ds = build_dataset(DatasetConfig("manifest", data_root=str(tmp_path / "m.csv")))
    tasks = list(ds.tasks())
    assert [(t.key, t.failure and t.failure.error_type) for t in tasks] == [
        ("k1", None), ("k1", "duplicate_key"), ("k2", None), ("k3", "malformed_line")]
    assert [(c.text, c.start, c.end) for c in tasks[0].captions] == [
        ("a man opens the fridge", 0.0, 4.5), ("he drinks milk", 4.5, 8.0)]
    assert tasks[2].captions[0].start is None
    assert "line 6" in tasks[3].failure.message


def test_layout_errors(tmp_path):
    for path, problem in [(tmp_path / "none.jsonl", "not found"), (tmp_path, "it is a folder")]:
        with pytest.raises(UserError, match=problem + r".*expected --data-root FILE.jsonl"):
            build_dataset(DatasetConfig("manifest", data_root=str(path)))
    (tmp_path / "m.txt").write_text("")
    with pytest.raises(UserError, match="neither .jsonl nor .csv"):
        build_dataset(DatasetConfig("manifest", data_root=str(tmp_path / "m.txt")))
    (tmp_path / "m.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="lacks the header"):
        build_dataset(DatasetConfig("manifest", data_root=str(tmp_path / "m.csv")))
