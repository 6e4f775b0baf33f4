"""The SG adapter: how scene graphs augment the host's embeddings.

:class:`SGAdapter` augments a host embedding with a scene-graph embedding
residually, ``fused = host + MLP([host ‖ sg])``; its last layer starts at zero
so training starts from the host's behaviour. The host itself (the SG-free
model that is post-trained and exported) is :class:`finsta_model.host.HostModel`.

Example::

    adapter = SGAdapter(dim=64)
    fused_video = adapter(host_video, sg_video)     # [B, 64] each
"""
from __future__ import annotations

import torch
from torch import nn


class SGAdapter(nn.Module):
    """``host + MLP([host ‖ sg])``, zero-initialised output."""

    def __init__(self, dim: int, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, host: torch.Tensor, sg: torch.Tensor) -> torch.Tensor:
        return host + self.net(torch.cat([host, sg], dim=-1))
