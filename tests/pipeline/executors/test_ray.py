"""The Ray executor: GPU stages placed on GPUs, setup failures as one line, frames hand-off across pools.

The GPU node is advertised by ``ray.cluster_utils.Cluster`` (``num_gpus=1``); the CUDA detector is the
named test double ``gpu_probe_double`` (tests/pipeline/doubles.py), which reports the GPU ids Ray gave it.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.build import run_build
from pipeline.config import BuildConfig, apply_overrides
from pipeline.synthetic.generate import generate
from schemas.store import open_dataset
from tests.processes import cmdline, reapers_of, wait_for_polls
from tests.ray_clusters import DOUBLES, LOOPBACK

REPO = Path(__file__).resolve().parents[3]
QUIET_START_S = 1.5   # a fresh Python importing Ray and the pipeline, on a quiet 2-core machine
# Ray runs its worker processes at niceness 15 (its worker_niceness default): under other processes' load they get
# far less CPU than a process at niceness 0, so the pace is measured at theirs.
RAY_WORKER_NICENESS = 15
PACE_TTL_S = 60.0      # a measured pace is reused this long, then measured again
_paces: list[tuple[float, float]] = []   # (when measured, pace)


def pace() -> float:
    """How much slower than quiet this machine is now for a Ray worker (never below 1): a fresh Python at
    Ray's worker niceness importing Ray and the pipeline, timed, over :data:`QUIET_START_S`. Measured again
    once the last measurement is over :data:`PACE_TTL_S` old, so a deadline asked for late in a session
    follows the load of that moment, not the load when the first test ran. The largest measurement of the
    last two TTLs is used, so a load that eased a moment ago does not shorten the deadlines of a test that
    started under it."""
    if not _paces or time.monotonic() - _paces[-1][0] > PACE_TTL_S:
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", f"import os; os.nice({RAY_WORKER_NICENESS}); import ray, pipeline.build"],
                       cwd=REPO, check=True, timeout=3600)
        _paces.append((time.monotonic(), max(1.0, (time.monotonic() - started) / QUIET_START_S)))
    # never empty: the last measurement is at most one TTL old here
    return max(value for when, value in _paces if time.monotonic() - when <= 2 * PACE_TTL_S)


def slow(seconds: float) -> float:
    """A deadline: what ``seconds`` on a quiet machine is at this machine's measured pace (every deadline
    in this file: a run under load ~30 takes proportionally longer, and must still pass)."""
    return seconds * pace()


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "synthetic"
    generate(root, 2, seed=3, duration=2.0, fps=4, width=160, height=120, objects_max=2)
    return root


def tiny_config(world: Path, *assignments: str):
    return apply_overrides(BuildConfig(), ["dataset.name=synthetic", f"dataset.data_root={world}", "run.quiet=true",
                                           *assignments])


@pytest.mark.slow
def test_a_cuda_stage_gets_a_gpu_actor_on_the_gpu_node(tiny_world, tmp_path, loopback, loopback_probe):
    """On the session's shared cluster (tests/ray_clusters.py: CPU nodes only) with a GPU node added for
    this test and taken away after it."""
    import ray

    for old in loopback_probe.glob("gpu-*.json"):
        old.unlink()
    gpu_node = loopback.add_node(num_cpus=1, num_gpus=1, node_ip_address=LOOPBACK)
    try:
        cfg = tiny_config(tiny_world, "detect.name=gpu_probe_double", "detect.device=cuda",
                          f"run.ray_address={loopback.address}")
        result = run_build(cfg, tmp_path / "out")
        assert result.committed == 2 and result.failed == 0
        [report] = [json.loads(p.read_text()) for p in loopback_probe.glob("gpu-*.json")]
        assert report["gpu_ids"] and report["node"] == gpu_node.node_id
    finally:
        if ray.is_initialized():
            ray.shutdown()
        loopback.remove_node(gpu_node)
        for old in loopback_probe.glob("gpu-*.json"):
            old.unlink()


@pytest.mark.slow
def test_a_stage_that_cannot_start_in_a_worker_is_one_line_exit_2(tiny_world, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "FINSTA_PLUGINS": DOUBLES}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "cli.py", "build-sgs", "--dataset", "synthetic", "--data-root",
                           str(tiny_world), "--out", str(out), "--detector", "broken_setup_double", "--num-cpus", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=slow(300), env=env)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert errors == ["error: stage detect cannot start: weights /models/missing.pth not found on this node: "
                      "fix --set detect.weights=PATH"], done.stderr
    assert time.monotonic() - started < slow(120)
    assert open_dataset(out).failures() == [] and len(open_dataset(out)) == 0   # no sample marked failed


def test_preflight_refuses_a_missing_package_before_ray_starts(tiny_world, tmp_path):
    pytest.importorskip("ray")
    try:
        import detectron2  # noqa: F401
        pytest.skip("detectron2 is installed here")
    except ImportError:
        pass
    started = time.monotonic()
    done = subprocess.run([sys.executable, "cli.py", "build-sgs", "--dataset", "synthetic", "--data-root",
                           str(tiny_world), "--out", str(tmp_path / "out"), "--detector", "detectron2"],
                          cwd=REPO, capture_output=True, text=True, timeout=slow(120))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: stage detect cannot start: the detectron2 "
                                                           "detector needs detectron2")
    assert len(done.stderr.strip().splitlines()) == 1 and time.monotonic() - started < slow(30)


def test_frames_reach_a_pixel_scorer_in_another_pool(tiny_world, tmp_path, monkeypatch):
    """Sequential executor, one pool per stage: the scorer after the caption parser still gets crops."""
    probe = tmp_path / "probe"
    probe.mkdir()
    monkeypatch.setenv("FINSTA_PLUGINS", DOUBLES)
    monkeypatch.setenv("FINSTA_TEST_PROBE_DIR", str(probe))
    cfg = tiny_config(tiny_world, "run.executor=sequential", "run.pools=each",
                      "merge_hsg.scorer.name=pixel_probe_double")
    assert run_build(cfg, tmp_path / "out").committed == 2
    [calls] = [json.loads(p.read_text()) for p in probe.glob("crops-*.json")]
    assert calls and all(count > 0 for count in calls)


# ---------------------------------------------------------------- issue 18: bounded samples under Ray
def mixed_world(root: Path, world: Path, bad: dict[str, Path]) -> Path:
    """A manifest: the tiny world's two good videos with ``bad`` clips between them (id → path)."""
    captions = json.loads((world / "captions.json").read_text())
    good = [{"id": vid, "video": str(world / "videos" / f"{vid}.mp4"), "captions": entry["sentences"]}
            for vid, entry in sorted(captions.items())]
    lines = [good[0]] + [{"id": key, "video": str(path), "captions": ["a red circle"]}
                         for key, path in bad.items()] + good[1:]
    manifest = root / "mixed.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return manifest


