"""The fine-grained (late-interaction) retrieval score: consistency, direction, training and eval wiring."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from finsta_model.config import TrainConfig
from finsta_model.data import ShardStream, make_loader
from finsta_model.evaluate import embed_dataset, evaluate
from finsta_model.fine_grained import FineGrained, TextUnits, VideoUnits, unit_osc, unit_ptc
from finsta_model.losses import video_text_nce
from finsta_model.model import FinstaModel
from finsta_model.train import train
from schemas.records import TEXT_EDGE_KINDS

CONFIG = TrainConfig(dim=16, heads=2, dropout=0.0, fine_grained_weight=1.0)


def _stream(root, size=6):
    return ShardStream(root, batch_size=size, seed=0, mode="eval", hard_negatives=True)


def _model(root, **changes) -> FinstaModel:
    torch.manual_seed(0)
    return FinstaModel(CONFIG.replace(**changes), _stream(root).dims).eval()


def _first_batch(root, size=6):
    return next(iter(make_loader(_stream(root, size), 0)))


@torch.no_grad()
def test_scores_follow_the_videos_when_the_batch_is_permuted(small_dataset):
    model = _model(small_dataset)
    batch = _first_batch(small_dataset)
    _, _, text, video = model.retrieval_units(batch)
    scores = model.fine_scores(text, video)
    assert scores.shape == (batch.cap_feat.shape[0], batch.num_videos)
    # the same videos in reverse order, as another batch: each column follows its video
    perm = list(range(batch.num_videos))[::-1]
    permuted = VideoUnits(**{name: getattr(video, name)[perm] for name in video.__dataclass_fields__})
    torch.testing.assert_close(model.fine_scores(text, permuted), scores[:, perm])
    # scoring captions one at a time gives the same rows (no cross-caption leakage)
    rows = torch.cat([model.fine_scores(text.slice(i, i + 1), video) for i in range(len(text))])
    torch.testing.assert_close(rows, scores)


@torch.no_grad()
def test_swapping_subject_and_object_changes_the_score(small_dataset):
    model = _model(small_dataset)
    batch = _first_batch(small_dataset)
    _, _, text, video = model.retrieval_units(batch)
    swapped = copy.copy(batch)
    subj, obj = TEXT_EDGE_KINDS.index("subj_pred"), TEXT_EDGE_KINDS.index("pred_obj")
    # "A approaches B" → "B approaches A": A's edge becomes pred→A (pred_obj), B's becomes B→pred (subj_pred)
    src, dst, kind = batch.tedge_src.clone(), batch.tedge_dst.clone(), batch.tedge_kind.clone()
    is_subj, is_obj = kind == subj, kind == obj
    src[is_subj], dst[is_subj] = batch.tedge_dst[is_subj], batch.tedge_src[is_subj]
    src[is_obj], dst[is_obj] = batch.tedge_dst[is_obj], batch.tedge_src[is_obj]
    kind[is_subj], kind[is_obj] = obj, subj
    swapped.tedge_src, swapped.tedge_dst, swapped.tedge_kind = src, dst, kind
    _, _, text_swapped, _ = model.retrieval_units(swapped)
    assert not torch.allclose(model.fine_scores(text_swapped, video), model.fine_scores(text, video))


def _two_track_video(tracks: torch.Tensor, centres: torch.Tensor) -> VideoUnits:
    """One video, two tracks seen on every frame: ``tracks [2, d]``, ``centres [2, T, 2]``."""
    d, t = tracks.shape[1], centres.shape[1]
    ones = torch.ones(1, 2, t)

    def prefix(x):
        return torch.cat([torch.zeros_like(x[:, :, :1]), x.cumsum(2)], 2)
    return VideoUnits(tracks=tracks[None], track_ok=torch.ones(1, 2, dtype=torch.bool),
                      h_prefix=prefix(tracks[None, :, None].expand(1, 2, t, d)), c_prefix=prefix(centres[None]),
                      s_prefix=prefix(0.2 * ones), n_prefix=prefix(ones), frames=torch.randn(1, t, d),
                      memory=torch.randn(1, t, d), n_frames=torch.tensor([t]))


class _StillWindows:
    """The PTC window read-out is not what these tests look at: a constant."""

    @staticmethod
    def windows(enc, video, first, last):
        return torch.ones(len(video), enc.tracks.shape[-1])


def _gaussian(delta: torch.Tensor) -> torch.Tensor:
    """A two-head STGD kernel (widths 0.05 and 0.2)."""
    return torch.exp(-(delta ** 2).sum(-1, keepdim=True) / (2 * torch.tensor([0.05, 0.2]) ** 2))


@pytest.mark.parametrize("stgd_heads", [0, 2])
@torch.no_grad()
def test_pair_units_are_directed_and_a_relation_matches_one_direction(stgd_heads):
    torch.manual_seed(0)
    d, t = 8, 4
    fine = FineGrained(d, stgd_heads=stgd_heads)
    kernel = _gaussian if stgd_heads else None
    tracks = torch.randn(2, d)
    moving = torch.tensor([[0.1 + 0.15 * f, 0.5] for f in range(t)])
    still = torch.tensor([[0.8, 0.5]] * t)
    # video A: track 0 approaches track 1; video B: the same two tracks, track 1 approaches track 0
    video_a = _two_track_video(tracks, torch.stack([moving, still]))
    video_b = _two_track_video(tracks, torch.stack([torch.tensor([[0.1, 0.5]] * t),
                                                    torch.tensor([[0.8 - 0.15 * f, 0.5] for f in range(t)])]))
    window = torch.tensor([[0, t - 1]])
    _, pairs_a, _ = fine.window_units(window, video_a, _StillWindows, kernel)
    assert not torch.allclose(pairs_a[0, 0, 0, 1], pairs_a[0, 0, 1, 0])

    # a relation node equal to A's (0 → 1) unit: a perfect match in A, not in B
    relation = TextUnits(align=torch.zeros(1, 1, d), pair=pairs_a[0, 0, 0, 1].view(1, 1, d),
                         is_object=torch.zeros(1, 1, dtype=torch.bool), is_relation=torch.ones(1, 1, dtype=torch.bool),
                         window=window)
    score_a = fine.scores(relation, video_a, _StillWindows, kernel).item()
    score_b = fine.scores(relation, video_b, _StillWindows, kernel).item()
    assert score_a > 0.999 and score_b < score_a - 1e-4
    # the reversed relation ((1 → 0) of A) is matched in A by that other pair, not by (0 → 1)
    s_pair = torch.einsum("d,ijd->ij", pairs_a[0, 0, 1, 0], pairs_a[0, 0])
    assert s_pair[1, 0] > s_pair[0, 1]


def test_nce_extra_scores_are_added_before_the_temperature():
    torch.manual_seed(0)
    video = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    cap_video, neg_of = torch.tensor([0, 1, 2, 0]), torch.tensor([-1, -1, -1, 0])
    extra = torch.randn(4, 3)
    base = video_text_nce(video, text, cap_video, neg_of, 0.1)
    assert torch.allclose(video_text_nce(video, text, cap_video, neg_of, 0.1, torch.zeros(4, 3)), base)
    # an extra score that favours each caption's own video (and not its hard negative) lowers the loss
    own = torch.zeros(4, 3)
    own[[0, 1, 2], [0, 1, 2]] = 1.0
    assert video_text_nce(video, text, cap_video, neg_of, 0.1, own) < base
    assert video_text_nce(video, text, cap_video, neg_of, 0.1, extra).isfinite()


def test_fine_grained_model_trains_and_gets_gradients(small_dataset):
    model = _model(small_dataset).train()
    batch = next(iter(make_loader(ShardStream(small_dataset, batch_size=6, seed=0), 0)))
    loss, parts = model.losses(batch)
    loss.backward()
    assert torch.isfinite(loss)
    for name in ("pair_text", "track_window", "subject", "object", "pair_geometry"):
        grads = [p.grad for p in getattr(model.fine, name).parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name
    without = FinstaModel(CONFIG.replace(fine_grained_weight=0.0), _stream(small_dataset).dims)
    assert not hasattr(without, "fine")
    no_stgd = FinstaModel(CONFIG.replace(use_stgd=False), _stream(small_dataset).dims)
    loss, _ = no_stgd.losses(batch)        # the read-out then has no motion features
    assert torch.isfinite(loss) and no_stgd.fine.stgd_heads == 0


def test_eval_matrix_matches_the_batch_scores_and_keeps_the_report_shape(small_dataset, tmp_path):
    model = _model(small_dataset)
    data = embed_dataset(model, small_dataset, torch.device("cpu"), 64, ("fused", "host"))
    fused, host = data["scores"]["fused"], data["scores"]["host"]
    n_caps, n_videos = len(data["cap_video"]), len(data["keys"])
    assert fused.shape == host.shape == (n_caps, n_videos)
    # one batch with every video: the matrices equal the scores of that single batch
    batch = _first_batch(small_dataset, size=64)
    with torch.no_grad():
        video_vec, text_vec, text, video = model.retrieval_units(batch)
        whole = (text_vec @ video_vec.T + model.fine_scores(text, video)).numpy()
        whole_host = model.host_scores(batch).numpy()
    np.testing.assert_allclose(fused, whole, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(host, whole_host, rtol=1e-5, atol=1e-5)
    # smaller eval batches (videos split over batches, captions in chunks) give the same matrices
    small = embed_dataset(model, small_dataset, torch.device("cpu"), 5, ("fused", "host"))
    np.testing.assert_allclose(small["scores"]["fused"], fused, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(small["scores"]["host"], host, rtol=1e-5, atol=1e-5)

    run = tmp_path / "run"
    train(small_dataset, run, CONFIG.replace(steps=2, batch_size=4, log_every=1, checkpoint_every=2,
                                             warmup_steps=1), progress=False)
    report = evaluate(small_dataset, run)
    assert {"t2v", "v2t", "hard_negatives", "no_sg"} <= set(report)
    assert set(report["t2v"]) == {"R@1", "R@5", "R@10", "MdR", "MnR"}
    assert {"t2v", "v2t", "pair_accuracy", "by_type"} <= set(report["hard_negatives"])
    assert report["score"] == "pooled+fine" and report["fine_grained_weight"] == 1.0
    assert report["no_sg"]["hard_negatives"]["queries"] == report["hard_negatives"]["queries"]
    assert report["fine_window"] == "caption"
    whole = evaluate(small_dataset, run, whole_video_windows=True)
    assert whole["fine_window"] == "whole video" and set(whole) == set(report)


def test_osc_and_ptc_each_train_the_fine_units_they_are_defined_on(small_dataset):
    batch = next(iter(make_loader(ShardStream(small_dataset, batch_size=6, seed=0), 0)))
    model = _model(small_dataset).train()
    _, _, nodes, enc, _ = model._fused(batch)
    text, video = model._units(nodes, enc, batch)
    track, pair, _ = model.fine.window_units(text.window, video, model.dsg, model._stgd_kernel())

    def grads(loss):
        model.zero_grad()
        loss.backward(retain_graph=True)
        return {name: sum(float(p.grad.abs().sum()) for p in getattr(model.fine, name).parameters()
                          if p.grad is not None) for name in ("pair_text", "track_window", "subject", "object")}

    osc = grads(unit_osc(text, video, track, batch, 0.05))
    assert osc["track_window"] > 0 and osc["pair_text"] == osc["subject"] == 0   # tracks only
    ptc = grads(unit_ptc(text, video, track, pair, batch, 0.05))
    assert ptc["pair_text"] > 0 and ptc["subject"] > 0 and ptc["object"] > 0      # directed pairs


@torch.no_grad()
def test_a_negated_predicate_is_no_ptc_positive(tmp_path):
    """"the circle does not approach the square": written through the store and read by the training
    loader, the denied relation keeps no edge, so PTC finds no predicate to take as a positive."""
    import random
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from finsta_samples import DIMS, make_sample

    from schemas.store import DatasetWriter

    def dataset(name: str, negated: bool):
        rng = random.Random(3)
        samples = [make_sample(rng, f"vid{i}") for i in range(6)]
        for sample, _ in samples:
            for hsg in sample.hsgs:
                hsg.tsg.nodes[1].negated = negated          # node 1 is the caption's relation
        DatasetWriter(tmp_path / name, config={"test": name}, feature_dims=DIMS).write_shard(samples, failures=[])
        return tmp_path / name

    def ptc(root):
        batch = next(iter(make_loader(ShardStream(root, batch_size=6, seed=0), 0)))
        model = _model(root)
        _, _, nodes, enc, _ = model._fused(batch)
        text, video = model._units(nodes, enc, batch)
        track, pair, _ = model.fine.window_units(text.window, video, model.dsg, model._stgd_kernel())
        return float(unit_ptc(text, video, track, pair, batch, 0.05))

    assert ptc(dataset("positive", False)) > 0
    assert ptc(dataset("negated", True)) == 0


def _one_caption_batch(subject_track: int, object_track: int):
    """One real caption "A <pred> B" (nodes 0, 1, 2) over two videos of two tracks each; A and B are
    linked to tracks ``subject_track`` and ``object_track`` of video 0. A stand-in for a collated batch."""
    from types import SimpleNamespace

    from finsta_model.fine_grained import OBJECT_KIND, RELATION_KIND

    subj, obj = TEXT_EDGE_KINDS.index("subj_pred"), TEXT_EDGE_KINDS.index("pred_obj")
    return SimpleNamespace(
        node_kind=torch.tensor([OBJECT_KIND, RELATION_KIND, OBJECT_KIND]), node_cap=torch.zeros(3, dtype=torch.long),
        cap_feat=torch.zeros(1, 4), cap_neg_of=torch.tensor([-1]), num_videos=2,
        tedge_src=torch.tensor([0, 1]), tedge_dst=torch.tensor([1, 2]), tedge_kind=torch.tensor([subj, obj]),
        link_node=torch.tensor([0, 2]), link_track=torch.tensor([subject_track, object_track]),
        track_video=torch.tensor([0, 0, 1, 1]))


def test_unit_ptc_and_osc_take_the_linked_directed_pair_and_tracks_as_positives():
    d = 12
    basis = torch.eye(d)
    track = basis[:4].view(1, 2, 2, d)                         # [C, B, K, d]: one unit vector per track
    pair = basis[4:].view(1, 2, 2, 2, d)                       # and per ordered pair: (0→1) ≠ (1→0)
    video = VideoUnits(**{name: None for name in VideoUnits.__dataclass_fields__})
    video.track_ok = torch.ones(2, 2, dtype=torch.bool)
    # the predicate's text unit equals video 0's (track 0 → track 1) pair unit; A = track 0, B = track 1
    text = TextUnits(align=torch.stack([basis[0], basis[0], basis[1]])[None], pair=pair[0, 0, 0, 1].expand(1, 3, d),
                     is_object=torch.tensor([[True, False, True]]), is_relation=torch.tensor([[False, True, False]]),
                     window=torch.tensor([[0, 3]]))
    right = unit_ptc(text, video, track, pair, _one_caption_batch(0, 1), tau=0.1)
    reversed_links = unit_ptc(text, video, track, pair, _one_caption_batch(1, 0), tau=0.1)
    assert right < 0.01 and reversed_links > 5                 # (1 → 0) is a negative, not the positive
    assert unit_osc(text, video, track, _one_caption_batch(0, 1), tau=0.1) < 0.01
    assert unit_osc(text, video, track, _one_caption_batch(1, 0), tau=0.1) > 5


def test_track_footprints_share_each_box_over_the_grid_cells():
    from types import SimpleNamespace

    from finsta_model.fine_grained import track_footprints
    # video 0: track 0 fills the top-left cell of a 2×2 grid on frame 0; on frame 1 it straddles the two top cells
    batch = SimpleNamespace(
        frame_mask=torch.ones(1, 2, dtype=torch.bool), track_video=torch.tensor([0]), num_videos=1,
        det_box=torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.75, 0.5]]), det_track=torch.tensor([0, 0]),
        det_frame=torch.tensor([0, 1]))
    foot = track_footprints(batch, 4, torch.arange(2))
    assert foot.shape == (1, 1, 2, 4)
    assert torch.allclose(foot[0, 0, 0], torch.tensor([1.0, 0, 0, 0]))
    assert torch.allclose(foot[0, 0, 1], torch.tensor([0.5, 0.5, 0, 0]))
    assert torch.allclose(track_footprints(batch, 4, torch.tensor([1]))[0, 0, 0], foot[0, 0, 1])
