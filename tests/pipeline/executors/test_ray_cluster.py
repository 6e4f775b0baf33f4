"""The Ray executor on a multi-node cluster on this machine: a node lost, nodes joining, GPU nodes of different sizes.

The session's shared ``ray.cluster_utils.Cluster`` (tests/ray_clusters.py ``loopback``: a head without CPUs
and two 1-CPU worker nodes, all on 127.0.0.1, its own RAY_TMPDIR; its tests run at the end of the session,
so its nodes live only while they run). The tests here change it in the order they run (the input test
adds a node and takes it away, the balancing test leaves it as it was, the node-loss test removes a worker
node, the join tests add a CPU node, then GPU nodes, the last one removes the head). The detector is the named test double ``cluster_probe_double``
(tests/pipeline/doubles.py): it logs each video's node and waits while a ``hold`` file exists, so a test
moves nodes while samples are provably held, not at a guessed moment.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.build import run_build
from pipeline.config import BuildConfig, apply_overrides
from pipeline.plan import Pool
from schemas.stop import StopSignals
from pipeline.synthetic.generate import generate
from schemas.store import open_dataset
from stages.base import Resources, VideoTask
from tests.pipeline.executors.test_ray import REPO, slow
from tests.ray_clusters import DOUBLES, LOOPBACK

pytestmark = pytest.mark.slow
VIDEOS = 8


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cluster") / "synthetic"
    generate(root, VIDEOS, seed=5, duration=1.0, fps=4, width=96, height=72, objects_max=2)
    return root


@pytest.fixture
def probe(loopback_probe) -> Path:
    return loopback_probe


@pytest.fixture
def cluster(loopback):
    """The shared cluster (tests/ray_clusters.py): a head without CPUs (every held sample is on a worker
    node) and two 1-CPU worker nodes, all on 127.0.0.1; the nodes load the doubles and write to ``probe``."""
    return loopback


def clean(probe: Path) -> None:
    for path in probe.iterdir():
        path.unlink()


def detected_on(probe: Path) -> dict[str, int]:
    """Videos the detector saw, per Ray node."""
    seen: dict[str, int] = {}
    for path in probe.glob("detected-*.txt"):
        for node in path.read_text().split():
            seen[node] = seen.get(node, 0) + 1
    return seen


def wait_for(condition, what: str, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def build(world: Path, out: Path, cluster, probe: Path, *assignments: str) -> subprocess.Popen:
    """build-sgs on the cluster, as a user runs it (exit code, display, stats.json), started in the background."""
    sets = [arg for assignment in ("run.stage_timeout_s=3600", *assignments) for arg in ("--set", assignment)]
    # A budget so long that only Ray's death events can explain a quick end.
    return subprocess.Popen([sys.executable, "cli.py", "build-sgs", "--dataset", "synthetic", "--data-root", str(world),
                             "--out", str(out), "--ray-address", cluster.address, "--detector", "cluster_probe_double",
                             "--quiet", *sets], cwd=REPO, env={**os.environ, "FINSTA_PLUGINS": DOUBLES,
                                                                "FINSTA_TEST_PROBE_DIR": str(probe)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, probe: Path) -> tuple[str, str]:
    """The build's output once it ended (the hold released whatever happened, so it cannot wait forever)."""
    (probe / "hold").unlink(missing_ok=True)
    out, err = proc.communicate(timeout=slow(600))
    assert proc.returncode == 0, err
    return out, err


