"""Fine-grained (late-interaction) caption–video score over scene-graph units.

The pooled score compares one vector per side. This module adds a FILIP /
ColBERT-style term computed for every (caption, video) pair: each object or
relation node of the caption's TSG looks for its best match among the
candidate video's units, and the matches are averaged,

    fine(c, v) = mean_{n ∈ nodes(c)} max_{u ∈ units(v, window(c))} cos(t_n, u)

The video's units are read over the caption's frame window ``[a, b]`` (the
same window indices in every candidate video, clamped to its length, as PTC
does for its other-video negatives):

* **track units** (object and relation nodes): the OSC track embedding plus an
  MLP of the track's mean node state inside the window and its window geometry
  (mean centre, the share of window frames it is seen in, its box size);
* **directed track-pair units** (relation nodes only): for an ordered pair
  (subject track i, object track j), ``GELU(W_s u_i + W_o u_j + W_g g_ij)``
  where ``g_ij`` is their mean relative position and distance in the window.
  ``W_s ≠ W_o`` and ``g_ij ≠ g_ji`` make the unit directed, so "A approaches
  B" and "B approaches A" match different pairs;
* the **window unit** (relation nodes): the PTC window embedding of ``[a, b]``.

**STGD's differential read-out.** With STGD, the units also carry explicit
motion: each track's displacement between the first and the second half of
the window, each pair's change of relative position and of distance, each
also through STGD's Gaussian kernels (``1 − k``, its learned per-head widths).
Explicit motion is STGD's job in this model, so ``--no-stgd`` removes these
features along with the block between R-GTrm layers; motion must then be
read from the R-GTrm node states alone.

Text nodes enter through the OSC/PTC alignment head (``node_align``) for tracks
and windows, and through a relation head for pairs; a relation node's GTrm
state already sees its typed subject/object edges.

**Training.** InfoNCE runs on ``pooled + λ·fine``. It says which video wins,
not which unit is each node's own. :func:`unit_osc` and :func:`unit_ptc`
supply that, with the HSG links as labels. An object node is contrasted with
the window track units of the batch, its linked track positive. A predicate is
contrasted with the directed pair units, (subject track → object track)
positive and the reversed pair negative.

Scores are computed block-wise, ``scores(text_units, video_units) -> [C, B]``,
so evaluation can score every caption of a dataset against every video.

Example::

    fine = FineGrained(dim=64, stgd_heads=4)
    t = fine.text_units(nodes, align, batch)          # nodes: GTrm states, align: node_align head
    v = fine.video_units(enc, batch)                   # enc: DSGEncoding
    s = fine.scores(t, v, dsg, stgd_kernel=None)       # [C, B] in [-1, 1]
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from finsta_model.stgd import box_centres
from schemas.records import TEXT_EDGE_KINDS, TEXT_NODE_KINDS

OBJECT_KIND = TEXT_NODE_KINDS.index("object")
RELATION_KIND = TEXT_NODE_KINDS.index("relation")
TRACK_GEOMETRY = 4      # window-mean centre (2), presence, box size
PAIR_GEOMETRY = 3       # window-mean relative position (2), distance
TRACK_MOTION = 3        # with STGD: displacement between the window halves (2), its length (+ one kernel per head)
PAIR_MOTION = 3         # with STGD: change of relative position (2), change of distance (+ one kernel per head)
MOTION_SCALE = 5.0      # displacements are a few hundredths of the frame: bring them to O(1)


@dataclass
class TextUnits:
    """Per caption, its object/relation nodes (padded to ``U``)."""

    align: torch.Tensor         # [C, U, d] normalised node_align(node)
    pair: torch.Tensor          # [C, U, d] normalised relation head(node)
    is_object: torch.Tensor     # [C, U] bool
    is_relation: torch.Tensor   # [C, U] bool
    window: torch.Tensor        # [C, 2] frame window [first, last]

    def __len__(self) -> int:
        return int(self.window.shape[0])

    def slice(self, lo: int, hi: int) -> "TextUnits":
        return TextUnits(**{f.name: getattr(self, f.name)[lo:hi] for f in fields(self)})

    def to(self, device) -> "TextUnits":
        return TextUnits(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass
class VideoUnits:
    """Per video, what is needed to read its units over any window: prefix sums over frames."""

    tracks: torch.Tensor        # [B, K, d] OSC track embeddings (0 = pad)
    track_ok: torch.Tensor      # [B, K] bool
    h_prefix: torch.Tensor      # [B, K, T + 1, d] prefix sums of the track's node states
    c_prefix: torch.Tensor      # [B, K, T + 1, 2] box centres
    s_prefix: torch.Tensor      # [B, K, T + 1] box sizes (sqrt area)
    n_prefix: torch.Tensor      # [B, K, T + 1] detections
    frames: torch.Tensor        # [B, T, d] DSG frame embeddings (for windows)
    memory: torch.Tensor        # [B, T, d]
    n_frames: torch.Tensor      # [B]

    def __len__(self) -> int:
        return int(self.tracks.shape[0])

    def to(self, device) -> "VideoUnits":
        return VideoUnits(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def _range_sum(prefix: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Sum over frames ``[lo, hi]`` (``[C, B]`` each) of ``prefix [B, K, T + 1, ...]`` → ``[C, B, K, ...]``."""
    by_time = prefix.transpose(1, 2)                                             # [B, T+1, K, ...]
    videos = torch.arange(prefix.shape[0], device=prefix.device)[None].expand_as(lo)
    return by_time[videos, hi + 1] - by_time[videos, lo]


