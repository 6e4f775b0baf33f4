"""Global negatives: two replicas (gloo, CPU processes) compute the one-process loss and gradient."""
from __future__ import annotations

import random
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from finsta_samples import DIMS, make_sample
from gather_replica import CONFIG, VIDEOS, batch_of, model, samples_and_dims
from finsta_model.gather import merge_batches
from schemas.store import DatasetWriter

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def varied(tmp_path_factory) -> Path:
    """11 videos of 3 to 9 frames and 1 to 3 captions (the last 3 ride along without captions): the replicas'
    batches pad frames and tokens differently."""
    rng = random.Random(7)
    root = tmp_path_factory.mktemp("gather") / "ds"
    writer = DatasetWriter(root, config={"test": "gather"}, feature_dims=DIMS)
    writer.write_shard([make_sample(rng, f"vid{i:02d}", n_frames=3 + (5 * i) % 7, n_captions=1 + i % 3)
                        for i in range(11)], failures=[])
    return root


def test_merged_replica_batches_are_the_batch_of_all_their_samples(varied):
    samples, dims = samples_and_dims(varied)
    samples = samples[:VIDEOS]
    assert len({len(s.frame_feat) for s in samples}) > 3 and len({len(s.captions) for s in samples}) > 1
    _same(batch_of(samples, dims),
          merge_batches([batch_of(samples[:3], dims), batch_of(samples[3:5], dims), batch_of(samples[5:], dims)]))
    # videos without captions (batch.video_only) merge the same way
    _same(batch_of(samples[:2], dims, samples[2:]).video_only,
          merge_batches([batch_of(samples[:1], dims, samples[2:5]).video_only,
                         batch_of(samples[1:2], dims, samples[5:]).video_only]))


def _same(whole, merged):
    for f in fields(whole):
        a, b = getattr(whole, f.name), getattr(merged, f.name)
        if isinstance(a, torch.Tensor):
            assert a.shape == b.shape and torch.equal(a, b), f.name
        elif f.name != "origin":
            assert a == b, f.name


def _run_replicas(dataset: Path, tmp: Path, world: int) -> list[dict]:
    init = tmp / "init"
    procs = [subprocess.Popen([sys.executable, str(HERE / "gather_replica.py"), str(rank), str(world), str(init),
                               str(dataset), str(tmp / f"rank{rank}.pt")]) for rank in range(world)]
    # a replica that fails leaves the others waiting in a collective: end them (no wall-clock deadline)
    while any(p.poll() is None for p in procs):
        if any(p.returncode not in (None, 0) for p in procs):
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            break
        time.sleep(0.2)
    assert [p.returncode for p in procs] == [0] * world
    return [torch.load(tmp / f"rank{rank}.pt", weights_only=True) for rank in range(world)]


@pytest.mark.slow
def test_two_replicas_compute_the_one_process_loss_and_gradient(varied, tmp_path):
    samples, dims = samples_and_dims(varied)
    net = model(dims)
    loss, parts = net.losses(batch_of(samples[:VIDEOS], dims, samples[VIDEOS:]))
    loss.backward()
    replicas = _run_replicas(varied, tmp_path, world=2)
    assert set(parts) >= {"nce", "host_nce", "osc", "ptc", "distill", "score_distill", "node_distill",
                          "align_distill", "rep_distill", "video_side", "slot_units", "rep_uncaptioned", "slot_box",
                          "total"}
    assert parts["slot_units"] > 0
    for rank in replicas:
        assert rank["parts"].keys() == parts.keys()
        for name, value in parts.items():
            assert rank["parts"][name] == pytest.approx(float(value), rel=1e-4, abs=1e-7), name
    # DDP applies the mean of the replicas' gradients: the one-process gradient
    for name, p in net.named_parameters():
        if p.grad is None:
            assert all(name not in r["grads"] for r in replicas), name
            continue
        mean = sum(r["grads"].get(name, torch.zeros_like(p.grad)) for r in replicas) / len(replicas)
        torch.testing.assert_close(mean, p.grad, rtol=1e-4, atol=1e-4 * float(p.grad.abs().max()) + 1e-9,
                                   msg=lambda m: f"{name}: {m}")
    assert CONFIG.dropout == 0.0