def test_an_input_only_the_driver_has_stops_the_run_in_one_line_naming_it_and_the_node(
        cluster, world, probe, tmp_path):
    """First in the file (three 1-CPU nodes, so three 1-CPU actors are one a node): a third worker node
    without the driver's file system, a raylet in its own mount namespace where an empty tmpfs hides the
    videos folder (as on a machine that does not mount it). Its actor checks the inputs before loading any
    model; the run stops in one line. Needs unshare(1) and the right to mount (root here); skipped where a
    namespace cannot be made. The node is gone again when the test ends."""
    videos = world / "videos"
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "--propagation", "private", "mount", "-t", "tmpfs", "none", str(videos)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot make a mount namespace here (unshare -m, mount)")
    before = alive_nodes(cluster)
    node = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                             'mount -t tmpfs none "$0" && exec "$1" -c "$2" "$3"', str(videos), sys.executable,
                             RAYLET, cluster.address], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: alive_nodes(cluster) > before or node.poll() is not None, "the raylet did not join",
                 slow(120))
        proc = build(world, tmp_path / "out", cluster, probe, "run.pools=one", "run.workers=3")
        _, err = proc.communicate(timeout=slow(300))
    finally:
        node.terminate()          # the script stops its raylet and workers
        node.wait(timeout=slow(60))
        wait_for(lambda: alive_nodes(cluster) == before, "the raylet did not leave", slow(60))
    assert proc.returncode == 2, err
    [line] = [line for line in err.splitlines() if not line.startswith("[finsta] ")]
    assert line.startswith(f"error: input {videos}/") and "cannot be read on Ray node " in line, line
    assert "only where the driver runs" in line


# A worker node as ray.cluster_utils.Cluster.add_node starts one, in a process of its own (so that it can
# run in another mount namespace); SIGTERM stops it. Not `ray start --address 127.0.0.1:PORT`: Ray's CLI
# rewrites a loopback address to the machine's network IP (ray-project/ray#59110).
RAYLET = f"""
import signal, sys, time
from ray._private.node import Node
from ray._private.parameter import RayParams
params = RayParams(gcs_address=sys.argv[1], node_ip_address="{LOOPBACK}", num_cpus=1, num_gpus=0,
                   object_store_memory=150 * 2**20, min_worker_port=0, max_worker_port=0, include_log_monitor=False,
                   node_manager_port=0)
params.dashboard_agent_listen_port = None
node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(1)
"""


def alive_nodes(cluster) -> int:
    return sum(1 for node in cluster.global_state.node_table() if node["Alive"])


class HoldStage:
    """Test double for a stage whose samples take long: it waits while ``hold-<pool>`` exists in the probe
    folder (at most 600 s), so a test decides which pool is the bottleneck and when."""

    def __init__(self, pool: str):
        self.name, self.pool = "hold", pool

    def setup(self) -> None:
        pass

    def process_batch(self, tasks: list) -> list:
        hold, waited = Path(os.environ["FINSTA_TEST_PROBE_DIR"]) / f"hold-{self.pool}", time.monotonic()
        while hold.exists() and time.monotonic() - waited < 600:
            time.sleep(0.02)
        return tasks


class HoldPool(Pool):
    def build(self) -> list:
        return [HoldStage(self.name)]


def test_balancing_retires_an_idle_actor_of_a_pool_half_as_busy_for_the_bottleneck(cluster, probe, monkeypatch):
    """Two CPU pools sized by the cluster (run.workers=0, half a CPU an actor) on the two 1-CPU worker nodes:
    while pool b holds its samples it grows onto both free halves; then a holds and b is idle, no CPU is free,
    so an idle actor of b is retired and a grows onto its CPU. Driven in-process (the pools are the test's own),
    balancing every half second instead of every BALANCE_S."""
    from pipeline.executors import ray as executor_module

    clean(probe)
    monkeypatch.setattr(executor_module, "BALANCE_S", 0.5)
    pools = [HoldPool(name=name, stage_names=["hold"], sections=[None], resources=Resources(cpus=0.5), batch_size=1,
                      workers=0, drop_images_after=None, images_leave=False, time_budgets=[3600.0])
             for name in ("a", "b")]
    cfg = apply_overrides(BuildConfig(), [f"run.ray_address={cluster.address}"])
    tasks = [VideoTask(key=f"s{i:03d}", source="test", video_id=f"s{i:03d}", video_path=__file__) for i in range(200)]
    (probe / "hold-b").touch()
    done, phase, deadline = [], "b holds", time.monotonic() + slow(300)
    with StopSignals() as stop:
        executor = executor_module.RayExecutor(pools, cfg, stop)
        try:
            for task in executor.run(tasks):
                if task is not None:
                    done.append(task)
                if phase == "b holds" and executor.grown[1] >= 2:        # b took the free CPUs
                    swapped = (executor.retired[1], executor.grown[0])    # (a may have grown and been retired)
                    (probe / "hold-a").touch()
                    (probe / "hold-b").unlink()
                    phase, deadline = "a holds", time.monotonic() + slow(300)
                elif phase == "a holds" and executor.retired[1] > swapped[0] and executor.grown[0] > swapped[1]:
                    monkeypatch.setattr(executor_module, "BALANCE_S", 3600.0)   # no move after this one
                    (probe / "hold-a").unlink()
                    phase = "released"
                assert phase == "released" or time.monotonic() < deadline, (phase, executor.report())
            report = executor.report()
        finally:
            executor.close()
            clean(probe)
    assert sorted(task.key for task in done) == [task.key for task in tasks]
    assert all(task.failure is None for task in done)
    a, b = report["pools"]["a"], report["pools"]["b"]
    # b retired an idle actor after the swap, a grew after it; every pool's actors are what the moves made
    assert b["retired"] > swapped[0] and a["grown"] > swapped[1], report
    assert all(pool["actors"] == 1 + pool["grown"] - pool["retired"] for pool in (a, b)), report


