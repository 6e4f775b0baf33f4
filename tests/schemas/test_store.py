"""The shard store: round trip, atomic commit under kill -9, verify, refusals."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from schemas.errors import UserError
from schemas.records import (CrossLink, Detection, DynamicSceneGraph, FailureRecord, Frame, HolisticSceneGraph,
                             SampleFeatures, TextNode, TextSceneGraph, Track, VideoMeta, VideoSample)
from schemas.store import (CorruptShardError, DatasetWriter, KeyIndex, ShardInfo, check_key, open_dataset,
                           verify)

DIMS = {"frame": 8, "detection": 4, "text_node": 3, "caption": 3}
REPO = Path(__file__).resolve().parents[2]


def make_sample(key: str, n_frames: int = 2, n_det: int = 3, seed: int = 0) -> tuple[VideoSample, SampleFeatures]:
    rng = np.random.default_rng(seed)
    meta = VideoMeta(f"/videos/{key}.mp4", 4.0, 25.0, 320, 240, "h264", 100)
    frames = [Frame(i * 10, i * 0.4) for i in range(n_frames)]
    dets = [Detection(i % n_frames, (0.1, 0.2, 0.5, 0.6), "circle", 0.9, 0) for i in range(n_det)]
    dsg = DynamicSceneGraph(key, meta, frames, dets, tracks=[Track(0, "circle", 0, n_frames - 1)] if n_det else [])
    tsg = TextSceneGraph(f"{key}#0", "a red circle", [TextNode(0, "object", "circle", "circle", (6, 12)),
                                                       TextNode(1, "attribute", "red", "red", (2, 5))])
    hsg = HolisticSceneGraph(tsg, [CrossLink(0, 0, 0.8, "test")], (0, n_frames - 1))
    feats = SampleFeatures(rng.normal(size=(n_frames, 8)), rng.normal(size=(n_det, 4)),
                           rng.normal(size=(2, 3)), rng.normal(size=(1, 3)))
    return VideoSample(key, "test", dsg, [hsg]), feats


def test_round_trip_and_random_access(tmp_path):
    writer = DatasetWriter(tmp_path, {"detector": "color"}, DIMS)
    first = [make_sample("a", seed=1), make_sample("b", n_det=0, seed=2)]
    writer.write_shard(first, [FailureRecord("bad", "decode", "corrupt_video", "moov atom not found")])
    writer.write_shard([make_sample("c", seed=3)], [])
    ds = open_dataset(tmp_path)
    assert ds.keys() == ["a", "b", "c"] and ds.shard_names() == ["shard-000000", "shard-000001"]
    sample, feats = ds.get("b")
    assert sample == first[1][0]
    assert feats.detection.shape == (0, 4) and feats.frame.dtype == np.float16
    np.testing.assert_array_equal(feats.frame, first[1][1].frame.astype(np.float16))
    assert [s.key for s, _ in ds.iter_samples()] == ["a", "b", "c"]
    assert [f.key for f in ds.failures()] == ["bad"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"] == {"detector": "color"} and "pyarrow" in manifest["package_versions"]
    assert "shards" not in manifest   # version 4: the keys live in each shard's shard.json only
    info = json.loads((tmp_path / "shards" / "shard-000000" / "shard.json").read_text())
    assert info["keys"] == ["a", "b"] and info["rows"] == 2
    assert all(len(digest) == 64 for digest in info["files"].values())
    assert info["sizes"]["samples.arrow"] == (tmp_path / "shards" / "shard-000000" / "samples.arrow").stat().st_size


def test_a_commit_writes_nothing_outside_its_shard(tmp_path):
    """Commit cost independent of the dataset's size: no dataset-wide file is rewritten per commit."""
    writer = DatasetWriter(tmp_path, {}, DIMS)
    writer.write_shard([make_sample("a")], [])
    outside = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.name != "shards"}
    writer.write_shard([make_sample("b")], [])
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.name != "shards"} == outside
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["shard-000000", "shard-000001"]


def test_resume_reads_metadata_not_data_and_a_truncated_file_is_still_quarantined(tmp_path, monkeypatch):
    import schemas.store as store
    two_shards(tmp_path)
    victim = tmp_path / "shards" / "shard-000000" / "samples.arrow"
    victim.write_bytes(victim.read_bytes()[:-8])
    hashed = []
    monkeypatch.setattr(store, "sha256_file", lambda path: hashed.append(path) or "0" * 64)
    keys, notes = reopen(tmp_path)
    assert hashed == [] and keys == {"c"} and "samples.arrow: truncated or altered" in notes[0]


