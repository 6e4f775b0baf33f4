"""The host: the SG-free video–language model that Finsta post-trains and ``export`` ships.

It reads only host features (what ``build-sgs`` stores from the host
backbones, docs/format.md): each frame's pooled vector and its ``P`` grid
cells, each caption's sentence vector and its token states. It is the shape a
user deploys (CLIP4Clip / X-CLIP-like):

* **video**: one token per frame (pooled vector) and one per cell, each
  ``LayerNorm → Linear`` plus a time embedding (frame position) and a cell
  embedding (0 = the frame's pooled token, 1…P = its cells, row-major), then
  a transformer encoder over all ``T · (1 + P)`` tokens of the video
  (``host_layers`` pre-norm layers, :class:`Block`; attention is masked to the
  video's real frames);
  the video embedding is a linear map of the mean of its tokens;
* **text**: the sentence vector as token 0 and the token states after it,
  each ``LayerNorm → Linear`` plus a position embedding, then a transformer
  encoder; the caption embedding is a linear map of token 0's output;
* **score** (FILIP / X-CLIP-style late interaction, ``fine_weight = λ_h``)::

      s_h(c, v) = cos(text(c), video(v)) + λ_h · mean_i max_j cos(t_i, u_j)

  over the caption's tokens ``t_i`` and the video's tokens ``u_j`` (their own
  linear heads, L2-normalised). ``λ_h = 0`` is the pooled cosine alone.
* **object slots** (``slots = S > 0``, off by default): ``S`` learned queries
  attend over the video encoder's outputs (one cross-attention layer + FFN)
  and give ``S`` slot vectors per video; their normalised heads join the
  video's tokens in the late interaction's max (a caption word may match an
  object slot as the fine-grained score's nodes match tracks). Training
  teaches them the SG branch's track embeddings (docs/model.md,
  "Representation distillation") and, with ``slot_box_weight``, to look at the detector's boxes (their
  attention over cells, ``HostVideo.slot_attention``); the host still reads host features only.

Videos longer than ``max_frames`` are read at ``max_frames`` evenly spaced
frames; captions' tokens past ``max_tokens`` are dropped. The host-only
baseline (``--no-sg``) and the Finsta-trained host are this module with the
same sizes; only their training differs (docs/model.md, "The host").

Example::

    host = HostModel(dims, dim=64, heads=4, layers=2, dropout=0.1, fine_weight=1.0)
    video = host.video(batch.frame_feat, batch.frame_mask, batch.patch_feat)   # HostVideo
    text = host.text(batch.cap_feat, batch.tok_feat, batch.tok_mask)           # HostText
    scores = host.score(text, video)                                           # [C, B]
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

MAX_FRAMES = 64
MAX_TOKENS = 80
MAX_CELLS = 64
SCORE_CHUNK = 64     # captions per block when scoring large galleries


@dataclass
class HostText:
    pooled: torch.Tensor        # [C, d] caption embeddings (not normalised)
    tokens: torch.Tensor        # [C, L, d] normalised token outputs (zeros at padding)
    mask: torch.Tensor          # [C, L] bool

    def __len__(self) -> int:
        return int(self.pooled.shape[0])

    def slice(self, lo: int, hi: int) -> "HostText":
        return HostText(**{f.name: getattr(self, f.name)[lo:hi] for f in fields(self)})


@dataclass
class HostVideo:
    pooled: torch.Tensor        # [B, d] video embeddings (not normalised)
    tokens: torch.Tensor        # [B, T·(1+P), d] normalised token outputs, frame-major: (t, cell); padding
                                # positions repeat token 0, so a max over a video's tokens needs no mask
    mask: torch.Tensor          # [B, T·(1+P)] bool
    cells: int                  # P grid cells per frame
    frame_index: torch.Tensor   # [T] the batch frames these tokens read (all, unless past max_frames);
                                # [B, T] per video (-1: padding) when gathered over replicas
    slots: Optional[torch.Tensor] = None        # [B, S, d] normalised slot tokens (a host with slots)
    slot_states: Optional[torch.Tensor] = None  # [B, S, d] the slots before their head (what training distils)
    slot_attention: Optional[torch.Tensor] = None  # [B, S, T·(1+P)] each slot's attention over the video's tokens
                                                   # (mean over heads; zero at padding): slot_box_weight trains it

    def __len__(self) -> int:
        return int(self.pooled.shape[0])

    def patch_tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The cell tokens only: ``[B, T, P, d]`` and their ``[B, T, P]`` mask."""
        b, n, d = self.tokens.shape
        grid = self.tokens.view(b, n // (1 + self.cells), 1 + self.cells, d)
        return grid[:, :, 1:], self.mask.view(b, -1, 1 + self.cells)[:, :, 1:]


class Block(nn.Module):
    """A pre-norm transformer layer: ``x += Drop(Attn(LN x))``, ``x += Drop(FFN(LN x))``.

    Attention is written out (``softmax(q kᵀ/√d + mask) v``: on CPU, with a key mask and a head width of
    16, it is several times faster than ``scaled_dot_product_attention``'s fused kernel) with no dropout on
    its weights (dropout masks over every ``[heads, N, N]`` weight cost more than the attention itself)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x [B, N, d]``, ``mask [B, N]`` (True = a real token, attended to)."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        logits = (q @ k.transpose(-1, -2)) * (d // self.heads) ** -0.5
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
        attn = logits.softmax(-1) @ v
        x = x + self.drop(self.out(attn.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.ffn(self.norm2(x)))


class SlotReadout(nn.Module):
    """``S`` learned queries attending over a video's tokens: ``q += Attn(q, LN x)``, ``q += FFN(LN q)``."""

    def __init__(self, slots: int, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.queries = nn.Parameter(torch.randn(slots, dim) * dim ** -0.5)
        self.norm_x, self.norm_q, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, N, d]``, ``mask [B, N]`` → the slots ``[B, S, d]`` and their attention over ``x``
        ``[B, S, N]`` (mean over heads)."""
        b, n, d = x.shape
        s, h = self.queries.shape[0], self.heads
        q = self.q(self.norm_q(self.queries)).view(s, h, d // h).transpose(0, 1)            # [h, S, dh]
        k, v = self.kv(self.norm_x(x)).view(b, n, 2, h, d // h).permute(2, 0, 3, 1, 4)      # [B, h, N, dh]
        logits = (q[None] @ k.transpose(-1, -2)) * (d // h) ** -0.5                          # [B, h, S, N]
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
        weights = logits.softmax(-1)                                                          # [B, h, S, N]
        attn = (weights @ v).transpose(1, 2).reshape(b, s, d)
        slots = self.queries[None] + self.drop(self.out(attn))
        return slots + self.drop(self.ffn(self.norm_ffn(slots))), weights.mean(1)


class Encoder(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(Block(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


def _encoder(dim: int, heads: int, layers: int, dropout: float) -> Encoder:
    return Encoder(dim, heads, layers, dropout)


def _project(width: int, dim: int) -> nn.Module:
    return nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim))


class HostModel(nn.Module):
    """See the module docstring. ``dims``: the shards' ``feature_dims`` (``frame``, ``frame_patch``,
    ``caption``, ``caption_token``); a width of 0 means the shards carry no such feature."""

    def __init__(self, dims: dict[str, int], dim: int, heads: int, layers: int, dropout: float,
                 fine_weight: float, max_frames: int = MAX_FRAMES, max_tokens: int = MAX_TOKENS,
                 max_cells: int = MAX_CELLS, slots: int = 0):
        super().__init__()
        self.slots = slots
        self.fine_weight, self.max_frames, self.max_tokens = float(fine_weight), max_frames, max_tokens
        self.max_cells = max_cells
        self.frame_in = _project(dims["frame"], dim)
        self.patch_in = _project(dims["frame_patch"], dim) if dims.get("frame_patch") else None
        self.time_position = nn.Embedding(max_frames, dim)
        self.cell_position = nn.Embedding(1 + max_cells, dim)
        self.video_encoder = _encoder(dim, heads, layers, dropout)
        self.video_out = nn.Linear(dim, dim)
        self.video_token_out = nn.Linear(dim, dim)
        if slots:
            self.slot_readout = SlotReadout(slots, dim, heads, dropout)
            self.slot_token_out = nn.Linear(dim, dim)
        self.caption_in = _project(dims["caption"], dim)
        self.token_in = _project(dims["caption_token"], dim) if dims.get("caption_token") else None
        self.token_position = nn.Embedding(1 + max_tokens, dim)
        self.text_encoder = _encoder(dim, heads, layers, dropout)
        self.text_out = nn.Linear(dim, dim)
        self.text_token_out = nn.Linear(dim, dim)

    # ------------------------------------------------------------ encoders
    def video(self, frames: torch.Tensor, mask: torch.Tensor, patches: torch.Tensor) -> HostVideo:
        """``frames [B, T, Df]``, ``mask [B, T]``, ``patches [B, T, P, Dp]`` → :class:`HostVideo`."""
        b, t = mask.shape
        keep = torch.arange(t, device=mask.device)
        if t > self.max_frames:   # long videos: evenly spaced frames
            keep = torch.linspace(0, t - 1, self.max_frames, device=mask.device).round().long()
            frames, mask, patches, t = frames[:, keep], mask[:, keep], patches[:, keep], self.max_frames
        cells = patches.shape[2] if self.patch_in is not None else 0
        if cells > self.max_cells:
            raise ValueError(f"{cells} grid cells a frame; this host takes at most {self.max_cells}")
        x = self.frame_in(frames)[:, :, None]
        if cells:
            x = torch.cat([x, self.patch_in(patches)], dim=2)
        x = x + self.time_position(torch.arange(t, device=mask.device))[None, :, None] \
            + self.cell_position(torch.arange(1 + cells, device=mask.device))[None, None]
        mask = mask.clone()
        mask[:, 0] |= ~mask.any(1)     # a video without frames would leave attention nothing to attend to
        token_mask = mask[:, :, None].expand(b, t, 1 + cells).reshape(b, -1)
        h = self.video_encoder(x.reshape(b, t * (1 + cells), -1), token_mask)
        weights = token_mask.to(h.dtype)[..., None]
        pooled = self.video_out((h * weights).sum(1) / weights.sum(1).clamp_min(1))
        tokens = F.normalize(self.video_token_out(h), dim=-1)
        # padding repeats the video's first token, so a max over tokens needs no mask (token 0 is always real)
        tokens = torch.where(token_mask[..., None], tokens, tokens[:, :1])
        slot_states = attention = slots = None
        if self.slots:
            slot_states, attention = self.slot_readout(h, token_mask)
            slots = F.normalize(self.slot_token_out(slot_states), dim=-1)
        return HostVideo(pooled=pooled, tokens=tokens, mask=token_mask, cells=cells, frame_index=keep,
                         slots=slots, slot_states=slot_states, slot_attention=attention)

    def text(self, captions: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> HostText:
        """``captions [C, Dc]``, ``tokens [C, L, Dt]``, ``mask [C, L]`` → :class:`HostText`."""
        if self.token_in is None or tokens.shape[-1] == 0:
            tokens, mask = captions.new_zeros((len(captions), 0, 1)), mask[:, :0]
        tokens, mask = tokens[:, :self.max_tokens], mask[:, :self.max_tokens]
        c, n = mask.shape
        x = self.caption_in(captions)[:, None]
        if n:
            x = torch.cat([x, self.token_in(tokens)], dim=1)
        x = x + self.token_position(torch.arange(1 + n, device=mask.device))[None]
        full = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        h = self.text_encoder(x, full)
        out = F.normalize(self.text_token_out(h[:, 1:]), dim=-1) * mask.to(h.dtype)[..., None]
        return HostText(pooled=self.text_out(h[:, 0]), tokens=out, mask=mask)

    # ------------------------------------------------------------ scores
    def late(self, text: HostText, video: HostVideo) -> torch.Tensor:
        """``[C, B]``: mean over each caption's tokens of the best cosine with the video's tokens and object
        slots (0 for a caption without tokens)."""
        if text.tokens.shape[1] == 0:
            return text.pooled.new_zeros((len(text), len(video)))
        c, n, d = text.tokens.shape
        units = video.tokens if video.slots is None else torch.cat([video.tokens, video.slots.to(video.tokens.dtype)], 1)
        b, m, _ = units.shape
        # only real caption tokens (padding is ~half of a padded batch), one GEMM [R, d] × [d, B·N];
        # video padding repeats a real token, so the max needs no mask
        rows = text.mask.nonzero()
        sim = text.tokens[rows[:, 0], rows[:, 1]] @ units.reshape(b * m, d).T         # [R, B·N]
        best = sim.view(len(rows), b, m).amax(-1).float()                                   # [R, B]
        total = best.new_zeros((c, b)).index_add(0, rows[:, 0], best)
        return total / text.mask.sum(1, keepdim=True).clamp_min(1).float()

    def score(self, text: HostText, video: HostVideo) -> torch.Tensor:
        """``s_h [C, B]`` (see the module docstring), computed ``SCORE_CHUNK`` captions at a time."""
        rows = []
        video_n = F.normalize(video.pooled.float(), dim=-1)
        for lo in range(0, max(len(text), 1), SCORE_CHUNK):
            part = text.slice(lo, lo + SCORE_CHUNK)
            s = F.normalize(part.pooled.float(), dim=-1) @ video_n.T
            if self.fine_weight:
                s = s + self.fine_weight * self.late(part, video)
            rows.append(s)
        return torch.cat(rows) if rows else video_n.new_zeros((0, len(video)))

    def arguments(self) -> dict[str, Any]:
        """What rebuilds this module: ``HostModel(dims, **host.arguments())`` (export writes it)."""
        layer = self.video_encoder.layers[0]
        return {"dim": self.video_out.in_features, "heads": layer.heads,
                "layers": len(self.video_encoder.layers), "dropout": layer.drop.p,
                "fine_weight": self.fine_weight, "max_frames": self.max_frames, "max_tokens": self.max_tokens,
                "max_cells": self.max_cells, "slots": self.slots}


def _pad_cat(parts: list[torch.Tensor], dim: int) -> torch.Tensor:
    """Concatenate along 0, zero-padding dimension ``dim`` to the widest part."""
    width = max(p.shape[dim] for p in parts)
    padded = []
    for p in parts:
        pad = [0, 0] * (p.dim() - dim - 1) + [0, width - p.shape[dim]]
        padded.append(F.pad(p, pad))
    return torch.cat(padded)


def cat_texts(parts: list[HostText]) -> HostText:
    """Many batches' :class:`HostText` as one (tokens padded to the longest caption)."""
    return HostText(pooled=torch.cat([p.pooled for p in parts]), tokens=_pad_cat([p.tokens for p in parts], 1),
                    mask=_pad_cat([p.mask for p in parts], 1))


def cat_videos(parts: list[HostVideo]) -> HostVideo:
    """Many batches' :class:`HostVideo` as one (tokens padded to the longest video; same cells a frame)."""
    cells = {p.cells for p in parts}
    if len(cells) > 1:
        raise ValueError(f"videos with different cell counts ({sorted(cells)}) cannot be scored together")
    longest = max(parts, key=lambda p: p.tokens.shape[1])
    width = longest.tokens.shape[1]
    # padding repeats each video's first token, as HostModel.video does (so max needs no mask)
    tokens = torch.cat([torch.cat([p.tokens, p.tokens[:, :1].expand(-1, width - p.tokens.shape[1], -1)], 1)
                        for p in parts])
    slots = None if parts[0].slots is None else torch.cat([p.slots for p in parts])
    states = None if parts[0].slot_states is None else torch.cat([p.slot_states for p in parts])
    attention = None if parts[0].slot_attention is None else _pad_cat([p.slot_attention for p in parts], 2)
    return HostVideo(pooled=torch.cat([p.pooled for p in parts]), tokens=tokens,
                     mask=_pad_cat([p.mask for p in parts], 1), cells=cells.pop(), frame_index=longest.frame_index,
                     slots=slots, slot_states=states, slot_attention=attention)
