"""R-GTrm: the recurrent graph transformer over DSGs (and, through the links, HSGs).

One :class:`RecurrentGraphLayer` does, in order:

1. **spatial** graph attention inside each frame (a
   :class:`~finsta_model.gtrm.GraphTransformerLayer` over the same-frame pairs,
   whose edge features encode the relation predicates and the relative box
   geometry; STGD's motion bias is added to the attention logits);
2. **temporal messages** along track edges t−1→t: ``h_i += σ(g)·W[h_p(i), h_i − h_p(i)]``;
3. a **gated recurrent memory** per video carried across frames: a GRU cell
   reads each frame's pooled nodes; nodes of frame t read the memory of t−1
   through a gate.

:class:`DSGEncoder` stacks the layers with a
:class:`~finsta_model.stgd.GaussianDifferential` between consecutive ones and
reads out what the losses and the adapter need: per-node states, per-frame
embeddings, a per-video embedding, per-track neighbourhood embeddings (OSC) and
embeddings of arbitrary frame windows (PTC).

Example::

    enc = DSGEncoder(det_dim=1280, dim=128, heads=4, layers=2, use_stgd=True)
    out = enc(batch, words)
    out.video.shape, out.frames.shape      # [B, 128], [B, T, 128]
    enc.windows(out, video_idx, first, last)   # [P, 128]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from finsta_model.gtrm import AttentionPool, GraphTransformerLayer, segment_mean
from finsta_model.stgd import GaussianDifferential, box_centres


@dataclass
class DSGEncoding:
    nodes: torch.Tensor      # [N, d]
    frames: torch.Tensor     # [B, T, d] frame embeddings (pooled nodes + memory)
    memory: torch.Tensor     # [B, T, d] recurrent memory after each frame
    video: torch.Tensor      # [B, d]
    tracks: torch.Tensor     # [K, d] multi-hop neighbourhood embedding of each track


class RecurrentGraphLayer(nn.Module):
    """Spatial attention, track messages, recurrent memory (see the module docstring)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.spatial = GraphTransformerLayer(dim, heads, dropout)
        self.track_msg = nn.Linear(2 * dim, dim)
        self.track_gate = nn.Linear(2 * dim, dim)
        self.memory = nn.GRUCell(dim, dim)
        self.read_gate = nn.Linear(2 * dim, dim)
        self.read = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, h: torch.Tensor, e: torch.Tensor, batch, bias: torch.Tensor | None,
                update_edges: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, e = self.spatial(h, e, batch.edge_src, batch.edge_dst, bias, update_edges)

        has_prev = batch.det_prev >= 0
        prev = h[batch.det_prev.clamp_min(0)]
        pair = torch.cat([prev, h - prev], dim=-1)
        h = h + has_prev[:, None] * torch.sigmoid(self.track_gate(pair)) * self.track_msg(pair)

        b, t = batch.frame_mask.shape
        pooled = segment_mean(h, batch.det_slot, b * t).view(b, t, -1)
        state = torch.zeros((b, h.shape[1]), device=h.device, dtype=h.dtype)
        states = []
        for step in range(t):
            new = self.memory(pooled[:, step], state).to(h.dtype)
            state = torch.where(batch.frame_mask[:, step, None], new, state)
            states.append(state)
        memory = torch.stack(states, dim=1)                                          # [B, T, d]
        before = torch.cat([torch.zeros_like(memory[:, :1]), memory[:, :-1]], dim=1).reshape(b * t, -1)
        past = before[batch.det_slot]
        h = self.norm(h + torch.sigmoid(self.read_gate(torch.cat([h, past], -1))) * self.read(past))
        return h, e, memory


