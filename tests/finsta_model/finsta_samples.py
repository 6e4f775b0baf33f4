"""Random-but-valid VideoSamples for finsta_model tests and benchmarks (numpy only, no store).

The samples follow every convention of ``schemas.records``: boxes in [0, 1],
detections on sampled frames, track ids, per-frame relations, track relations,
TSGs with typed edges, cross links to tracks, frame windows and hard negatives.
"""
from __future__ import annotations

import random

import numpy as np
from schemas.records import (Attribute, CrossLink, Detection, DynamicSceneGraph, Frame, HolisticSceneGraph,
                             Relation, SampleFeatures, TextEdge, TextNode, TextSceneGraph, Track, TrackRelation,
                             VideoMeta, VideoSample)

DIMS = {"frame": 24, "detection": 16, "text_node": 12, "caption": 12, "caption_token": 12, "token_span": 3,
        "frame_patch": 24}
CELLS = 4      # frame_patch cells per frame (a 2×2 grid)
SHAPES = ("circle", "square", "triangle", "star")
COLOURS = ("red", "green", "blue", "yellow")


def make_sample(rng: random.Random, key: str, n_frames: int = 6, max_objects: int = 3,
                n_captions: int = 2) -> tuple[VideoSample, SampleFeatures]:
    nrng = np.random.default_rng(rng.randrange(1 << 30))
    frames = [Frame(index=i * 5, timestamp=i * 0.5) for i in range(n_frames)]
    n_obj = rng.randint(1, max_objects)
    tracks, detections, attributes, relations = [], [], [], []
    for obj in range(n_obj):
        label = rng.choice(SHAPES)
        first = rng.randrange(0, n_frames // 2)
        last = rng.randrange(first, n_frames)
        tracks.append(Track(id=10 + obj, label=label, first_frame=first, last_frame=last))
        attributes.append(Attribute("track", 10 + obj, "color", rng.choice(COLOURS)))
        x, y, vx = rng.random() * 0.6, rng.random() * 0.6, rng.uniform(-0.05, 0.05)
        for f in range(first, last + 1):
            cx = min(max(x + vx * f, 0.0), 0.7)
            detections.append(Detection(frame=f, box=(cx, y, cx + 0.2, y + 0.2), label=label,
                                        score=0.9, track_id=10 + obj))
    detections.sort(key=lambda d: (d.frame, d.track_id))
    for i, a in enumerate(detections):
        for j, b in enumerate(detections):
            if i != j and a.frame == b.frame and a.box[0] < b.box[0]:
                relations.append(Relation(frame=a.frame, subject=i, object=j, predicate="left of", score=1.0))
    track_relations = []
    if n_obj >= 2:
        track_relations.append(TrackRelation(subject=10, object=11, predicate="approaching", first_frame=0,
                                             last_frame=n_frames - 1, score=1.0))
    track_relations.append(TrackRelation(subject=10, object=-1, predicate="entering", first_frame=0,
                                         last_frame=1, score=1.0))
    dsg = DynamicSceneGraph(video_id=key, meta=VideoMeta(f"{key}.mp4", n_frames * 0.5, 10.0, 64, 64, "h264"),
                            frames=frames, detections=detections, attributes=attributes, relations=relations,
                            tracks=tracks, track_relations=track_relations)
    hsgs = []
    for c in range(n_captions):
        subj, obj = rng.randrange(n_obj), rng.randrange(n_obj)
        nodes = [TextNode(0, "object", tracks[subj].label, tracks[subj].label, (4, 10)),
                 TextNode(1, "relation", "approach", "approach", (11, 19)),
                 TextNode(2, "object", tracks[obj].label, tracks[obj].label, (24, 30)),
                 TextNode(3, "pred_attribute", "quickly", "quickly", (31, 38))]
        edges = [TextEdge(0, 1, "subj_pred"), TextEdge(1, 2, "pred_obj"), TextEdge(1, 3, "pred_adv")]
        text = f"the {tracks[subj].label} approaches the {tracks[obj].label} quickly"
        first = rng.randrange(n_frames)
        window = (first, rng.randrange(first, n_frames))
        links = [CrossLink(0, tracks[subj].id, 0.9, "test"), CrossLink(2, tracks[obj].id, 0.8, "test")]
        real = len(hsgs)
        hsgs.append(HolisticSceneGraph(TextSceneGraph(f"{key}#{c}", text, nodes, edges), links, window))
        swapped = [TextNode(0, "object", tracks[obj].label, tracks[obj].label, (4, 10)), nodes[1],
                   TextNode(2, "object", tracks[subj].label, tracks[subj].label, (24, 30)), nodes[3]]
        hsgs.append(HolisticSceneGraph(TextSceneGraph(f"{key}#{c}n", text + " (swapped)", swapped, edges), [],
                                       window, negative_of=real, negative_type="swap_subject_object"))
    n_nodes = sum(len(h.tsg.nodes) for h in hsgs)
    features = SampleFeatures(
        frame=nrng.standard_normal((n_frames, DIMS["frame"])).astype(np.float16),
        detection=nrng.standard_normal((len(detections), DIMS["detection"])).astype(np.float16),
        text_node=nrng.standard_normal((n_nodes, DIMS["text_node"])).astype(np.float16),
        caption=nrng.standard_normal((len(hsgs), DIMS["caption"])).astype(np.float16),
        **host_features(hsgs, n_frames, nrng))
    return VideoSample(key=key, source="test", dsg=dsg, hsgs=hsgs), features


def word_spans(text: str) -> list[tuple[int, int]]:
    """A stand-in tokeniser: [CLS] + one token per space-separated word + [SEP] (specials span (0, 0))."""
    spans, start = [(0, 0)], 0
    for word in text.split(" "):
        if word:
            spans.append((start, start + len(word)))
        start += len(word) + 1
    return spans + [(0, 0)]


def host_features(hsgs: list[HolisticSceneGraph], n_frames: int, nrng: np.random.Generator) -> dict:
    """Random host token states (one per ``word_spans`` token of every caption) and ``CELLS`` patch cells
    per frame, laid out as the stages store them."""
    spans = [(j, a, b) for j, h in enumerate(hsgs) for a, b in word_spans(h.tsg.text)]
    return {"caption_token": nrng.standard_normal((len(spans), DIMS["caption_token"])).astype(np.float16),
            "token_span": np.array(spans, np.int32).reshape(-1, 3),
            "frame_patch": nrng.standard_normal((n_frames * CELLS, DIMS["frame_patch"])).astype(np.float16)}


