"""A manifest's S3 videos that share a folder are read off its listing once they pay for it, with the
same fingerprints HEADs give; other folders (and gs://, http) keep one HEAD per video. Real moto S3
server on 127.0.0.1 (tests/storage_servers.py); pages of 2 or 3 entries stand in for S3's 1000."""
from __future__ import annotations

import json

import pytest

from pipeline.datasets import DatasetConfig, build_dataset, url_versions
from pipeline.datasets import base

pytestmark = pytest.mark.slow   # an S3 server (session fixture, shared with the other S3 tests)


@pytest.fixture
def counted(monkeypatch):
    """Counts the run's HEADs (``object_version``) and listing pages (``list_versions_page``)."""
    asked = {"head": [], "page": []}
    head, page = base.object_version, url_versions.list_versions_page
    monkeypatch.setattr(base, "object_version", lambda url: asked["head"].append(url) or head(url))
    monkeypatch.setattr(url_versions, "list_versions_page",
                        lambda folder, *a: asked["page"].append(folder) or page(folder, *a))
    monkeypatch.setattr(url_versions, "PAGE_KEYS", 2)
    monkeypatch.setattr(url_versions, "PAGE_COST", 3)
    return asked


def listing(manifest, asked) -> dict:
    for calls in asked.values():
        calls.clear()
    tasks = build_dataset(DatasetConfig("manifest", data_root=str(manifest))).tasks()
    return {t.key: (t.fingerprint, t.failure and t.failure.error_type) for t in tasks}


def test_videos_sharing_a_folder_are_read_off_its_listing_with_the_fingerprints_heads_give(
        s3_env, tmp_path, monkeypatch, counted):
    from schemas.storage import put_bytes
    from tests.storage_servers import make_bucket

    objects = {**{f"v/{i}.mp4": b"x" * i for i in range(8)}, "v/sub/0.mp4": b"deeper",
               **{f"s/{i}.mp4": b"s" for i in range(9)}, "w/a.mp4": b"a"}
    bucket = make_bucket(s3_env, "shared-folder", objects)
    urls = ([f"{bucket}/v/{i}.mp4" for i in (0, 1, 2, 4, 3, 5, 7)] + [f"{bucket}/v/gone.mp4", f"{bucket}/w/a.mp4"]
            + [f"{bucket}/s/0.mp4", f"{bucket}/s/8.mp4"])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"k{n}", "video": url, "captions": ["a man walks"]}) + "\n"
                                for n, url in enumerate(urls)))
    monkeypatch.setattr(url_versions, "PAGE_COST", 10 ** 9)   # never pays: one HEAD per video (as before)
    headed = listing(manifest, counted)
    assert sorted(counted["head"]) == sorted(urls) and counted["page"] == []
    monkeypatch.setattr(url_versions, "PAGE_COST", 2)
    monkeypatch.setattr(url_versions, "PAGE_KEYS", 3)
    listed = listing(manifest, counted)
    assert listed == headed   # the same fingerprints, the same missing_file
    assert headed["k7"][1] == "missing_file" and sum(failure is not None for _, failure in headed.values()) == 1
    # v/ (the run's first URL HEADed alone): 7 more URLs pay for a first page ([0, 1, 2]: 2 answered),
    # which answered 2 a page: a second ([3, 4, 5]) and a third ([6, 7, sub/]: gone.mp4 < sub/, absent).
    # s/: 2 URLs pay for a first page ([0, 1, 2]), which answers 1 of them: no second, 8.mp4 is HEADed.
    # w/ has one URL, less than a page's cost: its HEAD.
    assert counted["page"] == [f"{bucket}/v"] * 3 + [f"{bucket}/s"]
    assert sorted(counted["head"]) == sorted([urls[0], f"{bucket}/w/a.mp4", f"{bucket}/s/8.mp4"])
    put_bytes(f"{bucket}/v/2.mp4", b"yy")   # rewritten (same size): redone; the rest unchanged
    again = listing(manifest, counted)
    assert [key for key in listed if listed[key] != again[key]] == ["k2"]


def test_a_folder_is_listed_to_its_end_when_enough_of_its_videos_come(s3_env, tmp_path, counted):
    from tests.storage_servers import make_bucket

    bucket = make_bucket(s3_env, "whole-folder", {f"v/{i}.mp4": b"x" for i in range(6)})
    urls = [f"{bucket}/v/{i}.mp4" for i in range(6)] * 3 + [f"{bucket}/v/9.mp4"]   # 19 URLs: pages are cheap
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"k{n}", "video": url}) + "\n" for n, url in enumerate(urls)))
    found = listing(manifest, counted)
    # pages of 2 answer 5, 6, 6 URLs (>= 3 each): the whole folder; only the run's first URL is HEADed
    assert counted["head"] == [urls[0]] and len(counted["page"]) == 3
    assert found["k18"][1] == "missing_file" and found["k1"] == found["k7"] == found["k13"]


def test_a_row_fingerprinted_by_its_url_alone_is_redone_once(s3_env, tmp_path):
    """What README's upgrade note says: rows written when a URL video's fingerprint named the URL only (before
    it carried the object's version) count as changed on the first rerun, and not after it."""
    from pipeline.build import BuildResult, select_tasks
    from tests.storage_servers import make_bucket

    bucket = make_bucket(s3_env, "upgraded", {"v/a.mp4": b"a"})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "video": f"{bucket}/v/a.mp4", "captions": ["a man walks"]}) + "\n")
    (task,) = build_dataset(DatasetConfig("manifest", data_root=str(manifest))).tasks()
    old = base.input_fingerprint(task.captions, task.video_path)   # the old rule: the URL alone
    for stored, redone in ((old, ["a"]), (task.fingerprint, [])):
        result = BuildResult(out=tmp_path)
        to_run, _, _ = select_tasks(build_dataset(DatasetConfig("manifest", data_root=str(manifest))).tasks(),
                                    {"a"}, set(), False, result, {"a": stored})
        assert [t.key for t in to_run] == redone and result.changed == len(redone)
