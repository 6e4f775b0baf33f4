"""Plug&play: the host path, the SG adapter and the distilled student.

The host stands for an existing video–language model whose features the
shards carry: per-frame visual features and a sentence embedding per caption.
:class:`HostEncoder` is deliberately the usual "mean-pooled frames" head
(CLIP4Clip's meanP): frames → projection → masked mean → projection, and
caption → MLP. The host-only baseline trains exactly this.

:class:`SGAdapter` augments a host embedding with a scene-graph embedding
residually, ``fused = host + MLP([host ‖ sg])``; its last layer starts at zero
so training starts from the host's behaviour.

:class:`Student` needs no scene graphs downstream: host features in (the
frame sequence, the sentence embedding), enhanced embedding out; it is trained
to match the fused (SG-augmented) embedding, which is held fixed for it.

Example::

    host = HostEncoder(frame_dim=1280, caption_dim=384, dim=128)
    v, t = host.video(batch.frame_feat, batch.frame_mask), host.text(batch.cap_feat)
    fused_v = adapter(v, sg_video)
"""
from __future__ import annotations

import torch
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(x.dtype)[..., None]
    return (x * weights).sum(1) / weights.sum(1).clamp_min(1)


class HostEncoder(nn.Module):
    """Mean-pooled frame projection (video) and sentence-embedding MLP (text)."""

    def __init__(self, frame_dim: int, caption_dim: int, dim: int):
        super().__init__()
        self.frame_in = nn.Sequential(nn.LayerNorm(frame_dim), nn.Linear(frame_dim, dim), nn.GELU())
        self.video_out = nn.Linear(dim, dim)
        self.text_net = nn.Sequential(nn.LayerNorm(caption_dim), nn.Linear(caption_dim, dim), nn.GELU(),
                                      nn.Linear(dim, dim))

    def video(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.video_out(masked_mean(self.frame_in(frames), mask))

    def text(self, captions: torch.Tensor) -> torch.Tensor:
        return self.text_net(captions)


class SGAdapter(nn.Module):
    """``host + MLP([host ‖ sg])``, zero-initialised output."""

    def __init__(self, dim: int, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, host: torch.Tensor, sg: torch.Tensor) -> torch.Tensor:
        return host + self.net(torch.cat([host, sg], dim=-1))


class Student(nn.Module):
    """Host features → enhanced embeddings, without scene graphs.

    Video: a one-layer temporal transformer over the projected frames (so it
    can learn the order and motion cues the SG branch exposes), masked mean.
    Text: an MLP over the sentence embedding.
    """

    def __init__(self, frame_dim: int, caption_dim: int, dim: int, heads: int, dropout: float = 0.1,
                 max_frames: int = 64):
        super().__init__()
        self.frame_in = nn.Sequential(nn.LayerNorm(frame_dim), nn.Linear(frame_dim, dim))
        self.position = nn.Embedding(max_frames, dim)
        self.temporal = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True),
            num_layers=1, enable_nested_tensor=False)
        self.video_out = nn.Linear(dim, dim)
        self.text_net = nn.Sequential(nn.LayerNorm(caption_dim), nn.Linear(caption_dim, 2 * dim), nn.GELU(),
                                      nn.Linear(2 * dim, dim))
        self.max_frames = max_frames

    def video(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = min(frames.shape[1], self.max_frames)
        frames, mask = frames[:, :t], mask[:, :t].clone()
        mask[:, 0] |= ~mask.any(1)  # a video without frames would leave attention nothing to attend to
        x = self.frame_in(frames) + self.position(torch.arange(t, device=frames.device))
        x = self.temporal(x, src_key_padding_mask=~mask)
        return self.video_out(masked_mean(x, mask))

    def text(self, captions: torch.Tensor) -> torch.Tensor:
        return self.text_net(captions)
