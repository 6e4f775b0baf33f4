"""A Ray cluster of several nodes on this machine for tests (``ray.cluster_utils.Cluster``), as issue 25
asks: every node on 127.0.0.1, a head without CPUs (no work of ours lands there, so a test knows which
nodes hold it), Ray's health checks every second (a node that stops answering is dead within seconds,
as a user would configure), and its own short RAY_TMPDIR (Ray's socket paths must fit 107 bytes).
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

LOOPBACK = "127.0.0.1"


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