def manifest_config(manifest: Path, *assignments: str):
    return apply_overrides(BuildConfig(), ["dataset.name=manifest", f"dataset.data_root={manifest}",
                                           "run.quiet=true", "run.num_cpus=2", *assignments])


@pytest.mark.slow
def test_samples_that_kill_or_hang_their_worker_are_retried_then_recorded_and_the_rest_committed(
        tiny_world, tmp_path, monkeypatch):
    from tests.pipeline.doubles import HANG_SIZE, KILL_SIZE
    from tests.stages.video_fixtures import make_video

    monkeypatch.setenv("FINSTA_PLUGINS", DOUBLES)
    manifest = mixed_world(tmp_path, tiny_world, {
        "poison": make_video(tmp_path / "poison.mp4", seconds=1.0, fps=4, size=KILL_SIZE),
        "stuck": make_video(tmp_path / "stuck.mp4", seconds=1.0, fps=4, size=HANG_SIZE)})
    budget = round(slow(3))   # a good sample's stages, at this machine's pace, stay well within it
    started = time.monotonic()
    result = run_build(manifest_config(manifest, "detect.name=poison_double", "run.max_sample_retries=1",
                                       f"run.stage_timeout_s={budget}"), tmp_path / "out")
    assert time.monotonic() - started < slow(300)
    ds = open_dataset(tmp_path / "out")
    assert sorted(ds.keys()) == sorted(json.loads((tiny_world / "captions.json").read_text()))
    failures = {f.key: f for f in ds.failures()}
    # A worker SIGKILLed right after decode returned can take decode's reply with it (the reply is sent
    # after the call, from another thread), so the row may name decode, the stage before the crash.
    poison_stage = failures["poison"].stage
    assert poison_stage in ("decode", "detect")
    assert {k: (f.stage, f.error_type) for k, f in failures.items()} == {"poison": (poison_stage, "worker_lost"),
                                                                         "stuck": ("detect", "timeout")}
    assert failures["poison"].message.startswith(f"the worker died while running {poison_stage} on this sample")
    assert failures["poison"].message.endswith("(2 attempts)") and failures["stuck"].message.endswith("(2 attempts)")
    assert f"budget of {budget}s" in failures["stuck"].message
    assert result.failures_by_reason == {"worker_lost": 1, "timeout": 1}


