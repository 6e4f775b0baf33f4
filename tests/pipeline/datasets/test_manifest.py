"""Manifest (JSON Lines and CSV): paths, bad lines, duplicates, layout errors."""
import json

import pytest

from pipeline.datasets import DatasetConfig, build_dataset
from schemas.errors import UserError


def parsed(task):
    """The task's failure as the manifest's parsing sees it: these tests list videos that are not on
    disk on purpose, so the listing's own ``missing_file`` verdict (tested in test_base) counts as none."""
    failure = task.failure
    return None if failure is None or failure.error_type == "missing_file" else failure


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
    assert bad.failure.error_type == "bad_record" and "m.jsonl line 3" in bad.failure.message
    assert c.failure.error_type == "bad_record" and "line 5" in c.failure.message and "'video'" in c.failure.message
    assert dup.failure.error_type == "duplicate_key" and "line 6" in dup.failure.message
    assert d.failure.error_type == "bad_record" and "soon" in d.failure.message
    assert parsed(escape) is None and escape.key == "../x"   # the pipeline, not the dataset, refuses it
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
    assert [(t.key, parsed(t) and parsed(t).error_type) for t in tasks] == [
        ("k1", None), ("k1", "duplicate_key"), ("k2", None), ("k3", "bad_record")]
    assert [(c.text, c.start, c.end) for c in tasks[0].captions] == [
        ("a man opens the fridge", 0.0, 4.5), ("he drinks milk", 4.5, 8.0)]
    assert tasks[2].captions[0].start is None
    assert "line 6" in tasks[3].failure.message


def test_a_csv_names_its_caption_column_caption_or_text_as_jsonl_does(tmp_path):
    (tmp_path / "m.csv").write_text("id,video,text,start,end\nk1,k1.mp4,a man opens the fridge,0.0,4.5\n")
    [task] = build_dataset(DatasetConfig("manifest", data_root=str(tmp_path / "m.csv"))).tasks()
    assert parsed(task) is None and [(c.text, c.start, c.end) for c in task.captions] == [
        ("a man opens the fridge", 0.0, 4.5)]
    (tmp_path / "bad.csv").write_text("id,video,words\nk1,k1.mp4,a man\n")
    with pytest.raises(UserError, match=r"lacks the header id,video,caption\[,start,end\] \(or text instead"):
        build_dataset(DatasetConfig("manifest", data_root=str(tmp_path / "bad.csv")))


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


# ---------------------------------------------------------------- issue 18: hostile manifests
def reasons(path):
    ds = build_dataset(DatasetConfig("manifest", data_root=str(path)))
    return [(t.key, parsed(t) and parsed(t).error_type, parsed(t) and parsed(t).message) for t in ds.tasks()], ds.stats()


def test_deeply_nested_json_is_a_bad_record_and_the_run_goes_on(tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", [
        {"id": "a", "video": "a.mp4", "captions": ["one"]},
        '{"id": "deep", "video": "x.mp4", "captions": ' + "[" * 100_000 + "]" * 100_000 + "}",
        {"id": "b", "video": "b.mp4", "captions": ["two"]},
    ])
    rows, stats = reasons(manifest)
    assert [(k, r) for k, r, _ in rows] == [("a", None), ("m.jsonl:2", "bad_record"), ("b", None)]
    assert rows[1][2].startswith("m.jsonl line 2: RecursionError")
    assert stats["malformed_entries"] == 1


def test_every_json_error_is_a_bad_record_with_its_line_and_message(tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", [
        '{"id": "a", "video": "a.mp4"', "[1, 2]", '{"id": "n", "video": "n.mp4", "captions": [{"text": 5}]}',
        '{"id": "z", "video": "z.mp4", "captions": ["ok"]}'])
    rows, _ = reasons(manifest)
    assert [r for _, r, _ in rows] == ["bad_record"] * 3 + [None]
    assert rows[0][2].startswith("m.jsonl line 1: JSONDecodeError: Expecting ',' delimiter")
    assert "line 2: ValueError: expected an object, got list" in rows[1][2]
    assert "line 3" in rows[2][2] and rows[2][0] == "n"   # the id is known: the failure row carries it


def test_a_byte_order_mark_is_utf8_sig_in_jsonl_and_csv(tmp_path):
    (tmp_path / "m.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "a", "video": "a.mp4", "captions": ["x"]})
                                       .encode() + b"\n")
    assert reasons(tmp_path / "m.jsonl")[0] == [("a", None, None)]
    (tmp_path / "m.csv").write_bytes(b"\xef\xbb\xbfid,video,caption\r\nk1,k1.mp4,a dog runs\r\n")
    ds = build_dataset(DatasetConfig("manifest", data_root=str(tmp_path / "m.csv")))
    [task] = list(ds.tasks())
    assert task.key == "k1" and parsed(task) is None and task.captions[0].text == "a dog runs"


