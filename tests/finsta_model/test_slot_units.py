"""The slots' window units: where a slot looks, its geometry and motion in a caption window, the directed pair
geometry, the units, the unit contrast in the model (it moves the host, never the teacher), and the exported
video-side model."""
from __future__ import annotations

import pytest
import torch

from finsta_model.config import TrainConfig
from finsta_model.host import HostVideo
from finsta_model.slot_units import SlotUnits, pair_geometry, slot_geometry, slot_places
from schemas.errors import UserError

TINY = TrainConfig(dim=16, heads=2, gtrm_layers=1, rgtrm_layers=2, steps=3, batch_size=4, log_every=1,
                   checkpoint_every=3, shuffle_buffer=6, warmup_steps=1, fine_grained_weight=1.0)
UNITS = dict(host_slots=3, rep_distill_weight=1.0, video_side_weight=1.0, slot_box_weight=1.0, slot_unit_weight=1.0)


def _video(columns: list[list[int]], grid: int = 3) -> HostVideo:
    """One video, one slot per list: the grid column (0 = left; -1: on no cell) each slot looks at in each
    frame, on the middle row."""
    s, t, p = len(columns), len(columns[0]), grid * grid
    attention = torch.zeros(1, s, t, 1 + p)
    for slot, cols in enumerate(columns):
        for frame, col in enumerate(cols):
            if col >= 0:
                attention[0, slot, frame, 1 + grid + col] = 1.0
            else:
                attention[0, slot, frame, 0] = 1.0                  # the frame's pooled token, no cell
    return HostVideo(pooled=torch.zeros(1, 4), tokens=torch.zeros(1, t * (1 + p), 4),
                     mask=torch.ones(1, t * (1 + p), dtype=torch.bool), cells=p, frame_index=torch.arange(t),
                     slot_attention=attention.view(1, s, -1))


def test_slot_geometry_reads_position_presence_and_motion_inside_the_caption_window():
    # slot 0 moves right in frames 0-3 then stops; slot 1 is absent in frames 0-2, then appears on the right
    places = slot_places(_video([[0, 0, 1, 2, 2, 2], [-1, -1, -1, 2, 2, 2]]))
    early, late = slot_geometry(places, torch.tensor([[0, 3], [3, 5]]))[:, 0]          # [S, 10] each
    assert early[0, 4] > 0 and early[0, 6] > 0 and late[0, 4:7].abs().max() < 1e-6     # moves right, then still
    assert early[1, 3] > 0 and late[1, 3].abs() < 1e-6                                  # appears, then stays
    assert early[0, 0] < late[0, 0]
    stops = slot_geometry(slot_places(_video([[0, 1, 2, 2, 2, 2]])), torch.tensor([[0, 5]]))[0, 0, 0]
    assert stops[7] > 0 and stops[8] < stops[7] and stops[9] < 0                        # speed falls: it stops


def test_pair_geometry_is_directed_and_reads_motion_inside_the_caption_window():
    # slot 0 stays left; slot 1 comes from the right to the middle in frames 0-3, then stays
    places = slot_places(_video([[0, 0, 0, 0, 0, 0], [2, 2, 1, 1, 1, 1]]))
    whole = pair_geometry(places, torch.tensor([[0, 3]]))[0, 0]                     # [S, S, 6]
    assert whole[0, 1, 0] < 0 < whole[1, 0, 0]                                       # x of subject − x of object
    assert torch.allclose(whole[0, 1, :3] * torch.tensor([-1, -1, 1]), whole[1, 0, :3])
    approach = whole[1, 0, 5]                                                         # change of distance
    assert approach < 0 and torch.allclose(whole[0, 1, 5], approach)
    still = pair_geometry(places, torch.tensor([[2, 5]]))[0, 0]
    assert still[1, 0, 3:].abs().max() < 1e-6                                        # no motion in frames 2-5
    # a window past the video's end is clamped to its last frame
    assert torch.allclose(pair_geometry(places, torch.tensor([[9, 12]])), pair_geometry(places, torch.tensor([[5, 5]])))


def test_units_are_directed_follow_their_slots_and_see_the_window():
    torch.manual_seed(0)
    heads = SlotUnits(8)
    places = slot_places(_video([[0, 0, 0, 1], [2, 2, 2, 2]]))
    slots = torch.randn(1, 2, 8)
    window = torch.tensor([[0, 2], [2, 3]])
    single, pairs = heads.units(slots, places, window)                                # [2, 1, 2, d], [2, 1, 2, 2, d]
    assert not torch.allclose(pairs[0, 0, 0, 1], pairs[0, 0, 1, 0])
    assert not torch.allclose(single[0, 0, 0], single[1, 0, 0])                       # slot 0 moves in window 2
    swapped = heads.units(slots.flip(1), slot_places(_video([[2, 2, 2, 2], [0, 0, 0, 1]])), window)
    assert torch.allclose(swapped[1][:, :, 1, 0], pairs[:, :, 0, 1], atol=1e-6)
    assert torch.allclose(swapped[0].flip(2), single, atol=1e-6)


def test_slot_unit_weight_needs_the_video_side_score():
    with pytest.raises(UserError, match="slot_unit_weight needs the video-side score"):
        TINY.replace(host_slots=2, slot_unit_weight=1.0).validate()
    TINY.replace(**UNITS).validate()


def test_the_slot_unit_contrast_moves_the_host_never_the_teacher(small_dataset):
    from finsta_model.data import ShardStream, make_loader
    from finsta_model.model import FinstaModel
    stream = ShardStream(small_dataset, batch_size=6, seed=0)
    batch = next(iter(make_loader(stream, 0)))
    zero = {k: 0.0 for k in ("distill_weight", "score_distill_weight", "align_distill_weight", "node_distill_weight",
                             "osc_weight", "ptc_weight", "rep_distill_weight", "video_side_weight", "slot_box_weight")}
    config = TINY.replace(dropout=0.0, **{**UNITS, **zero, "video_side_weight": 1e-9})
    torch.manual_seed(0)
    model = FinstaModel(config, stream.dims)
    loss, parts = model.losses(batch)
    assert parts["slot_units"] > 0
    alone = model._slot_units(batch, model.host_units(batch)[1], model.caption_units(batch), model.encode(batch).dsg,
                              None)
    assert float(alone.detach()) == pytest.approx(float(parts["slot_units"]), rel=1e-5)
    alone.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    for name in ("slot_units.window.0.weight", "slot_units.subject.weight", "slot_units.geometry.weight",
                 "host.slot_readout.queries", "rep_heads.slot.weight"):
        assert grads[name].abs().sum() > 0, name
    teacher = {name: g for name, g in grads.items() if name.startswith(("gtrm", "dsg", "fine", "node_align", "words"))}
    assert all(g.abs().max() == 0 for g in teacher.values()), sorted(teacher)


def test_a_run_with_slot_units_exports_a_video_side_model_that_scores_as_in_the_run(small_dataset, tmp_path):
    import cli
    from finsta_model.evaluate import evaluate
    from finsta_model.export import load_video_side
    from finsta_model.train import train
    run = tmp_path / "run"
    train(small_dataset, run, TINY.replace(**UNITS), progress=False)
    assert cli.main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "side"), "--video-sg-free"]) == 0
    exported = load_video_side(tmp_path / "side")
    assert any(name.startswith("slot_units.") for name in exported.model.state_dict())
    report, side = evaluate(small_dataset, run), evaluate(small_dataset, tmp_path / "side")
    assert {k: side["video_side"][k] for k in ("t2v", "hard_negatives")} == \
        {k: report["video_side"][k] for k in ("t2v", "hard_negatives")}