@pytest.mark.slow
def test_a_replacement_worker_that_dies_while_starting_is_replaced_and_the_run_goes_on(tiny_world, tmp_path,
                                                                                       monkeypatch):
    """Issue 26 item 4: the OOM killer takes a worker (the poison clip) and then its replacement while it
    starts; the replacement held no sample, so another starts, the poison clip is charged its two attempts
    and every good clip is committed (before: exit 2, "died while starting")."""
    from tests.pipeline.doubles import KILL_SIZE
    from tests.stages.video_fixtures import make_video

    probe = tmp_path / "probe"
    probe.mkdir()
    monkeypatch.setenv("FINSTA_PLUGINS", DOUBLES)
    monkeypatch.setenv("FINSTA_TEST_PROBE_DIR", str(probe))
    manifest = mixed_world(tmp_path, tiny_world, {
        "poison": make_video(tmp_path / "poison.mp4", seconds=1.0, fps=4, size=KILL_SIZE)})
    run_build(manifest_config(manifest, "detect.name=setup_killer_double", "run.max_sample_retries=1"),
              tmp_path / "out")
    assert sorted(p.name for p in probe.glob("setup-*")) == ["setup-1", "setup-2", "setup-3", "setup-4"]
    ds = open_dataset(tmp_path / "out")
    assert sorted(ds.keys()) == sorted(json.loads((tiny_world / "captions.json").read_text()))
    [failure] = ds.failures()
    assert (failure.key, failure.error_type) == ("poison", "worker_lost")
    assert failure.message.endswith("(2 attempts)")


@pytest.mark.slow
def test_an_8192x8192_clip_between_good_clips_is_decoded_within_the_frame_cap(tiny_world, tmp_path):
    bomb = tmp_path / "bomb.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=0x3366aa:s=8192x8192:r=4",
                    "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(bomb)],
                   check=True, timeout=slow(300))
    assert bomb.stat().st_size < 400_000   # a small file that is 200 MB per decoded RGB frame
    manifest = mixed_world(tmp_path, tiny_world, {"bomb": bomb})
    result = run_build(manifest_config(manifest, "decode.fps=2", "detect.name=color"), tmp_path / "out")
    ds = open_dataset(tmp_path / "out")
    assert {*json.loads((tiny_world / "captions.json").read_text())} <= set(ds.keys())
    assert "bomb" in ds.keys() or [f.key for f in ds.failures()] == ["bomb"]
    assert result.sample_counts["videos_downscaled_to_max_pixels"] == 1
    # 4 frames of 8192×8192 would be 805 MB of RGB; capped at 1920·1080 pixels they are 25 MB
    assert result.stage_bytes["decode"] < 4 * 1920 * 1080 * 3 + 2 * 8 * 160 * 120 * 3


