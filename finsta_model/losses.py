"""Contrastive objectives: video–text InfoNCE, OSC, PTC, and the student's distillation.

All take L2-normalised embeddings and a temperature ``tau``.

* :func:`video_text_nce` — symmetric InfoNCE. Text→video: each real caption
  against every video of the batch. Video→text: each video against every
  caption of the batch, hard negatives included (a perturbed caption is a
  negative of the video it was made from). Plus, when the batch carries hard
  negatives, a ranking term: on the true video, each real caption against its
  own perturbations (the same term trains the host-only baseline, see
  docs/model.md).
* :func:`object_spatial_contrast` (OSC) — a TSG object node against the
  neighbourhood embedding of the DSG track its HSG link names; negatives are
  every other track of the batch (its own video's other tracks included).
* :func:`predicate_temporal_contrast` (PTC) — a TSG predicate node against the
  embedding of its caption's frame window; negatives are the same video's
  shifted windows and the same window in the other videos.

With the fine-grained score on, OSC and its PTC pair term run on that score's
units instead: :func:`finsta_model.fine_grained.unit_osc` and
:func:`finsta_model.fine_grained.unit_ptc`.

The host learns from the SG branch through :func:`distillation` (pooled
embeddings), :func:`score_distillation` (the Finsta score's rankings) and
:func:`finsta_model.fine_grained.phrase_alignment` (node↔unit similarities as
token↔cell targets).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """``-log Σ_pos exp / Σ_valid exp`` per row, averaged over rows with a positive."""
    logits = logits.float()
    if valid is not None:
        logits = logits.masked_fill(~valid, float("-inf"))
    pos = logits.masked_fill(~positive, float("-inf")).logsumexp(-1)
    rows = positive.any(-1)
    if not rows.any():
        return logits.new_zeros(())
    return (logits.logsumexp(-1) - pos)[rows].mean()


def video_text_nce(video: torch.Tensor, text: torch.Tensor, cap_video: torch.Tensor, cap_neg_of: torch.Tensor,
                   tau: float, extra: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE; ``text`` rows with ``cap_neg_of >= 0`` are negatives only.

    The score of (caption c, video v) is ``text[c]·video[v]`` plus ``extra[c, v]`` when given (the
    fine-grained term), so every part of the loss below (hard negatives included) trains the same score
    that evaluation ranks with."""
    sim = text @ video.T                                            # [C, B]
    if extra is not None:
        sim = sim + extra
    sim = sim / tau
    real = cap_neg_of < 0
    match = cap_video[:, None] == torch.arange(video.shape[0], device=video.device)[None]
    t2v = multi_positive_nce(sim[real], match[real])
    v2t = multi_positive_nce(sim.T, (match & real[:, None]).T)
    loss = (t2v + v2t) / 2
    negatives = ~real
    if negatives.any():
        # caption-vs-its-perturbations ranking on the true video: row c ranks {c} ∪ N(c)
        own = sim[torch.arange(len(text), device=text.device), cap_video]          # s(caption, its video)
        group = torch.where(real, torch.arange(len(text), device=text.device), cap_neg_of)
        rows = real.nonzero().squeeze(1)
        members = group[None, :] == rows[:, None]                                   # [R, C]
        has_negative = (members & negatives[None, :]).any(1)
        if has_negative.any():
            logits = own[None, :].expand(len(rows), -1)[has_negative]
            positive = (rows[:, None] == torch.arange(len(text), device=text.device)[None, :])[has_negative]
            loss = loss + multi_positive_nce(logits, positive, members[has_negative])
    return loss


def object_spatial_contrast(nodes: torch.Tensor, tracks: torch.Tensor, link_node: torch.Tensor,
                            link_track: torch.Tensor, tau: float) -> torch.Tensor:
    """OSC over the batch's links (zero when there are none)."""
    if link_node.numel() == 0 or tracks.shape[0] < 2:
        return nodes.new_zeros(())
    logits = nodes[link_node] @ tracks.T / tau                      # [L, K]
    return F.cross_entropy(logits.float(), link_track)


def predicate_temporal_contrast(predicates: torch.Tensor, candidates: torch.Tensor, valid: torch.Tensor,
                                tau: float) -> torch.Tensor:
    """PTC: ``candidates [P, 1 + S, d]`` with the true window first; ``valid [P, 1 + S]``."""
    if predicates.shape[0] == 0:
        return predicates.new_zeros(())
    logits = torch.einsum("pd,psd->ps", predicates, candidates) / tau
    positive = torch.zeros_like(valid)
    positive[:, 0] = True
    return multi_positive_nce(logits, positive, valid)


def distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean ``1 − cos(student, teacher)``; the teacher is held fixed."""
    if student.shape[0] == 0:
        return student.new_zeros(())
    return (1 - F.cosine_similarity(student.float(), teacher.detach().float(), dim=-1)).mean()


def _kl_rows(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``KL(softmax(teacher) ‖ softmax(student))`` over each row's valid entries."""
    rows = valid.sum(-1) > 1
    if not rows.any():
        return student.new_zeros((), dtype=torch.float32)
    student, teacher, valid = student[rows].float(), teacher[rows].float(), valid[rows]
    log_s = student.masked_fill(~valid, float("-inf")).log_softmax(-1)
    log_t = teacher.masked_fill(~valid, float("-inf")).log_softmax(-1)
    kl = (log_t.exp() * (log_t - log_s)).masked_fill(~valid, 0.0).sum(-1)
    return kl.mean()


def score_distillation(student: torch.Tensor, teacher: torch.Tensor, cap_video: torch.Tensor,
                       cap_neg_of: torch.Tensor, tau: float) -> torch.Tensor:
    """The host's score matrix ``student [C, B]`` taught the rankings of the Finsta score ``teacher [C, B]``
    (held fixed): ``KL(teacher ‖ student)`` of the softmax at temperature ``tau`` over the same three sets
    :func:`video_text_nce` ranks: each real caption over the batch's videos, each video over all captions of
    the batch, and each real caption against its own perturbations on its true video."""
    student, teacher = student / tau, teacher.detach() / tau
    n = len(cap_video)
    real = cap_neg_of < 0
    all_videos = torch.ones_like(student, dtype=torch.bool)
    loss = _kl_rows(student[real], teacher[real], all_videos[real])
    loss = loss + _kl_rows(student.T, teacher.T, all_videos.T)
    if (~real).any():
        index = torch.arange(n, device=student.device)
        own_s, own_t = student[index, cap_video], teacher[index, cap_video]
        group = torch.where(real, index, cap_neg_of)
        members = group[None, :] == index[real][:, None]                          # [R, C]
        loss = loss + _kl_rows(own_s[None].expand_as(members), own_t[None].expand_as(members), members)
    return loss
