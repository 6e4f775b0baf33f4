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
token↔cell targets), and :func:`representation_distillation` (what the DSG
encoder produces — video, frame and track embeddings — as targets of the
host's video embedding, frame tokens and object slots); :func:`slot_boxes` teaches the slots where the
detector's objects are (their attention over cells toward each track's boxes).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


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


def contrastive_distillation(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """Each student row ``[N, d]`` picks its own teacher row among all ``N`` teacher rows (InfoNCE, the
    teacher held fixed; both normalised here). Zero with fewer than two rows."""
    if student.shape[0] < 2:
        return student.new_zeros((), dtype=torch.float32)
    logits = F.normalize(student.float(), dim=-1) @ F.normalize(teacher.detach().float(), dim=-1).T / tau
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def match_slots(slots: torch.Tensor, tracks: torch.Tensor, track_video: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Hungarian matching of each video's slots ``[B, S, d]`` to its tracks (``tracks [K, d]``, video
    ``track_video [K]``) on cosine similarity: the matched ``(video·S + slot, track)`` indices. A video with
    more tracks than slots leaves its least similar tracks unmatched."""
    with torch.no_grad():
        sim = (F.normalize(slots.float(), dim=-1).flatten(0, 1) @ F.normalize(tracks.float(), dim=-1).T).cpu().numpy()
    s, video = slots.shape[1], track_video.cpu().numpy()
    slot_rows, track_rows = [], []
    for v in np.unique(video):
        mine = np.flatnonzero(video == v)
        rows, cols = linear_sum_assignment(-sim[v * s:(v + 1) * s, mine])
        slot_rows.append(v * s + rows)
        track_rows.append(mine[cols])
    if not slot_rows:
        empty = torch.zeros(0, dtype=torch.long, device=slots.device)
        return empty, empty
    return (torch.from_numpy(np.concatenate(slot_rows)).to(slots.device),
            torch.from_numpy(np.concatenate(track_rows)).to(slots.device))


def slot_boxes(attention: torch.Tensor, footprints: torch.Tensor, track_video: torch.Tensor, track_local: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Object slots taught where the detector's objects are (box supervision; the detector is needed at
    training time only).

    ``attention [B, S, T·(1 + P)]``: each slot's attention over its video's host tokens (frame-major, token 0
    of a frame its pooled token, then its ``P`` cells); ``footprints [B, K, T, P]``: each track's box area per
    host frame and cell (:func:`finsta_model.fine_grained.track_footprints`); track ``g`` of the batch is
    ``footprints[track_video[g], track_local[g]]``. A track's target is its footprint normalised over the
    frames and cells it covers (every frame it is seen in weighs the same). Each video's slots are
    Hungarian-matched to its seen tracks on the cross-entropy ``-Σ target · log attention`` (the slot that
    already looks there takes the track); the loss is that cross-entropy averaged over the matched pairs.
    Returns ``(loss, slot_rows, track_rows)``: the pairs as ``(video·S + slot, track)`` indices, the matching
    :func:`representation_distillation` then uses. Zero (and no pairs) when no track is seen."""
    b, s, n = attention.shape
    t, p = footprints.shape[2], footprints.shape[3]
    if n != t * (1 + p):
        raise ValueError(f"slot attention over {n} tokens does not fit {t} frames of 1 + {p} tokens")
    log_cells = attention.view(b, s, t, 1 + p)[..., 1:].float().clamp_min(1e-9).log()            # [B, S, T, P]
    mass = footprints.float().sum((2, 3))                                                       # [B, K]
    target = footprints.float() / mass.clamp_min(1e-9)[..., None, None]
    cost = -torch.einsum("bstp,bktp->bsk", log_cells, target)                                   # [B, S, K]
    seen = (mass[track_video, track_local] > 0).cpu().numpy()
    video, local = track_video.cpu().numpy(), track_local.cpu().numpy()
    table = cost.detach().cpu().numpy()
    slot_rows, track_rows = [], []
    for v in np.unique(video[seen]):
        mine = np.flatnonzero((video == v) & seen)
        rows, cols = linear_sum_assignment(table[v][:, local[mine]])
        slot_rows.append(v * s + rows)
        track_rows.append(mine[cols])
    if not slot_rows:
        empty = torch.zeros(0, dtype=torch.long, device=attention.device)
        return cost.new_zeros(()), empty, empty
    slot_rows = torch.from_numpy(np.concatenate(slot_rows)).to(attention.device)
    track_rows = torch.from_numpy(np.concatenate(track_rows)).to(attention.device)
    loss = cost.flatten(0, 1)[slot_rows, track_local[track_rows]].mean()
    return loss, slot_rows, track_rows


def representation_distillation(video: torch.Tensor, teacher_video: torch.Tensor, frames: torch.Tensor,
                                teacher_frames: torch.Tensor, slots: torch.Tensor | None, tracks: torch.Tensor,
                                track_video: torch.Tensor, tau: float,
                                match: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The host taught what the SG branch's DSG encoder produces, not its scores (teacher held fixed):

    * each host video embedding ``[B, d]`` picks its video's DSG embedding among the batch's;
    * each host frame token ``[F, d]`` (real frames) its frame's DSG frame embedding among all frames of
      the batch (the same video's other frames included: where the objects are, moment by moment);
    * with object slots ``[B, S, d]``: the slots of each video are Hungarian-matched to its DSG tracks
      (cosine), and each matched slot picks its track among every track of the batch (OSC's negatives);
      ``match`` (``(slot_rows, track_rows)``, e.g. :func:`slot_boxes`' pairs) replaces that matching.

    The three terms are summed; a term without rows is zero."""
    loss = contrastive_distillation(video, teacher_video, tau) + contrastive_distillation(frames, teacher_frames, tau)
    if slots is not None and tracks.shape[0] > 1:
        slot_rows, track_rows = match if match is not None else match_slots(slots, tracks, track_video)
        if len(slot_rows):
            logits = F.normalize(slots.flatten(0, 1)[slot_rows].float(), dim=-1) \
                @ F.normalize(tracks.detach().float(), dim=-1).T / tau
            loss = loss + F.cross_entropy(logits, track_rows)
    return loss