# ---------------------------------------------------------------- issue 18: Ray itself
@pytest.mark.slow
def test_the_default_local_ray_is_this_runs_own_its_console_is_quiet_and_a_rerun_skips_ray(tiny_world, tmp_path):
    """With another Ray recorded on this machine (a `ray start`, what a bare ray.init() would join), a build
    starts and uses its own: no driver of ours ever joined the other one (each driver that joins a cluster
    leaves its ``python-core-driver-*.log`` in that cluster's session logs). Its console holds finsta's lines
    only, and a rerun with nothing to do never reaches Ray."""
    ray_tmp = Path(f"/tmp/frt{os.getpid()}")          # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    started = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
                              "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats"], env=env,
                             capture_output=True, text=True, timeout=slow(180))
    try:
        assert started.returncode == 0, started.stderr
        assert (ray_tmp / "ray" / "ray_current_cluster").is_file()   # what a bare ray.init() would join
        other = (ray_tmp / "ray" / "session_latest").resolve() / "logs"
        assert other.is_dir()
        command = [sys.executable, "cli.py", "build-sgs", "--dataset", "synthetic", "--data-root", str(tiny_world),
                   "--out", str(tmp_path / "out"), "--num-cpus", "2", "--quiet"]
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=slow(300))
        assert done.returncode == 0, done.stderr
        assert [line for line in done.stderr.splitlines() if not line.startswith("[finsta] ")] == [], done.stderr
        assert not list(other.glob("python-core-driver-*")), sorted(p.name for p in other.iterdir())
        assert (ray_tmp / "ray" / "session_latest").resolve() / "logs" != other    # it started a Ray of its own
    finally:
        kill_ray_under(ray_tmp)   # never `ray stop`: it ends every Ray on the machine, other people's too
        shutil.rmtree(ray_tmp, ignore_errors=True)
    started = time.monotonic()
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=slow(300),
                           env={**os.environ, "RAY_ADDRESS": "127.0.0.1:1"})   # any attempt to reach Ray would fail
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("this run: nothing to do (skipped 2 committed before)"), again.stdout
    assert time.monotonic() - started < slow(30)


def kill_ray_under(ray_tmp: Path) -> None:
    """SIGKILL the processes of the Ray that `ray start` put under ``ray_tmp``, and everything below them."""
    from schemas.reaper import _descendants

    heads = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and str(ray_tmp) in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                heads.append(int(entry))
        except OSError:
            pass
    victims = set(heads)
    for pid in heads:
        victims |= set(_descendants(pid))
    for pid in victims - {os.getpid()}:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def test_a_ray_address_that_does_not_answer_is_one_line_within_seconds(tiny_world, tmp_path):
    started = time.monotonic()
    done = subprocess.run([sys.executable, "cli.py", "build-sgs", "--dataset", "synthetic", "--data-root",
                           str(tiny_world), "--out", str(tmp_path / "out"), "--ray-address", "127.0.0.1:1"],
                          cwd=REPO, capture_output=True, text=True, timeout=slow(120))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: cannot reach a Ray cluster at 127.0.0.1:1: Connection "
                                                "refused (is `ray start --head` running there?)"]
    assert time.monotonic() - started < slow(30)


@pytest.mark.slow
def test_a_ray_address_that_accepts_but_never_answers_ends_at_the_start_timeout(tiny_world, tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)     # accepts connections (the kernel does) and never says a word
    try:
        started = time.monotonic()
        done = subprocess.run([sys.executable, "cli.py", "build-sgs", "--dataset", "synthetic", "--data-root",
                               str(tiny_world), "--out", str(tmp_path / "out"), "--ray-address",
                               f"127.0.0.1:{server.getsockname()[1]}", "--set", "run.ray_start_timeout_s=8"],
                              cwd=REPO, capture_output=True, text=True, timeout=slow(120))
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith(
            f"error: could not start or join Ray at 127.0.0.1:{server.getsockname()[1]} within 8s "
            "(run.ray_start_timeout_s)"), done.stderr
        assert time.monotonic() - started < slow(60)
    finally:
        server.close()


