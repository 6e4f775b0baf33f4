"""The Ray executor: GPU stages placed on GPUs, setup failures as one line, frames hand-off across pools.

The GPU node is advertised by ``ray.cluster_utils.Cluster`` (``num_gpus=1``); the CUDA detector is the
named test double ``gpu_probe_double`` (tests/pipeline/doubles.py), which reports the GPU ids Ray gave it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.build import run_build
from pipeline.config import BuildConfig, apply_overrides
from pipeline.synthetic.generate import generate
from schemas.store import open_dataset

REPO = Path(__file__).resolve().parents[3]
DOUBLES = "tests.pipeline.doubles"


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "synthetic"
    generate(root, 2, seed=3, duration=2.0, fps=4, width=160, height=120, objects_max=2)
    return root


def tiny_config(world: Path, *assignments: str):
    return apply_overrides(BuildConfig(), ["dataset.name=synthetic", f"dataset.data_root={world}", "run.quiet=true",
                                           *assignments])


@pytest.mark.slow
def test_a_cuda_stage_gets_a_gpu_actor_on_the_gpu_node(tiny_world, tmp_path, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    probe = tmp_path / "probe"
    probe.mkdir()
    monkeypatch.setenv("FINSTA_PLUGINS", DOUBLES)
    monkeypatch.setenv("FINSTA_TEST_PROBE_DIR", str(probe))
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    gpu_node = cluster.add_node(num_cpus=1, num_gpus=1)
    try:
        cfg = tiny_config(tiny_world, "detect.name=gpu_probe_double", "detect.device=cuda",
                          f"run.ray_address={cluster.address}")
        result = run_build(cfg, tmp_path / "out")
        assert result.committed == 2 and result.failed == 0
        [report] = [json.loads(p.read_text()) for p in probe.glob("gpu-*.json")]
        assert report["gpu_ids"] and report["node"] == gpu_node.node_id
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_a_stage_that_cannot_start_in_a_worker_is_one_line_exit_2(tiny_world, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "FINSTA_PLUGINS": DOUBLES}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "cli.py", "build-sgs", "--dataset", "synthetic", "--data-root",
                           str(tiny_world), "--out", str(out), "--detector", "broken_setup_double", "--num-cpus", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert errors == ["error: stage detect cannot start: weights /models/missing.pth not found on this node: "
                      "fix --set detect.weights=PATH"], done.stderr
    assert time.monotonic() - started < 120
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
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: stage detect cannot start: the detectron2 "
                                                           "detector needs detectron2")
    assert len(done.stderr.strip().splitlines()) == 1 and time.monotonic() - started < 30


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
