"""Window units of the host's object slots: what the video-side SG-free score matches a caption's nodes to.

The video-side score (``FinstaModel.video_side_scores``) matches each object/relation node of a caption's
TSG against the video's host object slots. A whole-video slot vector says *which object*; a caption
speaks of a frame window ("the square is moving down slowly" from 2.6 s to 4.6 s), and its structural
hard negatives change the motion, swap subject and object, or reverse time. The teacher's fine-grained
score reads tracks over the caption's window (:mod:`finsta_model.fine_grained`); this module gives the
video side the same units from host features only:

* **where a slot is, frame by frame** (:func:`slot_places`): a slot's attention over each host frame's
  cells (``HostVideo.slot_attention``, which ``slot_box_weight`` trains toward the detector's boxes) gives
  the frame's attention mass (is the object there) and the mass-weighted centre of the cells (where);
* **a slot's window unit** (:meth:`SlotUnits.units`): ``r + MLP([r ‖ g])``, ``r`` the slot head's
  output (representation distillation), ``g`` the slot's geometry in the window (:func:`slot_geometry`):
  its centre, presence and the change of presence between the window's halves (appears, vanishes), its
  displacement between the halves and its length (direction, speed), its mean speed in each half (starts,
  stops) — as the teacher's track unit is the track plus an MLP of its window geometry and motion;
* **a directed pair unit** (:meth:`SlotUnits.units`) for an ordered pair (subject slot i, object
  slot j) over the window: ``GELU(W_s u_i + W_o u_j + W_g g_ij)`` with ``u`` the window units and ``g_ij``
  the two centres' relative position, distance and their change between the halves (:func:`pair_geometry`).
  ``W_s ≠ W_o`` and ``g_ij ≠ g_ji`` make it directed.

An object node takes its best cosine among the window units, a relation node among the window units and
the pairs (through the TSG's relation head, ``fine.pair_text``). Training (:func:`slot_unit_contrast`,
besides the video-side InfoNCE): the teacher's unit OSC and PTC on the slots — each HSG-linked object node
of a real caption picks its track's slot's window unit among every slot of the batch over its window; a
transitive predicate picks the pair (subject's slot, object's slot) among every ordered slot pair (the
reversed pair included); an intransitive one its subject's slot. Slots stand for tracks through the box
supervision's matching (else cosine). The caption side is the teacher's and stays fixed; the detector is
read at training time only.

Example::

    heads = SlotUnits(dim=64)
    places = slot_places(host_video)                        # a HostVideo with slots and cells
    single, pairs = heads.units(raw_slots, places, window)   # [C, B, S, d], [C, B, S, S, d]; window [C, 2]
    best = heads.node_scores(text_units, single, pairs)      # [C, U, B]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from finsta_model.fine_grained import (MOTION_SCALE, OBJECT_KIND, RELATION_KIND, linked_tracks, predicate_arguments,
                                       text_slot_of)

SLOT_GEOMETRY = 10  # centre (2), presence, its change, displacement between the halves (2), its length, speed in each half, their change
PAIR_GEOMETRY = 6   # relative position (2), distance, their changes between the window's halves (3)


@dataclass
class SlotPlaces:
    """Where each slot of each video looks, frame by frame (host frames)."""

    mass: torch.Tensor          # [B, S, T] attention on the frame's cells, over its mean on the video's frames
    centre: torch.Tensor        # [B, S, T, 2] attention-weighted centre (x, y in [0, 1]) of the frame's cells
    speed: torch.Tensor         # [B, S, T] distance of the centre from the previous host frame's (0 at the first)
    frame: torch.Tensor         # [B, T] the batch frame each host frame reads (-1: padding)
    n_frames: torch.Tensor      # [B] batch frames of each video (a caption's window is clamped to them)


def slot_places(video) -> SlotPlaces:
    """:class:`SlotPlaces` of a :class:`finsta_model.host.HostVideo` with slots and ``P = G × G`` cells."""
    b, s, n = video.slot_attention.shape
    p = video.cells
    t = n // (1 + p)
    grid = int(round(p ** 0.5))
    if p == 0 or grid * grid != p:
        raise ValueError(f"slot units need a square grid of cells per frame (got {p})")
    cells = video.slot_attention.view(b, s, t, 1 + p)[..., 1:].float()                    # [B, S, T, P]
    mid = (torch.arange(grid, device=cells.device, dtype=torch.float32) + 0.5) / grid
    xy = torch.stack([mid[None, :].expand(grid, grid), mid[:, None].expand(grid, grid)], -1).reshape(p, 2)
    frame = video.frame_index
    frame = frame[None].expand(b, -1) if frame.dim() == 1 else frame
    real = video.mask.view(b, t, 1 + p)[:, :, 0] & (frame >= 0)
    frame = torch.where(real, frame, torch.full_like(frame, -1))
    mass = cells.sum(-1)
    centre = (cells @ xy) / mass.clamp_min(1e-9)[..., None]
    mean = (mass * real[:, None]).sum(-1, keepdim=True) / real.sum(-1).clamp_min(1)[:, None, None]
    step = (centre[:, :, 1:] - centre[:, :, :-1]).norm(dim=-1) * (real[:, 1:] & real[:, :-1])[:, None]
    speed = torch.cat([step.new_zeros((b, s, 1)), step], dim=-1)
    return SlotPlaces(mass=mass / mean.clamp_min(1e-9), centre=centre, speed=speed, frame=frame,
                      n_frames=frame.amax(1) + 1)


def _windows(places: SlotPlaces, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The host frames ``[C, B, T]`` (0/1) inside each caption window ``[C, 2]`` and its two halves (clamped to
    each video's frames, as the fine-grained score reads windows)."""
    top = (places.n_frames - 1).clamp_min(0)
    hi = torch.minimum(window[:, 1:2], top[None])                                          # [C, B]
    lo = torch.minimum(window[:, 0:1], hi)
    mid1, mid2 = (lo + hi) // 2, (lo + hi + 1) // 2
    frame = places.frame[None]                                                             # [1, B, T]
    real = frame >= 0
    return tuple((real & (frame >= a[..., None]) & (frame <= z[..., None])).float()
                 for a, z in ((lo, hi), (lo, mid1), (mid2, hi)))


