"""How well a run's host reproduces the DSG's representations (issue 31 diagnostic).

For each batch of 32 videos of SHARDS (eval mode), the share of host video embeddings / frame tokens /
matched slots whose nearest DSG video / frame / track embedding of the batch (through the run's rep heads)
is their own: top-1 accuracy of representation distillation's three contrastive terms. Also where the
slots look: each video's slots matched to its tracks by their attention over cells (losses.slot_boxes'
matching), the share of a matched slot's attention that falls on its track's box cells (``box_mass``;
``box_chance``: the share under uniform attention over the video's tokens) and the matched slot's top-1
against the batch's tracks under that matching (``slot_by_box``).

Usage: python scripts/pilots/rep_fit.py RUN SHARDS [SHARDS ...]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from finsta_model.checkpoint import load_checkpoint
from finsta_model.data import ShardStream, make_loader
from finsta_model.fine_grained import track_footprints, track_slots
from finsta_model.losses import match_slots, slot_boxes
from finsta_model.model import FinstaModel


def top1(student: torch.Tensor, teacher: torch.Tensor) -> tuple[int, int]:
    sim = F.normalize(student, dim=-1) @ F.normalize(teacher, dim=-1).T
    return int((sim.argmax(1) == torch.arange(len(sim))).sum()), len(sim)


@torch.no_grad()
def fit(run: str, shards: str) -> dict[str, float]:
    ckpt = load_checkpoint(run)
    model = FinstaModel(ckpt.config, ckpt.dims)
    model.load_state_dict(ckpt.model)
    model.eval()
    heads = model.rep_heads
    counts = {"video": [0, 0], "frame": [0, 0], "slot": [0, 0], "slot_by_box": [0, 0]}
    mass = {"box_mass": [0.0, 0], "box_chance": [0.0, 0]}
    stream = ShardStream(shards, 32, mode="eval", hard_negatives=False, label_buckets=ckpt.config.label_buckets)
    for batch in make_loader(stream, 0):
        _, host_v = model.host_units(batch)
        enc = model.dsg(batch, model.words)
        b = len(host_v)
        frames = host_v.tokens.view(b, -1, 1 + host_v.cells, host_v.tokens.shape[-1])[:, :, 0]
        ok = batch.frame_mask[:, host_v.frame_index]
        pairs = {"video": (heads["video"](host_v.pooled), enc.video),
                 "frame": (heads["frame"](frames)[ok], enc.frames[:, host_v.frame_index][ok])}
        slots = heads["slot"](host_v.slot_states)
        slot_rows, track_rows = match_slots(slots, enc.tracks, batch.track_video)
        sim = F.normalize(slots.flatten(0, 1)[slot_rows], dim=-1) @ F.normalize(enc.tracks, dim=-1).T
        counts["slot"][0] += int((sim.argmax(1) == track_rows).sum())
        counts["slot"][1] += len(slot_rows)
        local, _ = track_slots(batch)
        foot = track_footprints(batch, host_v.cells, host_v.frame_index)                    # [B, K, T, P]
        _, slot_rows, track_rows = slot_boxes(host_v.slot_attention, foot, batch.track_video, local)
        sim = F.normalize(slots.flatten(0, 1)[slot_rows], dim=-1) @ F.normalize(enc.tracks, dim=-1).T
        counts["slot_by_box"][0] += int((sim.argmax(1) == track_rows).sum())
        counts["slot_by_box"][1] += len(slot_rows)
        t = foot.shape[2]
        cells = host_v.slot_attention.view(b, -1, t, 1 + host_v.cells)[..., 1:].flatten(0, 1)   # [B·S, T, P]
        covered = foot[batch.track_video[track_rows], local[track_rows]] > 0                  # [n, T, P]
        real = host_v.mask.sum(1)[batch.track_video[track_rows]].float()                       # tokens a video
        mass["box_mass"][0] += float((cells[slot_rows] * covered).sum())
        mass["box_chance"][0] += float((covered.sum((1, 2)) / real).sum())
        for item in mass.values():
            item[1] += len(slot_rows)
        for name, (s, t) in pairs.items():
            hit, n = top1(s, t)
            counts[name][0] += hit
            counts[name][1] += n
    return {name: round(100 * hit / max(n, 1), 1) for name, (hit, n) in {**counts, **mass}.items()}


if __name__ == "__main__":
    for shards in sys.argv[2:]:
        print(json.dumps({"run": sys.argv[1], "shards": shards, **fit(sys.argv[1], shards)}))
