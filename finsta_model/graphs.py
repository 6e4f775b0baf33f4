"""Scene graphs as tensors: one sample → numpy arrays, many samples → one flat batch.

A batch is PyG-style: the nodes of every graph are concatenated and index
arrays say which graph, frame or track a node belongs to; only the per-frame
host features are padded (``[B, T, D]`` with a mask). Index conventions:

* detections are the DSG nodes; ``det_frame`` is the sampled-frame position
  inside its video, ``det_slot = video * T + det_frame`` indexes the padded
  frame grid; ``det_prev`` is the previous detection of the same track
  (the temporal-coreference edge t−1→t), ``-1`` when there is none;
* spatial edges join every ordered pair of detections of one frame (and each
  detection to itself); ``edge_rel`` holds the hashed predicates of the
  per-frame relations and track relations active on that pair (``0`` = pad);
* captions are TSGs; a negated relation or attribute node keeps no edge
  (``TextNode.negated``: the caption denies it); ``cap_video`` is the batch video each caption belongs
  to; hard negatives carry ``cap_neg_of`` = batch index of the caption they
  perturb (``-1`` for real captions);
* words (detection labels, attribute values, text lemmas) are hashed into one
  shared table of ``label_buckets`` rows (row 0 = padding), so text and
  video see the same symbol for "red" or "circle" without a fixed vocabulary;
* host token and patch features (what the SG-free host reads) are padded:
  ``tok_feat [C, L, Dt]`` + ``tok_mask``, ``patch_feat [B, T, P, Dp]`` (``P``
  grid cells per frame, the same for every video of a dataset; 0 when the
  shards carry none); ``pt_node``/``pt_token`` pair each object/relation text
  node with the tokens of its phrase (the node's own span, its attributes' for
  an object, its adverbs' for a relation; ``pt_token = caption · L + token``),
  which is how training aligns the host's tokens with the SG branch's nodes.

Example::

    enc = encode_sample(sample, features, label_buckets=512)
    batch = collate([enc], [[0]], hard_negatives=True, dims=dataset.manifest["feature_dims"])
    batch.cap_feat.shape      # (1 + number of hard negatives of caption 0, 384)
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np
import torch

from schemas.errors import UserError
from schemas.records import TEXT_EDGE_KINDS, TEXT_NODE_KINDS, SampleFeatures, VideoSample

MAX_ATTRS = 4       # hashed attributes kept per detection
MAX_RELS = 4        # hashed predicates kept per spatial edge
MAX_ORDER = 31      # node-order positions embedded in the TSG
NEGATIVE_TYPES = ("swap_subject_object", "reverse_order", "change_relation", "change_adverb")


def word_bucket(word: str, buckets: int) -> int:
    """Stable hash of a (lower-cased) word into ``[1, buckets)``; 0 is padding."""
    return 1 + zlib.crc32(word.strip().lower().encode()) % (buckets - 1)


PHRASE_HEADS = (TEXT_NODE_KINDS.index("object"), TEXT_NODE_KINDS.index("relation"))
# a phrase = the head node's span plus the spans of these children (edge kind → child side)
PHRASE_CHILDREN = (TEXT_EDGE_KINDS.index("obj_attr"), TEXT_EDGE_KINDS.index("pred_adv"))


def phrase_members(node_kind: np.ndarray, edge_src: np.ndarray, edge_dst: np.ndarray, edge_kind: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(head node, member node) pairs: every object/relation node with itself and with its attribute
    (``obj_attr``) or adverb (``pred_adv``) children. Indices are whatever the inputs use."""
    heads = np.flatnonzero(np.isin(node_kind, PHRASE_HEADS)).astype(np.int64)
    child = np.isin(edge_kind, PHRASE_CHILDREN) & np.isin(edge_src, heads)
    return (np.concatenate([heads, edge_src[child]]).astype(np.int64),
            np.concatenate([heads, edge_dst[child]]).astype(np.int64))