def _mean(inside: torch.Tensor, values: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The mean of ``values [B, S, T, ...]`` over the frames ``inside [C, B, T]`` (weighted by ``weight [B, S,
    T]``): ``[C, B, S, ...]``."""
    w = inside[:, :, None] * (weight[None] if weight is not None else 1)                   # [C, B, S|1, T]
    w = w.expand(-1, -1, values.shape[1], -1)
    total = torch.einsum("cbst,bst...->cbs...", w, values)
    norm = w.sum(-1).clamp_min(1e-9)
    return total / (norm[..., None] if values.dim() == 4 else norm)


def _centres(places: SlotPlaces, halves: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    return [_mean(inside, places.centre, places.mass) for inside in halves]


def slot_geometry(places: SlotPlaces, window: torch.Tensor) -> torch.Tensor:
    """``[C, B, S, SLOT_GEOMETRY]``: each slot's geometry and motion over each caption window ``[C, 2]``."""
    whole, first, second = _windows(places, window)
    c_all, c1, c2 = _centres(places, (whole, first, second))
    p_all, p1, p2 = (_mean(inside, places.mass) for inside in (whole, first, second))
    s1, s2 = (_mean(inside, places.speed, places.mass) * MOTION_SCALE for inside in (first, second))
    disp = (c2 - c1) * MOTION_SCALE
    return torch.cat([c_all, p_all[..., None], (p2 - p1)[..., None], disp, disp.norm(dim=-1, keepdim=True),
                      s1[..., None], s2[..., None], (s2 - s1)[..., None]], dim=-1)


def pair_geometry(places: SlotPlaces, window: torch.Tensor) -> torch.Tensor:
    """``[C, B, S, S, PAIR_GEOMETRY]``: each ordered slot pair's geometry over each caption window ``[C, 2]``."""
    whole, rel1, rel2 = ((c[:, :, :, None] - c[:, :, None, :])
                         for c in _centres(places, _windows(places, window)))
    dist = whole.norm(dim=-1, keepdim=True)
    change = (rel2 - rel1) * MOTION_SCALE
    dchange = (rel2.norm(dim=-1, keepdim=True) - rel1.norm(dim=-1, keepdim=True)) * MOTION_SCALE
    return torch.cat([whole, dist, change, dchange], dim=-1)


def pair_mask(slots: int, device) -> torch.Tensor:
    """``[S, S]``: the ordered pairs of two different slots."""
    return ~torch.eye(slots, dtype=torch.bool, device=device)


class SlotUnits(nn.Module):
    """The heads of the slots' window and pair units (see the module docstring)."""

    def __init__(self, dim: int):
        super().__init__()
        self.window = nn.Sequential(nn.Linear(dim + SLOT_GEOMETRY, dim), nn.GELU(), nn.Linear(dim, dim))
        self.subject = nn.Linear(dim, dim)
        self.object = nn.Linear(dim, dim, bias=False)
        self.geometry = nn.Linear(PAIR_GEOMETRY, dim, bias=False)

    def _window_units(self, slots: torch.Tensor, places: SlotPlaces, window: torch.Tensor) -> torch.Tensor:
        """``[C, B, S, d]``, not normalised (the pairs read these)."""
        geometry = slot_geometry(places, window).to(slots.dtype)
        expanded = slots[None].expand(len(window), -1, -1, -1)
        return expanded + self.window(torch.cat([expanded, geometry], dim=-1))

    def units(self, slots: torch.Tensor, places: SlotPlaces, window: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised window units ``[C, B, S, d]`` and directed pair units ``[C, B, S, S, d]`` (subject i,
        object j; the diagonal is not a pair) of ``slots [B, S, d]`` over each window ``[C, 2]``."""
        single = self._window_units(slots, places, window)
        pair = self.subject(single)[:, :, :, None] + self.object(single)[:, :, None, :] \
            + self.geometry(pair_geometry(places, window).to(slots.dtype))
        return F.normalize(single, dim=-1), F.normalize(F.gelu(pair), dim=-1)

    @staticmethod
    def node_scores(text, single: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """``[C, U, B]``: each object node's best cosine among each video's window units, each relation node's
        among its window units and directed pairs (``text``: the captions' ``TextUnits``)."""
        c, b, s = pairs.shape[:3]
        best = torch.einsum("cud,cbsd->cubs", text.align.to(single.dtype), single).float().amax(-1)
        pair = torch.einsum("cud,cbijd->cubij", text.pair.to(pairs.dtype), pairs).float()
        pair = pair.masked_fill(~pair_mask(s, pairs.device), float("-inf")).reshape(c, -1, b, s * s).amax(-1)
        return torch.where(text.is_relation[..., None], torch.maximum(best, pair), best)


def slot_unit_contrast(heads: SlotUnits, slots: torch.Tensor, places: SlotPlaces, text, batch,
                       match: tuple[torch.Tensor, torch.Tensor], tau: float) -> torch.Tensor:
    """The teacher's unit OSC / PTC on the slots (see the module docstring): ``slots [B, S, d]`` (slot head
    output), ``text`` the captions' ``TextUnits`` (held fixed), ``match`` the ``(video·S + slot, track)``
    pairs. The mean over the qualifying nodes; zero when none qualifies."""
    s = slots.shape[1]
    slot_of_track = torch.full((batch.track_video.shape[0],), -1, dtype=torch.long, device=slots.device)
    slot_rows, track_rows = match
    slot_of_track[track_rows] = slot_rows
    subject, obj, has_obj = predicate_arguments(batch)

    def slot(track: torch.Tensor) -> torch.Tensor:        # video·S + slot of each track (-1: none)
        return torch.where(track >= 0, slot_of_track[track.clamp_min(0)], -1)

    i, j, own = slot(subject), slot(obj), slot(linked_tracks(batch))
    real = batch.cap_neg_of[batch.node_cap] < 0
    is_relation = batch.node_kind == RELATION_KIND
    two = real & is_relation & has_obj & (i >= 0) & (j >= 0) & (i != j)
    one = (real & is_relation & ~has_obj & (i >= 0)) | (real & (batch.node_kind == OBJECT_KIND) & (own >= 0))
    target_one = torch.where(is_relation, i, own)
    keep = two | one
    if not keep.any():
        return slots.new_zeros((), dtype=torch.float32)
    r = keep.nonzero().squeeze(1)
    c, u = batch.node_cap[r], text_slot_of(batch)[r]
    single, pairs = heads.units(slots, places, batch.cap_window[c])                       # [R, B, S(, S), d]
    losses = []
    if one[r].any():
        k = one[r].nonzero().squeeze(1)
        logits = torch.einsum("rd,rbsd->rbs", text.align[c[k], u[k]].detach().to(single.dtype), single[k])
        losses.append(F.cross_entropy(logits.float().reshape(len(k), -1) / tau, target_one[r[k]], reduction="sum"))
    if two[r].any():
        k = two[r].nonzero().squeeze(1)
        logits = torch.einsum("rd,rbijd->rbij", text.pair[c[k], u[k]].detach().to(pairs.dtype), pairs[k]).float() / tau
        logits = logits.masked_fill(~pair_mask(s, slots.device), float("-inf")).reshape(len(k), -1)
        video, si, sj = i[r[k]] // s, i[r[k]] % s, j[r[k]] % s
        losses.append(F.cross_entropy(logits, (video * s + si) * s + sj, reduction="sum"))
    return torch.stack(losses).sum() / len(r)