def drop_dsg_shots(path: Path) -> None:
    """Rewrite a shard's samples.arrow as version 3 wrote it: DSGs without ``shots``."""
    import pyarrow as pa
    table = pa.ipc.open_file(pa.py_buffer(path.read_bytes())).read_all()
    dsg = table.column("dsg").combine_chunks()
    kept = [i for i, f in enumerate(dsg.type) if f.name != "shots"]
    old = pa.StructArray.from_arrays([dsg.field(i) for i in kept], fields=[dsg.type.field(i) for i in kept])
    table = table.set_column(table.schema.get_field_index("dsg"), "dsg", old)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def test_a_version_3_dataset_opens_and_its_next_writer_upgrades_the_header(tmp_path):
    two_shards(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["schema_version"] = 3
    manifest["shards"] = [{"name": "shard-000000", "keys": ["stale"]}]   # version 3 listed shards: ignored
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    for folder in (tmp_path / "shards").iterdir():   # version 3 shard.json: no sizes; rows: no dsg.shots
        info = json.loads((folder / "shard.json").read_text())
        del info["sizes"]
        drop_dsg_shots(folder / "samples.arrow")
        info["files"]["samples.arrow"] = hashlib.sha256((folder / "samples.arrow").read_bytes()).hexdigest()
        (folder / "shard.json").write_text(json.dumps(info))
        (folder / "_DONE").write_text(hashlib.sha256((folder / "shard.json").read_bytes()).hexdigest())
    assert open_dataset(tmp_path).keys() == ["a", "b", "c"] and verify(tmp_path) == []
    assert open_dataset(tmp_path).get("a")[0].dsg.shots == []   # read as "not segmented"
    assert reopen(tmp_path)[0] == {"a", "b", "c"}
    assert json.loads((tmp_path / "manifest.json").read_text())["schema_version"] == 4


def test_failure_superseded_by_later_commit(tmp_path):
    writer = DatasetWriter(tmp_path, {}, DIMS)
    writer.write_shard([], [FailureRecord("a", "decode", "timeout", "slow disk")])
    assert writer.failed_keys() == {"a"} == open_dataset(tmp_path).failed_keys()
    writer.write_shard([make_sample("a")], [])
    assert writer.failed_keys() == set() and open_dataset(tmp_path).failures() == []
    assert open_dataset(tmp_path).failed_keys() == set()


def test_flipped_byte_is_named_by_verify(tmp_path):
    writer = DatasetWriter(tmp_path, {}, DIMS)
    writer.write_shard([make_sample("a")], [])
    assert verify(tmp_path) == []
    victim = tmp_path / "shards" / "shard-000000" / "samples.arrow"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    problems = verify(tmp_path)
    assert len(problems) == 1 and "samples.arrow" in problems[0] and "corrupted" in problems[0]


def test_missing_file_is_named_by_verify_and_cli(tmp_path):
    writer = DatasetWriter(tmp_path, {}, DIMS)
    writer.write_shard([make_sample("a")], [])
    chunk = next((tmp_path / "shards" / "shard-000000" / "features.zarr" / "frame").rglob("c/*/*"))
    chunk.unlink()
    result = subprocess.run([sys.executable, "cli.py", "verify", str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "features.zarr/frame/c/0/0: missing" in result.stdout


def test_older_schema_version_is_refused(tmp_path):
    DatasetWriter(tmp_path, {}, DIMS).write_shard([make_sample("a")], [])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["schema_version"] = 0
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="schema version 0"):
        open_dataset(tmp_path)
    with pytest.raises(UserError, match="schema version 0"):
        DatasetWriter(tmp_path, {}, DIMS)


def test_changed_config_is_refused_unless_overwrite(tmp_path):
    DatasetWriter(tmp_path, {"fps": 1}, DIMS).write_shard([make_sample("a")], [])
    with pytest.raises(UserError, match="fps: 1 → 2"):
        DatasetWriter(tmp_path, {"fps": 2}, DIMS)
    writer = DatasetWriter(tmp_path, {"fps": 2}, DIMS, overwrite=True)
    assert writer.committed_keys() == set()


@pytest.mark.parametrize("key", ["../x", "/etc/x", "a/b", ".hidden", "", "x..y", "a\\b", "a b"])
def test_unsafe_keys_are_rejected(key):
    assert check_key(key) is not None


@pytest.mark.parametrize("key", ["v_QOlSCBRmfWY", "video1234", "synth_3_00001", "a#0"])
def test_ordinary_keys_are_accepted(key):
    assert check_key(key) is None


WRITER_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
    import schemas.store as store
    from test_store import make_sample, DIMS
    if sys.argv[2] == "stall":
        real = store._write_arrow
        def slow(path, table):  # test hook: stall inside the second shard, after its features are written
            if path.name == "samples.arrow" and len(list(store.Path(sys.argv[1], "shards").glob("shard-*"))) == 1:
                print("stalled", flush=True); time.sleep(60)
            real(path, table)
        store._write_arrow = slow
    writer = store.DatasetWriter(sys.argv[1], {{"run": 1}}, DIMS)
    for i in range(3):
        key = "s%d" % i
        if key not in writer.committed_keys():
            writer.write_shard([make_sample(key, seed=i)], [])
            print("committed", key, flush=True)
""")


def test_kill_mid_shard_leaves_no_partial_shard_and_rerun_completes(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT.format(repo=str(REPO), tests=str(Path(__file__).parent)))
    out = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, str(script), str(out), "stall"], stdout=subprocess.PIPE, text=True)
    lines = [proc.stdout.readline().strip() for _ in range(2)]
    assert lines == ["committed s0", "stalled"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    debris = [p.name for p in (out / "shards").iterdir()]
    assert any(name.startswith(".tmp-") for name in debris)  # the kill really landed mid-shard
    ds = open_dataset(out)
    assert ds.keys() == ["s0"] and verify(out) == []
    done = subprocess.run([sys.executable, str(script), str(out), "run"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["committed s1", "committed s2"]
    ds = open_dataset(out)
    assert ds.keys() == ["s0", "s1", "s2"] and verify(out) == []
    assert not any(p.name.startswith(".tmp-") for p in (out / "shards").iterdir())


# ---------------------------------------------------------------- issue 18: overwrite, lock, integrity
def test_overwrite_refuses_a_folder_that_is_not_a_finsta_dataset(tmp_path):
    (tmp_path / "important").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "important" / "thesis.txt").write_text("years of work")
    with pytest.raises(UserError, match="--overwrite refused: .* is not a finsta dataset .*'important', 'notes.txt'"):
        DatasetWriter(tmp_path, {}, DIMS, overwrite=True)
    assert (tmp_path / "important" / "thesis.txt").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["important", "notes.txt"]


def test_overwrite_removes_only_what_finsta_wrote(tmp_path):
    with DatasetWriter(tmp_path, {"fps": 1}, DIMS) as writer:
        writer.write_shard([make_sample("a")], [])
    (tmp_path / "stats.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "shards" / "README").write_text("mine too")
    with DatasetWriter(tmp_path, {"fps": 2}, DIMS, overwrite=True) as writer:
        assert writer.committed_keys() == set()
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "shards" / "README").exists()
    assert not (tmp_path / "shards" / "shard-000000").exists() and not (tmp_path / "stats.json").exists()


def test_an_empty_or_new_folder_can_be_overwritten(tmp_path):
    DatasetWriter(tmp_path / "new", {}, DIMS, overwrite=True).close()
    (tmp_path / "empty").mkdir()
    DatasetWriter(tmp_path / "empty", {}, DIMS, overwrite=True).close()


@pytest.mark.parametrize("out", ["/dev/null/x", "/proc/finsta-out"])
def test_an_out_folder_that_cannot_be_created_is_one_user_error(out):
    with pytest.raises(UserError, match="cannot write the dataset folder"):
        DatasetWriter(out, {}, DIMS)


HOLDER_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
    from schemas.store import DatasetWriter
    from test_store import DIMS
    writer = DatasetWriter(sys.argv[1], {{"run": 1}}, DIMS)
    print("holding", flush=True)
    time.sleep(120)
""")


def test_a_second_writer_is_refused_naming_the_holder_and_a_crash_releases_the_lock(tmp_path):
    script = tmp_path / "holder.py"
    script.write_text(HOLDER_SCRIPT.format(repo=str(REPO), tests=str(Path(__file__).parent)))
    out = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        with pytest.raises(UserError, match=rf"being written by another build-sgs \(pid {proc.pid}, started "
                                            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)"):
            DatasetWriter(out, {"run": 1}, DIMS)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with DatasetWriter(out, {"run": 1}, DIMS) as writer:   # the kernel released the dead holder's lock
        assert any(f"stale lock of pid {proc.pid}" in note for note in writer.notes)
    with DatasetWriter(out, {"run": 1}, DIMS) as writer:   # a clean release leaves no stale record
        assert writer.notes == []


def two_shards(root: Path) -> None:
    with DatasetWriter(root, {"run": 1}, DIMS) as writer:
        writer.write_shard([make_sample("a", seed=1), make_sample("b", seed=2)], [])
        writer.write_shard([make_sample("c", seed=3)], [])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def reopen(root: Path, config: Optional[dict] = None) -> tuple[set, list[str]]:
    with DatasetWriter(root, config or {"run": 1}, DIMS) as writer:
        return writer.committed_keys(), writer.notes


def test_a_flipped_byte_is_quarantined_on_reopen_so_its_samples_are_redone(tmp_path):
    two_shards(tmp_path)
    flip_byte(tmp_path / "shards" / "shard-000000" / "samples.arrow")
    assert reopen(tmp_path)[0] == {"a", "b", "c"}   # a resume reads metadata only: same size, not seen
    assert "samples.arrow: corrupted" in verify(tmp_path)[0]
    with DatasetWriter(tmp_path, {"run": 1}, DIMS, check_data=True) as writer:
        keys, notes = writer.committed_keys(), writer.notes
    assert keys == {"c"}
    assert len(notes) == 1 and notes[0].startswith("shard-000000: samples.arrow: corrupted (sha256 mismatch); "
                                                   "moved to quarantine/shard-000000-")
    [moved] = (tmp_path / "quarantine").iterdir()
    assert (moved / "QUARANTINED.txt").read_text().startswith("samples.arrow: corrupted")
    assert verify(tmp_path) == [] and open_dataset(tmp_path).keys() == ["c"]


def test_a_missing_zarr_chunk_is_quarantined(tmp_path):
    two_shards(tmp_path)
    next((tmp_path / "shards" / "shard-000001" / "features.zarr" / "frame").rglob("c/*/*")).unlink()
    keys, notes = reopen(tmp_path)
    assert keys == {"a", "b"} and "features.zarr/frame/c/0/0: missing" in notes[0]


def test_an_edited_or_invalid_shard_json_is_quarantined(tmp_path):
    two_shards(tmp_path)
    info = tmp_path / "shards" / "shard-000000" / "shard.json"
    entry = json.loads(info.read_text())
    entry["keys"] = ["a", "b", "c"]                # an edit that would duplicate rows
    info.write_text(json.dumps(entry))
    (tmp_path / "shards" / "shard-000001" / "shard.json").write_text("{not json")
    keys, notes = reopen(tmp_path)
    assert keys == set() and len(notes) == 2 and all("does not match _DONE" in note for note in notes)


def test_invalid_shard_json_with_a_matching_done_marker_is_quarantined(tmp_path):
    two_shards(tmp_path)
    folder = tmp_path / "shards" / "shard-000001"
    (folder / "shard.json").write_text('{"name": "shard-000001"}')
    (folder / "_DONE").write_text(hashlib.sha256((folder / "shard.json").read_bytes()).hexdigest())
    keys, notes = reopen(tmp_path)
    assert keys == {"a", "b"} and "not a valid shard entry" in notes[0]


def test_copied_in_shards_are_quarantined(tmp_path):
    two_shards(tmp_path / "mine")
    with DatasetWriter(tmp_path / "other", {"run": 2}, DIMS) as writer:
        writer.write_shard([make_sample("z")], [])
        writer.write_shard([make_sample("y")], [])
    shards = tmp_path / "mine" / "shards"
    shutil.copytree(tmp_path / "other" / "shards" / "shard-000001", shards / "shard-000001-x")   # not a shard name
    shutil.rmtree(shards / "shard-000001")
    shutil.copytree(tmp_path / "other" / "shards" / "shard-000001", shards / "shard-000001")  # foreign, same name
    shutil.copytree(shards / "shard-000000", shards / "shard-000007")                        # own, renamed copy
    keys, notes = reopen(tmp_path / "mine")
    assert keys == {"a", "b"}
    assert any(n.startswith("shard-000001: built with other options") for n in notes)
    assert any(n.startswith("shard-000007: shard.json names 'shard-000000'") for n in notes)


def test_a_missing_or_truncated_manifest_is_rebuilt_and_the_config_check_kept(tmp_path):
    two_shards(tmp_path)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(manifest.read_text()[:100])
    with pytest.raises(UserError, match="rerun the build-sgs command that wrote"):
        open_dataset(tmp_path)
    problems = verify(tmp_path)
    assert len(problems) == 1 and "manifest.json" in problems[0] and "rerun the build-sgs" in problems[0]
    keys, notes = reopen(tmp_path)
    assert keys == {"a", "b", "c"} and "unreadable" in notes[0] and verify(tmp_path) == []
    manifest.unlink()
    with pytest.raises(UserError, match="built with other options .*run: 1 → 2"):
        DatasetWriter(tmp_path, {"run": 2}, DIMS)
    assert reopen(tmp_path)[0] == {"a", "b", "c"} and open_dataset(tmp_path).keys() == ["a", "b", "c"]


def test_readers_check_each_file_against_its_sha256(tmp_path):
    two_shards(tmp_path)
    flip_byte(tmp_path / "shards" / "shard-000000" / "samples.arrow")
    ds = open_dataset(tmp_path)
    assert ds.get("c")[0].key == "c"                      # the intact shard is served
    with pytest.raises(CorruptShardError, match="shard-000000/samples.arrow does not match its sha256"):
        ds.get("a")
    try:                                                  # the documented opt-out reads the bytes as they are
        open_dataset(tmp_path, verify=False).get("a")
    except CorruptShardError:
        pytest.fail("verify=False still checked the digest")
    except Exception:
        pass                                              # what the altered bytes decode to


def test_readers_refuse_all_zero_features_from_a_missing_chunk(tmp_path):
    two_shards(tmp_path)
    next((tmp_path / "shards" / "shard-000000" / "features.zarr" / "frame").rglob("c/*/*")).unlink()
    with pytest.raises(CorruptShardError, match="is missing"):
        open_dataset(tmp_path).get("a")
    assert not open_dataset(tmp_path, verify=False).get("a")[1].frame.any()   # what was served before


def test_verify_names_a_copied_shard_folder_and_readers_skip_it(tmp_path):
    two_shards(tmp_path)
    shutil.copytree(tmp_path / "shards" / "shard-000001", tmp_path / "shards" / "shard-000002")
    problems = verify(tmp_path)
    assert len(problems) == 1 and "shard-000002: shard.json names 'shard-000001', not this folder" in problems[0]
    ds = open_dataset(tmp_path)
    assert ds.keys() == ["a", "b", "c"] and ds.skipped[0].startswith("shard-000002: shard.json names")


def shard_entry(name: str, keys: list[str]) -> ShardInfo:
    return ShardInfo(name, keys, [], len(keys), 0, 0, {})


def test_the_key_index_finds_every_key_and_leaves_out_shards_repeating_a_kept_shards_keys():
    shards = [shard_entry("s0", ["a", "b"]), shard_entry("s1", ["c", "a"]), shard_entry("s2", ["c", "d"]),
              shard_entry("s3", ["e", "e"]), shard_entry("s4", []), shard_entry("s5", ["f"])]
    index, repeating = KeyIndex.build(shards)
    # s1 repeats s0's "a"; s2 holds only s1's "c" (s1 is out, so s2 stays); s3 repeats its own key
    assert [s.name for s in repeating] == ["s1", "s3"] and [s.name for s in index.shards] == ["s0", "s2", "s4", "s5"]
    assert {key: index.find(key) for key in "abcdef"} == {"a": "s0", "b": "s0", "c": "s2", "d": "s2", "e": None,
                                                         "f": "s5"}
    assert len(index) == 5 and "zz" not in index and len(KeyIndex.build([])[0]) == 0


def test_the_key_index_tells_keys_apart_when_their_hash_bits_collide(monkeypatch):
    monkeypatch.setattr(KeyIndex, "POSITION_BITS", 60)   # 4 bits of hash left: 16 values for 200 keys
    monkeypatch.setattr(KeyIndex, "_POSITION", (1 << 60) - 1)
    shards = [shard_entry(f"s{i}", [f"k{i}-{j}" for j in range(100)]) for i in range(2)]
    index, repeating = KeyIndex.build(shards + [shard_entry("s2", ["k0-7"])])
    assert [s.name for s in repeating] == ["s2"] and len(index) == 200
    assert all(index.find(f"k{i}-{j}") == f"s{i}" for i in range(2) for j in range(100))
    assert index.find("k2-0") is None


def test_readers_leave_out_a_shard_repeating_committed_samples_and_a_pickled_reader_finds_keys(tmp_path):
    two_shards(tmp_path)
    with DatasetWriter(tmp_path / "other", {"run": 1}, DIMS) as writer:   # same config, same key "c"
        for keys in (["x"], ["y"], ["c", "d"]):
            writer.write_shard([make_sample(key) for key in keys], [])
    shutil.copytree(tmp_path / "other" / "shards" / "shard-000002", tmp_path / "shards" / "shard-000002")
    ds = open_dataset(tmp_path)
    assert ds.keys() == ["a", "b", "c"] and len(ds) == 3 and "c" in ds and "d" not in ds
    assert ds.skipped == ["shard-000002: holds samples already committed in another shard"]
    again = pickle.loads(pickle.dumps(ds))
    assert again.get("c")[0].key == "c" and again.keys() == ds.keys()
    with pytest.raises(KeyError):
        ds.get("d")


def test_a_name_taken_on_disk_is_never_reused(tmp_path):
    two_shards(tmp_path)
    (tmp_path / "shards" / "shard-000005").write_text("not a shard")
    with DatasetWriter(tmp_path, {"run": 1}, DIMS) as writer:
        assert writer.write_shard([make_sample("d")], []) == "shard-000006"


def test_duplicate_rows_count_as_failures_although_their_id_committed(tmp_path):
    with DatasetWriter(tmp_path, {}, DIMS) as writer:
        writer.write_shard([make_sample("a")], [FailureRecord("a", "dataset", "duplicate_key", "line 3: seen before"),
                                                FailureRecord("a", "dataset", "duplicate_key", "line 5: seen before"),
                                                FailureRecord("x", "decode", "timeout", "slow")])
        writer.write_shard([], [FailureRecord("a", "dataset", "duplicate_key", "line 3: seen before")])  # a rerun
    failures = open_dataset(tmp_path).failures()
    assert sorted((f.key, f.error_type) for f in failures) == [("a", "duplicate_key"), ("a", "duplicate_key"),
                                                              ("x", "timeout")]


# ---------------------------------------------------------------- compaction (issue 14: many small shards)
def small_shards(root: Path) -> None:
    with DatasetWriter(root, {"run": 1}, DIMS) as writer:
        writer.write_shard([make_sample("a", seed=1)], [FailureRecord("x", "decode", "timeout", "first try")])
        writer.write_shard([make_sample("b", seed=2)], [FailureRecord("a", "decode", "timeout", "before a committed")])
        writer.write_shard([make_sample(k, seed=i) for i, k in enumerate("cdef")], [])   # full: stays
        writer.write_shard([], [FailureRecord("x", "decode", "corrupt_video", "second try")])
        writer.write_shard([make_sample("g", seed=7)], [FailureRecord("g", "dataset", "duplicate_key", "line 9")])


def test_compaction_merges_runs_of_small_shards_and_keeps_every_sample_and_standing_failure(tmp_path):
    small_shards(tmp_path)
    before = {key: open_dataset(tmp_path).get(key) for key in open_dataset(tmp_path).keys()}
    failures_before = sorted((f.key, f.message) for f in open_dataset(tmp_path).failures())
    with DatasetWriter(tmp_path, {"run": 1}, DIMS) as writer:
        merged = writer.compact(target_rows=4)
    ds = open_dataset(tmp_path)
    assert len(merged) == 2 and len(ds.shard_names()) == 3 and verify(tmp_path) == []
    assert {key: ds.get(key) for key in ds.keys()}.keys() == before.keys()
    for key, (sample, features) in before.items():
        assert ds.get(key)[0] == sample
        np.testing.assert_array_equal(ds.get(key)[1].frame, features.frame)
    assert sorted((f.key, f.message) for f in ds.failures()) == failures_before == [("g", "line 9"),
                                                                                   ("x", "second try")]
    assert ds.shard_names() == ["shard-000002", "shard-000005", "shard-000006"]   # name order
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == sorted(ds.shard_names())


def test_a_compaction_cut_short_keeps_the_merged_shard_once(tmp_path):
    small_shards(tmp_path)
    shards = tmp_path / "shards"
    kept = {name: shards / name for name in ("shard-000000", "shard-000001")}
    shutil.copytree(kept["shard-000000"], tmp_path / "s0")
    shutil.copytree(kept["shard-000001"], tmp_path / "s1")
    with DatasetWriter(tmp_path, {"run": 1}, DIMS) as writer:
        writer.compact(target_rows=4)
    # as if the process died after committing the merged shard, before the deletes and its rename
    shutil.copytree(tmp_path / "s0", kept["shard-000000"])
    shutil.copytree(tmp_path / "s1", kept["shard-000001"])
    os.rename(shards / "shard-000005", shards / ".merged-shard-000005")
    assert sorted(open_dataset(tmp_path).keys()) == list("abcdefg")   # readers see each row once meanwhile
    keys, notes = reopen(tmp_path)
    assert keys == set("abcdefg") and notes == []
    assert not kept["shard-000000"].exists() and verify(tmp_path) == []


# ---------------------------------------------------------------- issue 26 item 2: the lock file is ours only
@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_linked_lock_file_is_refused_and_the_file_it_names_is_left_alone(tmp_path, link):
    victim = tmp_path / "thesis.txt"
    victim.write_text("years of work")
    out = tmp_path / "ds"
    out.mkdir()
    (os.symlink if link == "symlink" else os.link)(victim, out / ".finsta.lock")
    with pytest.raises(UserError, match=r"\.finsta\.lock is (a symbolic link|not finsta's lock file)"):
        DatasetWriter(out, {}, DIMS)
    assert victim.read_text() == "years of work"


# ---------------------------------------------------------------- issue 26 item 10: compaction's window
def test_a_plain_reader_never_sees_a_row_twice_during_compaction(tmp_path, monkeypatch):
    import pyarrow as pa
    import schemas.store as store
    small_shards(tmp_path)
    seen_during = []
    real = store._remove_shard

    def plain_read_then_remove(folder):   # what pandas/pyarrow users glob, at every step of the swap
        keys = [k for path in sorted(glob.glob(str(tmp_path / "shards/*/samples.arrow")))
                for k in pa.ipc.open_file(pa.memory_map(str(path))).read_all().column("key").to_pylist()]
        seen_during.append(keys)
        real(folder)

    monkeypatch.setattr(store, "_remove_shard", plain_read_then_remove)
    with DatasetWriter(tmp_path, {"run": 1}, DIMS) as writer:
        writer.compact(target_rows=4)
    assert seen_during and all(len(keys) == len(set(keys)) for keys in seen_during)


def test_a_kill_while_removing_merged_shards_is_no_quarantine(tmp_path):
    small_shards(tmp_path)
    shards = tmp_path / "shards"
    shutil.copytree(shards / "shard-000000", tmp_path / "s0")
    with DatasetWriter(tmp_path, {"run": 1}, DIMS) as writer:
        writer.compact(target_rows=4)
    # as if the kill landed halfway through deleting shard-000000 (shard.json gone, _DONE still there)
    shutil.copytree(tmp_path / "s0", shards / "shard-000000")
    (shards / "shard-000000" / "shard.json").unlink()
    keys, notes = reopen(tmp_path)
    assert keys == set("abcdefg") and notes == [] and not (tmp_path / "quarantine").exists()
    assert not (shards / "shard-000000").exists() and verify(tmp_path) == []


def test_fingerprints_are_stored_per_row_survive_compaction_and_changed_rows_can_be_dropped(tmp_path):
    with DatasetWriter(tmp_path, {}, DIMS) as writer:
        writer.write_shard([make_sample("a"), make_sample("b")], [FailureRecord("f", "decode", "corrupt_video", "x")],
                           fingerprints={"a": "fa", "b": "fb", "f": "ff"})
        writer.write_shard([make_sample("c")], [], fingerprints={"c": "fc"})
        writer.write_shard([make_sample("d")], [])   # written without fingerprints: not known
        info = json.loads((tmp_path / "shards" / "shard-000000" / "shard.json").read_text())
        assert info["fingerprints"] == ["fa", "fb"] and info["failure_fingerprints"] == ["ff"]
        writer.compact(target_rows=10)
    with DatasetWriter(tmp_path, {}, DIMS) as writer:
        assert len(writer.shards) == 1 and writer.fingerprints() == {"a": "fa", "b": "fb", "c": "fc", "f": "ff"}
        kept = open_dataset(tmp_path).get("b")
        assert writer.drop_samples({"a", "c"}) == 2
    ds = open_dataset(tmp_path)
    assert sorted(ds.keys()) == ["b", "d"] and ds.fingerprints() == {"b": "fb", "f": "ff"}
    assert ds.get("b")[0] == kept[0] and [f.key for f in ds.failures()] == ["f"] and verify(tmp_path) == []
    with DatasetWriter(tmp_path, {}, DIMS) as writer:   # a shard holding only dropped rows goes whole
        alone = writer.write_shard([make_sample("e")], [], fingerprints={"e": "fe"})
        assert writer.drop_samples({"b", "d", "e"}) == 3
        assert len(writer.shards) == 1 and not writer.committed_keys() and alone not in os.listdir(tmp_path / "shards")
    assert [f.key for f in open_dataset(tmp_path).failures()] == ["f"] and verify(tmp_path) == []
    with DatasetWriter(tmp_path, {}, DIMS) as writer:   # failures_of: failure rows of entries gone go too
        assert writer.drop_samples(set(), failures_of=frozenset({"f"})) == 0
    assert open_dataset(tmp_path).failures() == [] and verify(tmp_path) == []


# ---------------------------------------------------------------- an s3:// dataset (moto's S3 server on 127.0.0.1)
from schemas import storage  # noqa: E402
from tests.storage_servers import TEST_KEY_ID, TEST_SECRET, Requests, make_bucket, make_gcs_bucket  # noqa: E402


def _write_three_shards_and_compact(root) -> None:
    with DatasetWriter(root, {"run": 1}, DIMS) as writer:
        with pytest.raises(UserError, match="being written by another build-sgs"):
            DatasetWriter(root, {"run": 1}, DIMS)     # the writer's lock (on S3 and GCS: a lease object)
        writer.write_shard([make_sample("a", seed=1), make_sample("b", n_det=0, seed=2)],
                           [FailureRecord("x", "decode", "timeout", "first try")])
        writer.write_shard([make_sample("c", seed=3)], [])
        writer.write_shard([make_sample("d", seed=4)], [])
        assert writer.compact(target_rows=3) == ["shard-000003"]   # a and b, c: d stays


def _tree(root) -> dict[str, bytes]:
    """Every file of a dataset (local or URL) → its bytes; manifest.json without its timestamps."""
    if isinstance(root, Path):
        names = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    else:
        names = list(storage.list_tree(root))
    files = {rel: storage.location(f"{root}/{rel}").read_bytes() for rel in names}
    files.pop(".finsta.lock", None)   # locally an empty file left for the next run; on a store deleted
    manifest = {k: v for k, v in json.loads(files.pop("manifest.json")).items() if k not in ("created", "updated")}
    return {**files, "manifest.json": json.dumps(manifest).encode()}


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_dataset_written_to_s3_or_gs_is_a_local_ones_files_byte_for_byte(scheme, request, tmp_path, capsys):
    """The same shards written locally and to the object store (through pyarrow.fs and zarr's FsspecStore):
    the same files with the same bytes, readable, verified and inspected (the CLI too), compacted alike."""
    if scheme == "s3":
        root = make_bucket(request.getfixturevalue("s3_env"), "same-bytes") + "/ds"
    else:
        root = make_gcs_bucket(request.getfixturevalue("gcs_env"), "same-bytes") + "/ds"
    _write_three_shards_and_compact(tmp_path / "ds")
    _write_three_shards_and_compact(root)
    local, remote = _tree(tmp_path / "ds"), _tree(root)
    assert sorted(remote) == sorted(local), set(remote) ^ set(local)
    assert remote == local
    ds = open_dataset(root)
    assert sorted(ds.keys()) == ["a", "b", "c", "d"]
    assert all(ds.get(key)[0] == open_dataset(tmp_path / "ds").get(key)[0] for key in "abcd")
    assert verify(root) == [] and [f.key for f in ds.failures()] == ["x"]
    from tests.test_cli import in_process
    assert in_process(capsys, "verify", root)[:2] == (0, f"ok: {root} verified\n")
    code, shown, _ = in_process(capsys, "inspect", root, "--json")
    assert code == 0 and json.loads(shown)["committed"] == 4, shown


def test_an_s3_dataset_round_trips_compacts_verifies_and_stores_no_credentials(s3_env):
    root = make_bucket(s3_env, "store") + "/ds"
    with DatasetWriter(root, {"run": 1}, DIMS) as writer:
        writer.write_shard([make_sample("a", seed=1), make_sample("b", n_det=0, seed=2)],
                           [FailureRecord("x", "decode", "timeout", "first try")])
        writer.write_shard([make_sample("c", seed=3)], [])
        with pytest.raises(UserError, match="being written by another build-sgs .*expires at"):
            DatasetWriter(root, {"run": 1}, DIMS)     # the lock: a conditional create on S3
        assert writer.compact(target_rows=10) == ["shard-000002"]
    ds = open_dataset(root)
    assert ds.keys() == ["a", "b", "c"] and ds.shard_names() == ["shard-000002"] and verify(root) == []
    assert ds.get("b")[0] == make_sample("b", n_det=0, seed=2)[0] and [f.key for f in ds.failures()] == ["x"]
    np.testing.assert_array_equal(ds.get("a")[1].frame, make_sample("a", seed=1)[1].frame.astype(np.float16))
    names = storage.list_tree(root)
    assert sorted({rel.split("/")[1] for rel in names if rel.startswith("shards/")}) == ["shard-000002"]
    assert ".finsta.lock" not in names   # released
    written = b"".join(storage.location(f"{root}/{rel}").read_bytes() for rel in names)
    assert TEST_KEY_ID.encode() not in written and TEST_SECRET.encode() not in written
    with pytest.raises(UserError, match="built with other options"):
        DatasetWriter(root, {"run": 2}, DIMS)
    storage.put_bytes(f"{root}/notes.txt", b"the user's own file")
    DatasetWriter(root, {"run": 2}, DIMS, overwrite=True).close()
    assert len(open_dataset(root)) == 0 and sorted(storage.list_tree(root)) == ["manifest.json", "notes.txt"]


def test_an_s3_writer_removes_debris_publishes_a_merged_shard_and_takes_over_an_expired_lock(s3_env):
    root = make_bucket(s3_env, "debris") + "/ds"
    with DatasetWriter(root, {"run": 1}, DIMS) as writer:
        writer.write_shard([make_sample("a", seed=1)], [])
        writer.write_shard([make_sample("b", seed=2)], [])
    storage.put_bytes(f"{root}/shards/shard-000009/samples.arrow", b"partial")   # a kill mid-upload: no _DONE
    old = f"{root}/shards/shard-000001"
    for rel in storage.list_tree(old):
        storage.copy_object(f"{old}/{rel}", f"{root}-saved/{rel}")
    with DatasetWriter(root, {"run": 1}, DIMS) as writer:
        [name] = writer.compact(target_rows=10)   # replaces shard-000000 and shard-000001
    # as if killed after the merged shard's commit and one old shard's removal, before its copy into place
    final = f"{root}/shards/{name}"
    for rel in storage.list_tree(final):
        storage.copy_object(f"{final}/{rel}", f"{root}/shards/.merged-{name}/{rel}")
    storage.remove_tree(final, first=("_DONE",))
    for rel in storage.list_tree(f"{root}-saved"):
        storage.copy_object(f"{root}-saved/{rel}", f"{old}/{rel}")
    assert sorted(open_dataset(root).keys()) == ["a", "b"]   # readers see each row once meanwhile
    # the writer that did it died: its lock object is left behind, its lease run out
    storage.put_bytes(f"{root}/.finsta.lock", json.dumps({"pid": 1, "host": "gone", "expires": 0}).encode())
    with DatasetWriter(root, {"run": 1}, DIMS) as writer:
        assert writer.committed_keys() == {"a", "b"} and "stale lock of pid 1" in writer.notes[0]
    assert {rel.split("/")[0] for rel in storage.list_tree(f"{root}/shards")} == {name}
    assert verify(root) == [] and sorted(open_dataset(root).keys()) == ["a", "b"]
    storage.put_bytes(f"{root}/shards/{name}/samples.arrow", b"damaged")   # a damaged shard is quarantined
    with DatasetWriter(root, {"run": 1}, DIMS) as writer:
        assert writer.committed_keys() == set() and "truncated or altered" in writer.quarantined[0]
    moved = storage.list_tree(f"{root}/quarantine")
    assert "QUARANTINED.txt" in {rel.split("/")[-1] for rel in moved} and not any(rel.endswith("_DONE") for rel in moved)
    assert storage.list_tree(f"{root}/shards") == {} and verify(root) == []


def test_s3_requests_opening_reading_and_removing_shards_are_counted_and_bounded(s3_env):
    """Counted on the server: opening costs one listing for every shard plus two GETs per shard
    (shard.json, _DONE); reading a sample is one GET per object it needs; a shard is removed by one batch
    delete (DeleteObjects), not one DELETE per object."""
    root = make_bucket(s3_env, "requests") + "/ds"
    shards = 4
    with DatasetWriter(root, {"run": 1}, DIMS) as writer:
        for i in range(shards):
            writer.write_shard([make_sample(f"k{i}", seed=i)], [])
    with Requests(s3_env) as opening:
        ds = open_dataset(root)
    assert opening.count("GET", "list-type=2") == 1   # the whole shards/ tree in one listing
    assert len(opening.lines) <= 2 * shards + 4, opening.lines   # a GET of shard.json and of _DONE; the manifest
    with Requests(s3_env) as reading:
        assert ds.get("k2")[0] == make_sample("k2", seed=2)[0]
    assert not any("shard-000000" in line for line in reading.lines)   # only the shard holding k2 is read
    assert reading.count("HEAD") == 0 and reading.count("GET") == len(reading.lines)   # each object: one GET
    files = len(storage.list_tree(f"{root}/shards/shard-000001"))
    with Requests(s3_env) as removing, DatasetWriter(root, {"run": 1}, DIMS) as writer:
        writer.drop_samples({"k1"})
    assert removing.count("POST", "?delete") == 1 and removing.count("DELETE") < files / 2, removing.lines
    print(json.dumps({"shards": shards, "open_requests": len(opening.lines), "get_requests": len(reading.lines),
                      "remove_requests": len(removing.lines), "files_removed": files}))
