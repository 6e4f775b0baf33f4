"""Directed pairs of the host's object slots: the relation units of the video-side SG-free score.

The video-side score (``FinstaModel.video_side_scores``) matches each TSG node of a caption against the
host's object slots. A slot says *which object*; a relation ("A approaches B") is about two objects, in
an order, over the caption's frame window, and the structural hard negatives swap its subject and object
or reverse its time. This module gives the video side what the fine-grained score's directed track pairs
give the teacher (:mod:`finsta_model.fine_grained`), read from host features only:

* **where a slot is**: its attention over each host frame's cells (``HostVideo.slot_attention``, which
  ``slot_box_weight`` trains toward the detector's boxes) gives, per frame, its attention mass on the
  cells and the mass-weighted centre of those cells (:func:`slot_places`);
* **a directed pair unit** for an ordered pair (subject slot i, object slot j) over a caption's window
  ``[a, b]``: ``GELU(W_s r_i + W_o r_j + W_g g_ij)``, ``r`` the slot's representation (the slot head of
  the representation distillation), ``g_ij`` the pair's geometry in the window — relative position of
  the two centres and their distance, and the change of both between the window's halves (motion).
  ``W_s ≠ W_o`` and ``g_ij ≠ g_ji`` make it directed (:class:`SlotPairs`);
* **training** (:func:`slot_pair_contrast`): each predicate of a real caption whose subject and object
  nodes are HSG-linked to tracks that are matched to two slots (the box supervision's matching) picks
  the directed pair unit (subject's slot, object's slot) among every ordered slot pair of the batch over
  its window — the reversed pair and the other videos' pairs are negatives. The caption side (the TSG's
  relation head, ``fine.pair_text``) is the teacher's and stays fixed. The detector is read at training
  time only.

Example::

    pairs = SlotPairs(dim=64)
    places = slot_places(host_video)                    # HostVideo with slots and cells
    units = pairs.units(raw_slots, places, window)      # [C, B, S, S, d], normalised; window [C, 2]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from finsta_model.fine_grained import MOTION_SCALE, RELATION_KIND, predicate_arguments, text_slot_of

PAIR_GEOMETRY = 6   # relative position in the window (2), distance, their changes between the window's halves (3)


@dataclass
class SlotPlaces:
    """Where each slot of each video looks, frame by frame (host frames)."""

    mass: torch.Tensor          # [B, S, T] attention on the frame's cells
    weighted: torch.Tensor      # [B, S, T, 2] Σ attention · cell centre (x, y in [0, 1]) over the frame's cells
    frame: torch.Tensor         # [B, T] the batch frame each host frame reads (-1: padding)
    n_frames: torch.Tensor      # [B] batch frames of each video (a caption's window is clamped to them)


def slot_places(video) -> SlotPlaces:
    """:class:`SlotPlaces` of a :class:`finsta_model.host.HostVideo` with slots and ``P = G × G`` cells."""
    b, s, n = video.slot_attention.shape
    p = video.cells
    t = n // (1 + p)
    grid = int(round(p ** 0.5))
    if p == 0 or grid * grid != p:
        raise ValueError(f"slot pairs need a square grid of cells per frame (got {p})")
    cells = video.slot_attention.view(b, s, t, 1 + p)[..., 1:].float()                    # [B, S, T, P]
    centre = (torch.arange(grid, device=cells.device, dtype=torch.float32) + 0.5) / grid
    xy = torch.stack([centre[None, :].expand(grid, grid), centre[:, None].expand(grid, grid)], -1).reshape(p, 2)
    frame = video.frame_index
    frame = frame[None].expand(b, -1) if frame.dim() == 1 else frame
    real = video.mask.view(b, t, 1 + p)[:, :, 0] & (frame >= 0)
    frame = torch.where(real, frame, torch.full_like(frame, -1))
    return SlotPlaces(mass=cells.sum(-1), weighted=cells @ xy, frame=frame, n_frames=frame.amax(1) + 1)


def _centres(places: SlotPlaces, inside: torch.Tensor) -> torch.Tensor:
    """``[C, B, S, 2]``: each slot's attention-weighted centre over the host frames ``inside [C, B, T]``."""
    mass = torch.einsum("cbt,bst->cbs", inside, places.mass)
    return torch.einsum("cbt,bstx->cbsx", inside, places.weighted) / mass.clamp_min(1e-9)[..., None]