def test_a_lost_worker_node_costs_one_retry_of_its_samples_and_the_run_ends_with_every_key(
        cluster, world, probe, tmp_path):
    clean(probe)
    (probe / "hold").touch()
    workers = [node for node in cluster.list_all_nodes() if node is not cluster.head_node]
    # one pool, one 1-CPU actor on each worker node (the head has no CPU): whichever holds a sample is a victim
    proc = build(world, tmp_path / "out", cluster, probe, "run.workers=2", "run.pools=one")
    lines: list[str] = []           # stderr as it comes (line-buffered): the run's note that the node was lost
    reader = threading.Thread(target=lambda: [lines.append(line) for line in proc.stderr], daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(node.node_id in detected_on(probe) for node in workers) or proc.poll() is not None,
                 "no worker node got a sample", slow(300))
        [victim] = [node for node in workers if node.node_id in detected_on(probe)][:1]
        cluster.remove_node(victim, allow_graceful=False)   # a kill, not a drain
        lost = time.monotonic()
        # the survivor's samples stay held until the run says the node was lost (else, on a quiet machine, the
        # retried samples could finish before Ray's health checks declare the node dead)
        wait_for(lambda: any("was lost" in line for line in lines) or proc.poll() is not None,
                 "the run did not notice the lost node", slow(60))
        noticed = time.monotonic()
    finally:
        (probe / "hold").unlink(missing_ok=True)
        proc.wait(timeout=slow(600))
        reader.join(timeout=slow(60))
    err = "".join(lines)
    assert proc.returncode == 0, err
    assert noticed - lost < slow(30)
    ds = open_dataset(tmp_path / "out")
    keys = list(ds.keys())
    assert sorted(keys) == sorted(json.loads((world / "captions.json").read_text())) and len(set(keys)) == VIDEOS
    assert ds.failures() == []      # charged one retry each (run.max_sample_retries=1), then done elsewhere
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["cluster"]["nodes_lost"] == 1
    assert f"[finsta] Ray node {victim.node_id[:12]}" in err and "was lost; its samples are retried on the other " \
        "nodes" in err, err


def test_a_cpu_pool_sized_by_the_cluster_grows_onto_a_node_that_joins_mid_run(cluster, world, probe, tmp_path):
    """run.workers=0: one actor to start (the one worker node left has one CPU), held busy; a 1-CPU node
    joins, and the busiest pool gets an actor there, which takes samples, without a restart."""
    clean(probe)
    (probe / "hold").touch()
    proc = build(world, tmp_path / "out", cluster, probe, "run.workers=0", "run.pools=one")
    try:
        wait_for(lambda: detected_on(probe) or proc.poll() is not None, "no sample reached the detector", slow(300))
        joined = cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
        wait_for(lambda: joined.node_id in detected_on(probe) or proc.poll() is not None,
                 "the node that joined took no sample", slow(300))
    finally:
        out, err = finish(proc, probe)
    assert len(open_dataset(tmp_path / "out")) == VIDEOS
    report = json.loads((tmp_path / "out" / "stats.json").read_text())["cluster"]
    [pool] = report["pools"].values()
    assert report["nodes_joined"] == 1 and pool["actors"] == 2 and pool["grown"] == 1, report


