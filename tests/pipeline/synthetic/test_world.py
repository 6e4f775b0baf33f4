"""Scene and motion sampling: determinism, bounds, event semantics, spatial predicates."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pipeline.synthetic.world import (COLORS, MIN_VISIBILITY, WorldConfig, boxes_overlap, sample_world,
                                      spatial_predicates, world_truth)

SHORT = WorldConfig(duration=4.0)


def world(seed=0, index=0, cfg=SHORT):
    return sample_world(cfg, np.random.default_rng([seed, index]), f"synth_{seed}_{index:05d}")


def test_same_seed_same_world_other_seed_other_world():
    a, b, c = world(1), world(1), world(2)
    assert np.array_equal(a.pos, b.pos) and a.events == b.events and a.objects == b.objects
    assert not (np.array_equal(a.pos, c.pos) and a.objects == c.objects)


@pytest.mark.parametrize("bad", [dict(duration=0.5), dict(fps=0), dict(width=63), dict(width=321),
                                 dict(objects_min=1), dict(objects_max=6), dict(objects_min=4, objects_max=3),
                                 dict(difficulty="extreme")])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        WorldConfig(**bad)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), difficulty=st.sampled_from(["easy", "medium", "hard"]))
def test_worlds_respect_bounds_counts_and_separation(seed, difficulty):
    cfg = WorldConfig(duration=4.0, difficulty=difficulty)
    w = world(seed, 0, cfg)
    assert cfg.objects_min <= len(w.objects) <= cfg.objects_max
    if difficulty != "hard":
        assert len({o.color for o in w.objects}) == len(w.objects)   # the colour detector separates by hue
    assert {o.color for o in w.objects} <= set(COLORS)
    for t in range(w.num_frames):
        boxes = [w.box_px(t, i) for i in range(len(w.objects))]
        for x1, y1, x2, y2 in boxes:
            assert 0 <= x1 < x2 <= cfg.width and 0 <= y1 < y2 <= cfg.height
        if difficulty != "hard":
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    assert not boxes_overlap(boxes[i], boxes[j]), (t, i, j)
    assert len(w.events) >= 1


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_events_happen_in_the_positions(seed):
    w = world(seed)
    fps = w.config.fps
    for e in w.events:
        a, b = e.start_frame, e.end_frame
        s = e.subjects[0]
        if e.kind == "move":
            for s in e.subjects:
                delta = w.pos[b - 1, s] - w.pos[a, s]
                axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}[e.direction]
                assert delta[axis] * sign > 0 and abs(delta[1 - axis]) < 1e-9
        elif e.kind in ("approach", "move_away"):
            end = min(b, w.num_frames - 1)                # where the last step of the motion lands
            d0 = np.hypot(*(w.pos[a, s] - w.pos[a, e.object]))
            d1 = np.hypot(*(w.pos[end, s] - w.pos[end, e.object]))
            change = 0.08 * w.config.unit
            assert (d1 <= d0 - change) if e.kind == "approach" else (d1 >= d0 + change)
        elif e.kind == "appear":
            assert not w.visible(a - 1, s) and w.visible(a, s)
        elif e.kind == "disappear":
            d = w.objects[s].disappear_frame
            assert a < d < b + 1 and w.visible(d - 1, s) and not w.visible(d, s)
        elif e.kind == "stop":
            rest = w.pos[a + fps // 2:b, s]             # the stop is half a second into its span
            assert len(rest) >= fps // 2 and np.allclose(rest, rest[0])
            assert not np.allclose(w.pos[a, s], rest[0])   # it was moving before
        if e.speed:
            assert set(w.speed_of[a:b, e.subjects[0]]) == {e.speed}


def test_spatial_predicates_on_constructed_boxes():
    left, right = (0, 0, 10, 10), (40, 2, 50, 12)
    assert spatial_predicates(left, right) == ["left of"]
    assert spatial_predicates(right, left) == ["right of"]
    top, bottom = (0, 0, 10, 10), (3, 40, 13, 50)
    assert spatial_predicates(top, bottom) == ["above"]
    assert spatial_predicates(bottom, top) == ["below"]
    touching = (12, 0, 22, 10)                    # gap 2 < 0.25 × diagonal (≈ 3.5)
    assert spatial_predicates(left, touching) == ["left of", "near"]


def test_truth_frames_cover_every_rendered_frame_with_timestamps_and_relations():
    w = world(3)
    truth = world_truth(w)
    assert [f["index"] for f in truth["frames"]] == list(range(w.num_frames))
    assert truth["frames"][5]["timestamp"] == pytest.approx(5 / w.config.fps)
    for f in truth["frames"]:
        ids = {o["id"] for o in f["objects"] if o["visibility"] >= MIN_VISIBILITY}
        assert all(s in ids and o in ids for s, _, o in f["relations"])
        n = len(ids)
        directional = [r for r in f["relations"] if r[1] != "near"]
        assert len(directional) == n * (n - 1)       # exactly one direction per ordered pair
        for o in f["objects"]:
            x1, y1, x2, y2 = o["box"]
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
            assert o["motion"] in ("moving", "still")
