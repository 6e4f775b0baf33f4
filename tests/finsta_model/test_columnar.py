"""encode_shard (columnar) must equal encode_sample (the record-by-record reference) array for array."""
from __future__ import annotations

import math
import random
from dataclasses import fields
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from finsta_samples import DIMS, host_features, make_sample

from finsta_model.columnar import encode_shard
from finsta_model.graphs import EncodedSample, collate, encode_sample
from schemas.records import (Attribute, CrossLink, Detection, DynamicSceneGraph, Frame, HolisticSceneGraph,
                             Relation, SampleFeatures, TextEdge, TextNode, TextSceneGraph, Track, TrackRelation,
                             VideoMeta, VideoSample)
from schemas.store import DatasetWriter, open_dataset
from schemas.version import SCHEMA_VERSION

REPO = Path(__file__).resolve().parents[2]
# a real build of the synthetic validation world when one is here (scripts/reproduce_results.sh writes it)
SGS_VAL = next((p for p in (REPO / "out" / "host" / "sgs-val", REPO / "out" / "results" / "sgs-val")
                if (p / "manifest.json").is_file()), REPO / "out" / "host" / "sgs-val")


def _current_build(folder: Path) -> bool:
    """Built, and with this finsta's schema (an older build is refused by every reader)."""
    manifest = folder / "manifest.json"
    return manifest.is_file() and json.loads(manifest.read_text()).get("schema_version") == SCHEMA_VERSION


def assert_same(got, want, where: str) -> None:
    """Every field equal, arrays with the same dtype and shape, scalars of the same type."""
    assert type(got) is type(want), where
    for f in fields(want):
        a, b = getattr(got, f.name), getattr(want, f.name)
        at = f"{where}.{f.name}"
        if f.name == "captions":
            assert len(a) == len(b), at
            for i, (x, y) in enumerate(zip(a, b)):
                assert_same(x, y, f"{at}[{i}]")
        elif isinstance(b, np.ndarray):
            assert isinstance(a, np.ndarray), at
            assert (a.dtype, a.shape) == (b.dtype, b.shape), at
            np.testing.assert_array_equal(a, b, err_msg=at)
        else:
            assert type(a) is type(b) and a == b, (at, a, b)
            if isinstance(b, tuple):
                assert [type(v) for v in a] == [type(v) for v in b], at


def assert_dataset_matches(root: Path, label_buckets: int = 512) -> int:
    ds = open_dataset(root)
    checked = 0
    for shard in ds.manifest["shards"]:
        got = list(encode_shard(ds, shard["name"], label_buckets))
        assert [g.key for g in got] == shard["keys"]
        for enc in got:
            assert_same(enc, encode_sample(*ds.get(enc.key), label_buckets), enc.key)
            checked += 1
    return checked


# ------------------------------------------------------------------ hand-made edge cases
def _features(sample: VideoSample, text_rows: int | None = None) -> SampleFeatures:
    rng = np.random.default_rng(len(sample.key))
    rows = {"frame": len(sample.dsg.frames), "detection": len(sample.dsg.detections),
            "text_node": sum(len(h.tsg.nodes) for h in sample.hsgs) if text_rows is None else text_rows,
            "caption": len(sample.hsgs)}
    return SampleFeatures(**{name: rng.standard_normal((n, DIMS[name])).astype(np.float16)
                             for name, n in rows.items()}, **host_features(sample.hsgs, len(sample.dsg.frames), rng))


def _video(key: str, n_frames: int, detections=(), attributes=(), relations=(), tracks=(), track_relations=(),
           hsgs=()) -> VideoSample:
    dsg = DynamicSceneGraph(key, VideoMeta(f"{key}.mp4", 1.0, 8.0, 32, 32, "h264"),
                            [Frame(i, i / 8) for i in range(n_frames)], list(detections), list(attributes),
                            list(relations), list(tracks), list(track_relations))
    return VideoSample(key, "edge", dsg, list(hsgs))


def _caption(key: str, nodes=(), edges=(), links=(), window=(0, 0), negative_of=None, negative_type=None):
    return HolisticSceneGraph(TextSceneGraph(key, f"caption {key}", list(nodes), list(edges)), list(links),
                              window, negative_of, negative_type)


def _box(x: float) -> tuple[float, float, float, float]:
    return (x, 0.1, x + 0.3333333333, 0.7)


