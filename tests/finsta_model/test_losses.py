"""finsta_model.losses: representation distillation's slot matching and contrastive targets."""
from __future__ import annotations

import numpy as np
import torch

from finsta_model.losses import contrastive_distillation, match_slots, representation_distillation, slot_boxes


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


def test_slot_boxes_match_each_track_to_the_slot_looking_at_its_box_and_pull_attention_there():
    # one video, 2 frames of 1 pooled token + 4 cells; track 0 covers cell 1 in frame 0, track 1 cells 2-3 in frame 1
    footprints = torch.zeros(1, 2, 2, 4)
    footprints[0, 0, 0, 1] = 1.0
    footprints[0, 1, 1, 2:] = 0.5
    logits = torch.zeros(1, 3, 2, 5)
    logits[0, 0, 1, 3] = 4.0        # slot 0 looks at track 1's box
    logits[0, 2, 0, 2] = 4.0        # slot 2 at track 0's
    attention = logits.flatten(2).softmax(-1).requires_grad_(True)
    local = torch.tensor([0, 1])
    loss, slot_rows, track_rows = slot_boxes(attention, footprints, torch.tensor([0, 0]), local)
    assert sorted(zip(slot_rows.tolist(), track_rows.tolist())) == [(0, 1), (2, 0)]
    loss.backward()
    grad = attention.grad.view(3, 2, 5)
    assert (grad[2, 0, 2] < 0) and (grad[0, 1, 3] < 0) and (grad[0, 1, 4] < 0)   # more attention there lowers it
    assert grad[1].abs().sum() == 0 and grad[:, :, 0].abs().sum() == 0        # the free slot, pooled tokens: no target
    # attention spread exactly like each box scores the targets' entropy (the least there is: 0 and ln 2, mean
    # ln 2 / 2), lower than attention elsewhere; an unseen track is never matched
    on_box = torch.zeros(1, 3, 2, 5)
    on_box[0, 2, 0, 2], on_box[0, 0, 1, 3:] = 1.0, 0.5
    on_box[0, 1, 0, 0] = 1.0
    best = slot_boxes(on_box.flatten(2), footprints, torch.tensor([0, 0]), local)[0]
    assert abs(float(best) - np.log(2) / 2) < 1e-5 and best < loss - 0.5
    footprints[0, 1] = 0
    assert slot_boxes(attention, footprints, torch.tensor([0, 0]), local)[2].tolist() == [0]
