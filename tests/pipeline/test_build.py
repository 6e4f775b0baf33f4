"""build-sgs end to end: outputs, failure rows, resume after kill -9, --retry-failed, Ray = sequential.

Videos come from the synthetic generator (tiny and fast); bad inputs are
written next to them and listed in a manifest.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.build import run_build
from pipeline.config import BuildConfig
from pipeline.datasets.base import DatasetConfig
from pipeline.synthetic.generate import generate
from schemas.store import open_dataset, verify

REPO = Path(__file__).resolve().parents[2]
GOOD = 4


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    generate(root / "synthetic", GOOD, seed=7, duration=3.0, fps=6, width=160, height=120, objects_max=3)
    captions = json.loads((root / "synthetic" / "captions.json").read_text())
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 4000)
    lines = []
    for vid, entry in sorted(captions.items()):
        lines.append({"id": vid, "video": f"synthetic/videos/{vid}.mp4",
                      "captions": [{"text": t, "start": s, "end": e}
                                   for t, (s, e) in zip(entry["sentences"], entry["timestamps"])]})
    first = lines[0]
    lines += [
        {"id": "missing_video", "video": "synthetic/videos/nope.mp4", "captions": [{"text": "a red circle"}]},
        {"id": "corrupt_video", "video": "corrupt.mp4", "captions": [{"text": "a blue square"}]},
        {"id": first["id"], "video": first["video"], "captions": [{"text": "the same id again"}]},
        {"id": "../escape", "video": first["video"], "captions": [{"text": "a circle"}]},
        {"id": "/etc/escape", "video": first["video"], "captions": [{"text": "a circle"}]},
    ]
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return root


def config(world: Path, executor: str = "sequential", **run) -> BuildConfig:
    cfg = BuildConfig(dataset=DatasetConfig(name="manifest", data_root=str(world / "manifest.jsonl")))
    cfg.write.shard_size = 2
    cfg.detect.name = "color"
    cfg.run.executor = executor
    cfg.run.quiet = True
    for key, value in run.items():
        setattr(cfg.run, key, value)
    return cfg


def contents(out: Path) -> dict:
    """Every committed sample with its features as plain lists, comparable with ``==``."""
    ds = open_dataset(out)
    result = {}
    for key in ds.keys():
        sample, features = ds.get(key)
        result[key] = (sample, {name: array.tolist() for name, array in features.as_dict().items()})
    return result


@pytest.fixture(scope="module")
def sequential_run(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("seq") / "out"
    return out, run_build(config(world), out)


@pytest.fixture(scope="module")
def sequential_out(sequential_run) -> Path:
    return sequential_run[0]


@pytest.fixture(scope="module")
def reference_out(world, tmp_path_factory) -> Path:
    """The sequential build in a fresh process, as a user runs it: the reference for Ray runs."""
    out = tmp_path_factory.mktemp("reference") / "out"
    done = subprocess.run([sys.executable, "cli.py", "build-sgs", "--dataset", "manifest", "--data-root",
                           str(world / "manifest.jsonl"), "--out", str(out), "--executor", "sequential",
                           "--set", "write.shard_size=2", "--detector", "color", "--quiet"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return out


def test_every_sample_ends_committed_or_as_a_failure_row(sequential_run, world):
    sequential_out, result = sequential_run
    ds = open_dataset(sequential_out)
    assert len(ds.keys()) == GOOD and verify(sequential_out) == []
    reasons = {f.key: f.error_type for f in ds.failures()}
    assert reasons["missing_video"] == "missing_file"
    assert reasons["corrupt_video"] in ("corrupt_video", "not_a_video", "no_video_stream")
    assert reasons["../escape"] == reasons["/etc/escape"] == "unsafe_key"
    assert result.failures_by_reason["duplicate_key"] == 1  # its key is committed (first occurrence kept)
    assert result.total == GOOD + 5 and result.committed + len(reasons) == result.total - 1
    assert not (sequential_out.parent / "escape").exists() and not Path("/etc/escape").exists()


def test_samples_carry_graphs_and_aligned_features(sequential_out):
    ds = open_dataset(sequential_out)
    for key in ds.keys():
        sample, feats = ds.get(key)
        assert sample.dsg.frames and sample.dsg.detections and sample.dsg.tracks
        assert all(d.track_id >= 0 for d in sample.dsg.detections)
        assert sample.hsgs and all(h.tsg.nodes for h in sample.hsgs if h.negative_of is None)
        assert feats.frame.shape[0] == len(sample.dsg.frames)
        assert feats.detection.shape[0] == len(sample.dsg.detections)
        assert feats.caption.shape[0] == len(sample.hsgs)
        assert feats.text_node.shape[0] == sum(len(h.tsg.nodes) for h in sample.hsgs)
    assert any(h.links for key in ds.keys() for h in ds.get(key)[0].hsgs)


def test_rerun_skips_committed_and_recorded_failures(world, sequential_out):
    before = sorted(p.name for p in (sequential_out / "shards").iterdir())
    result = run_build(config(world), sequential_out)
    assert result.to_run == 0 and result.skipped_committed == GOOD + 1  # + the duplicate of a committed id
    assert sorted(p.name for p in (sequential_out / "shards").iterdir()) == before


def test_retry_failed_reprocesses_only_the_failures(world, tmp_path):
    out = tmp_path / "out"
    run_build(config(world), out)
    missing = world / "synthetic" / "videos" / "nope.mp4"
    missing.write_bytes((world / "synthetic" / "videos" / sorted(
        os.listdir(world / "synthetic" / "videos"))[0]).read_bytes())
    try:
        result = run_build(config(world, retry_failed=True), out)
    finally:
        missing.unlink()
    # the duplicate id's key is committed, so both of its rows are skipped; unsafe keys fail again at once
    assert result.to_run == 2 and result.skipped_committed == GOOD + 1
    ds = open_dataset(out)
    assert "missing_video" in ds.keys() and len(ds.keys()) == GOOD + 1
    assert {f.key for f in ds.failures()} == {"corrupt_video", "../escape", "/etc/escape"}


def test_changed_config_is_refused(world, sequential_out):
    result = subprocess.run([sys.executable, "cli.py", "build-sgs", "--dataset", "manifest", "--data-root",
                             str(world / "manifest.jsonl"), "--out", str(sequential_out), "--executor",
                             "sequential", "--detector", "color", "--set", "decode.fps=3", "--quiet"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "decode.fps: 1.0 → 3.0" in result.stderr, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == \
        result.stderr.strip().splitlines()[-1:]


def test_dry_run_writes_nothing(world, tmp_path):
    result = subprocess.run([sys.executable, "cli.py", "build-sgs", "--dataset", "manifest", "--data-root",
                             str(world / "manifest.jsonl"), "--out", str(tmp_path / "dry"), "--dry-run",
                             "--set", "run.workers=2"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{GOOD + 5} samples" in result.stdout and "to run" in result.stdout
    assert "pool decode…embed_text" in result.stdout and "workers=2" in result.stdout
    assert not (tmp_path / "dry").exists()


@pytest.mark.slow
def test_ray_with_two_workers_matches_sequential(world, reference_out, tmp_path):
    out = tmp_path / "ray"
    run_build(config(world, executor="ray", workers=2, num_cpus=2), out)
    assert contents(out) == contents(reference_out)
    assert json.loads((reference_out / "stats.json").read_text())["committed"] == GOOD


@pytest.mark.slow
def test_two_node_ray_cluster_matches_one_node(world, reference_out, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        out = tmp_path / "two-nodes"
        run_build(config(world, executor="ray", workers=2, ray_address=cluster.address, pools="each"), out)
        assert len({node["NodeID"] for node in ray.nodes() if node["Alive"]}) == 2
        assert contents(out) == contents(reference_out)
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_kill_9_of_the_driver_then_rerun_loses_and_duplicates_nothing(world, reference_out, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "cli.py", "build-sgs", "--dataset", "manifest", "--data-root",
               str(world / "manifest.jsonl"), "--out", str(out), "--set", "write.shard_size=1", "--detector", "color", "--quiet"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        manifest = out / "manifest.json"
        if manifest.exists() and json.loads(manifest.read_text())["shards"] and \
                sum(len(s["keys"]) for s in json.loads(manifest.read_text())["shards"]) >= 1:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = open_dataset(out).keys()
    assert 1 <= len(partial) and verify(out) == []
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    keys = [key for shard in manifest["shards"] for key in shard["keys"]]
    assert len(keys) == len(set(keys)) == GOOD
    assert contents(out) == contents(reference_out)
