"""`train --ray-workers 2` on a cluster of two worker nodes (this machine, every node on 127.0.0.1): a worker
node lost mid-run costs one restart from the last checkpoint, and the run ends as an uninterrupted one.

Its own file (the other distributed tests share one local Ray, which a driver joined here would reuse), on the
session's shared multi-node cluster (tests/ray_clusters.py ``loopback``, run at the end of the session). The
head has no CPU, so each of the two 1-CPU worker nodes holds one training worker; the test takes away the
node of rank 1 while that rank holds after step 5 (``crash_drill`` with ``hold``) and adds a new node in its
place, as an autoscaler would (the two workers need two CPUs to start again), which leaves the cluster as it
found it.
"""
from __future__ import annotations

import json
import threading
import time

import pytest

from conftest import write_dataset
from finsta_model.checkpoint import load_checkpoint
from tests.finsta_model.test_distributed import CONFIG, _global_reference, _metrics
from tests.pipeline.executors.test_ray import slow
from tests.ray_clusters import LOOPBACK

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow
from finsta_model.distributed import train_distributed  # noqa: E402


def test_a_lost_worker_node_costs_one_restart_from_the_last_checkpoint_and_the_same_result(loopback, tmp_path):
    cluster = loopback
    dataset = write_dataset(tmp_path / "ds", n_videos=48, per_shard=6)
    marker, hold = tmp_path / "held", tmp_path / "hold"
    hold.touch()
    outcome: dict = {}

    def train() -> None:   # in a thread: Ray's node objects (add_node) need the main thread's signal handlers
        try:
            outcome["summary"] = train_distributed(
                dataset, tmp_path / "run", CONFIG, workers=2, address=cluster.address, max_failures=1, progress=False,
                crash_drill={"rank": 1, "step": 5, "marker": str(marker), "hold": str(hold)})
        except BaseException as error:  # reported by the main thread
            outcome["error"] = error

    trainer = threading.Thread(target=train, daemon=True)
    trainer.start()
    try:
        # once rank 1 holds after step 5 (the marker: its process and node): its node killed, a new one added
        deadline = time.monotonic() + slow(300)
        while not (marker.exists() and marker.read_text().endswith("}")) and trainer.is_alive():
            assert time.monotonic() < deadline, "rank 1 never held after step 5"
            time.sleep(0.05)
        assert marker.exists(), f"the run ended before rank 1 held: {outcome}"
        node = json.loads(marker.read_text())["node"]
        [victim] = [n for n in cluster.list_all_nodes() if n.node_id == node]
        cluster.remove_node(victim, allow_graceful=False)
        cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
    finally:
        hold.unlink(missing_ok=True)
        trainer.join(timeout=slow(600))
    assert "error" not in outcome, outcome.get("error")
    summary = outcome["summary"]
    assert summary["restarts"] == 1 and summary["steps"] == 8
    run = tmp_path / "run"
    assert [line["step"] for line in _metrics(run)] == list(range(1, 9))
    # what an uninterrupted 2-replica run computes, term by term (test_distributed.py: the run equals this reference)
    reference = _global_reference(dataset, CONFIG, load_checkpoint(run).dims, world=2)
    for line, parts in zip(_metrics(run), reference, strict=True):
        for name, value in parts.items():   # metrics.jsonl rounds to 6 decimals
            assert line[name] == pytest.approx(value, rel=1e-4, abs=1e-6), (line["step"], name)
