"""STGD: the spatio-temporal Gaussian differential block that sits between R-GTrm layers.

For a detection ``i`` on frame t and a spatial neighbour ``j`` on the same
frame, both with a predecessor on their tracks (``p(i)``, ``p(j)``), the
change of their relative position across the two frames is

    Δ_ij = (c_i − c_j) − (c_p(i) − c_p(j))          (box centres, normalised)
    k_ij = exp(−‖Δ_ij‖² / 2σ_h²)                    (σ_h learnable, one per head)

``k`` ≈ 1 for a pair whose geometry did not change (still relative to each
other), ≈ 0 for a pair that moved. ``β_h (1 − k_ij)`` becomes an additive
attention bias for the next spatial attention, so heads can attend to (or away
from) moving pairs. Per node, the motion score ``1 − mean_j k_ij`` and the
kernel of its own displacement gate a temporal-difference feature along its
track edge, ``MLP([h_i − h_p(i), c_i − c_p(i)])``, added residually. Nodes
without a predecessor get ``k = 1`` (no evidence of motion) and no difference.

Example::

    stgd = GaussianDifferential(dim=128, heads=4)
    h, bias = stgd(h, batch)     # bias: [E, heads] for the next GraphTransformerLayer
"""
from __future__ import annotations

import math

import torch
from torch import nn

from finsta_model.gtrm import segment_mean


def box_centres(boxes: torch.Tensor) -> torch.Tensor:
    return torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], dim=-1)


class GaussianDifferential(nn.Module):
    """Gaussian-kernel motion bias and gated temporal-difference update (module docstring)."""

    def __init__(self, dim: int, heads: int, init_sigma: float = 0.05):
        super().__init__()
        self.heads = heads
        # heads start at different widths so some react to slow, some to fast motion
        widths = torch.tensor([init_sigma * 2.0 ** (i - heads / 2) for i in range(heads)])
        self.log_sigma = nn.Parameter(widths.log())
        self.beta = nn.Parameter(torch.ones(heads))
        self.diff = nn.Sequential(nn.Linear(dim + 3, dim), nn.GELU(), nn.Linear(dim, dim))
        self.gate = nn.Linear(2 * heads, dim)
        self.norm = nn.LayerNorm(dim)

    def kernel(self, delta: torch.Tensor) -> torch.Tensor:
        """``exp(−‖Δ‖²/2σ_h²)`` for displacement vectors ``delta [..., 2]`` → ``[..., heads]``."""
        sq = (delta.float() ** 2).sum(-1, keepdim=True)
        return torch.exp(-sq / (2 * self.log_sigma.exp() ** 2))

    def forward(self, h: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
        centres = box_centres(batch.det_box)
        prev = batch.det_prev
        has_prev = prev >= 0
        prev_safe = prev.clamp_min(0)
        src, dst = batch.edge_src, batch.edge_dst
        pair_ok = has_prev[src] & has_prev[dst]
        rel_now = centres[dst] - centres[src]
        rel_before = centres[prev_safe[dst]] - centres[prev_safe[src]]
        k_pair = torch.where(pair_ok[:, None], self.kernel(rel_now - rel_before),
                             torch.ones((len(src), self.heads), device=h.device))
        bias = self.beta * (1 - k_pair)                                             # [E, H]

        not_self = src != dst
        motion = segment_mean((1 - k_pair)[not_self], dst[not_self], h.shape[0])    # [N, H]
        own = torch.where(has_prev[:, None], centres - centres[prev_safe], torch.zeros_like(centres))
        own_motion = 1 - self.kernel(own)                                           # [N, H]
        h_diff = torch.where(has_prev[:, None], h - h[prev_safe], torch.zeros_like(h))
        speed = own.norm(dim=-1, keepdim=True) / math.sqrt(2)
        update = self.diff(torch.cat([h_diff, own.to(h.dtype), speed.to(h.dtype)], dim=-1))
        gate = torch.sigmoid(self.gate(torch.cat([motion, own_motion], dim=-1).to(h.dtype)))
        return self.norm(h + gate * update), bias.to(h.dtype)
