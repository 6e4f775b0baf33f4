"""The shard store: round trip, atomic commit under kill -9, verify, refusals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from schemas.errors import UserError
from schemas.records import (CrossLink, Detection, DynamicSceneGraph, FailureRecord, Frame, HolisticSceneGraph,
                             SampleFeatures, TextNode, TextSceneGraph, Track, VideoMeta, VideoSample)
from schemas.store import DatasetWriter, check_key, open_dataset, verify

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
    assert manifest["shards"][0]["keys"] == ["a", "b"] and manifest["shards"][0]["rows"] == 2
    assert manifest["config"] == {"detector": "color"} and "pyarrow" in manifest["package_versions"]
    assert all(len(digest) == 64 for digest in manifest["shards"][0]["files"].values())


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
            if path.name == "samples.arrow" and len(store._scan_shards(store.Path(sys.argv[1]))) == 1:
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
    done = subprocess.run([sys.executable, str(script), str(out), "run"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["committed s1", "committed s2"]
    ds = open_dataset(out)
    assert ds.keys() == ["s0", "s1", "s2"] and verify(out) == []
    assert not any(p.name.startswith(".tmp-") for p in (out / "shards").iterdir())
