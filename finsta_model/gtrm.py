"""Graph transformer layers (Dwivedi & Bresson, 2021) and the GTrm encoder for TSGs.

:class:`GraphTransformerLayer` is the edge-featured layer of "A Generalization
of Transformer Networks to Graphs": per head ``k``

    ŝ_ij = (Q h_i · K h_j) / √d_k ⊙ E e_ij        (a d_k-vector per edge)
    w_ij = softmax_j(clamp(Σ ŝ_ij) + bias_ij)       (over the in-edges of i)
    h_i' = O_h ‖_k Σ_j w_ij V h_j ,   e_ij' = O_e ‖_k ŝ_ij

each followed by residual + LayerNorm + feed-forward + residual + LayerNorm.
Messages flow ``src → dst`` (``dst`` = i attends over its in-edges).
``bias`` is an optional additive attention bias per edge and head (STGD uses it).

:class:`GTrm` encodes every TSG of a batch: node features are the text-node
embeddings plus node-kind, sentence-order and hashed-lemma embeddings; each
typed edge appears in both directions (reverse kinds are distinct) plus
self-loops, so the attention can tell subject from object.

Example::

    gtrm = GTrm(text_dim=384, dim=128, heads=4, layers=2)
    nodes, captions = gtrm(batch, words=nn.Embedding(512, 128))     # [M, 128] per node, [C, 128] per caption
"""
from __future__ import annotations

import torch
from torch import nn

from schemas.records import TEXT_EDGE_KINDS, TEXT_NODE_KINDS

SCORE_CLAMP = 5.0


def segment_softmax(scores: torch.Tensor, index: torch.Tensor, count: int) -> torch.Tensor:
    """Softmax of ``scores [E, H]`` over the edges sharing ``index [E]`` (values < ``count``)."""
    scores = scores.float()
    peak = torch.full((count, scores.shape[1]), float("-inf"), device=scores.device)
    peak = peak.scatter_reduce(0, index[:, None].expand_as(scores), scores, "amax", include_self=True)
    exp = (scores - peak[index]).exp()
    total = torch.zeros((count, scores.shape[1]), device=scores.device).index_add_(0, index, exp)
    return exp / total[index].clamp_min(1e-12)


def segment_mean(values: torch.Tensor, index: torch.Tensor, count: int) -> torch.Tensor:
    """Mean of the rows of ``values`` sharing ``index``; zero rows for empty segments."""
    total = torch.zeros((count, values.shape[1]), device=values.device, dtype=values.dtype)
    total = total.index_add(0, index, values)
    n = torch.zeros(count, device=values.device, dtype=values.dtype).index_add(
        0, index, torch.ones_like(index, dtype=values.dtype))
    return total / n.clamp_min(1)[:, None]


class AttentionPool(nn.Module):
    """Per-segment attention readout: Σ softmax(w·h) h, concatenated with the mean, projected."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)
        self.out = nn.Linear(2 * dim, dim)

    def forward(self, h: torch.Tensor, index: torch.Tensor, count: int) -> torch.Tensor:
        weights = segment_softmax(self.score(h), index, count).to(h.dtype)
        pooled = torch.zeros((count, h.shape[1]), device=h.device, dtype=h.dtype).index_add(0, index, weights * h)
        return self.out(torch.cat([pooled, segment_mean(h, index, count)], dim=-1))


class GraphTransformerLayer(nn.Module):
    """One Dwivedi–Bresson layer with edge features (see the module docstring)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.e = nn.Linear(dim, dim)
        self.out_h, self.out_e = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm_h1, self.norm_h2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.norm_e1, self.norm_e2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn_h = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        self.ffn_e = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, e: torch.Tensor, src: torch.Tensor, dst: torch.Tensor,
                bias: torch.Tensor | None = None, update_edges: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``update_edges=False`` returns ``e`` unchanged (the last layer's edge stream is never read)."""
        n, heads, hd = h.shape[0], self.heads, self.head_dim
        q = self.q(h).view(n, heads, hd)
        k = self.k(h).view(n, heads, hd)
        v = self.v(h).view(n, heads, hd)
        s_hat = q[dst] * k[src] / hd ** 0.5 * self.e(e).view(-1, heads, hd)        # [E, H, hd]
        logits = s_hat.sum(-1).clamp(-SCORE_CLAMP, SCORE_CLAMP)
        if bias is not None:
            logits = logits + bias
        weights = segment_softmax(logits, dst, n).to(v.dtype)                       # [E, H]
        msg = torch.zeros_like(v).index_add(0, dst, weights[..., None] * v[src])
        h = self.norm_h1(h + self.drop(self.out_h(msg.reshape(n, -1))))
        h = self.norm_h2(h + self.drop(self.ffn_h(h)))
        if update_edges:
            e = self.norm_e1(e + self.drop(self.out_e(s_hat.reshape(len(src), -1))))
            e = self.norm_e2(e + self.drop(self.ffn_e(e)))
        return h, e


class GTrm(nn.Module):
    """Graph transformer over the TSGs of a batch → node and caption embeddings."""

    N_EDGE_KINDS = 2 * len(TEXT_EDGE_KINDS) + 1   # forward kinds, reverse kinds, self-loop

    def __init__(self, text_dim: int, dim: int, heads: int, layers: int, dropout: float = 0.1, max_order: int = 32):
        super().__init__()
        self.node_in = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, dim))
        self.kind = nn.Embedding(len(TEXT_NODE_KINDS), dim)
        self.order = nn.Embedding(max_order, dim)
        self.edge_kind = nn.Embedding(self.N_EDGE_KINDS, dim)
        self.layers = nn.ModuleList(GraphTransformerLayer(dim, heads, dropout) for _ in range(layers))
        self.readout = AttentionPool(dim)

    def forward(self, batch, words: nn.Embedding) -> tuple[torch.Tensor, torch.Tensor]:
        """``words`` is the hashed-word table shared with the DSG encoder."""
        m = batch.node_feat.shape[0]
        h = self.node_in(batch.node_feat) + self.kind(batch.node_kind) + self.order(batch.node_order) \
            + words(batch.node_word)
        loops = torch.arange(m, device=h.device)
        n_kinds = len(TEXT_EDGE_KINDS)
        src = torch.cat([batch.tedge_src, batch.tedge_dst, loops])
        dst = torch.cat([batch.tedge_dst, batch.tedge_src, loops])
        kind = torch.cat([batch.tedge_kind, batch.tedge_kind + n_kinds,
                          torch.full((m,), 2 * n_kinds, dtype=torch.long, device=h.device)])
        e = self.edge_kind(kind)
        for i, layer in enumerate(self.layers):
            h, e = layer(h, e, src, dst, update_edges=i < len(self.layers) - 1)
        captions = self.readout(h, batch.node_cap, batch.cap_feat.shape[0])
        return h, captions