class DSGEncoder(nn.Module):
    """Detections → R-GTrm (+ STGD between layers) → node/frame/video/track/window embeddings."""

    def __init__(self, det_dim: int, dim: int, heads: int, layers: int, dropout: float = 0.1,
                 use_stgd: bool = True):
        super().__init__()
        self.node_in = nn.Sequential(nn.LayerNorm(det_dim), nn.Linear(det_dim, dim))
        self.box_in = nn.Sequential(nn.Linear(7, dim), nn.GELU(), nn.Linear(dim, dim))
        self.geometry = nn.Sequential(nn.Linear(6, dim), nn.GELU(), nn.Linear(dim, dim))
        self.self_edge = nn.Embedding(2, dim)
        self.frame_pos = nn.Embedding(64, dim)
        self.layers = nn.ModuleList(RecurrentGraphLayer(dim, heads, dropout) for _ in range(layers))
        self.stgd = nn.ModuleList(GaussianDifferential(dim, heads) for _ in range(layers - 1)) if use_stgd else None
        self.frame_out = nn.Sequential(nn.Linear(2 * dim, dim), nn.LayerNorm(dim))
        self.node_pool = AttentionPool(dim)
        self.video_out = nn.Linear(2 * dim, dim)
        self.track_out = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.window_out = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def _inputs(self, batch, words: nn.Embedding) -> tuple[torch.Tensor, torch.Tensor]:
        box = batch.det_box
        wh = (box[:, 2:] - box[:, :2]).clamp_min(1e-3)
        box_feats = torch.cat([box, box_centres(box), (wh[:, :1] * wh[:, 1:]).sqrt()], dim=-1)
        h = self.node_in(batch.det_feat) + self.box_in(box_feats) + words(batch.det_word) \
            + words(batch.det_attr).sum(1) + self.frame_pos(batch.det_frame.clamp_max(63))
        src, dst = batch.edge_src, batch.edge_dst
        c = box_centres(box)
        geom = torch.cat([c[src] - c[dst], (wh[src] / wh[dst]).log(), (box[src, :2] - box[dst, :2])], dim=-1)
        e = self.geometry(geom) + words(batch.edge_rel).sum(1) + self.self_edge((src == dst).long())
        return h, e

    def forward(self, batch, words: nn.Embedding) -> DSGEncoding:
        """``words`` is the hashed-word table shared with the TSG encoder."""
        h, e = self._inputs(batch, words)
        bias = None
        memory = None
        for i, layer in enumerate(self.layers):
            h, e, memory = layer(h, e, batch, bias, update_edges=i < len(self.layers) - 1)
            if self.stgd is not None and i < len(self.layers) - 1:
                h, bias = self.stgd[i](h, batch)
        b, t = batch.frame_mask.shape
        pooled = segment_mean(h, batch.det_slot, b * t).view(b, t, -1)
        frames = self.frame_out(torch.cat([pooled, memory], dim=-1))
        last = (batch.frame_mask.long().sum(1) - 1).clamp_min(0)
        final_memory = memory[torch.arange(b, device=h.device), last]
        video = self.video_out(torch.cat([self.node_pool(h, batch.det_video, b), final_memory], dim=-1))
        tracks = self._tracks(h, batch)
        return DSGEncoding(nodes=h, frames=frames, memory=memory, video=video, tracks=tracks)

    def _tracks(self, h: torch.Tensor, batch) -> torch.Tensor:
        """Each track: mean of its nodes ‖ mean of their same-frame neighbours (one more hop)."""
        k = batch.track_video.shape[0]
        src, dst = batch.edge_src, batch.edge_dst
        other = src != dst
        neighbours = segment_mean(h[src[other]], dst[other], h.shape[0])
        tracked = batch.det_track >= 0
        own = segment_mean(h[tracked], batch.det_track[tracked], k)
        around = segment_mean(neighbours[tracked], batch.det_track[tracked], k)
        return self.track_out(torch.cat([own, around], dim=-1))

    def windows(self, enc: DSGEncoding, video: torch.Tensor, first: torch.Tensor, last: torch.Tensor
                ) -> torch.Tensor:
        """Embedding of frames ``[first, last]`` of batch videos ``video`` (all ``[P]``):
        mean frame embedding ‖ change of the recurrent memory over the window."""
        frames, memory = enc.frames, enc.memory
        b, t, d = frames.shape
        prefix = torch.cat([torch.zeros_like(frames[:, :1]), frames.cumsum(1)], dim=1)   # [B, T+1, d]
        mean = (prefix[video, last + 1] - prefix[video, first]) / (last - first + 1).clamp_min(1)[:, None]
        start = torch.where((first > 0)[:, None], memory[video, (first - 1).clamp_min(0)],
                            torch.zeros_like(mean))
        change = memory[video, last] - start
        return self.window_out(torch.cat([mean, change], dim=-1))