def _slots(group: torch.Tensor, groups: int) -> tuple[torch.Tensor, int]:
    """For items sorted by ``group``: each item's position inside its group, and the padded width (≥ 1)."""
    counts = torch.bincount(group, minlength=groups)
    width = max(int(counts.max()) if len(group) else 0, 1)
    return torch.arange(len(group), device=group.device) - (torch.cumsum(counts, 0) - counts)[group], width


class FineGrained(nn.Module):
    """Heads of the fine-grained score (see the module docstring)."""

    def __init__(self, dim: int, stgd_heads: int = 0):
        """``stgd_heads``: the heads of the STGD block whose kernels the motion read-out uses (0 = no STGD:
        the units then carry no explicit motion features)."""
        super().__init__()
        track_in = TRACK_GEOMETRY + (TRACK_MOTION + stgd_heads if stgd_heads else 0)
        pair_in = PAIR_GEOMETRY + (PAIR_MOTION + stgd_heads if stgd_heads else 0)
        self.pair_text = nn.Linear(dim, dim)
        self.track_window = nn.Sequential(nn.Linear(dim + track_in, dim), nn.GELU(), nn.Linear(dim, dim))
        self.subject = nn.Linear(dim, dim)
        self.object = nn.Linear(dim, dim, bias=False)
        self.pair_geometry = nn.Linear(pair_in, dim, bias=False)
        self.stgd_heads = stgd_heads

    # ------------------------------------------------------------ units
    def text_units(self, nodes: torch.Tensor, align: nn.Module, batch) -> TextUnits:
        """Object and relation nodes of every caption of ``batch``; ``nodes`` are GTrm states."""
        c = batch.cap_feat.shape[0]
        idx, cap, pos, u = node_slots(batch)
        d = nodes.shape[1]
        out_align = nodes.new_zeros((c, u, d))
        out_pair = nodes.new_zeros((c, u, d))
        out_align[cap, pos] = F.normalize(align(nodes[idx]), dim=-1)
        out_pair[cap, pos] = F.normalize(self.pair_text(nodes[idx]), dim=-1)
        kind = torch.full((c, u), -1, dtype=torch.long, device=nodes.device)
        kind[cap, pos] = batch.node_kind[idx]
        return TextUnits(align=out_align, pair=out_pair, is_object=kind == OBJECT_KIND,
                         is_relation=kind == RELATION_KIND, window=batch.cap_window)

    def video_units(self, enc, batch) -> VideoUnits:
        """Per-track prefix sums over frames of every video of ``batch``; ``enc`` is a DSGEncoding."""
        b, t = batch.frame_mask.shape
        d = enc.nodes.shape[1]
        local, k_max = track_slots(batch)
        tracks = enc.tracks.new_zeros((b, k_max, d))
        tracks[batch.track_video, local] = enc.tracks
        ok = torch.zeros((b, k_max), dtype=torch.bool, device=local.device)
        ok[batch.track_video, local] = True

        tracked = batch.det_track >= 0
        k = batch.det_track[tracked]
        slot = (batch.track_video[k] * k_max + local[k]) * t + batch.det_frame[tracked]
        box = batch.det_box[tracked]
        wh = (box[:, 2:] - box[:, :2]).clamp_min(0)
        values = torch.cat([enc.nodes[tracked].float(), box_centres(box), (wh[:, :1] * wh[:, 1:]).sqrt(),
                            torch.ones_like(box[:, :1])], dim=-1)
        grid = values.new_zeros((b * k_max * t, d + 4)).index_add(0, slot, values).view(b, k_max, t, d + 4)
        prefix = torch.cat([grid.new_zeros((b, k_max, 1, d + 4)), grid.cumsum(2)], dim=2)
        return VideoUnits(tracks=tracks, track_ok=ok, h_prefix=prefix[..., :d], c_prefix=prefix[..., d:d + 2],
                          s_prefix=prefix[..., d + 2], n_prefix=prefix[..., d + 3], frames=enc.frames,
                          memory=enc.memory, n_frames=batch.frame_mask.long().sum(1))

    # ------------------------------------------------------------ scores
    def window_units(self, window: torch.Tensor, video: VideoUnits, dsg, stgd_kernel=None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The normalised units of every video of ``video`` read over each caption window ``window [C, 2]``:
        tracks ``[C, B, K, d]``, directed pairs ``[C, B, K, K, d]`` (subject i, object j), window ``[C, B, d]``."""
        c, b = window.shape[0], len(video)
        top = (video.n_frames - 1).clamp_min(0)
        hi = torch.minimum(window[:, 1:2], top[None])                                # [C, B]
        lo = torch.minimum(window[:, 0:1], hi)
        mid1, mid2 = (lo + hi) // 2, (lo + hi + 1) // 2

        n_all = _range_sum(video.n_prefix, lo, hi)                                   # [C, B, K]
        c_all = _range_sum(video.c_prefix, lo, hi) / n_all.clamp_min(1)[..., None]
        h_mean = _range_sum(video.h_prefix, lo, hi) / n_all.clamp_min(1)[..., None]
        size = _range_sum(video.s_prefix, lo, hi) / n_all.clamp_min(1)
        presence = n_all / (hi - lo + 1)[..., None].float()
        track_geom = [c_all, presence[..., None], size[..., None]]
        rel = c_all[:, :, :, None] - c_all[:, :, None, :]                            # [C, B, K, K, 2]
        pair_geom = [rel, rel.norm(dim=-1, keepdim=True)]
        if (stgd_kernel is None) != (self.stgd_heads == 0):
            raise ValueError("pass STGD's kernel exactly when the module was built with stgd_heads > 0")
        if stgd_kernel is not None:
            # STGD's differential read-out: displacement between the window's halves, of each track and of
            # each ordered pair's relative position, raw and through STGD's Gaussian kernels
            n1, n2 = _range_sum(video.n_prefix, lo, mid1), _range_sum(video.n_prefix, mid2, hi)
            c1 = torch.where((n1 > 0)[..., None],
                             _range_sum(video.c_prefix, lo, mid1) / n1.clamp_min(1)[..., None], c_all)
            c2 = torch.where((n2 > 0)[..., None],
                             _range_sum(video.c_prefix, mid2, hi) / n2.clamp_min(1)[..., None], c_all)
            disp = c2 - c1
            track_geom += [disp * MOTION_SCALE, disp.norm(dim=-1, keepdim=True) * MOTION_SCALE,
                           1 - stgd_kernel(disp).to(disp.dtype)]
            rel1 = c1[:, :, :, None] - c1[:, :, None, :]
            rel2 = c2[:, :, :, None] - c2[:, :, None, :]
            change = rel2 - rel1
            pair_geom += [change * MOTION_SCALE,
                          (rel2.norm(dim=-1, keepdim=True) - rel1.norm(dim=-1, keepdim=True)) * MOTION_SCALE,
                          1 - stgd_kernel(change).to(change.dtype)]
        h_mean = h_mean.to(video.tracks.dtype)
        geometry = torch.cat(track_geom, dim=-1).to(h_mean.dtype)
        track = video.tracks[None] + self.track_window(torch.cat([h_mean, geometry], dim=-1))
        pair = self.subject(track)[:, :, :, None] + self.object(track)[:, :, None, :] \
            + self.pair_geometry(torch.cat(pair_geom, dim=-1).to(track.dtype))

        videos = torch.arange(b, device=lo.device)[None].expand(c, b)
        windows = dsg.windows(video, videos.reshape(-1), lo.reshape(-1), hi.reshape(-1)).view(c, b, -1)
        return F.normalize(track, dim=-1), F.normalize(F.gelu(pair), dim=-1), F.normalize(windows, dim=-1)

    def scores(self, text: TextUnits, video: VideoUnits, dsg, stgd_kernel=None) -> torch.Tensor:
        """``[C, B]`` fine-grained scores of every caption of ``text`` against every video of ``video``.

        ``dsg`` provides ``windows(enc, video, first, last)`` (the PTC window read-out);
        ``stgd_kernel`` maps displacements ``[..., 2]`` to ``[..., heads]`` (None without STGD).
        """
        return self.combine(text, video, *self.window_units(text.window, video, dsg, stgd_kernel))

    def combine(self, text: TextUnits, video: VideoUnits, track_unit: torch.Tensor, pair_unit: torch.Tensor,
                window_unit: torch.Tensor) -> torch.Tensor:
        """:meth:`scores` from units already read by :meth:`window_units` (training reuses them for OSC/PTC)."""
        best = self.node_scores(text, video, track_unit, pair_unit, window_unit)
        units = (text.is_object | text.is_relation).float()[..., None]              # [C, U, 1]
        return (best * units).sum(1) / units.sum(1).clamp_min(1)

    def node_scores(self, text: TextUnits, video: VideoUnits, track_unit: torch.Tensor, pair_unit: torch.Tensor,
                    window_unit: torch.Tensor) -> torch.Tensor:
        """``[C, U, B]``: each text unit's best cosine among each video's units (0 where none); the fine
        score is their mean over a caption's object and relation nodes."""
        c, b = len(text), len(video)
        k = video.tracks.shape[1]
        track_valid = video.track_ok[None, None]                                     # [1, 1, B, K]
        pair_valid = _pair_valid(video.track_ok).reshape(1, 1, b, k * k)
        neg = float("-inf")
        s_track = torch.einsum("cud,cbkd->cubk", text.align, track_unit).float().masked_fill(~track_valid, neg)
        s_pair = torch.einsum("cud,cbijd->cubij", text.pair, pair_unit).float().reshape(c, -1, b, k * k)
        s_pair = s_pair.masked_fill(~pair_valid, neg)
        s_window = torch.einsum("cud,cbd->cub", text.align, window_unit).float()[..., None]
        best_track = s_track.max(-1).values                                          # [C, U, B]
        best_rel = torch.cat([s_track, s_pair, s_window], dim=-1).max(-1).values
        best = torch.where(text.is_relation[..., None], best_rel, best_track)
        return torch.where(torch.isfinite(best), best, torch.zeros_like(best))


def _pair_valid(track_ok: torch.Tensor) -> torch.Tensor:
    """``[B, K, K]``: the ordered pairs (i, j) of two different real tracks of a video."""
    k = track_ok.shape[1]
    return track_ok[:, :, None] & track_ok[:, None, :] & ~torch.eye(k, dtype=torch.bool, device=track_ok.device)


def text_slot_of(batch) -> torch.Tensor:
    """``[M]``: each batch text node's position in its caption's :class:`TextUnits` row (−1: not a unit)."""
    idx, _, pos, _ = node_slots(batch)
    slot_of = torch.full((batch.node_kind.shape[0],), -1, dtype=torch.long, device=idx.device)
    slot_of[idx] = pos
    return slot_of


def node_slots(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The object/relation text nodes of ``batch`` in :class:`TextUnits` order: their batch node indices,
    captions, positions inside the caption's row, and the row width ``U``."""
    keep = (batch.node_kind == OBJECT_KIND) | (batch.node_kind == RELATION_KIND)
    idx = keep.nonzero().squeeze(1)
    cap, order = torch.sort(batch.node_cap[idx], stable=True)
    idx = idx[order]
    pos, width = _slots(cap, batch.cap_feat.shape[0])
    return idx, cap, pos, width


def track_slots(batch) -> tuple[torch.Tensor, int]:
    """Each batch track's slot inside its video's row of :class:`VideoUnits`, and the row width ``K``."""
    return _slots(batch.track_video, batch.num_videos)


def unit_osc(text: TextUnits, video: VideoUnits, track_unit: torch.Tensor, batch, tau: float) -> torch.Tensor:
    """OSC on the fine score's own units: each HSG-linked object node of a real caption against every
    track unit of the batch read over its caption's window; the linked track is the positive, the other
    tracks of its video and of the batch are the negatives. Zero when the batch has no such link."""
    slot_of = text_slot_of(batch)
    node, track = batch.link_node, batch.link_track
    keep = (batch.node_kind[node] == OBJECT_KIND) & (batch.cap_neg_of[batch.node_cap[node]] < 0)
    node, track = node[keep], track[keep]
    if node.numel() == 0:
        return track_unit.new_zeros((), dtype=torch.float32)
    c = batch.node_cap[node]
    local, k = track_slots(batch)
    logits = torch.einsum("ld,lbkd->lbk", text.align[c, slot_of[node]], track_unit[c]).float() / tau
    logits = logits.masked_fill(~video.track_ok[None], float("-inf")).flatten(1)
    return F.cross_entropy(logits, batch.track_video[track] * k + local[track])


def linked_tracks(batch) -> torch.Tensor:
    """``[M]``: the track each batch text node is HSG-linked to (-1: none)."""
    linked = torch.full((batch.node_kind.shape[0],), -1, dtype=torch.long, device=batch.node_kind.device)
    linked[batch.link_node] = batch.link_track
    return linked


def predicate_arguments(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per batch text node ``[M]``: the track its predicate's subject node is HSG-linked to, the track its
    object node is linked to (-1: none, or not a predicate), and whether the predicate has an object node."""
    m, device = batch.node_kind.shape[0], batch.node_kind.device
    linked = linked_tracks(batch)
    subject = torch.full((m,), -1, dtype=torch.long, device=device)
    obj = torch.full((m,), -1, dtype=torch.long, device=device)
    is_subj = batch.tedge_kind == TEXT_EDGE_KINDS.index("subj_pred")
    is_obj = batch.tedge_kind == TEXT_EDGE_KINDS.index("pred_obj")
    subject[batch.tedge_dst[is_subj]] = linked[batch.tedge_src[is_subj]]     # subject node → predicate
    obj[batch.tedge_src[is_obj]] = linked[batch.tedge_dst[is_obj]]           # predicate → object node
    has_obj = torch.zeros((m,), dtype=torch.bool, device=device)
    has_obj[batch.tedge_src[is_obj]] = True
    return subject, obj, has_obj


def unit_ptc(text: TextUnits, video: VideoUnits, track_unit: torch.Tensor, pair_unit: torch.Tensor, batch,
             tau: float) -> torch.Tensor:
    """PTC on the fine score's pair units: each predicate node of a real caption whose subject (and
    object) nodes are HSG-linked to tracks, against the units of its caption's window in every video of
    the batch. Transitive: the directed pair unit (subject track, object track) is the positive, every
    other ordered pair (the reversed one included) and the other videos' pairs are negatives;
    intransitive: its subject's track unit against all tracks. Zero when no predicate qualifies."""
    slot_of = text_slot_of(batch)
    subject, obj, has_obj = predicate_arguments(batch)
    pred = (batch.node_kind == RELATION_KIND) & (batch.cap_neg_of[batch.node_cap] < 0) & (subject >= 0)
    local, k = track_slots(batch)
    b = batch.num_videos
    losses = []
    two = pred & has_obj & (obj >= 0) & (subject != obj)
    if two.any():
        r = two.nonzero().squeeze(1)
        c, s, o = batch.node_cap[r], subject[r], obj[r]
        logits = torch.einsum("pd,pbijd->pbij", text.pair[c, slot_of[r]], pair_unit[c]).float() / tau
        logits = logits.masked_fill(~_pair_valid(video.track_ok)[None], float("-inf")).reshape(len(r), b * k * k)
        target = (batch.track_video[s] * k + local[s]) * k + local[o]
        losses.append(F.cross_entropy(logits, target, reduction="sum"))
    one = pred & ~has_obj
    if one.any():
        r = one.nonzero().squeeze(1)
        c, s = batch.node_cap[r], subject[r]
        logits = torch.einsum("pd,pbkd->pbk", text.align[c, slot_of[r]], track_unit[c]).float() / tau
        logits = logits.masked_fill(~video.track_ok[None], float("-inf")).reshape(len(r), b * k)
        losses.append(F.cross_entropy(logits, batch.track_video[s] * k + local[s], reduction="sum"))
    if not losses:
        return track_unit.new_zeros((), dtype=torch.float32)
    count = int(two.sum()) + int(one.sum())
    return torch.stack(losses).sum() / count


# ------------------------------------------------------------------ teaching the host
def track_footprints(batch, cells: int, frame_index: torch.Tensor) -> torch.Tensor:
    """``[B, K, T, P]``: per track and host frame, the share of its box's area inside each of the frame's
    ``P = G × G`` grid cells (row-major, the cells ``frame_patch`` stores); zero where the track is not
    seen. ``frame_index`` names the batch frames the host read (see ``HostVideo.frame_index``): ``[T]``, or
    ``[B, T]`` per video with -1 for padding."""
    b, t_batch = batch.frame_mask.shape
    local, k_max = track_slots(batch)
    grid = int(round(cells ** 0.5))
    if grid * grid != cells:
        raise ValueError(f"{cells} cells a frame is not a square grid")
    edges = torch.arange(grid + 1, device=batch.det_box.device, dtype=torch.float32) / grid
    box = batch.det_box.float()
    ox = (torch.minimum(box[:, 2:3], edges[None, 1:]) - torch.maximum(box[:, 0:1], edges[None, :-1])).clamp_min(0)
    oy = (torch.minimum(box[:, 3:4], edges[None, 1:]) - torch.maximum(box[:, 1:2], edges[None, :-1])).clamp_min(0)
    share = (oy[:, :, None] * ox[:, None, :]).reshape(-1, cells)               # [N, P] rows, then columns
    share = share / share.sum(1, keepdim=True).clamp_min(1e-9)
    tracked = batch.det_track >= 0
    k = batch.det_track[tracked]
    slot = (batch.track_video[k] * k_max + local[k]) * t_batch + batch.det_frame[tracked]
    grid_all = share.new_zeros((b * k_max * t_batch, cells)).index_add(0, slot, share[tracked])
    grid_all = grid_all.view(b, k_max, t_batch, cells)
    if frame_index.dim() == 1:
        return grid_all[:, :, frame_index]
    # per video (gathered replicas, finsta_model.gather): -1 pads, and reads no footprint
    index = frame_index.clamp_min(0)[:, None, :, None].expand(b, k_max, -1, cells)
    return grid_all.gather(2, index) * (frame_index >= 0)[:, None, :, None]


def phrase_vectors(host_text, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Each batch text node's host phrase vector (normalised sum of the host's token outputs over the node's
    phrase, ``batch.pt_*``): ``[M, d]``, and ``[M]`` whether the node has phrase tokens."""
    m = batch.node_kind.shape[0]
    width = host_text.tokens.shape[1]          # the host may keep fewer tokens than the batch holds
    flat = host_text.tokens.reshape(-1, host_text.tokens.shape[-1])
    cap_of, token_of = batch.pt_token // batch.tok_feat.shape[1], batch.pt_token % batch.tok_feat.shape[1]
    keep = token_of < width
    total = torch.zeros((m, flat.shape[1]), device=flat.device, dtype=flat.dtype).index_add(
        0, batch.pt_node[keep], flat[cap_of[keep] * width + token_of[keep]])
    has = torch.zeros(m, dtype=torch.bool, device=flat.device)
    has[batch.pt_node[keep]] = True
    return F.normalize(total, dim=-1), has


def node_distillation(teacher: torch.Tensor, host_text, host_video, batch, tau: float,
                      level_scale: float = 0.2) -> torch.Tensor:
    """The SG branch's node↔video similarities (``teacher [C, U, B]``: each object/relation node's best
    unit cosine in each video, :meth:`FineGrained.node_scores`, held fixed) taught to the host's phrases:
    a phrase's host similarity to a video is its best cosine with the video's tokens. Per node of every
    caption (hard negatives included): ``KL(teacher ‖ host)`` of the softmax over the batch's videos
    (temperature ``tau``: which videos hold it), plus the squared difference on its own video, in units of
    ``level_scale`` (how well it holds there: a swapped or changed predicate scores low on the true video,
    which is what the host must learn to see). Zero when no node has phrase tokens."""
    vectors, has = phrase_vectors(host_text, batch)
    idx, cap, pos, _ = node_slots(batch)
    keep = has[idx]
    if not keep.any():
        return host_text.pooled.new_zeros((), dtype=torch.float32)
    idx, cap, pos = idx[keep], cap[keep], pos[keep]
    b, m, d = host_video.tokens.shape
    host = (vectors[idx] @ host_video.tokens.reshape(b * m, d).T).view(len(idx), b, m).amax(-1).float()
    target = teacher[cap, pos].detach().float()                                  # [R, B]
    log_h, log_t = (host / tau).log_softmax(-1), (target / tau).log_softmax(-1)
    kl = (log_t.exp() * (log_t - log_h)).sum(-1).mean()
    own = batch.cap_video[cap]
    rows = torch.arange(len(idx), device=own.device)
    level = (((host[rows, own] - target[rows, own]) / level_scale) ** 2).mean()
    return kl + level


def phrase_alignment(text: TextUnits, video: VideoUnits, track_unit: torch.Tensor, pair_unit: torch.Tensor,
                     host_text, host_video, batch, tau: float) -> torch.Tensor:
    """The SG branch's node↔unit similarities taught to the host as token↔cell similarities.

    For each object or relation node of a real caption whose phrase has host tokens (``batch.pt_*``): the
    teacher's softmax (temperature ``tau``, held fixed) over its own video's units read over the caption's
    window — tracks for an object node, directed track pairs for a relation node — spread over the host's
    cell tokens through each track's box footprint inside the window (a pair: the mean of its two tracks').
    The host's phrase vector (the mean of the phrase's token outputs) is trained to distribute its cosine
    softmax over its video's cell tokens the same way (cross-entropy with that target). Zero when the
    batch has no such node or the shards carry no cells."""
    if host_video.cells == 0 or batch.pt_node.numel() == 0:
        return host_text.pooled.new_zeros((), dtype=torch.float32)
    cells = host_video.cells
    node_vec, has = phrase_vectors(host_text, batch)
    slot_of = text_slot_of(batch)
    real = batch.cap_neg_of[batch.node_cap] < 0
    node = (has & real & (slot_of >= 0)).nonzero().squeeze(1)
    if node.numel() == 0:
        return host_text.pooled.new_zeros((), dtype=torch.float32)
    c = batch.node_cap[node]
    v = batch.cap_video[c]
    u = slot_of[node]
    with torch.no_grad():
        foot = track_footprints(batch, cells, host_video.frame_index)            # [B, K, T, P]
        t_host = foot.shape[2]
        frames = batch.frame_mask.long().sum(1)
        hi = torch.minimum(batch.cap_window[c, 1], (frames[v] - 1).clamp_min(0))
        lo = torch.minimum(batch.cap_window[c, 0], hi)
        index = host_video.frame_index
        index = index[None] if index.dim() == 1 else index[v]                   # -1 (padding): never inside
        inside = ((index >= lo[:, None]) & (index <= hi[:, None])).float()     # [n, T]
        own = foot[v] * inside[:, None, :, None]                                # [n, K, T, P]
        own = own / own.sum((2, 3), keepdim=True).clamp_min(1e-9)
        k = own.shape[1]
        ok = video.track_ok[v]                                                  # [n, K]
        s_track = torch.einsum("nd,nkd->nk", text.align[c, u], track_unit[c, v]).float() / tau
        q_track = s_track.masked_fill(~ok, float("-inf")).softmax(-1).nan_to_num(0.0)
        target = torch.einsum("nk,nktp->ntp", q_track, own)
        relation = text.is_relation[c, u]
        if relation.any() and k > 1:
            r = relation.nonzero().squeeze(1)
            s_pair = torch.einsum("nd,nijd->nij", text.pair[c[r], u[r]], pair_unit[c[r], v[r]]).float() / tau
            valid = _pair_valid(video.track_ok)[v[r]]
            q_pair = s_pair.masked_fill(~valid, float("-inf")).flatten(1).softmax(-1).nan_to_num(0.0)
            q_pair = q_pair.view(-1, k, k)
            # pair (i, j) covers both tracks' footprints, half each
            q_one = (q_pair.sum(2) + q_pair.sum(1)) / 2                            # [r, K]
            target[r] = torch.einsum("nk,nktp->ntp", q_one, own[r])
        target = target.reshape(len(node), t_host * cells)
    cell_tokens, cell_mask = host_video.patch_tokens()                          # [B, T, P, d], [B, T, P]
    vec = node_vec[node]
    logits = torch.einsum("nd,ntpd->ntp", vec, cell_tokens[v]).float().reshape(len(node), -1) / tau
    logits = logits.masked_fill(~cell_mask[v].reshape(len(node), -1), float("-inf"))
    rows = target.sum(1) > 0.5
    if not rows.any():
        return host_text.pooled.new_zeros((), dtype=torch.float32)
    log_p = logits[rows].log_softmax(-1)
    return -(target[rows] * log_p.masked_fill(target[rows] == 0, 0.0)).sum(1).mean()