def test_gpu_pools_are_sized_per_node_and_grow_onto_a_gpu_node_that_joins_mid_run(cluster, world, probe, tmp_path):
    """Two GPUs on one node, one on a node that joins while the run holds samples: three one-GPU actors,
    none on a node without a GPU, the third used once it starts. The CPU pools keep run.workers."""
    clean(probe)
    (probe / "hold").touch()
    two = cluster.add_node(num_cpus=2, num_gpus=2, node_ip_address=LOOPBACK)
    proc = build(world, tmp_path / "out", cluster, probe, "detect.device=cuda")
    try:
        wait_for(lambda: detected_on(probe) or proc.poll() is not None, "no sample reached the detector", slow(300))
        joined = cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address=LOOPBACK)
        wait_for(lambda: any(json.loads(p.read_text())["node"] == joined.node_id for p in probe.glob("gpu-*.json"))
                 or proc.poll() is not None, "no GPU actor started on the node that joined", slow(300))
    finally:
        out, err = finish(proc, probe)
    assert len(open_dataset(tmp_path / "out")) == VIDEOS
    actors = [json.loads(p.read_text()) for p in probe.glob("gpu-*.json")]
    assert sorted(a["node"] for a in actors) == sorted([two.node_id, two.node_id, joined.node_id])
    assert all(a["gpu_ids"] for a in actors)
    assert detected_on(probe).get(joined.node_id, 0) >= 1       # the new node's actor took samples
    report = json.loads((tmp_path / "out" / "stats.json").read_text())["cluster"]
    assert report["nodes_joined"] == 1 and f"Ray node {joined.node_id[:12]}" in err, err
    [gpu_pool] = [pool for name, pool in report["pools"].items() if "detect" in name]
    assert gpu_pool["actors"] == 3 and 0 < gpu_pool["busy_share"] <= 1


def test_losing_the_head_node_ends_the_run_with_one_line_and_the_rerun_resumes(cluster, world, probe, tmp_path):
    """Last in the file: it takes the cluster's head away. Three samples committed by a first run, the rest
    held when the head goes; the run ends in one line (exit 2), and a rerun (in this process, sequential) runs
    only the other five."""
    clean(probe)
    out = tmp_path / "out"
    first = build(world, out, cluster, probe, "dataset.limit=3")
    finish(first, probe)
    clean(probe)
    (probe / "hold").touch()
    proc = build(world, out, cluster, probe)
    try:
        wait_for(lambda: detected_on(probe) or proc.poll() is not None, "no sample reached the detector", slow(300))
        cluster.remove_node(cluster.head_node, allow_graceful=False)
        lost = time.monotonic()
        _, err = proc.communicate(timeout=slow(600))
    finally:
        (probe / "hold").unlink(missing_ok=True)
    assert proc.returncode == 2, err
    assert time.monotonic() - lost < slow(30)      # not Ray's minute of reconnecting
    assert [line for line in err.splitlines() if not line.startswith("[finsta] ")] == [
        line for line in err.splitlines() if line.startswith("error: lost the Ray head node at ")], err
    assert len(open_dataset(out)) == 3
    # the rerun in this process on the sequential executor (no Ray: the head is gone; how the rerun executes
    # does not change what resuming is, the store and the plan decide it)
    again = run_build(apply_overrides(BuildConfig(), ["dataset.name=synthetic", f"dataset.data_root={world}",
                                                      "detect.name=cluster_probe_double", "run.stage_timeout_s=3600",
                                                      "run.executor=sequential", "run.quiet=true"]), out)
    assert (again.skipped_committed, again.to_run, again.committed) == (3, VIDEOS - 3, VIDEOS)
    assert len(open_dataset(out)) == VIDEOS
