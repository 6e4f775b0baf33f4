"""A shard's Arrow table decoded column-wise straight into :class:`EncodedSample` arrays.

The training read path. :func:`encode_shard` yields, for every sample of a
shard, exactly what ``encode_sample(*dataset.get(key))`` returns (every array,
dtype and value; see :mod:`finsta_model.graphs` for the conventions), without
building the record dataclasses: each nested list column of ``samples.arrow``
is flattened once per shard, every fact (a track's position, a detection's
attributes, a spatial edge's predicates, a text node's rank) is computed for
the whole shard with numpy sorts and joins, and each sample is then cut out of
those shard-wide arrays. Words are hashed once per distinct string per shard.
``encode_sample`` stays the readable reference; tests/finsta_model/test_columnar.py
holds the two equal.

Example::

    ds = open_dataset("out/synth")
    for enc in encode_shard(ds, ds.shard_names()[0], label_buckets=512):
        enc.det_attr.shape      # (detections, MAX_ATTRS)
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from finsta_model.graphs import (MAX_ATTRS, MAX_ORDER, MAX_RELS, CaptionGraph, EncodedSample, check_finite,
                                 frame_cells, phrase_members, phrase_token_pairs, word_bucket)
from schemas.records import TEXT_EDGE_KINDS, TEXT_NODE_KINDS
from schemas.store import Dataset

_I64 = np.int64


def encode_shard(dataset: Dataset, shard: str, label_buckets: int) -> Iterator[EncodedSample]:
    """The encoded samples of ``shard``, in the shard's row order (one shard in memory at a time)."""
    # The store's own shard reader: one place decides how the Arrow file and the Zarr arrays are read
    # (small arrays whole, large ones sliced per sample).
    table, _, arrays = dataset.shard_columns(shard)
    for batch in table.combine_chunks().to_batches():  # one batch unless a column outgrows 32-bit offsets
        yield from _ShardColumns(batch, dataset, arrays, label_buckets, shard).samples()


# ------------------------------------------------------------------ helpers
def _ints(array: pa.Array) -> np.ndarray:
    return array.to_numpy(zero_copy_only=False).astype(_I64, copy=False)


def _columns(structs: pa.Array) -> dict[str, pa.Array]:
    """A struct array's fields by name (one offset-aware call: ``pc.struct_field`` per field costs more)."""
    return {structs.type.field(i).name: child for i, child in enumerate(structs.flatten())}


def _offsets(lists: pa.Array) -> np.ndarray:
    """Where each row's values start in ``lists.flatten()`` (``len(lists) + 1`` offsets; no null lists)."""
    return np.concatenate([[0], np.cumsum(_ints(pc.list_value_length(lists)))]).astype(_I64)


def _rows(lists: pa.Array) -> tuple[dict[str, pa.Array], np.ndarray]:
    """A ``list<struct>`` column as flat fields plus the per-row offsets."""
    return _columns(lists.flatten()), _offsets(lists)


def _owner(offsets: np.ndarray) -> np.ndarray:
    """For each flattened value, the row it came from."""
    return np.repeat(np.arange(len(offsets) - 1, dtype=_I64), np.diff(offsets))


def _row_codes(*columns: np.ndarray) -> np.ndarray:
    """Dense int64 codes of the rows of equal-length columns: equal codes ⇔ equal in every column."""
    code = np.zeros(len(columns[0]), _I64)
    for column in columns:
        _, inverse = np.unique(column, return_inverse=True)
        code = code * (int(inverse.max(initial=0)) + 1) + inverse.reshape(-1)
        _, code = np.unique(code, return_inverse=True)
        code = code.reshape(-1).astype(_I64)
    return code


