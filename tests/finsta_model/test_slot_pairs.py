"""Directed slot pairs: where a slot looks, the pair geometry's direction and motion, the pair units, the
slot-pair contrast in the model (it moves the host, never the teacher), and the exported video-side model."""
from __future__ import annotations

import pytest
import torch

from finsta_model.config import TrainConfig
from finsta_model.host import HostVideo
from finsta_model.slot_pairs import SlotPairs, pair_geometry, slot_places
from schemas.errors import UserError

TINY = TrainConfig(dim=16, heads=2, gtrm_layers=1, rgtrm_layers=2, steps=3, batch_size=4, log_every=1,
                   checkpoint_every=3, shuffle_buffer=6, warmup_steps=1, fine_grained_weight=1.0)
PAIRS = dict(host_slots=3, rep_distill_weight=1.0, video_side_weight=1.0, slot_box_weight=1.0, slot_pair_weight=1.0)


def _video(columns: list[list[int]], grid: int = 3) -> HostVideo:
    """One video, one slot per list: the grid column (0 = left) each slot looks at in each frame."""
    s, t, p = len(columns), len(columns[0]), grid * grid
    attention = torch.zeros(1, s, t, 1 + p)
    for slot, cols in enumerate(columns):
        for frame, col in enumerate(cols):
            attention[0, slot, frame, 1 + grid + col] = 1.0          # the middle row
    return HostVideo(pooled=torch.zeros(1, 4), tokens=torch.zeros(1, t * (1 + p), 4),
                     mask=torch.ones(1, t * (1 + p), dtype=torch.bool), cells=p, frame_index=torch.arange(t),
                     slot_attention=attention.view(1, s, -1))


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


def test_pair_units_are_directed_and_follow_their_slots():
    torch.manual_seed(0)
    pairs = SlotPairs(8)
    places = slot_places(_video([[0, 0, 0], [2, 2, 2]]))
    slots = torch.randn(1, 2, 8)
    units = pairs.units(slots, places, torch.tensor([[0, 2]]))                     # [1, 1, 2, 2, 8]
    assert not torch.allclose(units[0, 0, 0, 1], units[0, 0, 1, 0])
    swapped = pairs.units(slots.flip(1), slot_places(_video([[2, 2, 2], [0, 0, 0]])), torch.tensor([[0, 2]]))
    assert torch.allclose(swapped[0, 0, 1, 0], units[0, 0, 0, 1], atol=1e-6)
    text = units[0, 0, 0, 1][None, None]                                              # a relation unit = pair (0, 1)
    assert torch.allclose(pairs.best(text, units), torch.ones(1, 1, 1))


def test_slot_pair_weight_needs_the_video_side_score():
    with pytest.raises(UserError, match="slot_pair_weight needs the video-side score"):
        TINY.replace(host_slots=2, slot_pair_weight=1.0).validate()
    TINY.replace(**PAIRS).validate()


def test_the_slot_pair_contrast_moves_the_host_never_the_teacher(small_dataset):
    from finsta_model.data import ShardStream, make_loader
    from finsta_model.model import FinstaModel
    stream = ShardStream(small_dataset, batch_size=6, seed=0)
    batch = next(iter(make_loader(stream, 0)))
    zero = {k: 0.0 for k in ("distill_weight", "score_distill_weight", "align_distill_weight", "node_distill_weight",
                             "osc_weight", "ptc_weight", "rep_distill_weight", "video_side_weight", "slot_box_weight")}
    config = TINY.replace(dropout=0.0, **{**PAIRS, **zero, "video_side_weight": 1e-9})
    torch.manual_seed(0)
    model = FinstaModel(config, stream.dims)
    loss, parts = model.losses(batch)
    assert parts["slot_pair"] > 0
    alone = model._slot_pairs(batch, model.host_units(batch)[1], model.caption_units(batch), model.encode(batch).dsg,
                              None)
    assert float(alone.detach()) == pytest.approx(float(parts["slot_pair"]), rel=1e-5)
    alone.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert grads["slot_pairs.subject.weight"].abs().sum() > 0 and grads["slot_pairs.geometry.weight"].abs().sum() > 0
    assert grads["host.slot_readout.queries"].abs().sum() > 0 and grads["rep_heads.slot.weight"].abs().sum() > 0
    teacher = {name: g for name, g in grads.items() if name.startswith(("gtrm", "dsg", "fine", "node_align", "words"))}
    assert all(g.abs().max() == 0 for g in teacher.values()), sorted(teacher)


def test_a_run_with_slot_pairs_exports_a_video_side_model_that_scores_as_in_the_run(small_dataset, tmp_path):
    import cli
    from finsta_model.evaluate import evaluate
    from finsta_model.export import load_video_side
    from finsta_model.train import train
    run = tmp_path / "run"
    train(small_dataset, run, TINY.replace(**PAIRS), progress=False)
    assert cli.main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "side"), "--video-sg-free"]) == 0
    exported = load_video_side(tmp_path / "side")
    assert any(name.startswith("slot_pairs.") for name in exported.model.state_dict())
    report, side = evaluate(small_dataset, run), evaluate(small_dataset, tmp_path / "side")
    assert {k: side["video_side"][k] for k in ("t2v", "hard_negatives")} == \
        {k: report["video_side"][k] for k in ("t2v", "hard_negatives")}
