"""A Ray cluster of several nodes on this machine for tests (``ray.cluster_utils.Cluster``), as issue 25
asks: every node on 127.0.0.1, a head without CPUs (no work of ours lands there, so a test knows which
nodes hold it), Ray's health checks every second (a node that stops answering is dead within seconds,
as a user would configure), and its own short RAY_TMPDIR (Ray's socket paths must fit 107 bytes).

The multi-node tests share one such cluster, the session fixture ``loopback`` (this module is a pytest
plugin, registered in the root conftest.py): a cluster start costs tens of seconds on a loaded 2-core
machine. Every test that uses it runs at the end of its pytest session, in collection order
(:func:`pytest_collection_modifyitems`: Ray Train's node test, then the executor's), so the cluster starts
once, nothing else runs beside it, and the test that takes the head away can be the last one. A test
leaves it as it found it (a head and two 1-CPU workers) unless it is the last.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

LOOPBACK = "127.0.0.1"
DOUBLES = "tests.pipeline.doubles"   # the named test doubles the cluster's workers can load (FINSTA_PLUGINS)
SHARED = "loopback"                  # the session fixture's name


@contextlib.contextmanager
def loopback_cluster(prefix: str, workers: int = 2, **env: str) -> Iterator:
    """A head and ``workers`` 1-CPU worker nodes; ``env`` is set while it runs (nodes inherit it). Stopped,
    with its temp folder, at the end."""
    import ray
    from ray.cluster_utils import Cluster

    ray_tmp = Path(f"/tmp/{prefix}{os.getpid()}")
    ray_tmp.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"RAY_TMPDIR": str(ray_tmp), **env}.items():
            patch.setenv(name, value)
        if ray.is_initialized():
            ray.shutdown()
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "node_ip_address": LOOPBACK, "_system_config": {
                "health_check_initial_delay_ms": 0, "health_check_period_ms": 1000,
                "health_check_failure_threshold": 3}})
        try:
            for _ in range(workers):
                cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
            yield cluster
        finally:
            if ray.is_initialized():
                ray.shutdown()
            cluster.shutdown()
            shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def loopback_probe(tmp_path_factory) -> Path:
    """A folder the cluster's workers see as $FINSTA_TEST_PROBE_DIR (the doubles write there)."""
    return tmp_path_factory.mktemp("cluster-probe")


@pytest.fixture(scope="session")
def loopback(loopback_probe):
    """The shared cluster: a head without CPUs and two 1-CPU worker nodes on 127.0.0.1; its nodes load the
    test doubles (FINSTA_PLUGINS) and write probes to ``loopback_probe``."""
    with loopback_cluster("flc", FINSTA_PLUGINS=DOUBLES, FINSTA_TEST_PROBE_DIR=str(loopback_probe)) as cluster:
        yield cluster


def pytest_collection_modifyitems(items: list) -> None:
    """The tests on the shared cluster last, in their collection order (see the module docstring)."""
    items[:] = [item for item in items if SHARED not in getattr(item, "fixturenames", ())] + \
               [item for item in items if SHARED in getattr(item, "fixturenames", ())]