def edge_case_samples() -> list[tuple[VideoSample, SampleFeatures]]:
    nodes = [TextNode(0, "object", "Red Ball", "", (9, 17)), TextNode(1, "relation", "rolls", "roll", (18, 23)),
             TextNode(2, "object", "box", "box", (0, 3)), TextNode(3, "mystery", "x", "x", (9, 10))]
    edges = [TextEdge(0, 1, "subj_pred"), TextEdge(1, 2, "pred_obj"), TextEdge(1, 7, "pred_obj"),
             TextEdge(2, 0, "unknown_kind"), TextEdge(-1, 0, "obj_attr")]
    samples = []
    # a video with no detections (no tracks either) and a caption with no nodes, plus a hard negative of it
    samples.append(_video("no-detections", 4, hsgs=[
        _caption("a", window=(-3, 9)), _caption("a-neg", window=(2, 1), negative_of=0,
                                                negative_type="change_relation")]))
    # detections but no tracks: attributes on detections (some out of range), relations, untracked pairs
    dets = [Detection(1, _box(0.1), " Circle ", 0.9), Detection(0, _box(0.2), "circle", 0.8),
            Detection(1, _box(0.3), "SQUARE", 0.7), Detection(0, _box(0.4), "star", 0.6)]
    attrs = [Attribute("detection", 0, "color", "red"), Attribute("detection", 0, "color", "red"),
             Attribute("detection", 9, "color", "blue"), Attribute("detection", -1, "color", "blue"),
             Attribute("track", -1, "color", "green")] + \
        [Attribute("detection", 2, "k", v) for v in ("a", "b", "a", "c", "d", "e", "f")]
    rels = [Relation(1, 0, 2, "left of", 1.0), Relation(1, 0, 2, "near", 1.0), Relation(0, 0, 1, "across", 1.0),
            Relation(1, 0, 9, "bad", 1.0)] + [Relation(1, 2, 0, f"p{i}", 1.0) for i in range(6)]
    samples.append(_video("no-tracks", 2, dets, attrs, rels, track_relations=[
        TrackRelation(-1, -1, "shaking", 0, 1, 1.0)],  # subject -1: the untracked detections
        hsgs=[_caption("b", nodes, edges, [CrossLink(0, 5, 1.0, "t")], window=(0, 1))]))
    # tracks with duplicate ids, gaps, two detections of one track on a frame, track relations with and
    # without a partner on the frame, links with ties, unknown tracks and out-of-range nodes
    dets = [Detection(2, _box(0.0), "dog", 0.9, 7), Detection(0, _box(0.1), "dog", 0.9, 7),
            Detection(0, _box(0.2), "cat", 0.9, 3), Detection(2, _box(0.3), "cat", 0.9, 3),
            Detection(2, _box(0.5), "cat", 0.9, 3), Detection(3, _box(0.6), "dog", 0.9, 7),
            Detection(3, _box(0.7), "bird", 0.9, -1), Detection(5, _box(0.8), "dog", 0.9, 7)]
    tracks = [Track(7, "dog", 0, 5), Track(3, "cat", 0, 2), Track(7, "dog again", 0, 5), Track(99, "ghost", 0, 0)]
    attrs = [Attribute("track", 7, "color", "brown"), Attribute("track", 3, "color", "grey"),
             Attribute("detection", 0, "size", "big"), Attribute("track", 7, "size", "big"),
             Attribute("track", 42, "color", "none"), Attribute("track", 3, "color", "GREY ")]
    track_rels = [TrackRelation(7, 3, "chasing", 0, 2, 0.9), TrackRelation(3, -1, "leaving", 2, 9, 0.5),
                  TrackRelation(7, 99, "ignoring", 0, 5, 0.5), TrackRelation(3, 7, "fleeing", -4, 1, 0.5)]
    links = [CrossLink(0, 3, 0.5, "t"), CrossLink(0, 7, 0.9, "t"), CrossLink(0, 3, 0.9, "t"),
             CrossLink(2, 42, 1.0, "t"), CrossLink(9, 7, 1.0, "t"), CrossLink(2, 99, 0.1, "t"),
             CrossLink(1, 7, -math.inf, "t")]
    samples.append(_video("tracks", 6, dets, attrs, [Relation(2, 3, 4, "touching", 1.0)], tracks, track_rels, [
        _caption("c", nodes, edges, links, window=(1, 4)),
        _caption("c-neg", nodes[::-1], edges, [], (1, 4), 0, "swap_subject_object"),
        _caption("d", window=(5, 5)), _caption("d-neg", nodes[:1], [], [], (5, 5), 2, "change_adverb")]))
    # NaN link scores: which link wins depends on the order, as in the reference loop
    samples.append(_video("nan-scores", 1, [Detection(0, _box(0.1), "cup", 0.9, 1),
                                            Detection(0, _box(0.5), "mug", 0.9, 2)],
                          tracks=[Track(1, "cup", 0, 0), Track(2, "mug", 0, 0)],
                          hsgs=[_caption("e", nodes[:2], [], [CrossLink(0, 1, math.nan, "t"),
                                                              CrossLink(0, 2, 0.5, "t"),
                                                              CrossLink(1, 1, 0.2, "t"),
                                                              CrossLink(1, 2, math.nan, "t")])]))
    # no frames, no captions at all
    samples.append(_video("empty", 0))
    with_features = [(s, _features(s)) for s in samples]
    # fewer text-node feature rows than nodes: the reference slices short, so must the columnar path
    short = _video("short-text-features", 1, hsgs=[_caption("f", nodes[:3]), _caption("g", nodes)])
    with_features.append((short, _features(short, text_rows=5)))
    return with_features


