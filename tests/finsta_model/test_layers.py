"""Encoders: graph attention, GTrm edge sensitivity, STGD motion kernel, R-GTrm causality, losses."""
from __future__ import annotations

import copy

import torch
from torch import nn

from finsta_model.config import TrainConfig
from finsta_model.data import ShardStream, make_loader
from finsta_model.gtrm import GraphTransformerLayer, GTrm, segment_softmax
from finsta_model.losses import predicate_temporal_contrast, video_text_nce
from finsta_model.model import FinstaModel
from finsta_model.rgtrm import DSGEncoder
from finsta_model.stgd import GaussianDifferential

torch.manual_seed(0)


def _batch(root, size=6):
    return next(iter(make_loader(ShardStream(root, batch_size=size, seed=0))))


def test_segment_softmax_normalises_per_segment():
    scores = torch.randn(7, 3)
    index = torch.tensor([0, 0, 1, 1, 1, 3, 3])
    w = segment_softmax(scores, index, 4)
    sums = torch.zeros(4, 3).index_add(0, index, w)
    assert torch.allclose(sums[[0, 1, 3]], torch.ones(3, 3), atol=1e-6)
    assert torch.allclose(w[:2], torch.softmax(scores[:2], 0))


def test_edge_features_modulate_attention():
    layer = GraphTransformerLayer(dim=8, heads=2, dropout=0.0).eval()
    h, e = torch.randn(3, 8), torch.randn(4, 8)
    src, dst = torch.tensor([0, 1, 2, 2]), torch.tensor([2, 2, 0, 1])
    out1, _ = layer(h, e, src, dst)
    e2 = e.clone()
    e2[0] = torch.randn(8)
    out2, _ = layer(h, e2, src, dst)
    assert not torch.allclose(out1[2], out2[2])          # node 2 receives edge 0
    assert torch.allclose(out1[0], out2[0]) and torch.allclose(out1[1], out2[1])
    bias = torch.zeros(4, 2)
    bias[0] = 5.0
    out3, _ = layer(h, e, src, dst, bias)
    assert not torch.allclose(out1[2], out3[2])


def test_gtrm_tells_subject_from_object(small_dataset):
    batch = _batch(small_dataset)
    gtrm = GTrm(text_dim=batch.node_feat.shape[1], dim=16, heads=2, layers=2, dropout=0.0).eval()
    words = nn.Embedding(512, 16)
    _, captions = gtrm(batch, words)
    swapped = copy.copy(batch)
    swapped.tedge_src, swapped.tedge_dst = batch.tedge_dst, batch.tedge_src   # reverse every edge
    _, captions2 = gtrm(swapped, words)
    assert captions.shape == (batch.cap_feat.shape[0], 16)
    assert not torch.allclose(captions, captions2)


def test_stgd_kernel_separates_moving_from_still_pairs():
    stgd = GaussianDifferential(dim=8, heads=2)

    class B:  # two objects on two frames: detection 2 ← 0 still, detection 3 ← 1 moved right
        det_box = torch.tensor([[0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.6, 0.6],
                                [0.1, 0.1, 0.2, 0.2], [0.8, 0.5, 0.9, 0.6]])
        det_prev = torch.tensor([-1, -1, 0, 1])
        edge_src = torch.tensor([0, 1, 0, 1, 2, 3, 2, 3])
        edge_dst = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])

    h, bias = stgd(torch.randn(4, 8), B)
    assert torch.allclose(bias[[0, 1, 2, 3]], torch.zeros(4, 2))       # frame 0: no predecessor, no motion
    assert torch.allclose(bias[[4, 7]], torch.zeros(2, 2))             # self-loops
    assert (bias[[5, 6]] > 0.5).all()                                  # the pair whose geometry changed
    bias.sum().backward()
    assert stgd.log_sigma.grad is not None and stgd.log_sigma.grad.abs().sum() > 0


def test_recurrent_memory_is_causal(small_dataset):
    batch = _batch(small_dataset)
    enc = DSGEncoder(det_dim=batch.det_feat.shape[1], dim=16, heads=2, layers=2, dropout=0.0).eval()
    words = nn.Embedding(512, 16)
    out = enc(batch, words)
    last = batch.det_frame.max()
    changed = copy.copy(batch)
    changed.det_feat = batch.det_feat.clone()
    # a random change (a constant shift would vanish in the input LayerNorm)
    noise = torch.randn(batch.det_feat.shape, generator=torch.Generator().manual_seed(1))
    changed.det_feat[batch.det_frame == last] += 3.0 * noise[batch.det_frame == last]
    out2 = enc(changed, words)
    assert torch.allclose(out.memory[:, :last], out2.memory[:, :last], atol=1e-5)
    assert not torch.allclose(out.memory[:, last], out2.memory[:, last])
    windows = enc.windows(out, torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([0, 2]))
    assert windows.shape == (2, 16)


def test_nce_prefers_aligned_pairs_and_uses_hard_negatives():
    video = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    cap_video = torch.tensor([0, 1, 2, 0])
    neg_of = torch.tensor([-1, -1, -1, 0])
    aligned = torch.cat([video, -video[:1]])
    shuffled = torch.cat([video[[1, 2, 0]], video[:1]])
    assert video_text_nce(video, aligned, cap_video, neg_of, 0.1) < video_text_nce(video, shuffled, cap_video,
                                                                                   neg_of, 0.1)
    confusing = torch.cat([video, video[:1]])       # the hard negative equals the true caption
    assert video_text_nce(video, confusing, cap_video, neg_of, 0.1) > video_text_nce(video, aligned, cap_video,
                                                                                     neg_of, 0.1)


def test_ptc_ignores_invalid_windows():
    pred = torch.nn.functional.normalize(torch.randn(2, 4), dim=-1)
    cands = torch.nn.functional.normalize(torch.randn(2, 3, 4), dim=-1)
    cands[:, 0] = pred
    valid = torch.tensor([[True, True, False], [True, False, False]])
    loss = predicate_temporal_contrast(pred, cands, valid, 0.1)
    cands2 = cands.clone()
    cands2[:, 2] = pred                              # an invalid candidate equal to the positive changes nothing
    assert torch.allclose(loss, predicate_temporal_contrast(pred, cands2, valid, 0.1))


def test_every_ablation_trains_and_embeds(small_dataset):
    batch = _batch(small_dataset)
    dims = ShardStream(small_dataset, batch_size=2).dims
    for switches in ({}, {"use_osc": False}, {"use_ptc": False}, {"use_stgd": False}, {"use_sg": False}):
        model = FinstaModel(TrainConfig(dim=16, heads=2, **switches), dims)
        loss, parts = model.losses(batch)
        loss.backward()
        assert torch.isfinite(loss)
        assert ("osc" in parts) == switches.get("use_osc", switches.get("use_sg", True))
        assert ("ptc" in parts) == switches.get("use_ptc", switches.get("use_sg", True))
        assert (model.dsg.stgd is None) == (not switches.get("use_stgd", True)) if hasattr(model, "dsg") else True
        for branch in ("fused", "host"):
            video, text = model.embed(batch, branch)
            assert video.shape == (batch.num_videos, 16) and text.shape == (batch.cap_feat.shape[0], 16)
            assert torch.allclose(video.norm(dim=-1), torch.ones(batch.num_videos))