def _joint_codes(table: tuple[np.ndarray, ...], query: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Row codes for table rows and query rows that compare across the two."""
    codes = _row_codes(*[np.concatenate([t, q]) for t, q in zip(table, query)])
    return codes[:len(table[0])], codes[len(table[0]):]


def _last_match(table: tuple[np.ndarray, ...], query: tuple[np.ndarray, ...]) -> np.ndarray:
    """For each query row, the largest index of an equal table row, or -1 (a dict built in table order)."""
    if len(query[0]) == 0 or len(table[0]) == 0:
        return np.full(len(query[0]), -1, _I64)
    table_codes, query_codes = _joint_codes(table, query)
    order = np.argsort(table_codes, kind="stable")
    ordered = table_codes[order]
    hi = np.searchsorted(ordered, query_codes, "right")
    found = (hi > 0) & (ordered[np.maximum(hi - 1, 0)] == query_codes)
    return np.where(found, order[np.maximum(hi - 1, 0)], -1)


def _all_matches(table: tuple[np.ndarray, ...], query: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Every (query row, equal table row) pair, by query row then ascending table row."""
    if len(query[0]) == 0 or len(table[0]) == 0:
        return np.zeros(0, _I64), np.zeros(0, _I64)
    table_codes, query_codes = _joint_codes(table, query)
    order = np.argsort(table_codes, kind="stable")
    ordered = table_codes[order]
    lo = np.searchsorted(ordered, query_codes, "left")
    counts = np.searchsorted(ordered, query_codes, "right") - lo
    which = np.repeat(np.arange(len(query_codes), dtype=_I64), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(int(counts.sum()), dtype=_I64) - np.repeat(starts - lo, counts)
    return which, order[position]


def _rank_in_groups(sorted_groups: np.ndarray) -> np.ndarray:
    """Position of each element inside its run of equal values (the input is grouped)."""
    n = len(sorted_groups)
    if n == 0:
        return np.zeros(0, _I64)
    starts = np.flatnonzero(np.concatenate([[True], sorted_groups[1:] != sorted_groups[:-1]]))
    return np.arange(n, dtype=_I64) - np.repeat(starts, np.diff(np.concatenate([starts, [n]])))


def _kind_index(strings: pa.Array, kinds: tuple[str, ...]) -> np.ndarray:
    """``kinds.index(s)`` per string, -1 when absent."""
    return _ints(pc.index_in(strings, value_set=pa.array(kinds, pa.string())).fill_null(-1))


# ------------------------------------------------------------------ the shard
class _ShardColumns:
    """Every fact of one shard as flat arrays; :meth:`samples` cuts them per sample."""

    def __init__(self, table: pa.RecordBatch, dataset: Dataset, arrays: dict[str, Any], label_buckets: int,
                 shard: str = ""):
        self.shard = shard
        self.dataset, self.arrays, self.buckets = dataset, arrays, label_buckets
        self.keys = table.column("key").to_pylist()
        self.n_samples = len(self.keys)
        self.features = table.column("features").to_pylist()
        dsg = _columns(table.column("dsg"))
        self.n_frames = _ints(pc.list_value_length(dsg["frames"]))
        dets, self.det_offsets = _rows(dsg["detections"])
        attrs, attr_offsets = _rows(dsg["attributes"])
        rels, rel_offsets = _rows(dsg["relations"])
        tracks, self.track_offsets = _rows(dsg["tracks"])
        track_rels, track_rel_offsets = _rows(dsg["track_relations"])
        hsgs, self.cap_offsets = _rows(table.column("hsgs"))
        tsg = _columns(hsgs["tsg"])
        nodes, self.node_offsets = _rows(tsg["nodes"])
        (self.det_word, attr_word, rel_word, track_rel_word, self.node_word) = self._hash_words(
            dets["label"], attrs["value"], rels["predicate"], track_rels["predicate"],
            pc.if_else(pc.equal(nodes["lemma"], ""), nodes["label"], nodes["lemma"]))  # lemma or label

        det_sample = _owner(self.det_offsets)
        self.det_frame = _ints(dets["frame"])
        det_track_id = _ints(dets["track_id"])
        self.det_box = dets["box"].flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, 4)
        self.det_local = np.arange(len(det_sample), dtype=_I64) - self.det_offsets[det_sample]
        # track_pos: the last track with an id wins, as in a dict built in list order
        self.track_table = (_owner(self.track_offsets), _ints(tracks["id"]))
        row = _last_match(self.track_table, (det_sample, det_track_id))
        self.det_track = np.where(row >= 0, row - self.track_offsets[det_sample], -1)
        self.det_attr = self._attributes(attrs, _owner(attr_offsets), attr_word, det_sample, det_track_id)
        self.det_prev = self._previous(det_sample, det_track_id, self.det_frame)
        self.edge_src, self.edge_dst, edge_sample = self._spatial_edges(det_sample, self.det_frame)
        self.edge_offsets = np.searchsorted(edge_sample, np.arange(self.n_samples + 1), "left")
        self.edge_rel = self._edge_relations(rels, _owner(rel_offsets), rel_word, track_rels,
                                             _owner(track_rel_offsets), track_rel_word, det_sample, det_track_id)
        self._captions(hsgs, tsg, nodes)

    def _hash_words(self, *columns: pa.Array) -> list[np.ndarray]:
        """``word_bucket`` of every string, computed once per distinct string of the shard."""
        words = pa.concat_arrays([c.cast(pa.string()) for c in columns]).dictionary_encode()
        table = np.array([word_bucket(w, self.buckets) for w in words.dictionary.to_pylist()], _I64)
        hashed = table[_ints(words.indices)] if len(words) else np.zeros(0, _I64)
        bounds = np.cumsum([0] + [len(c) for c in columns])
        return [hashed[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    # -------------------------------------------------------------- video side
    def _attributes(self, attrs: dict[str, pa.Array], sample: np.ndarray, word: np.ndarray,
                    det_sample: np.ndarray, det_track_id: np.ndarray) -> np.ndarray:
        target = _ints(attrs["target"])
        on_detection = pc.equal(attrs["target_kind"], "detection").to_numpy(zero_copy_only=False).astype(bool)
        # a detection target indexes detections; any other target is a track id (negative: none)
        per_sample = np.diff(self.det_offsets)
        direct = np.flatnonzero(on_detection & (target >= 0) & (target < per_sample[sample]))
        track_attrs = np.flatnonzero(~on_detection & (target >= 0))
        which, dets = _all_matches((det_sample, det_track_id), (sample[track_attrs], target[track_attrs]))
        attr_index = np.concatenate([direct, track_attrs[which]])
        det = np.concatenate([self.det_offsets[sample[direct]] + target[direct], dets])
        order = np.lexsort((attr_index, det))
        det, word = det[order], word[attr_index[order]]
        # first occurrence of each (detection, word), then the first MAX_ATTRS of them per detection
        _, first = np.unique(det * self.buckets + word, return_index=True)
        keep = np.sort(first)
        det, word = det[keep], word[keep]
        rank = _rank_in_groups(det)
        det_attr = np.zeros((len(det_sample), MAX_ATTRS), _I64)
        fits = rank < MAX_ATTRS
        det_attr[det[fits], rank[fits]] = word[fits]
        return det_attr

    def _previous(self, det_sample: np.ndarray, det_track_id: np.ndarray, det_frame: np.ndarray) -> np.ndarray:
        n = len(det_sample)
        det_prev = np.full(n, -1, _I64)
        if n < 2:
            return det_prev
        order = np.lexsort((np.arange(n), det_frame, det_track_id, det_sample))
        prev, cur = order[:-1], order[1:]
        linked = ((det_sample[prev] == det_sample[cur]) & (det_track_id[prev] == det_track_id[cur])
                  & (det_track_id[cur] >= 0) & (det_frame[prev] < det_frame[cur]))
        det_prev[cur[linked]] = self.det_local[prev[linked]]
        return det_prev

    def _spatial_edges(self, det_sample: np.ndarray, det_frame: np.ndarray) -> tuple[np.ndarray, ...]:
        """Every ordered pair of one frame's detections, frames in order of first appearance."""
        n = len(det_sample)
        if n == 0:
            return np.zeros(0, _I64), np.zeros(0, _I64), np.zeros(0, _I64)
        _, first, inverse = np.unique(_row_codes(det_sample, det_frame), return_index=True, return_inverse=True)
        group_first = first[inverse.reshape(-1)]
        members = np.lexsort((np.arange(n), group_first))
        starts = np.flatnonzero(np.concatenate([[True], np.diff(group_first[members]) != 0]))
        sizes = np.diff(np.concatenate([starts, [n]]))
        pairs = sizes * sizes
        group = np.repeat(np.arange(len(sizes)), pairs)
        k = np.arange(int(pairs.sum()), dtype=_I64) - np.repeat(np.cumsum(pairs) - pairs, pairs)
        src = members[starts[group] + k // sizes[group]]
        dst = members[starts[group] + k % sizes[group]]
        return src, dst, det_sample[src]

    def _edge_relations(self, rels: dict[str, pa.Array], rel_sample: np.ndarray, rel_word: np.ndarray,
                        track_rels: dict[str, pa.Array], tr_sample: np.ndarray, tr_word: np.ndarray,
                        det_sample: np.ndarray, det_track_id: np.ndarray) -> np.ndarray:
        n = len(det_sample)
        edge_rel = np.zeros((len(self.edge_src), MAX_RELS), _I64)
        if n == 0:
            return edge_rel
        per_sample = np.diff(self.det_offsets)[rel_sample]
        subj, obj = _ints(rels["subject"]), _ints(rels["object"])
        ok = (subj >= 0) & (subj < per_sample) & (obj >= 0) & (obj < per_sample)
        base = self.det_offsets[rel_sample[ok]]
        rel_src, rel_dst, rel_word = base + subj[ok], base + obj[ok], rel_word[ok]

        tr_subj, tr_obj = _ints(track_rels["subject"]), _ints(track_rels["object"])
        first, last = _ints(track_rels["first_frame"]), _ints(track_rels["last_frame"])
        which, dets = _all_matches((det_sample, det_track_id), (tr_sample, tr_subj))
        frame = self.det_frame[dets]
        active = (first[which] <= frame) & (frame <= last[which])
        which, dets, frame = which[active], dets[active], frame[active]
        # the object track's detection on the same frame (the last one listed), else the self-loop
        partner = _last_match((det_sample, det_track_id, self.det_frame), (tr_sample[which], tr_obj[which], frame))
        partner = np.where((tr_obj[which] >= 0) & (partner >= 0), partner, dets)

        pair = np.concatenate([rel_src, dets]) * n + np.concatenate([rel_dst, partner])
        word = np.concatenate([rel_word, tr_word[which]])
        order = np.argsort(pair, kind="stable")
        pair, word = pair[order], word[order]
        rank = _rank_in_groups(pair)
        fits = rank < MAX_RELS
        pair, word, rank = pair[fits], word[fits], rank[fits]
        # relations between detections of different frames name no spatial edge: dropped
        edge_pair = self.edge_src * n + self.edge_dst
        edge_order = np.argsort(edge_pair)
        ordered = edge_pair[edge_order]
        slot = np.minimum(np.searchsorted(ordered, pair), len(ordered) - 1)
        hit = ordered[slot] == pair
        edge_rel[edge_order[slot[hit]], rank[hit]] = word[hit]
        return edge_rel

    # -------------------------------------------------------------- text side
    def _captions(self, hsgs: dict[str, pa.Array], tsg: dict[str, pa.Array], nodes: dict[str, pa.Array]) -> None:
        cap_sample = _owner(self.cap_offsets)
        n_caps = len(cap_sample)
        self.texts = tsg["text"].to_pylist()
        self.negative_of = _ints(hsgs["negative_of"].fill_null(-1))
        self.negative_type = hsgs["negative_type"].fill_null("").to_pylist()
        window = _ints(hsgs["frame_window"].flatten()).reshape(n_caps, 2)
        top = np.maximum(self.n_frames[cap_sample] - 1, 0)
        last = np.minimum(np.maximum(window[:, 1], 0), top)
        first = np.minimum(np.maximum(window[:, 0], 0), last)
        self.windows = list(zip(first.tolist(), last.tolist()))

        node_cap = _owner(self.node_offsets)
        n_nodes = len(node_cap)
        m = np.diff(self.node_offsets)
        self.node_kind = np.maximum(_kind_index(nodes["kind"], TEXT_NODE_KINDS), 0)
        node_span = _ints(nodes["span"].flatten()).reshape(n_nodes, 2)
        span_start = node_span[:, 0]
        ranked = np.lexsort((np.arange(n_nodes), span_start, node_cap))
        node_order = np.empty(n_nodes, _I64)
        node_order[ranked] = np.arange(n_nodes, dtype=_I64) - self.node_offsets[node_cap[ranked]]
        self.node_order = np.minimum(node_order, MAX_ORDER)
        # where each caption's rows start inside its sample's text_node features
        self.node_row = self.node_offsets[:-1] - self.node_offsets[self.cap_offsets[cap_sample]]

        edges, offsets = _rows(tsg["edges"])
        edge_cap = _owner(offsets)
        src, dst = _ints(edges["src"]), _ints(edges["dst"])
        kind = _kind_index(edges["kind"], TEXT_EDGE_KINDS)
        ok = (kind >= 0) & (src >= 0) & (src < m[edge_cap]) & (dst >= 0) & (dst < m[edge_cap])
        negated = nodes["negated"].to_numpy(zero_copy_only=False).astype(bool)
        first = self.node_offsets[edge_cap]   # as encode_sample: a negated node keeps no edge
        ok[ok] = ~(negated[first[ok] + src[ok]] | negated[first[ok] + dst[ok]])
        self.tedge_src, self.tedge_dst, self.tedge_kind = src[ok], dst[ok], kind[ok]
        self.tedge_offsets = np.searchsorted(edge_cap[ok], np.arange(n_caps + 1), "left")

        self._links(*_rows(hsgs["links"]), cap_sample, m)
        base = self.node_offsets[edge_cap[ok]]
        self._phrases(node_cap, node_span, self.tedge_src + base, self.tedge_dst + base, cap_sample)

    def _phrases(self, node_cap: np.ndarray, node_span: np.ndarray, edge_src: np.ndarray, edge_dst: np.ndarray,
                 cap_sample: np.ndarray) -> None:
        """Shard-wide token rows per caption and (object/relation node, token of its phrase) pairs."""
        refs = [f["token_span"] for f in self.features]
        spans = self.arrays["token_span"]
        rows = [np.asarray(spans[r["offset"]:r["offset"] + r["count"]], _I64).reshape(-1, 3) for r in refs]
        rows = np.concatenate(rows) if rows else np.zeros((0, 3), _I64)
        tok_sample = np.repeat(np.arange(self.n_samples, dtype=_I64), [r["count"] for r in refs])
        tok_cap = self.cap_offsets[tok_sample] + rows[:, 0] if len(rows) else np.zeros(0, _I64)
        if len(tok_cap) and (np.any(np.diff(tok_cap) < 0) or rows[:, 0].min() < 0
                             or np.any(rows[:, 0] >= np.diff(self.cap_offsets)[tok_sample])):
            raise ValueError("token_span rows are not caption after caption within the shard's captions")
        self.tok_offsets = np.searchsorted(tok_cap, np.arange(len(cap_sample) + 1), "left")
        sample_tok = np.concatenate([[0], np.cumsum([r["count"] for r in refs])]).astype(_I64)
        self.tok_row = self.tok_offsets[:-1] - sample_tok[cap_sample]   # caption's first row in its sample
        head, member = phrase_members(self.node_kind, edge_src, edge_dst, self.tedge_kind)
        node, token = phrase_token_pairs(head, node_cap[member], node_span[member], tok_cap, rows[:, 1:])
        pair_cap = node_cap[node]
        self.phrase_node = node - self.node_offsets[pair_cap]
        self.phrase_token = token - self.tok_offsets[pair_cap]
        self.phrase_offsets = np.searchsorted(pair_cap, np.arange(len(cap_sample) + 1), "left")

    def _links(self, links: dict[str, pa.Array], offsets: np.ndarray, cap_sample: np.ndarray, m: np.ndarray) -> None:
        """Per text node, the track of its best-scoring link (the first one on ties)."""
        link_cap = _owner(offsets)
        node = _ints(links["text_node"])
        score = links["score"].to_numpy(zero_copy_only=False).astype(np.float64)
        sample = cap_sample[link_cap]
        track = _last_match(self.track_table, (sample, _ints(links["track_id"])))
        ok = (track >= 0) & (node >= 0) & (node < m[link_cap])
        index = np.flatnonzero(ok)
        # NaN scores never compare greater, so "the maximum" is order-dependent: decided by the reference loop
        self.nan_caps = set(link_cap[index[np.isnan(score[index])]].tolist())
        order = index[np.lexsort((index, -score[index], node[index], link_cap[index]))]
        group = link_cap[order] * (int(m.max(initial=0)) + 1) + node[order]
        winner = order[_rank_in_groups(group) == 0]
        self.link_node = node[winner]
        self.link_track = track[winner] - self.track_offsets[sample[winner]]
        self.link_offsets = np.searchsorted(link_cap[winner], np.arange(len(m) + 1), "left")
        if self.nan_caps:
            self._raw_links = (link_cap, node, score, track, ok, sample)

    def _nan_links(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        link_cap, node, score, track, ok, sample = self._raw_links
        best: dict[int, tuple[float, int]] = {}
        for i in np.flatnonzero((link_cap == c) & ok):
            t = int(node[i])
            if t not in best or score[i] > best[t][0]:
                best[t] = (score[i], int(track[i] - self.track_offsets[sample[i]]))
        keys = sorted(best)
        return np.array(keys, _I64), np.array([best[k][1] for k in keys], _I64)

    # -------------------------------------------------------------- per sample
    def samples(self) -> Iterator[EncodedSample]:
        # offsets as Python ints: this loop runs once per caption, and numpy scalars slice slower
        det, edge, track, cap = (a.tolist() for a in (self.det_offsets, self.edge_offsets, self.track_offsets,
                                                      self.cap_offsets))
        node, tedge, link = (a.tolist() for a in (self.node_offsets, self.tedge_offsets, self.link_offsets))
        node_row, negative_of = self.node_row.tolist(), self.negative_of.tolist()
        tok, tok_row, phrase = self.tok_offsets.tolist(), self.tok_row.tolist(), self.phrase_offsets.tolist()
        for s, key in enumerate(self.keys):
            features = check_finite(self.dataset.feature_rows(self.features[s], self.arrays), key, self.shard)
            text_node, caption, tokens = features["text_node"], features["caption"], features["caption_token"]
            captions = []
            for j, c in enumerate(range(cap[s], cap[s + 1])):
                n0, n1, t0, t1, row = node[c], node[c + 1], tedge[c], tedge[c + 1], node_row[c]
                k0, k1 = phrase[c], phrase[c + 1]
                if c in self.nan_caps:
                    link_node, link_track = self._nan_links(c)
                else:
                    link_node, link_track = self.link_node[link[c]:link[c + 1]], self.link_track[link[c]:link[c + 1]]
                captions.append(CaptionGraph(
                    text=self.texts[c], feat=caption[j], node_feat=text_node[row:row + n1 - n0],
                    node_kind=self.node_kind[n0:n1], node_word=self.node_word[n0:n1],
                    node_order=self.node_order[n0:n1], edge_src=self.tedge_src[t0:t1],
                    edge_dst=self.tedge_dst[t0:t1], edge_kind=self.tedge_kind[t0:t1], link_node=link_node,
                    link_track=link_track, window=self.windows[c], negative_of=negative_of[c],
                    negative_type=self.negative_type[c], tokens=tokens[tok_row[c]:tok_row[c] + tok[c + 1] - tok[c]],
                    phrase_node=self.phrase_node[k0:k1], phrase_token=self.phrase_token[k0:k1]))
            d0, d1, e0, e1 = det[s], det[s + 1], edge[s], edge[s + 1]
            yield EncodedSample(
                key=key, frame_feat=features["frame"], det_feat=features["detection"],
                det_box=self.det_box[d0:d1], det_word=self.det_word[d0:d1], det_attr=self.det_attr[d0:d1],
                det_frame=self.det_frame[d0:d1], det_track=self.det_track[d0:d1], det_prev=self.det_prev[d0:d1],
                edge_src=self.edge_src[e0:e1] - d0, edge_dst=self.edge_dst[e0:e1] - d0,
                edge_rel=self.edge_rel[e0:e1], n_tracks=track[s + 1] - track[s], captions=captions,
                frame_patch=frame_cells(features["frame_patch"], int(self.n_frames[s])))