def messy_sample(rng: random.Random, key: str) -> tuple[VideoSample, SampleFeatures]:
    """A fixture sample with its lists shuffled and some references broken."""
    sample, _ = make_sample(rng, key, n_frames=rng.randint(2, 7), max_objects=4, n_captions=rng.randint(0, 3))
    dsg = sample.dsg
    rng.shuffle(dsg.attributes)
    for d in dsg.detections:
        if rng.random() < 0.2:
            d.track_id = rng.choice([-1, 10, 11, 12, 55])
    if dsg.detections and rng.random() < 0.5:
        dsg.attributes.append(Attribute("detection", rng.randrange(-1, len(dsg.detections) + 2), "c", "pink"))
    dsg.relations += [Relation(0, rng.randrange(len(dsg.detections) + 1), rng.randrange(len(dsg.detections) + 1),
                               rng.choice(["on", "near", "under"]), 1.0) for _ in range(rng.randint(0, 12))]
    for hsg in sample.hsgs:
        for node in hsg.tsg.nodes:
            node.negated = node.kind != "object" and rng.random() < 0.3   # its edges are dropped by both readers
        hsg.links += [CrossLink(rng.randrange(-1, 6), rng.choice([10, 11, 12, 55]), rng.choice([0.5, 0.9]), "r")
                      for _ in range(rng.randint(0, 3))]
        hsg.frame_window = (rng.randrange(-2, 9), rng.randrange(-2, 9))
    return sample, _features(sample)


@pytest.fixture(scope="module")
def edge_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("columnar") / "ds"
    writer = DatasetWriter(root, config={"test": "columnar"}, feature_dims=DIMS)
    rng = random.Random(5)
    writer.write_shard(edge_case_samples(), failures=[])
    writer.write_shard([], failures=[])
    only_empty = _video("only-empty", 0)
    writer.write_shard([(only_empty, _features(only_empty))], failures=[])  # no strings at all in the shard
    writer.write_shard([make_sample(rng, f"fixture{i}") for i in range(8)], failures=[])
    writer.write_shard([messy_sample(rng, f"messy{i}") for i in range(40)], failures=[])
    return root


def test_edge_cases_and_fixture_samples_match_the_reference(edge_dataset):
    assert assert_dataset_matches(edge_dataset) == 6 + 1 + 8 + 40
    assert assert_dataset_matches(edge_dataset, label_buckets=7) == 55  # many hash collisions


def test_edge_cases_exercise_what_they_claim(edge_dataset):
    ds = open_dataset(edge_dataset)
    got = {e.key: e for e in encode_shard(ds, ds.shard_names()[0], 512)}
    assert got["no-detections"].det_feat.shape == (0, DIMS["detection"]) and len(got["no-detections"].edge_src) == 0
    assert got["no-detections"].captions[0].node_feat.shape == (0, DIMS["text_node"])
    assert got["no-tracks"].n_tracks == 0 and (got["no-tracks"].det_track == -1).all()
    assert (got["no-tracks"].edge_rel > 0).sum(1).max() == 4  # more predicates than MAX_RELS on a pair
    assert got["tracks"].captions[1].negative_of == 0
    assert len(got["short-text-features"].captions[1].node_feat) == 2
    assert got["nan-scores"].captions[0].link_track.tolist() == [0, 0]  # a NaN first is never beaten
    assert list(encode_shard(ds, ds.shard_names()[1], 512)) == []


def test_small_dataset_matches_the_reference(small_dataset):
    assert assert_dataset_matches(small_dataset) == 24


@pytest.mark.skipif(not _current_build(SGS_VAL), reason="out/host/sgs-val not built with this schema")
def test_built_dataset_matches_the_reference():
    assert assert_dataset_matches(SGS_VAL) > 0


def test_collated_batches_are_identical(edge_dataset):
    ds = open_dataset(edge_dataset)
    got: list[EncodedSample] = [e for name in ds.shard_names() for e in encode_shard(ds, name, 64)]
    want = [encode_sample(*ds.get(e.key), 64) for e in got]
    chosen = [e.real_captions() for e in want]
    a, b = collate(got, chosen, True, ds.feature_dims), collate(want, chosen, True, ds.feature_dims)
    for f in fields(b):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert torch.equal(x, y) if isinstance(y, torch.Tensor) else x == y, f.name


def test_a_sliced_record_batch_decodes_the_same(edge_dataset):
    """Arrow slices keep offsets into their parents' buffers: every column read must honour them."""
    from finsta_model.columnar import _ShardColumns

    ds = open_dataset(edge_dataset)
    name = ds.shard_names()[-1]
    table, _, arrays = ds.shard_columns(name)
    batch = table.combine_chunks().to_batches()[0].slice(7, 9)
    got = list(_ShardColumns(batch, ds, arrays, 512).samples())
    assert [g.key for g in got] == ds.manifest["shards"][-1]["keys"][7:16]
    for enc in got:
        assert_same(enc, encode_sample(*ds.get(enc.key), 512), enc.key)