def phrase_token_pairs(head: np.ndarray, member_cap: np.ndarray, member_span: np.ndarray, tok_cap: np.ndarray,
                       tok_span: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (head node, token) pair where a token of the same caption overlaps one of the head's member
    spans (special tokens, span ``(0, 0)``, never do); unique, sorted by head then token. ``tok_cap`` must be
    sorted (tokens are stored caption after caption). Used shard-wide and per sample alike."""
    if len(head) == 0 or len(tok_cap) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lo = np.searchsorted(tok_cap, member_cap, "left")
    count = np.searchsorted(tok_cap, member_cap, "right") - lo
    which = np.repeat(np.arange(len(head)), count)
    token = np.arange(int(count.sum()), dtype=np.int64) - np.repeat(np.cumsum(count) - count - lo, count)
    a, b = tok_span[token, 0], tok_span[token, 1]
    hit = (b > a) & (a < member_span[which, 1]) & (b > member_span[which, 0])
    pairs = np.unique(np.stack([head[which[hit]], token[hit]], 1), axis=0).reshape(-1, 2)
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


@dataclass
class CaptionGraph:
    """One caption's TSG and HSG facts, as arrays."""

    text: str
    feat: np.ndarray            # [Dc] sentence embedding (host text feature)
    node_feat: np.ndarray       # [m, Dt]
    node_kind: np.ndarray       # [m] index into TEXT_NODE_KINDS
    node_word: np.ndarray       # [m] hashed lemma
    node_order: np.ndarray      # [m] rank of the node in the sentence (by span start)
    edge_src: np.ndarray        # [e]
    edge_dst: np.ndarray
    edge_kind: np.ndarray       # [e] index into TEXT_EDGE_KINDS
    link_node: np.ndarray       # [l] text node → ...
    link_track: np.ndarray      # [l] ... local track index (best-scoring link per node)
    window: tuple[int, int]     # sampled-frame window [first, last]
    negative_of: int            # -1 for a real caption
    negative_type: str
    tokens: np.ndarray = None   # [L, Dt] host token states (None: the shards carry none)
    phrase_node: np.ndarray = None   # [q] local object/relation node ...
    phrase_token: np.ndarray = None  # [q] ... and a token of its phrase


@dataclass
class EncodedSample:
    """One video and all its captions, as arrays (what a loader worker produces)."""

    key: str
    frame_feat: np.ndarray      # [T, Df]
    det_feat: np.ndarray        # [N, Dd]
    det_box: np.ndarray         # [N, 4]
    det_word: np.ndarray        # [N] hashed label
    det_attr: np.ndarray        # [N, MAX_ATTRS] hashed attributes (0 = pad)
    det_frame: np.ndarray       # [N]
    det_track: np.ndarray       # [N] local track index or -1
    det_prev: np.ndarray        # [N] local index of the previous detection on the track, or -1
    edge_src: np.ndarray        # [E] local detection indices, same frame
    edge_dst: np.ndarray
    edge_rel: np.ndarray        # [E, MAX_RELS]
    n_tracks: int
    captions: list[CaptionGraph]
    frame_patch: np.ndarray = None  # [T, P, Dp] host grid cells per frame (P = 0: none)

    def real_captions(self) -> list[int]:
        return [i for i, c in enumerate(self.captions) if c.negative_of < 0]


def encode_sample(sample: VideoSample, features: SampleFeatures, label_buckets: int) -> EncodedSample:
    """Arrays for one stored sample (see the module docstring for the conventions)."""
    dsg = sample.dsg
    n_frames = len(dsg.frames)
    track_pos = {track.id: i for i, track in enumerate(dsg.tracks)}
    dets = dsg.detections
    n = len(dets)
    det_track = np.array([track_pos.get(d.track_id, -1) for d in dets], np.int64).reshape(n)
    det_frame = np.array([d.frame for d in dets], np.int64).reshape(n)
    det_box = np.array([d.box for d in dets], np.float32).reshape(n, 4)
    det_word = np.array([word_bucket(d.label, label_buckets) for d in dets], np.int64).reshape(n)

    attrs: list[list[int]] = [[] for _ in range(n)]
    by_track: dict[int, list[int]] = {}
    for i, d in enumerate(dets):
        by_track.setdefault(d.track_id, []).append(i)
    for a in dsg.attributes:
        word = word_bucket(a.value, label_buckets)
        targets = [a.target] if a.target_kind == "detection" else by_track.get(a.target, []) if a.target >= 0 else []
        for t in targets:
            if 0 <= t < n and len(attrs[t]) < MAX_ATTRS and word not in attrs[t]:
                attrs[t].append(word)
    det_attr = np.zeros((n, MAX_ATTRS), np.int64)
    for i, words in enumerate(attrs):
        det_attr[i, :len(words)] = words

    det_prev = np.full(n, -1, np.int64)
    for track_id, members in by_track.items():
        if track_id < 0:
            continue
        members = sorted(members, key=lambda i: det_frame[i])
        for prev, cur in zip(members, members[1:]):
            if det_frame[prev] < det_frame[cur]:
                det_prev[cur] = prev

    per_frame: dict[int, list[int]] = {}
    for i in range(n):
        per_frame.setdefault(int(det_frame[i]), []).append(i)
    pair_rels: dict[tuple[int, int], list[int]] = {}
    for r in dsg.relations:
        if 0 <= r.subject < n and 0 <= r.object < n:
            pair_rels.setdefault((r.subject, r.object), []).append(word_bucket(r.predicate, label_buckets))
    for tr in dsg.track_relations:
        subj, obj = by_track.get(tr.subject, []), by_track.get(tr.object, []) if tr.object >= 0 else []
        word = word_bucket(tr.predicate, label_buckets)
        obj_at = {int(det_frame[j]): j for j in obj}
        for i in subj:
            f = int(det_frame[i])
            if tr.first_frame <= f <= tr.last_frame:
                j = obj_at.get(f, i)  # unary events (entering, leaving) sit on the self-loop
                pair_rels.setdefault((i, j), []).append(word)
    src, dst, rel = [], [], []
    for members in per_frame.values():
        for i in members:
            for j in members:
                src.append(i)
                dst.append(j)
                words = pair_rels.get((i, j), [])[:MAX_RELS]
                rel.append(words + [0] * (MAX_RELS - len(words)))

    captions = []
    offset = 0
    text_feats = np.asarray(features.text_node)
    tok_cap = np.asarray(features.token_span)[:, 0].astype(np.int64)
    tok_span = np.asarray(features.token_span)[:, 1:].astype(np.int64)
    tok_start = np.searchsorted(tok_cap, np.arange(len(sample.hsgs) + 1))
    for j, hsg in enumerate(sample.hsgs):
        tsg = hsg.tsg
        m = len(tsg.nodes)
        node_feat = text_feats[offset:offset + m]
        offset += m
        order = np.argsort(np.argsort([nd.span[0] for nd in tsg.nodes], kind="stable"), kind="stable") if m else []
        best: dict[int, tuple[float, int]] = {}
        for link in hsg.links:
            if link.track_id in track_pos and 0 <= link.text_node < m:
                if link.text_node not in best or link.score > best[link.text_node][0]:
                    best[link.text_node] = (link.score, track_pos[link.track_id])
        # a negated relation/attribute keeps its node but none of its edges: no fact (and no PTC
        # positive) is read from "the cat does not jump onto the counter"
        edges = [(e.src, e.dst, TEXT_EDGE_KINDS.index(e.kind)) for e in tsg.edges
                 if e.kind in TEXT_EDGE_KINDS and 0 <= e.src < m and 0 <= e.dst < m
                 and not (tsg.nodes[e.src].negated or tsg.nodes[e.dst].negated)]
        first, last = hsg.frame_window
        last = min(max(last, 0), max(n_frames - 1, 0))
        first = min(max(first, 0), last)
        kinds = np.array([TEXT_NODE_KINDS.index(nd.kind) if nd.kind in TEXT_NODE_KINDS else 0
                          for nd in tsg.nodes], np.int64).reshape(m)
        t0, t1 = tok_start[j], tok_start[j + 1]
        head, member = phrase_members(kinds, *(np.array([e[i] for e in edges], np.int64) for i in range(3)))
        spans = np.array([nd.span for nd in tsg.nodes], np.int64).reshape(m, 2)
        phrase_node, phrase_token = phrase_token_pairs(head, np.zeros(len(head), np.int64), spans[member],
                                                       np.zeros(t1 - t0, np.int64), tok_span[t0:t1])
        captions.append(CaptionGraph(
            text=tsg.text,
            feat=np.asarray(features.caption[j]),
            node_feat=node_feat,
            node_kind=kinds,
            node_word=np.array([word_bucket(nd.lemma or nd.label, label_buckets) for nd in tsg.nodes],
                               np.int64).reshape(m),
            node_order=np.minimum(np.asarray(order, np.int64), MAX_ORDER).reshape(m),
            edge_src=np.array([e[0] for e in edges], np.int64),
            edge_dst=np.array([e[1] for e in edges], np.int64),
            edge_kind=np.array([e[2] for e in edges], np.int64),
            link_node=np.array(sorted(best), np.int64),
            link_track=np.array([best[k][1] for k in sorted(best)], np.int64),
            window=(first, last),
            negative_of=-1 if hsg.negative_of is None else int(hsg.negative_of),
            negative_type=hsg.negative_type or "",
            tokens=np.asarray(features.caption_token)[t0:t1], phrase_node=phrase_node, phrase_token=phrase_token,
        ))
    return EncodedSample(
        key=sample.key, frame_feat=np.asarray(features.frame), det_feat=np.asarray(features.detection),
        det_box=det_box, det_word=det_word, det_attr=det_attr, det_frame=det_frame, det_track=det_track,
        det_prev=det_prev, edge_src=np.array(src, np.int64), edge_dst=np.array(dst, np.int64),
        edge_rel=np.array(rel, np.int64).reshape(len(rel), MAX_RELS), n_tracks=len(dsg.tracks),
        captions=captions, frame_patch=frame_cells(np.asarray(features.frame_patch), n_frames))


def frame_cells(rows: np.ndarray, n_frames: int) -> np.ndarray:
    """Stored ``frame_patch`` rows (frame after frame) → ``[T, P, Dp]``."""
    per_frame = len(rows) // n_frames if n_frames else 0
    if per_frame * n_frames != len(rows):
        raise ValueError(f"{len(rows)} frame_patch rows do not split into {n_frames} frames")
    return rows.reshape(n_frames, per_frame, rows.shape[1])


@dataclass
class GraphBatch:
    """A collated batch; every field is a tensor except ``keys``/``texts``/``neg_types``."""

    keys: list[str]
    texts: list[str]
    neg_types: list[str]
    # video side
    frame_feat: torch.Tensor    # [B, T, Df]
    frame_mask: torch.Tensor    # [B, T] bool
    det_feat: torch.Tensor      # [N, Dd]
    det_box: torch.Tensor       # [N, 4]
    det_word: torch.Tensor      # [N]
    det_attr: torch.Tensor      # [N, MAX_ATTRS]
    det_video: torch.Tensor     # [N]
    det_frame: torch.Tensor     # [N] frame position inside the video
    det_slot: torch.Tensor      # [N] video * T + frame
    det_track: torch.Tensor     # [N] batch track index or -1
    det_prev: torch.Tensor      # [N] batch detection index or -1
    edge_src: torch.Tensor      # [E]
    edge_dst: torch.Tensor
    edge_rel: torch.Tensor      # [E, MAX_RELS]
    track_video: torch.Tensor   # [K]
    # text side
    cap_feat: torch.Tensor      # [C, Dc]
    cap_video: torch.Tensor     # [C]
    cap_neg_of: torch.Tensor    # [C] batch caption index or -1
    cap_window: torch.Tensor    # [C, 2]
    node_feat: torch.Tensor     # [M, Dt]
    node_kind: torch.Tensor     # [M]
    node_word: torch.Tensor     # [M]
    node_order: torch.Tensor    # [M]
    node_cap: torch.Tensor      # [M]
    tedge_src: torch.Tensor     # [Et]
    tedge_dst: torch.Tensor
    tedge_kind: torch.Tensor
    link_node: torch.Tensor     # [L] batch text node
    link_track: torch.Tensor    # [L] batch track
    # host token / patch features (padded) and the phrase pairs that align them with the TSG nodes
    patch_feat: torch.Tensor    # [B, T, P, Dp]
    tok_feat: torch.Tensor      # [C, Lt, Dt]
    tok_mask: torch.Tensor      # [C, Lt] bool
    pt_node: torch.Tensor       # [Q] batch text node
    pt_token: torch.Tensor      # [Q] caption * Lt + token
    origin: tuple[int, int] = (0, 0)  # (logical loader worker, batch index within it): the data position
    # videos without captions that ride along (ShardStream(uncaptioned=True)): their own batch, no captions
    video_only: Optional["GraphBatch"] = None

    @property
    def num_videos(self) -> int:
        return int(self.frame_feat.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.frame_feat.shape[1])

    def to(self, device: torch.device | str) -> "GraphBatch":
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value.to(device, non_blocking=True)
            elif isinstance(value, GraphBatch):
                value = value.to(device)
            moved[f.name] = value
        return GraphBatch(**moved)

    def pin_memory(self) -> "GraphBatch":
        pinned = {}
        for f in fields(self):
            value = getattr(self, f.name)
            pinned[f.name] = value.pin_memory() if isinstance(value, (torch.Tensor, GraphBatch)) else value
        return GraphBatch(**pinned)


def check_finite(features: dict[str, np.ndarray], key: str, shard: str) -> dict[str, np.ndarray]:
    """``features`` (one sample's rows of each feature array), after checking every value is finite: a NaN
    or infinite feature would train NaN weights and evaluate as ties (build-sgs never writes one since
    schema 4; a shard of an older build may hold one). One line naming the sample otherwise."""
    for name, rows in features.items():
        if rows.dtype.kind == "f" and not np.isfinite(rows).all():
            raise UserError(f"shard {shard}, sample {key!r}: its {name} features hold NaN or infinite values; "
                            f"rebuild it (a build of this finsta records such a sample as failed)")
    return features


def copy_into(out: np.ndarray, values: np.ndarray) -> None:
    """``out[...] = values`` through torch: numpy's float16 → float32 cast is ~8× slower, and the stored
    features are float16 (padding the host's cells with numpy was a third of the loader's time)."""
    torch.from_numpy(out).copy_(torch.from_numpy(np.ascontiguousarray(values)))


def _cat(parts: list[np.ndarray], dtype, width: Optional[int] = None) -> torch.Tensor:
    if not parts:
        return torch.zeros((0,) if width is None else (0, width), dtype=dtype)
    return torch.from_numpy(np.concatenate(parts)).to(torch.float32 if dtype == torch.float32 else torch.int64)


def pad_patches(cells: list[Optional[np.ndarray]], t_max: int, width: int) -> np.ndarray:
    """Per-video ``[T, P, Dp]`` cells → ``[B, t_max, P, Dp]`` float32 (zeros past a video's end)."""
    widths = {len(c[0]) for c in cells if c is not None and len(c)}
    if len(widths) > 1:
        raise ValueError(f"videos of one batch have different frame_patch grids ({sorted(widths)} cells a frame)")
    per_frame = widths.pop() if widths else 0
    out = np.zeros((len(cells), t_max, per_frame, width), np.float32)
    for v, c in enumerate(cells):
        if c is not None and len(c) and per_frame:
            copy_into(out[v, :len(c)], c)
    return out


def pad_tokens(tokens: list[Optional[np.ndarray]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-caption ``[L, Dt]`` token states → ``[C, L_max, Dt]`` float32 and its ``[C, L_max]`` mask."""
    lengths = [0 if t is None else len(t) for t in tokens]
    l_max = max(lengths + [1])
    feat = np.zeros((len(tokens), l_max, width), np.float32)
    mask = np.zeros((len(tokens), l_max), bool)
    for c, (t, n) in enumerate(zip(tokens, lengths)):
        if n:
            copy_into(feat[c, :n], t)
            mask[c, :n] = True
    return feat, mask


def collate(samples: list[EncodedSample], chosen: list[list[int]], hard_negatives: bool,
            dims: dict[str, int]) -> GraphBatch:
    """One batch from encoded samples.

    ``chosen[i]`` lists the real captions of sample ``i`` to include; with
    ``hard_negatives`` the stored perturbations of those captions follow them
    (marked by ``cap_neg_of``).
    """
    b = len(samples)
    t_max = max([len(s.frame_feat) for s in samples] + [1])
    df = dims["frame"]
    frame_feat = np.zeros((b, t_max, df), np.float32)
    frame_mask = np.zeros((b, t_max), bool)
    det = {name: [] for name in ("feat", "box", "word", "attr", "video", "frame", "slot", "track", "prev")}
    esrc, edst, erel, track_video = [], [], [], []
    cap_feat, cap_video, cap_neg_of, cap_window, texts, neg_types = [], [], [], [], [], []
    node = {name: [] for name in ("feat", "kind", "word", "order", "cap")}
    tsrc, tdst, tkind, lnode, ltrack = [], [], [], [], []
    tokens, pt_node, pt_cap, pt_tok = [], [], [], []
    n_det = n_track = n_node = 0
    for v, (s, picks) in enumerate(zip(samples, chosen)):
        t = len(s.frame_feat)
        copy_into(frame_feat[v, :t], s.frame_feat)
        frame_mask[v, :t] = True
        n = len(s.det_feat)
        det["feat"].append(s.det_feat)
        det["box"].append(s.det_box)
        det["word"].append(s.det_word)
        det["attr"].append(s.det_attr)
        det["video"].append(np.full(n, v, np.int64))
        det["frame"].append(s.det_frame)
        det["slot"].append(v * t_max + s.det_frame)
        det["track"].append(np.where(s.det_track >= 0, s.det_track + n_track, -1))
        det["prev"].append(np.where(s.det_prev >= 0, s.det_prev + n_det, -1))
        esrc.append(s.edge_src + n_det)
        edst.append(s.edge_dst + n_det)
        erel.append(s.edge_rel)
        track_video.append(np.full(s.n_tracks, v, np.int64))

        order = []
        for j in picks:
            order.append((j, -1))
            if hard_negatives:
                order.extend((k, j) for k, c in enumerate(s.captions) if c.negative_of == j)
        first_of: dict[int, int] = {}
        for j, parent in order:
            c = s.captions[j]
            ci = len(cap_feat)
            if parent < 0:
                first_of[j] = ci
            cap_feat.append(c.feat[None])
            cap_video.append(v)
            cap_neg_of.append(first_of[parent] if parent >= 0 else -1)
            cap_window.append(c.window)
            texts.append(c.text)
            neg_types.append(c.negative_type)
            m = len(c.node_feat)
            node["feat"].append(c.node_feat)
            node["kind"].append(c.node_kind)
            node["word"].append(c.node_word)
            node["order"].append(c.node_order)
            node["cap"].append(np.full(m, ci, np.int64))
            tsrc.append(c.edge_src + n_node)
            tdst.append(c.edge_dst + n_node)
            tkind.append(c.edge_kind)
            if parent < 0:  # links of real captions feed OSC
                lnode.append(c.link_node + n_node)
                ltrack.append(c.link_track + n_track)
            tokens.append(c.tokens)
            if c.phrase_node is not None:
                pt_node.append(c.phrase_node + n_node)
                pt_cap.append(np.full(len(c.phrase_node), ci, np.int64))
                pt_tok.append(c.phrase_token)
            n_node += m
        n_det += n
        n_track += s.n_tracks
    dd, dt = dims["detection"], dims["text_node"]
    f32, i64 = torch.float32, torch.int64
    tok_feat, tok_mask = pad_tokens(tokens, dims.get("caption_token", 0))
    pt_token = _cat(pt_cap, i64) * tok_feat.shape[1] + _cat(pt_tok, i64)
    return GraphBatch(
        keys=[s.key for s in samples], texts=texts, neg_types=neg_types,
        frame_feat=torch.from_numpy(frame_feat), frame_mask=torch.from_numpy(frame_mask),
        det_feat=_cat(det["feat"], f32, dd), det_box=_cat(det["box"], f32, 4), det_word=_cat(det["word"], i64),
        det_attr=_cat(det["attr"], i64, MAX_ATTRS), det_video=_cat(det["video"], i64),
        det_frame=_cat(det["frame"], i64), det_slot=_cat(det["slot"], i64), det_track=_cat(det["track"], i64),
        det_prev=_cat(det["prev"], i64), edge_src=_cat(esrc, i64), edge_dst=_cat(edst, i64),
        edge_rel=_cat(erel, i64, MAX_RELS), track_video=_cat(track_video, i64),
        cap_feat=_cat(cap_feat, f32, dims["caption"]),
        cap_video=torch.tensor(cap_video, dtype=i64), cap_neg_of=torch.tensor(cap_neg_of, dtype=i64),
        cap_window=torch.tensor(cap_window, dtype=i64).reshape(-1, 2),
        node_feat=_cat(node["feat"], f32, dt), node_kind=_cat(node["kind"], i64),
        node_word=_cat(node["word"], i64), node_order=_cat(node["order"], i64), node_cap=_cat(node["cap"], i64),
        tedge_src=_cat(tsrc, i64), tedge_dst=_cat(tdst, i64), tedge_kind=_cat(tkind, i64),
        link_node=_cat(lnode, i64), link_track=_cat(ltrack, i64),
        patch_feat=torch.from_numpy(pad_patches([s.frame_patch for s in samples], t_max,
                                                dims.get("frame_patch", 0))),
        tok_feat=torch.from_numpy(tok_feat), tok_mask=torch.from_numpy(tok_mask),
        pt_node=_cat(pt_node, i64), pt_token=pt_token,
    )
