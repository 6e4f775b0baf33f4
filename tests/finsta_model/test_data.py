"""ShardStream and collate: streaming, determinism, worker split, resume positions, index invariants."""
from __future__ import annotations

import numpy as np
import torch

from finsta_model.data import ShardStream, make_loader
from finsta_model.graphs import encode_sample
from schemas.store import open_dataset


def _keys(batches):
    return [k for b in batches for k in b.keys]


def test_epoch_covers_every_video_once_and_is_seeded(small_dataset):
    batches = list(make_loader(ShardStream(small_dataset, batch_size=5, seed=3, buffer_size=8)))
    keys = _keys(batches)
    assert sorted(keys) == sorted(open_dataset(small_dataset).keys())
    assert all(2 <= b.num_videos <= 5 for b in batches)
    again = _keys(make_loader(ShardStream(small_dataset, batch_size=5, seed=3, buffer_size=8)))
    other_seed = _keys(make_loader(ShardStream(small_dataset, batch_size=5, seed=4, buffer_size=8)))
    other_epoch = _keys(make_loader(ShardStream(small_dataset, batch_size=5, seed=3, epoch=1, buffer_size=8)))
    assert keys == again
    assert keys != other_seed and keys != other_epoch


def test_two_workers_split_shards_without_duplicates(small_dataset):
    stream = ShardStream(small_dataset, batch_size=4, seed=0, num_logical_workers=2)
    batches = list(make_loader(stream, num_workers=2))
    assert sorted(_keys(batches)) == sorted(open_dataset(small_dataset).keys())
    assert {b.origin[0] for b in batches} == {0, 1}


def test_skip_resumes_on_the_same_batches(small_dataset):
    full = list(make_loader(ShardStream(small_dataset, batch_size=4, seed=1, buffer_size=6)))
    tail = list(make_loader(ShardStream(small_dataset, batch_size=4, seed=1, buffer_size=6, skip=[2])))
    assert [b.keys for b in tail] == [b.keys for b in full[2:]]
    assert [b.texts for b in tail] == [b.texts for b in full[2:]]  # same caption picks
    assert torch.equal(tail[0].frame_feat, full[2].frame_feat)


def test_skip_with_worker_rotation_matches_round_robin_order(small_dataset):
    def run(skip=None, offset=0):
        stream = ShardStream(small_dataset, batch_size=3, seed=2, num_logical_workers=2, skip=skip,
                             worker_offset=offset)
        return [(b.origin, b.keys) for b in make_loader(stream, num_workers=2)]
    full = run()
    consumed = [0, 0]
    for origin, _ in full[:3]:
        consumed[origin[0]] = origin[1] + 1
    assert run(consumed, 3 % 2) == full[3:]


def test_collated_indices_respect_the_conventions(small_dataset):
    batch = next(iter(make_loader(ShardStream(small_dataset, batch_size=6, seed=0))))
    prev = batch.det_prev
    has = prev >= 0
    assert torch.equal(batch.det_track[prev[has]], batch.det_track[has])
    assert (batch.det_frame[prev[has]] < batch.det_frame[has]).all()
    assert torch.equal(batch.det_slot[batch.edge_src], batch.det_slot[batch.edge_dst])
    assert (batch.det_slot == batch.det_video * batch.num_frames + batch.det_frame).all()
    assert torch.equal(batch.track_video[batch.link_track], batch.cap_video[batch.node_cap[batch.link_node]])
    negs = batch.cap_neg_of >= 0
    assert negs.any()
    assert (batch.cap_neg_of[batch.cap_neg_of[negs]] == -1).all()
    assert torch.equal(batch.cap_video[batch.cap_neg_of[negs]], batch.cap_video[negs])
    assert batch.frame_mask.sum() == sum(len(open_dataset(small_dataset).get(k)[0].dsg.frames)
                                         for k in batch.keys)
    windows = batch.cap_window
    assert (windows[:, 0] <= windows[:, 1]).all()
    assert (windows[:, 1] < batch.frame_mask.sum(1)[batch.cap_video]).all()


def test_text_node_rows_align_with_their_captions(small_dataset):
    ds = open_dataset(small_dataset)
    sample, features = ds.get(ds.keys()[0])
    enc = encode_sample(sample, features, label_buckets=64)
    offset = 0
    for hsg, cap in zip(sample.hsgs, enc.captions):
        m = len(hsg.tsg.nodes)
        np.testing.assert_array_equal(cap.node_feat, features.text_node[offset:offset + m])
        offset += m
    assert offset == len(features.text_node)
    assert [c.negative_of for c in enc.captions] == [-1 if h.negative_of is None else h.negative_of
                                                     for h in sample.hsgs]


def test_replicas_read_disjoint_shards_that_cover_the_epoch(small_dataset):
    dataset = open_dataset(small_dataset)
    shard_of = {key: shard["name"] for shard in dataset.manifest["shards"] for key in shard["keys"]}
    per_rank = []
    for rank in range(2):
        stream = ShardStream(small_dataset, batch_size=3, seed=5, epoch=1, rank=rank, world=2, buffer_size=6)
        keys = _keys(make_loader(stream))
        assert {shard_of[k] for k in keys} == set(stream.rank_shards())   # only its own shards
        assert keys == _keys(make_loader(ShardStream(small_dataset, batch_size=3, seed=5, epoch=1, rank=rank,
                                                     world=2, buffer_size=6)))   # seeded per (seed, epoch, rank)
        per_rank.append(keys)
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(dataset.keys())
    other_epoch = _keys(make_loader(ShardStream(small_dataset, batch_size=3, seed=5, epoch=2, rank=0, world=2,
                                                buffer_size=6)))
    assert other_epoch != per_rank[0]


def test_one_replica_streams_what_the_single_process_stream_does(small_dataset):
    plain = list(make_loader(ShardStream(small_dataset, batch_size=4, seed=2, buffer_size=6)))
    alone = list(make_loader(ShardStream(small_dataset, batch_size=4, seed=2, buffer_size=6, rank=0, world=1)))
    assert [b.keys for b in plain] == [b.keys for b in alone] and [b.texts for b in plain] == [b.texts for b in alone]