@pytest.mark.slow
def test_a_driver_side_error_ends_the_run_with_one_line_and_keeps_finished_shards(tiny_world, tmp_path, monkeypatch):
    import errno

    from schemas.errors import UserError
    from schemas.store import DatasetWriter

    real, calls = DatasetWriter.write_shard, []

    def disk_full_on_the_second_shard(self, samples, failures, **options):
        calls.append(len(samples))
        if len(calls) >= 2:   # the disk stays full
            raise OSError(errno.ENOSPC, "No space left on device", str(self.root / "shards"))
        return real(self, samples, failures, **options)

    monkeypatch.setattr(DatasetWriter, "write_shard", disk_full_on_the_second_shard)
    started = time.monotonic()
    with pytest.raises(UserError, match=r"^No space left on device: .*shards; 1 samples committed this "
                                        r"run; fix it and rerun the same command to continue$"):
        run_build(tiny_config(tiny_world, "write.shard_size=1", "run.num_cpus=2"), tmp_path / "out")
    assert time.monotonic() - started < slow(180)
    import ray
    assert not ray.is_initialized()
    assert len(open_dataset(tmp_path / "out")) == 1


@pytest.mark.slow
def test_a_killed_driver_leaves_no_ray_process_behind(tiny_world, tmp_path):
    from schemas.reaper import _descendants, _stat

    probe = tmp_path / "probe"
    probe.mkdir()
    env = {**os.environ, "FINSTA_PLUGINS": DOUBLES, "FINSTA_TEST_PROBE_DIR": str(probe)}
    proc = subprocess.Popen([sys.executable, "cli.py", "build-sgs", "--dataset", "synthetic", "--data-root",
                             str(tiny_world), "--out", str(tmp_path / "out"), "--detector", "slow_setup_double",
                             "--num-cpus", "2", "--quiet"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + slow(240)
        while not any("DashboardAgent" in cmdline(pid) for pid in _descendants(proc.pid)) or \
                not any("_PoolWorker" in cmdline(pid) for pid in _descendants(proc.pid)):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.5)
        [reaper] = reapers_of(proc.pid)
        wait_for_polls(reaper)   # it has seen the whole tree
        ray_processes = {pid: started for pid, started in _descendants(proc.pid).items()
                         if "reaper.py" not in cmdline(pid)}
    finally:
        proc.kill()         # SIGKILL to the driver alone
        proc.wait()
    deadline = time.time() + slow(30)
    while True:
        alive = {pid for pid, started in ray_processes.items() if (_stat(pid) or (0, -1))[1] == started}
        if not alive or time.time() > deadline:
            break
        time.sleep(0.5)
    assert not alive, [cmdline(pid) for pid in alive]


def test_actor_requests_are_scaled_to_fit_each_node_not_the_cluster_total():
    from pipeline.executors.ray import fit_scale

    assert fit_scale([(1, 0), (1, 0)], [(1, 0), (1, 0)]) == 1.0
    # 3 CPUs in all, but 4 one-CPU actors, two of them GPU actors that only the 2-CPU GPU node takes:
    # 3/4 of a CPU each would fit the total, not the nodes; half a CPU each does
    assert fit_scale([(1, 0), (1, 0), (1, 1), (1, 1)], [(0, 0), (1, 0), (2, 2)]) == 0.5
    assert fit_scale([(2, 0)], [(1, 0), (1, 0)]) == 0.5   # two half-free nodes do not hold one whole actor


def test_the_busiest_cpu_pool_grows_on_a_free_cpu_or_takes_one_from_a_pool_half_as_busy():
    from pipeline.executors.ray import GROW_SHARE, choose_move

    assert choose_move({0: 0.95, 1: 0.3}, {0: 1, 1: 2}, 1.0, {0: 1.0, 1: 1.0}) == ("grow", 0)
    assert choose_move({0: 0.95, 1: 0.3}, {0: 1, 1: 2}, 0.5, {0: 1.0, 1: 1.0}) == ("retire", 1)
    assert choose_move({0: 0.95, 1: 0.3}, {0: 1, 1: 1}, 0.0, {0: 1.0, 1: 1.0}) is None     # its last actor stays
    assert choose_move({0: 0.95, 1: 0.6}, {0: 1, 1: 3}, 0.0, {0: 1.0, 1: 1.0}) is None     # not half as busy
    assert choose_move({0: GROW_SHARE / 2, 1: 0.1}, {0: 1, 1: 2}, 4.0, {0: 1.0, 1: 1.0}) is None   # no bottleneck


@pytest.mark.slow
def test_a_sample_that_hangs_in_a_call_of_several_batches_is_stopped_on_its_own_budget(tmp_path, monkeypatch):
    """Quick samples travel 16 batches to an actor call (``_bundle``); one of them hangs. The call must be
    stopped about one sample's budget after the hang began, as the same sample is when it runs alone (its
    retry, in the same run: the reference), not after the 16 samples' budgets summed."""
    from pipeline.executors import TIMEOUT
    from pipeline.executors import ray as executor_module
    from schemas.stop import StopSignals
    from stages.base import VideoTask
    from tests.pipeline.doubles import HANG_KEY, hang_on_key_pool

    probe = tmp_path / "probe"
    probe.mkdir()
    monkeypatch.setenv("FINSTA_TEST_PROBE_DIR", str(probe))
    monkeypatch.setattr(executor_module, "CALL_S", 3600.0)   # every call carries MAX_BUNDLE once the pace is known
    monkeypatch.setattr(executor_module, "SLACK_S", 1.0)     # in both stops alike: shorter only
    stopped = []   # (wall time, samples in the stopped call) per call stopped for its time
    real_lost = executor_module.RayExecutor._lost

    def lost(self, slot, reason, message):
        if reason == TIMEOUT:
            stopped.append((time.time(), len(slot.calls[0].batch.origin)))
        return real_lost(self, slot, reason, message)

    monkeypatch.setattr(executor_module.RayExecutor, "_lost", lost)
    budget = slow(2)   # a quick sample's call, at this machine's pace, stays well within it
    keys = [f"q{i:03d}" for i in range(120)]
    keys.insert(80, HANG_KEY)   # after the first calls measured the pool's pace
    tasks = [VideoTask(key=key, source="test", video_id=key, video_path=__file__) for key in keys]
    cfg = apply_overrides(BuildConfig(), ["run.num_cpus=2", "run.max_sample_retries=0"])
    with StopSignals() as stop:
        executor = executor_module.RayExecutor([hang_on_key_pool(2, budget)], cfg, stop)
        try:
            done = [task for task in executor.run(tasks) if task is not None]
        finally:
            executor.close()
    assert sorted(task.key for task in done) == sorted(keys)
    [failure] = [task.failure for task in done if task.failure is not None]
    assert (failure.key, failure.stage, failure.error_type) == (HANG_KEY, "hang_on_key", TIMEOUT)
    hangs = sorted(json.loads(path.read_text())["started"] for path in probe.glob("hang-*.json"))
    assert len(hangs) == 2 and len(stopped) == 2   # in a call of several batches, then alone (charged)
    (bundled_at, bundled), (alone_at, alone) = stopped
    assert bundled > 1 and alone == 1
    bundled_s, alone_s = bundled_at - hangs[0], alone_at - hangs[1]
    # before: the bundle was stopped after its 16 budgets (15 more than alone); now within a fraction of one
    assert bundled_s - alone_s < budget / 2, (bundled_s, alone_s)
