"""build-sgs end to end: outputs, failure rows, resume after kill -9, --retry-failed, Ray = sequential.

Videos come from the synthetic generator (tiny and fast); bad inputs are
written next to them and listed in a manifest.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.build import run_build
from pipeline.report import plan_text, stats_dict, summary_lines
from pipeline.config import BuildConfig, finalize
from pipeline.datasets.base import DatasetConfig
from pipeline.synthetic.generate import generate
from schemas.store import open_dataset, verify
from tests.test_cli import in_process   # `python cli.py ARGS` in this process (its exit code, stdout, stderr)

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
    """The sequential build, in this process: the reference that every other build of ``world`` (Ray on one
    node or two, a killed run resumed) must equal."""
    out = tmp_path_factory.mktemp("seq") / "out"
    return out, run_build(config(world), out)


@pytest.fixture(scope="module")
def sequential_out(sequential_run) -> Path:
    return sequential_run[0]


def test_every_sample_ends_committed_or_as_a_failure_row(sequential_run, world):
    sequential_out, result = sequential_run
    ds = open_dataset(sequential_out)
    assert len(ds.keys()) == GOOD and verify(sequential_out) == []
    reasons = {f.key: f.error_type for f in ds.failures()}
    assert reasons["missing_video"] == "missing_file"
    assert reasons["corrupt_video"] in ("corrupt_video", "not_a_video", "no_video_stream")
    assert reasons["../escape"] == reasons["/etc/escape"] == "unsafe_key"
    assert result.failures_by_reason["duplicate_key"] == 1  # its key is committed (first occurrence kept)
    assert reasons[ds.keys()[0]] == "duplicate_key"          # and the dropped row is a failure all the same
    assert result.total == GOOD + 5 and result.committed + len(ds.failures()) == result.total
    assert result.failed == len(ds.failures()) == sum(result.failures_by_reason.values()) == 5
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


def test_retry_failed_reprocesses_only_the_failures(world, sequential_out, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(sequential_out, out, ignore=shutil.ignore_patterns(".finsta.lock"))
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
    assert {f.key for f in ds.failures()} == {"corrupt_video", "../escape", "/etc/escape", ds.keys()[0]}  # + the dup


def test_check_data_quarantines_a_bit_flipped_shard_and_redoes_its_samples(world, sequential_out, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(sequential_out, out)
    shard = next(p for p in sorted((out / "shards").iterdir()) if json.loads((p / "shard.json").read_text())["keys"])
    lost = json.loads((shard / "shard.json").read_text())["keys"]
    data = bytearray((shard / "samples.arrow").read_bytes())
    data[len(data) // 2] ^= 0xFF   # same size: only a hash sees it
    (shard / "samples.arrow").write_bytes(bytes(data))   # (a plain resume does not read it: test_store.py)
    result = run_build(config(world, check_data=True), out)
    assert [note.split(";")[0] for note in result.store_notes[:1]] == [f"{shard.name}: samples.arrow: corrupted "
                                                                       "(sha256 mismatch)"]
    assert result.to_run >= len(lost) and verify(out) == []
    assert contents(out) == contents(sequential_out)


def test_changed_config_is_refused(world, sequential_out, capsys):
    code, _, err = in_process(capsys, "build-sgs", "--dataset", "manifest", "--data-root",
                              str(world / "manifest.jsonl"), "--out", str(sequential_out), "--executor",
                              "sequential", "--detector", "color", "--set", "decode.fps=3", "--quiet")
    assert code == 2 and "decode.fps: 1.0 → 3.0" in err, err
    assert [line for line in err.splitlines() if line.startswith("error:")] == err.strip().splitlines()[-1:]


def test_an_output_made_before_the_precision_options_continues_with_f32(world, tmp_path):
    # at f32 the options are left out of the identity: exactly the manifest of an output made before they existed
    out = tmp_path / "out"
    older = config(world)
    older.embed_visual.precision = older.track.labels.precision = "f32"
    run_build(older, out)
    made = json.loads((out / "manifest.json").read_text())
    assert "precision" not in made["config"]["embed_visual"] and "precision" not in made["host"]["embed_visual"]
    result = run_build(config(world), out)          # today's defaults (bf16): continued, not refused
    assert result.to_run == 0 and result.skipped_committed == GOOD + 1
    assert sorted(n for n in result.store_notes if "made before" in n) == [
        f"{out} was made before {name} existed: continuing with 'f32', the value it was made with"
        for name in ("embed_visual.precision", "track.labels.precision")]
    assert json.loads((out / "manifest.json").read_text())["config_hash"] == made["config_hash"]


def test_dry_run_writes_nothing(world, tmp_path, capsys):
    code, out, err = in_process(capsys, "build-sgs", "--dataset", "manifest", "--data-root",
                                str(world / "manifest.jsonl"), "--out", str(tmp_path / "dry"), "--dry-run",
                                "--set", "run.workers=2")
    assert code == 0, err
    assert f"{GOOD + 5} samples" in out and "to run" in out
    assert "pool decode…embed_text" in out and "workers=2" in out
    assert not (tmp_path / "dry").exists()


def test_missing_videos_ride_along_with_samples_and_show_in_the_plan(world, sequential_out, tmp_path, capsys):
    shards = open_dataset(sequential_out).manifest["shards"]
    holding = [shard for shard in shards if "missing_video" in shard["failed_keys"]]
    assert len(holding) == 1 and holding[0]["keys"]   # in a shard with samples, not one of its own
    code, out, err = in_process(capsys, "build-sgs", "--dataset", "manifest", "--data-root",
                                str(world / "manifest.jsonl"), "--out", str(tmp_path / "dry"), "--dry-run")
    assert code == 0 and f"{GOOD + 1} to run, 1 missing" in out, out + err


def test_a_run_where_every_sample_failed_exits_1_without_starting_ray(tmp_path, capsys):
    lines = [{"id": f"gone{i}", "video": f"gone{i}.mp4", "captions": [{"text": "a red circle"}]} for i in range(3)]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    out = tmp_path / "out"
    code, stdout, stderr = in_process(capsys, "build-sgs", "--dataset", "manifest", "--data-root",
                                      str(tmp_path / "m.jsonl"), "--out", str(out), "--detector", "color",
                                      "--quiet", "--set", "write.shard_size=2")
    assert code == 1, stderr
    assert "starting Ray" not in stderr and "3 failed (missing_file 3)" in stdout
    import ray
    assert not ray.is_initialized()
    shards = open_dataset(out).manifest["shards"]
    assert len(shards) == 1 and shards[0]["failure_rows"] == 3   # one shard, whatever the shard size


@pytest.mark.slow
def test_ray_with_two_workers_matches_sequential(world, sequential_out, tmp_path):
    out = tmp_path / "ray"
    assert run_build(config(world, executor="ray", workers=2, num_cpus=2), out).committed == GOOD
    assert contents(out) == contents(sequential_out)


@pytest.mark.slow
def test_two_node_ray_cluster_matches_one_node(world, sequential_out, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        out = tmp_path / "two-nodes"
        run_build(config(world, executor="ray", workers=2, ray_address=cluster.address, pools="each"), out)
        assert not ray.is_initialized()          # the build disconnected from the cluster it joined
        ray.init(address=cluster.address, logging_level="ERROR")
        assert len({node["NodeID"] for node in ray.nodes() if node["Alive"]}) == 2
        assert contents(out) == contents(sequential_out)
    finally:
        ray.shutdown()
        cluster.shutdown()


def committed_so_far(out: Path) -> int:
    """Samples committed in ``out`` by a run still going (0 before its first commit)."""
    try:
        return len(open_dataset(out, verify=False))
    except Exception:   # no manifest yet, or a header being written
        return 0


@pytest.mark.slow
def test_kill_9_of_the_driver_then_rerun_loses_and_duplicates_nothing(world, sequential_out, tmp_path):
    """The store's commits against a kill -9 of the driver, which commits whatever the executor is: the killed
    run is sequential (no Ray start to wait for; what a killed driver leaves of Ray:
    tests/pipeline/executors/test_ray.py::test_a_killed_driver_leaves_no_ray_process_behind)."""
    out = tmp_path / "killed"
    command = [sys.executable, "cli.py", "build-sgs", "--dataset", "manifest", "--data-root",
               str(world / "manifest.jsonl"), "--out", str(out), "--set", "write.shard_size=1", "--detector", "color",
               "--executor", "sequential", "--quiet"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    while committed_so_far(out) < 1 and proc.poll() is None:   # no clock: the run commits or ends
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = open_dataset(out).keys()
    assert 1 <= len(partial) and verify(out) == []
    cfg = config(world)                 # the rerun, in this process (the sequential executor: no second Ray)
    cfg.write.shard_size = 1
    assert run_build(cfg, out).committed == GOOD
    keys = [key for shard in open_dataset(out).manifest["shards"] for key in shard["keys"]]
    assert len(keys) == len(set(keys)) == GOOD
    assert contents(out) == contents(sequential_out)


# ---------------------------------------------------------------- issue 14/18: signals keep finished work
import re  # noqa: E402

import tests.pipeline.doubles  # noqa: E402,F401  (registers the named test doubles in this process too)

SIXTEEN = 16
INTERRUPTED = re.compile(r"^interrupted: (\d+) committed, (\d+) in flight not kept; rerun the same command to "
                         r"continue$")


@pytest.fixture(scope="module")
def world16(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("w16") / "synthetic", SIXTEEN, seed=5, duration=2.0, fps=4, width=160,
                    height=120, objects_max=2)


def probe_command(world: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "cli.py", "build-sgs", "--dataset", "synthetic", "--data-root", str(world), "--out",
            str(out), "--detector", "progress_probe_double", "--set", "detect.batch_frames=1000", "--num-cpus", "2",
            "--quiet", *extra]


def probe_config(world: Path, shard_max_seconds: float | None = None) -> BuildConfig:
    """What :func:`probe_command` builds, run in this process by the sequential executor (the same stages)."""
    cfg = BuildConfig(dataset=DatasetConfig(name="synthetic", data_root=str(world)))
    cfg.detect.name, cfg.detect.batch_frames, cfg.run.executor, cfg.run.quiet = "progress_probe_double", 1000, \
        "sequential", True
    if shard_max_seconds is not None:
        cfg.write.shard_max_seconds = shard_max_seconds
    return cfg


def rerun(cfg: BuildConfig, out: Path, left: int) -> None:
    """The rerun after an interruption, in this process: it runs exactly the ``left`` samples not committed
    (how the rerun is executed does not change what resuming is: the store and the plan decide it)."""
    result = run_build(cfg, out)
    assert (result.to_run, result.committed) == (left, SIXTEEN) and verify(out) == []


@pytest.fixture(scope="module")
def reference16(world16, tmp_path_factory) -> Path:
    """The same build, uninterrupted (sequential: the same stages, in-process)."""
    out = tmp_path_factory.mktemp("ref16") / "out"
    run_build(probe_config(world16), out)
    return out


def start_and_wait(command: list[str], probe: Path, videos: int, stall_s: float = 400) -> subprocess.Popen:
    """Start ``command`` and return once its detector has seen ``videos`` videos; fails when the run
    exits first or goes ``stall_s`` without a new video (a bound on progress, not on the run's length)."""
    env = {**os.environ, "FINSTA_PLUGINS": "tests.pipeline.doubles", "FINSTA_TEST_PROBE_DIR": str(probe)}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    seen, deadline = 0, time.time() + stall_s
    while seen < videos:
        assert proc.poll() is None, proc.communicate()
        now = sum(len(p.read_text().splitlines()) for p in probe.glob("detected-*.txt"))
        if now > seen:
            seen, deadline = now, time.time() + stall_s
        assert time.time() < deadline, f"the run saw no new video for {stall_s:g} s ({seen} of {videos})"
        time.sleep(0.2)
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("signum,to_group", [(signal.SIGTERM, False), (signal.SIGINT, True)],
                         ids=["SIGTERM-to-driver", "SIGINT-to-process-group"])
def test_a_signal_late_in_the_run_commits_every_finished_sample(signum, to_group, world16, reference16, tmp_path):
    out, probe = tmp_path / "out", tmp_path / "probe"
    probe.mkdir()
    launched = time.monotonic()
    proc = start_and_wait(probe_command(world16, out), probe, 12)
    sent = time.monotonic()
    (os.killpg if to_group else os.kill)(proc.pid, signum)
    _, stderr = proc.communicate(timeout=600)
    # stopping (commit what finished, end Ray) takes less than getting this far took (start Ray, 12 videos):
    # both measured in this run, so the bound holds at any load
    assert time.monotonic() - sent < sent - launched, (time.monotonic() - sent, sent - launched)
    assert proc.returncode == {signal.SIGTERM: 143, signal.SIGINT: 130}[signum], stderr
    match = INTERRUPTED.match(stderr.strip().splitlines()[-1])
    assert match, stderr
    committed = int(match.group(1))
    ds = open_dataset(out)
    assert len(ds) == committed >= 10 and ds.failures() == [] and verify(out) == []   # a partial shard is a shard
    assert committed + int(match.group(2)) <= SIXTEEN
    rerun(probe_config(world16), out, SIXTEEN - committed)
    assert contents(out) == contents(reference16)


@pytest.mark.slow
def test_kill_9_loses_at_most_the_last_shard_max_seconds_of_finished_work(world16, reference16, tmp_path):
    out, probe = tmp_path / "out", tmp_path / "probe"
    probe.mkdir()
    # the driver commits by age whatever the executor is: sequential, no Ray start to wait for
    proc = start_and_wait(probe_command(world16, out, "--set", "write.shard_max_seconds=2", "--executor",
                                        "sequential"), probe, 6)
    while not committed_so_far(out):   # no clock: a run that never commits by age ends with all 16 in one shard
        assert proc.poll() is None, "no shard was committed by time"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = len(open_dataset(out))
    assert 1 <= committed < SIXTEEN and verify(out) == []   # committed by age, long before 16 (shard_size)
    rerun(probe_config(world16, shard_max_seconds=2), out, SIXTEEN - committed)
    assert contents(out) == contents(reference16)


def test_the_open_shard_is_committed_when_it_is_old_enough(world, tmp_path, monkeypatch):
    """The time bound itself, with a fake clock: a shard younger than shard_max_seconds waits, an older one goes."""
    import pipeline.build as build

    clock = [1000.0]
    monkeypatch.setattr(build.time, "monotonic", lambda: clock[0])
    with build.DatasetWriter(tmp_path / "out", {"test": 1}, {"frame": 1, "detection": 1, "text_node": 1,
                                                             "caption": 1}) as writer:
        cfg = config(world)
        cfg.write.shard_size, cfg.write.shard_max_seconds = 100, 60.0
        shard = build._OpenShard(writer, cfg.write, build.BuildResult(out=tmp_path / "out"),
                                 build.Progress(quiet=True))
        shard.add_failure(build.FailureRecord("a", "decode", "timeout", "slow"))
        clock[0] += 59.0
        assert not shard.due()
        clock[0] += 1.0
        assert shard.due()
        shard.commit()
        assert writer.failed_keys() == {"a"} and not shard.due()


DIMS = {"frame": 8, "detection": 4, "text_node": 4, "caption": 4}


def finished_task(key: str, frames: int, dim: int):
    """A task as the last stage leaves it: ``frames`` frames with their features, nothing else."""
    import numpy as np

    from schemas.records import DynamicSceneGraph, Frame, VideoMeta
    from stages.base import VideoTask

    meta = VideoMeta(f"/videos/{key}.mp4", 4.0, 25.0, 320, 240, "h264", 100)
    dsg = DynamicSceneGraph(key, meta, [Frame(i, i / 25) for i in range(frames)])
    return VideoTask(key, "test", key, meta.path, dsg=dsg, frame_features=np.ones((frames, dim), np.float32))


def open_shard(writer, tmp_path, world, **write):
    import pipeline.build as build

    cfg = config(world)
    for key, value in write.items():
        setattr(cfg.write, key, value)
    return build._OpenShard(writer, cfg.write, build.BuildResult(out=tmp_path), build.Progress(quiet=True))


def test_the_open_shard_is_committed_when_its_features_reach_shard_max_bytes(world, tmp_path):
    from schemas.store import DatasetWriter

    with DatasetWriter(tmp_path / "out", {"test": 1}, DIMS) as writer:
        shard = open_shard(writer, tmp_path, world, shard_size=100, shard_max_bytes=3 * 4 * 8 * 4 - 1)
        for i in range(3):   # 4 frames × 8 float32 = 128 bytes a sample
            assert not shard.due()
            shard.add(finished_task(f"k{i}", 4, 8), writer.feature_dims)
        assert shard.due()   # 384 bytes ≥ 383, 3 rows < 100
        shard.commit()
        assert [(s.rows, s.keys) for s in writer.shards] == [(3, ["k0", "k1", "k2"])] and not shard.due()


def test_small_shards_are_merged_during_the_run_once_compact_every_of_them_wait(world, tmp_path):
    from schemas.store import DatasetWriter

    with DatasetWriter(tmp_path / "out", {"test": 1}, DIMS) as writer:
        shard = open_shard(writer, tmp_path, world, shard_size=10, compact_every=3)
        for i in range(3):   # three time-based commits of one sample each
            shard.add(finished_task(f"k{i}", 1, 8), writer.feature_dims)
            shard.commit()
            assert len(writer.shards) == (i + 1 if i < 2 else 1)
        assert writer.shards[0].rows == 3 and writer.shards[0].replaces == ["shard-000000", "shard-000001",
                                                                             "shard-000002"]
    assert sorted(p.name for p in (tmp_path / "out" / "shards").iterdir()) == ["shard-000003"]
    assert open_dataset(tmp_path / "out").keys() == ["k0", "k1", "k2"] and verify(tmp_path / "out") == []


@pytest.mark.slow
def test_sigterm_while_workers_load_their_models_stops_within_seconds(world, tmp_path):
    out, probe = tmp_path / "out", tmp_path / "probe"
    probe.mkdir()
    env = {**os.environ, "FINSTA_PLUGINS": "tests.pipeline.doubles", "FINSTA_TEST_PROBE_DIR": str(probe)}
    launched = time.monotonic()
    proc = subprocess.Popen([sys.executable, "cli.py", "build-sgs", "--dataset", "manifest", "--data-root",
                             str(world / "manifest.jsonl"), "--out", str(out), "--detector", "slow_setup_double",
                             "--num-cpus", "2", "--quiet"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    # Ray is up and a worker is inside setup() (a ten-minute sleep; the double says so when it enters it). A
    # signal while Ray itself starts ends the run at once instead, before anything is committed.
    while not any(probe.glob("setup-*.json")):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=600)
    # within seconds, not the ten minutes of setup(): less than getting there took (start Ray and a worker),
    # both measured in this run
    assert proc.returncode == 143 and time.monotonic() - sent < sent - launched, stderr
    # the four rows failed before any stage (duplicate, two unsafe keys, a missing file) are committed; nothing
    # else started
    assert stderr.strip().splitlines()[-1].startswith("interrupted: 4 committed, 0 in flight"), stderr


@pytest.mark.slow
def test_sigterm_while_ray_init_blocks_in_native_code_ends_the_run(tmp_path, world):
    import select
    import socket
    server = socket.socket()
    server.bind(("0.0.0.0", 0))   # ray.init dials this node's IP for 127.0.0.1; the address checks dial 127.0.0.1
    server.listen(8)              # accepts and never says a word
    accepted = []
    try:
        launched = time.monotonic()
        proc = subprocess.Popen([sys.executable, "cli.py", "build-sgs", "--dataset", "manifest", "--data-root",
                                 str(world / "manifest.jsonl"), "--out", str(tmp_path / "out"), "--ray-address",
                                 f"127.0.0.1:{server.getsockname()[1]}", "--set", "run.stop_grace_s=5", "--quiet"],
                                cwd=REPO, stderr=subprocess.PIPE, text=True)
        # the address checks connect and close; ray.init's gRPC client connects and speaks first (HTTP/2's
        # preface), then waits for an answer that never comes: once a client has spoken, ray.init is blocked
        spoken = False
        while not spoken:
            assert proc.poll() is None, proc.communicate()
            for ready in select.select([server, *accepted], [], [], 0.2)[0]:
                if ready is server:
                    accepted.append(server.accept()[0])
                elif ready.recv(64, socket.MSG_PEEK):
                    spoken = True
                else:                     # closed by the client: an address check
                    accepted.remove(ready)
                    ready.close()
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=600)
        # at once: less than the driver took to get into ray.init (a Python start, the dataset listed), both
        # measured in this run
        assert proc.returncode == 143 and time.monotonic() - sent < sent - launched, stderr
        assert "SIGTERM" in stderr.strip().splitlines()[-1] and "committed" in stderr.strip().splitlines()[-1]
    finally:
        for connection in accepted:
            connection.close()
        server.close()


def test_clipped_captions_and_replaced_bytes_are_counted_in_stats(world, tmp_path):
    from pipeline.report import write_stats

    video = sorted((world / "synthetic" / "videos").iterdir())[0]
    long_caption = "a red circle moves to the left " * 60          # 1,860 characters; the parser reads 1,000
    (tmp_path / "m.jsonl").write_bytes(
        json.dumps({"id": "long", "video": str(video), "captions": [long_caption]}).encode() + b"\n"
        + b'{"id": "bytes", "video": "' + str(video).encode() + b'", "captions": ["a blue \xff square"]}\n')
    cfg = BuildConfig(dataset=DatasetConfig(name="manifest", data_root=str(tmp_path / "m.jsonl")))
    cfg.detect.name, cfg.run.executor, cfg.run.quiet = "color", "sequential", True
    stats = write_stats(run_build(cfg, tmp_path / "out"))
    assert stats["counts"]["captions_clipped_for_parsing"] == 1
    assert stats["dataset"]["invalid_utf8_replaced"] == 1
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["counts"] == stats["counts"]


def test_a_sample_with_non_finite_features_becomes_a_failure_not_a_stored_nan():
    import numpy as np

    from pipeline.build import FEATURE_SOURCES, to_sample
    from schemas.records import DynamicSceneGraph, Frame, VideoMeta
    from stages.base import VideoTask

    dims = {name: 4 for name in FEATURE_SOURCES}
    task = VideoTask(key="v", source="test", video_id="v", video_path="v.mp4")
    task.dsg = DynamicSceneGraph("v", VideoMeta("v.mp4", 1.0, 1.0, 8, 8, "h264"), frames=[Frame(0, 0.0), Frame(1, 0.5)])
    task.frame_features = np.zeros((2, 4), np.float32)
    to_sample(task, dims)                                   # finite: stored
    for bad in (float("nan"), float("inf")):
        task.frame_features[1, 2] = bad
        with pytest.raises(ValueError, match="frame features hold 1 NaN or infinite"):
            to_sample(task, dims)


def test_failures_are_counted_per_line_even_when_one_id_repeats_on_many_bad_lines(tmp_path, capsys):
    lines = [json.dumps({"id": "same", "video": 5, "captions": []}) for _ in range(200)]    # 200 malformed lines
    lines += [json.dumps({"id": f"gone{i}", "video": f"gone{i}.mp4", "captions": [{"text": "a red circle"}]})
              for i in range(3)]
    (tmp_path / "m.jsonl").write_text("\n".join(lines))
    out = tmp_path / "out"
    for attempt in range(2):   # the first run, then a rerun that skips what is recorded: 203 both times
        code, stdout, stderr = in_process(capsys, "build-sgs", "--dataset", "manifest", "--data-root",
                                          str(tmp_path / "m.jsonl"), "--out", str(out), "--detector", "color",
                                          "--quiet")
        assert code == (1 if attempt == 0 else 0), stderr    # the rerun has nothing to do
        assert "0 committed, 203 failed (bad_record 200, missing_file 3)" in stdout, stdout
        assert json.loads((out / "stats.json").read_text())["failed"] == 203
    assert len(open_dataset(out).failures()) == 203


# ------------------------------------------------------------------ inputs on S3 (moto's server on 127.0.0.1)
from schemas.storage import list_tree, location  # noqa: E402
from tests.storage_servers import TEST_KEY_ID, TEST_SECRET, make_bucket  # noqa: E402


@pytest.mark.slow
def test_a_manifest_of_s3_videos_on_s3_builds_the_same_features_as_local(world, sequential_out, s3_env,
                                                                        tmp_path):
    lines = [json.loads(line) for line in (world / "manifest.jsonl").read_text().splitlines()]
    files = {line["video"]: world / line["video"] for line in lines if (world / line["video"]).is_file()}
    for line in lines:   # absolute s3:// URLs and paths relative to the manifest's own s3:// folder, mixed
        if line["video"].startswith("synthetic/") and line["id"] < lines[1]["id"]:
            line["video"] = f"s3://inputs/data/{line['video']}"
    files["data/m.jsonl"] = "\n".join(json.dumps(line) for line in lines).encode()
    make_bucket(s3_env, "inputs", {(k if k.startswith("data/") else f"data/{k}"): v for k, v in files.items()})
    cfg = config(world)
    cfg.dataset.data_root = "s3://inputs/data/m.jsonl"
    run_build(cfg, tmp_path / "out")
    got, want = contents(tmp_path / "out"), contents(sequential_out)
    assert sorted(got) == sorted(want)
    assert all(got[key][1] == want[key][1] for key in want)
    rows = {row.key: row for row in open_dataset(tmp_path / "out").failures()}
    assert rows["missing_video"].error_type == "missing_file"
    assert "s3://inputs/data/synthetic/videos/nope.mp4" in rows["missing_video"].message
    assert TEST_KEY_ID not in (tmp_path / "out").joinpath("manifest.json").read_text()


def test_no_credentials_for_s3_inputs_or_output_is_one_line_and_exit_2_before_workers_start(world, s3_env, tmp_path):
    make_bucket(s3_env, "private", {"m.jsonl": b'{"id": "a", "video": "a.mp4", "captions": ["x"]}\n'})
    local = tmp_path / "m.jsonl"   # a local manifest of s3:// videos: the preflight reads the first video
    local.write_text('{"id": "a", "video": "s3://private/a.mp4", "captions": ["x"]}\n')
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    out = str(tmp_path / "out")
    for data_root, out, url in (("s3://private/m.jsonl", out, "s3://private/m.jsonl"),
                                (str(local), out, "s3://private/a.mp4"),
                                (str(local), "s3://private/out", "s3://private/out")):   # --out: checked first
        done = subprocess.run([sys.executable, "cli.py", "build-sgs", "--dataset", "manifest", "--data-root",
                               data_root, "--out", out, "--executor", "ray",
                               "--detector", "color", "--quiet"], cwd=REPO, capture_output=True, text=True,
                              env=env, timeout=600)
        assert done.returncode == 2, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("error:") and f"no AWS credentials for {url}" in last
        assert "Traceback" not in done.stderr and "Ray" not in done.stderr


def _manifest_of(world: Path, video_of) -> bytes:
    """The synthetic world's samples as manifest lines, each video named by ``video_of(local path)``."""
    from pipeline.datasets import build_dataset
    lines = [{"id": t.key, "video": video_of(Path(t.video_path)),
              "captions": [{"text": c.text, "start": c.start, "end": c.end} for c in t.captions
                           if c.negative_of is None]}
             for t in build_dataset(DatasetConfig(name="synthetic", data_root=str(world))).tasks()]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


@pytest.mark.slow
def test_an_s3_build_into_s3_stopped_by_sigterm_then_rerun_ends_like_an_uninterrupted_local_run(world16, s3_env,
                                                                                                   tmp_path, capsys):
    local = tmp_path / "local.jsonl"
    local.write_bytes(_manifest_of(world16, str))
    videos = {f"v/{p.name}": p for p in (world16 / "videos").iterdir()}
    make_bucket(s3_env, "w16", {**videos, "m.jsonl": _manifest_of(world16, lambda p: f"s3://w16/v/{p.name}")})
    cfg = BuildConfig(dataset=DatasetConfig(name="manifest", data_root=str(local)))
    cfg.detect.name, cfg.detect.batch_frames, cfg.run.executor, cfg.run.quiet = "progress_probe_double", 1000, \
        "sequential", True
    run_build(cfg, tmp_path / "reference")
    out = "s3://w16/out"
    command = [sys.executable, "cli.py", "build-sgs", "--dataset", "manifest", "--data-root", "s3://w16/m.jsonl",
               "--out", out, "--detector", "progress_probe_double", "--set", "detect.batch_frames=1000",
               "--num-cpus", "2", "--quiet"]
    probe = tmp_path / "probe"
    probe.mkdir()
    proc = start_and_wait(command, probe, 8)
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=600)   # only ends a hung run (how fast a stop is: the tests above)
    assert proc.returncode == 143, stderr
    committed = len(open_dataset(out))
    assert 1 <= committed < SIXTEEN and verify(out) == []
    # the rerun: the same command in this process (cli.main), sequential: the same stages (see rerun())
    code, _, stderr = in_process(capsys, *command[2:], "--executor", "sequential")
    assert code == 0, stderr
    got, want = contents(out), contents(tmp_path / "reference")
    assert sorted(got) == sorted(want) and len(want) == SIXTEEN   # every sample exactly once (keys are unique)
    assert all(got[key][1] == want[key][1] for key in want) and verify(out) == []
    code, stdout, stderr = in_process(capsys, "verify", out)
    assert code == 0 and stdout.strip() == f"ok: {out} verified", stderr
    stats = json.loads(location(f"{out}/stats.json").read_text())
    assert stats["run"]["samples_run"] == SIXTEEN - committed and stats["committed"] == SIXTEEN
    written = b"".join(location(f"{out}/{rel}").read_bytes() for rel in list_tree(out))   # credentials: nowhere
    assert TEST_KEY_ID.encode() not in written and TEST_SECRET.encode() not in written
    # train and eval read the build's own s3:// output exactly like the uninterrupted local run's; export
    from finsta_model.config import TrainConfig
    from finsta_model.evaluate import evaluate
    from finsta_model.train import train
    config = TrainConfig(dim=16, heads=2, gtrm_layers=1, rgtrm_layers=2, steps=2, batch_size=4, log_every=1,
                         warmup_steps=1)
    runs = {name: tmp_path / f"run-{name}" for name in ("s3", "local")}
    train(out, runs["s3"], config, progress=False)
    train(tmp_path / "reference", runs["local"], config, progress=False)
    metrics = {name: [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
               for name, run in runs.items()}
    assert [m["total"] for m in metrics["s3"]] == [m["total"] for m in metrics["local"]] and metrics["s3"]
    same = lambda report: {k: v for k, v in report.items() if k not in ("warnings", "checkpoint")}  # noqa: E731
    assert same(evaluate(out, runs["s3"])) == same(evaluate(tmp_path / "reference", runs["local"]))
    from finsta_model.export import export_host
    assert export_host(runs["s3"], tmp_path / "host")["trained"]["train_shards"] == out



def test_a_sample_whose_input_changed_is_redone_and_the_rest_skipped(world, sequential_out, tmp_path):
    """Input fingerprints: an edited caption, a touched video and a missing video added since are redone
    (old rows replaced), the rest skipped, and the dry run counts them first. The world's files are put
    back afterwards (the module's other tests read them)."""
    out = tmp_path / "out"
    shutil.copytree(sequential_out, out, ignore=shutil.ignore_patterns(".finsta.lock"))
    manifest = world / "manifest.jsonl"
    original = manifest.read_text()
    lines = [json.loads(line) for line in original.splitlines()]
    edited, touched = lines[0], world / lines[1]["video"]
    edited["captions"] = [{"text": "a green triangle"}]
    mtime = os.stat(touched).st_mtime_ns
    added = world / "synthetic" / "videos" / "nope.mp4"
    try:
        manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
        os.utime(touched, ns=(mtime, mtime + 10**9))
        shutil.copy(world / lines[2]["video"], added)
        planned = run_build(config(world, dry_run=True), out)
        assert (planned.changed, planned.to_run) == (3, 3)
        assert "3 changed since (redone)" in plan_text(finalize(config(world, dry_run=True))[0], planned)
        again = run_build(config(world), out)
        assert (again.changed, again.to_run, again.committed) == (3, 3, GOOD + 1)
        assert again.skipped_committed == GOOD - 2 + 1   # + the duplicate of a committed id
        assert "(3 changed since their last run)" in summary_lines(stats_dict(again), out)[0]
        ds = open_dataset(out)
        assert ds.get(edited["id"])[0].hsgs[0].tsg.text == "a green triangle" and verify(out) == []
        assert "missing_video" in ds.keys() and run_build(config(world), out).to_run == 0
    finally:
        manifest.write_text(original)
        os.utime(touched, ns=(mtime, mtime))
        added.unlink(missing_ok=True)


def test_a_corrected_malformed_entry_is_redone_on_the_next_run_without_retry_failed(world, sequential_out, tmp_path):
    """A bad line's failure row holds the fingerprint of its reason, which no readable entry has: the line
    corrected is a changed input. A line with no readable id is keyed by its position: corrected, it runs
    under its id and its old failure row goes. The world's manifest is put back afterwards."""
    out = tmp_path / "out"
    shutil.copytree(sequential_out, out, ignore=shutil.ignore_patterns(".finsta.lock"))
    manifest = world / "manifest.jsonl"
    original = manifest.read_text()
    video, position = json.loads(original.splitlines()[0])["video"], f"manifest.jsonl:{len(original.splitlines()) + 2}"
    bad = [json.dumps({"id": "fixme", "video": 5, "captions": ["a red circle"]}), '{"id": "fixed-too", "video": ']
    good = [json.dumps({"id": "fixme", "video": video, "captions": ["a red circle"]}),
            json.dumps({"id": "fixed-too", "video": video, "captions": ["a blue square"]})]
    try:
        manifest.write_text(original + "\n".join(bad) + "\n")
        first = run_build(config(world), out)
        assert (first.to_run, first.failures_by_reason["bad_record"], first.failed) == (0, 2, 5 + 2)
        assert position in {f.key for f in open_dataset(out).failures()}
        assert run_build(config(world), out).to_run == 0 and run_build(config(world), out).failed_early == 0
        manifest.write_text(original + "\n".join(good) + "\n")
        fixed = run_build(config(world), out)
        assert (fixed.changed, fixed.to_run, fixed.committed, fixed.failed) == (1, 2, GOOD + 2, 5)
        ds = open_dataset(out)
        assert {"fixme", "fixed-too"} <= set(ds.keys()) and not {"fixme", position} & {f.key for f in ds.failures()}
        assert verify(out) == []
    finally:
        manifest.write_text(original)