def test_a_huge_csv_field_is_a_bad_record(tmp_path):
    (tmp_path / "m.csv").write_text("id,video,caption\n"
                                    f"k1,k1.mp4,\"{'x' * 200_000}\"\n"
                                    "k2,k2.mp4,a cat\n")
    rows, _ = reasons(tmp_path / "m.csv")
    assert [(k, r) for k, r, _ in rows] == [("k2", None), ("m.csv:2", "bad_record")]
    assert "field larger than field limit" in rows[1][2]


def test_an_unterminated_quote_fails_its_own_line_only(tmp_path):
    (tmp_path / "m.csv").write_text("id,video,caption\n"
                                    'k1,k1.mp4,"a man opens\n'
                                    "k2,k2.mp4,a cat\n"
                                    'k3,k3.mp4,"a dog, running"\n'
                                    "k4,k4.mp4,a bird, flying\n")
    rows, _ = reasons(tmp_path / "m.csv")
    assert [(k, r) for k, r, _ in rows] == [("k2", None), ("k3", None), ("m.csv:2", "bad_record"),
                                            ("m.csv:5", "bad_record")]
    assert "m.csv line 2: Error: unexpected end of data" in rows[2][2]
    assert "4 fields, the header has 3 (an unquoted comma?)" in rows[3][2]


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    (tmp_path / "m.jsonl").write_bytes(b'{"id": "a", "video": "a.mp4", "captions": ["caf\xe9 \xff"]}\n'
                                       + '{"id": "b", "video": "b.mp4", "captions": ["\ufffd ok"]}\n'.encode())
    rows, stats = reasons(tmp_path / "m.jsonl")
    assert [r for _, r, _ in rows] == [None, None] and stats["invalid_utf8_replaced"] == 2


def test_a_line_over_the_limit_is_skipped_without_reading_it_whole(tmp_path):
    from pipeline.datasets import manifest as module

    text = json.dumps({"id": "big", "video": "v.mp4", "captions": ["x" * 5000]})
    (tmp_path / "m.jsonl").write_text(text + "\n" + json.dumps({"id": "a", "video": "a.mp4"}) + "\n")
    with open(tmp_path / "m.jsonl", "rb") as fh:
        lines = list(module.read_lines(fh, max_bytes=1000))
    assert [(n, t is None, e) for n, t, e, _ in lines] == [(1, True, "line longer than 1000 bytes"), (2, False, None)]


# ------------------------------------------------------------------ URL videos (real servers on 127.0.0.1)
def test_url_videos_are_fingerprinted_by_size_and_etag_and_a_missing_one_fails_in_the_listing(
        s3_env, http_server, tmp_path, monkeypatch):
    from pipeline.build import BuildResult, select_tasks
    from pipeline.datasets import base
    from schemas.storage import object_version, put_bytes
    from tests.storage_servers import make_bucket

    bucket = make_bucket(s3_env, "fingerprints", {"a.mp4": b"12345", "b.mp4": b"67890"})
    web, folder = http_server
    (folder / "c.mp4").write_bytes(b"x")
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"id": name, "video": url, "captions": ["a man walks"]} for name, url in
                                                  (("a", f"{bucket}/a.mp4"), ("gone", f"{bucket}/gone.mp4"),
                                                   ("b", f"{bucket}/b.mp4"), ("c", f"{web}/c.mp4"))])
    asked = []
    monkeypatch.setattr(base, "object_version", lambda url: asked.append(url) or object_version(url))
    monkeypatch.setattr(base, "URL_BATCH", 2)   # two batches: the requests of a batch go out together

    def listing(**options):
        tasks = list(build_dataset(DatasetConfig("manifest", data_root=str(manifest), **options)).tasks())
        return {t.key: (t.fingerprint, t.failure and (t.failure.stage, t.failure.error_type)) for t in tasks}

    first = listing()
    assert sorted(asked) == sorted([f"{bucket}/{n}.mp4" for n in ("a", "gone", "b")] + [f"{web}/c.mp4"])  # one each
    assert first["gone"][1] == ("dataset", "missing_file") and all(first[k][1] is None for k in "abc")
    assert len({fp for fp, _ in first.values()}) == 4 and all(fp for fp, _ in first.values())
    assert list(listing(limit=1)) == ["a"] and list(listing(limit=2)) == ["a", "gone", "b"]   # limit: runnable only
    put_bytes(f"{bucket}/a.mp4", b"54321")                 # the same size, other bytes: another ETag
    again = listing()
    assert [k for k in first if first[k] != again[k]] == ["a"]
    result = BuildResult(out=tmp_path)
    to_run, _, _ = select_tasks(build_dataset(DatasetConfig("manifest", data_root=str(manifest))).tasks(),
                                {"a", "b", "c"}, {"gone"}, False, result, {k: fp for k, (fp, _) in first.items()})
    assert [t.key for t in to_run] == ["a"] and result.changed == 1 and result.skipped_committed == 2