def pair_geometry(places: SlotPlaces, window: torch.Tensor) -> torch.Tensor:
    """``[C, B, S, S, PAIR_GEOMETRY]``: each ordered slot pair's geometry over each caption window ``[C, 2]``
    (clamped to each video's frames, as the fine-grained score reads windows)."""
    top = (places.n_frames - 1).clamp_min(0)
    hi = torch.minimum(window[:, 1:2], top[None])                                          # [C, B]
    lo = torch.minimum(window[:, 0:1], hi)
    mid1, mid2 = (lo + hi) // 2, (lo + hi + 1) // 2
    frame = places.frame[None]                                                             # [1, B, T]
    real = frame >= 0

    def within(a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return (real & (frame >= a[..., None]) & (frame <= z[..., None])).float()

    whole, first, second = (_centres(places, within(a, z)) for a, z in ((lo, hi), (lo, mid1), (mid2, hi)))
    rel, rel1, rel2 = (c[:, :, :, None] - c[:, :, None, :] for c in (whole, first, second))
    dist = rel.norm(dim=-1, keepdim=True)
    change = (rel2 - rel1) * MOTION_SCALE
    dchange = (rel2.norm(dim=-1, keepdim=True) - rel1.norm(dim=-1, keepdim=True)) * MOTION_SCALE
    return torch.cat([rel, dist, change, dchange], dim=-1)


def pair_mask(slots: int, device) -> torch.Tensor:
    """``[S, S]``: the ordered pairs of two different slots."""
    return ~torch.eye(slots, dtype=torch.bool, device=device)


class SlotPairs(nn.Module):
    """The directed slot-pair head (see the module docstring)."""

    def __init__(self, dim: int):
        super().__init__()
        self.subject = nn.Linear(dim, dim)
        self.object = nn.Linear(dim, dim, bias=False)
        self.geometry = nn.Linear(PAIR_GEOMETRY, dim, bias=False)

    def units(self, slots: torch.Tensor, places: SlotPlaces, window: torch.Tensor) -> torch.Tensor:
        """``slots [B, S, d]`` (the slot head's output, not normalised), ``window [C, 2]`` → the normalised
        pair units ``[C, B, S, S, d]`` (subject i, object j; the diagonal is not a pair)."""
        geometry = self.geometry(pair_geometry(places, window).to(slots.dtype))
        pair = self.subject(slots)[None, :, :, None] + self.object(slots)[None, :, None, :] + geometry
        return F.normalize(F.gelu(pair), dim=-1)

    def best(self, text_pair: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """``[C, U, B]``: each text relation unit's (``text_pair [C, U, d]``, normalised) best cosine among each
        video's ordered slot pairs ``units [C, B, S, S, d]``."""
        c, b, s = units.shape[:3]
        sim = torch.einsum("cud,cbijd->cubij", text_pair.to(units.dtype), units).float()
        sim = sim.masked_fill(~pair_mask(s, units.device), float("-inf"))
        return sim.reshape(c, -1, b, s * s).amax(-1)


def slot_pair_contrast(pairs: SlotPairs, slots: torch.Tensor, places: SlotPlaces, text_pair: torch.Tensor,
                       batch, match: tuple[torch.Tensor, torch.Tensor], tau: float) -> torch.Tensor:
    """PTC on the slot pairs (see the module docstring): ``slots [B, S, d]`` (slot head output), ``text_pair
    [C, U, d]`` (the TSG relation head's units, held fixed), ``match`` the ``(video·S + slot, track)`` pairs.
    Zero when no predicate of the batch has both its arguments on matched, different slots."""
    b, s = slots.shape[:2]
    slot_of_track = torch.full((batch.track_video.shape[0],), -1, dtype=torch.long, device=slots.device)
    slot_rows, track_rows = match
    slot_of_track[track_rows] = slot_rows % s
    subject, obj, has_obj = predicate_arguments(batch)
    i = torch.where(subject >= 0, slot_of_track[subject.clamp_min(0)], -1)
    j = torch.where(obj >= 0, slot_of_track[obj.clamp_min(0)], -1)
    keep = (batch.node_kind == RELATION_KIND) & (batch.cap_neg_of[batch.node_cap] < 0) & has_obj \
        & (i >= 0) & (j >= 0) & (i != j)
    if not keep.any():
        return slots.new_zeros((), dtype=torch.float32)
    r = keep.nonzero().squeeze(1)
    c = batch.node_cap[r]
    units = pairs.units(slots, places, batch.cap_window[c])                                # [R, B, S, S, d]
    logits = torch.einsum("rd,rbijd->rbij", text_pair[c, text_slot_of(batch)[r]].detach().to(units.dtype), units)
    logits = (logits.float() / tau).masked_fill(~pair_mask(s, slots.device), float("-inf")).reshape(len(r), -1)
    target = (batch.track_video[subject[r]] * s + i[r]) * s + j[r]
    return F.cross_entropy(logits, target)
