"""finsta_model.losses: representation distillation's slot matching and contrastive targets."""
from __future__ import annotations

import torch

from finsta_model.losses import contrastive_distillation, match_slots, representation_distillation


def test_match_slots_pairs_each_track_with_its_most_similar_free_slot():
    e = torch.eye(4)
    # video 0: slots (e0, e1, e2), tracks e2, e0; video 1: slots (e3, e1, e0), tracks e1, e3, e0, e2 (> slots)
    slots = torch.stack([torch.stack([e[0], e[1], e[2]]), torch.stack([e[3], e[1], e[0]])])
    tracks = torch.stack([e[2], e[0], e[1] + 0.1 * e[3], e[3], e[0], e[2]])
    track_video = torch.tensor([0, 0, 1, 1, 1, 1])
    slot_rows, track_rows = match_slots(slots, tracks, track_video)
    pairs = sorted(zip(slot_rows.tolist(), track_rows.tolist()))
    # video 1 has 4 tracks for 3 slots: its e2 track (no slot near it) stays unmatched
    assert pairs == [(0, 1), (2, 0), (3, 3), (4, 2), (5, 4)]


def test_representation_distillation_prefers_the_teacher_s_own_rows():
    g = torch.Generator().manual_seed(0)
    teacher = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    own = contrastive_distillation(teacher, teacher, 0.1)
    shuffled = contrastive_distillation(teacher[[1, 2, 3, 4, 5, 0]], teacher, 0.1)
    assert own < 0.1 < shuffled and contrastive_distillation(teacher[:1], teacher[:1], 0.1) == 0
    # slots equal to their video's tracks (in another order) score as low as the rows themselves
    tracks, track_video = teacher, torch.tensor([0, 0, 0, 1, 1, 1])
    slots = torch.stack([teacher[[2, 0, 1]], teacher[[5, 3, 4]]])
    video, frames = teacher[:2], teacher[2:]
    base = representation_distillation(video, video, frames, frames, None, tracks, track_video, 0.1)
    with_slots = representation_distillation(video, video, frames, frames, slots, tracks, track_video, 0.1)
    wrong = representation_distillation(video, video, frames, frames, slots.flip(0), tracks, track_video, 0.1)
    assert with_slots - base < 0.1 < wrong - base
    student = slots.clone().requires_grad_(True)
    representation_distillation(video, video, frames, frames, student, tracks.requires_grad_(True), track_video,
                                0.1).backward()
    assert student.grad.abs().sum() > 0 and tracks.grad is None     # the teacher is held fixed
