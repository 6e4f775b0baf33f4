"""Each geometric and temporal predicate on constructed boxes; the relate stage end to end."""
import numpy as np
import pytest

from schemas.records import Attribute, Detection, DynamicSceneGraph, Frame, Track, VideoMeta
from stages.base import VideoTask
from stages.relate import (FRAME_PREDICATES, GEOMETRIC_PREDICATES, TRACK_PREDICATES, RelateStage, RelateConfig, TrackView,
                              approach_events, carrying_score, entering_score, frame_relations, leaving_score,
                              merge_attributes, pair_geometry, pair_relations, passing_score, reverse_predicates)

CFG = RelateConfig()
PERSON = (0.40, 0.20, 0.60, 0.95)


def kept(s, o, s_label="thing", o_label="thing"):
    return {k for k, v in pair_geometry(s, o, s_label, o_label, CFG).items() if v >= CFG.min_score}


def test_the_table_lists_every_documented_predicate():
    assert set(GEOMETRIC_PREDICATES) == {"left of", "right of", "above", "below", "on", "near", "in front of",
                                         "behind", "holding", "riding", "sitting on"}


def test_left_and_right_of():
    a, b = (0.1, 0.4, 0.2, 0.5), (0.5, 0.4, 0.6, 0.5)
    assert {"left of"} <= kept(a, b) and "right of" not in kept(a, b)
    assert {"right of"} <= kept(b, a) and "left of" not in kept(b, a)


def test_above_and_below():
    a, b = (0.4, 0.1, 0.5, 0.2), (0.4, 0.6, 0.5, 0.7)
    assert "above" in kept(a, b) and "below" not in kept(a, b)
    assert "below" in kept(b, a) and "above" not in kept(b, a)


def test_side_by_side_boxes_are_neither_above_nor_below():
    a, b = (0.1, 0.4, 0.2, 0.5), (0.25, 0.4, 0.35, 0.5)
    assert not {"above", "below"} & kept(a, b)


def test_cup_on_table():
    table, cup = (0.2, 0.5, 0.8, 0.9), (0.45, 0.38, 0.52, 0.53)
    assert "on" in kept(cup, table)
    assert "on" not in kept(table, cup)           # the larger box is never "on" the smaller
    floating = (0.45, 0.05, 0.52, 0.15)           # far above the table: above, not on
    assert "on" not in kept(floating, table) and "above" in kept(floating, table)
    beside = (0.85, 0.38, 0.92, 0.53)             # no horizontal overlap
    assert "on" not in kept(beside, table)


def test_near_depends_on_the_gap_relative_to_size():
    a = (0.1, 0.1, 0.2, 0.2)
    assert "near" in kept(a, (0.21, 0.1, 0.31, 0.2))
    assert "near" not in kept(a, (0.8, 0.8, 0.9, 0.9))
    assert "near" in kept(a, a)                    # overlapping boxes are near


def test_in_front_of_and_behind_use_overlap_and_the_lower_bottom_edge():
    front, back = (0.3, 0.4, 0.6, 0.9), (0.45, 0.3, 0.75, 0.7)
    assert "in front of" in kept(front, back) and "behind" not in kept(front, back)
    assert "behind" in kept(back, front) and "in front of" not in kept(back, front)
    apart = (0.8, 0.1, 0.9, 0.3)                  # no overlap: no depth order claimed
    assert not {"in front of", "behind"} & kept(front, apart)


def test_holding_needs_a_person_and_a_small_object_inside():
    cup_in_hand = (0.55, 0.45, 0.62, 0.55)
    assert "holding" in kept(PERSON, cup_in_hand, "person", "cup")
    assert "holding" not in kept(PERSON, cup_in_hand, "dog", "cup")          # not a person
    assert "holding" not in kept(PERSON, (0.8, 0.45, 0.87, 0.55), "person", "cup")  # outside
    assert "holding" not in kept(PERSON, (0.35, 0.1, 0.65, 0.9), "person", "door")  # not small
    assert "holding" not in kept(PERSON, (0.5, 0.88, 0.56, 0.95), "person", "ball")  # at the feet
    assert "holding" not in kept(PERSON, (0.45, 0.3, 0.55, 0.5), "person", "person")
    assert "holding" not in kept(PERSON, (0.45, 0.22, 0.55, 0.32), "person", "face")   # a part, not held


def test_holding_from_above_by_an_arm():
    """On real video the detector often boxes only the arm that reaches down onto a bottle."""
    arm, bottle = (0.0, 0.02, 0.15, 0.4), (0.08, 0.32, 0.18, 0.86)
    assert "holding" in kept(arm, bottle, "person", "bottle")
    assert "holding" not in kept(arm, (0.08, 0.5, 0.18, 0.9), "person", "bottle")       # ends above it
    assert "holding" not in kept(arm, (0.3, 0.32, 0.4, 0.86), "person", "bottle")        # beside it
    assert "holding" not in kept(arm, (0.05, 0.32, 0.15, 0.86), "person", "dining table")  # behind a table
    assert "holding" not in kept(arm, (0.0, 0.3, 0.5, 0.99), "person", "suitcase")       # larger than the box


def test_scores_lie_in_unit_interval_on_random_boxes():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = (np.sort(rng.random((2, 2)), axis=0).T.reshape(-1)[[0, 2, 1, 3]] for _ in range(2))
        for name, score in pair_geometry(tuple(a), tuple(b), "person", "cup", CFG).items():
            assert 0.0 <= score <= 1.0, name


# ------------------------------------------------------------- temporal
def view(tid, label, boxes):
    return TrackView(tid, label, dict(boxes))


def moving_box(x, y=0.4, w=0.1, h=0.2):
    return (x, y, x + w, y + h)


def test_approaching_and_moving_away_split_at_the_closest_point():
    walker = view(1, "person", {f: moving_box(0.1 + 0.1 * f) for f in range(5)})
    door = view(2, "door", {f: moving_box(0.8) for f in range(5)})
    events = approach_events(walker, door, CFG)
    assert set(events) == {"approaching"} and events["approaching"][0] >= CFG.min_score
    leaver = view(3, "person", {f: moving_box(0.7 - 0.15 * f) for f in range(5)})
    events = approach_events(leaver, door, CFG)
    assert set(events) == {"moving away"} and events["moving away"][0] >= CFG.min_score
    assert approach_events(view(4, "cup", {f: moving_box(0.4) for f in range(5)}), door, CFG) == {}
    # to the door and back: both, each over its half
    visitor = view(5, "person", {f: moving_box(0.8 - 0.15 * abs(f - 4)) for f in range(9)})
    door = view(2, "door", {f: moving_box(0.8) for f in range(9)})
    events = approach_events(visitor, door, CFG)
    assert events["approaching"][1:] == (0, 4) and events["moving away"][1:] == (3, 8)


def test_passing_needs_a_side_change_close_by_while_moving():
    car = view(1, "car", {f: moving_box(0.1 + 0.15 * f) for f in range(5)})    # crosses x≈0.45
    sign = view(2, "sign", {f: moving_box(0.45, y=0.45) for f in range(5)})
    assert passing_score(car, sign, True, CFG) >= CFG.min_score
    assert passing_score(car, sign, False, CFG) == 0.0                         # not moving
    far_below = view(5, "sign", {f: (0.45, 0.95, 0.5, 1.0) for f in range(5)})
    short = view(4, "car", {f: moving_box(0.1 + 0.02 * f) for f in range(5)})   # never reaches the sign
    assert passing_score(short, sign, True, CFG) == 0.0
    assert passing_score(car, far_below, True, CFG) < passing_score(car, sign, True, CFG)


def test_entering_and_leaving_at_the_border():
    enters = view(1, "car", {f: moving_box(0.0 + 0.1 * (f - 2)) for f in range(2, 6)})
    assert entering_score(enters, CFG) == 1.0
    assert entering_score(view(2, "car", {0: moving_box(0.0), 1: moving_box(0.1)}), CFG) == 0.0  # there at start
    appears_mid_frame = view(3, "car", {3: moving_box(0.45), 4: moving_box(0.5)})
    assert entering_score(appears_mid_frame, CFG) == 0.0
    leaves = view(4, "car", {0: moving_box(0.7), 1: moving_box(0.8), 2: moving_box(0.9)})  # right edge at 1.0
    assert leaving_score(leaves, 9, CFG) == 1.0
    assert leaving_score(leaves, 2, CFG) == 0.0                                          # there until the end


def test_carrying_is_holding_while_moving():
    person = view(1, "person", {f: (0.1 + 0.1 * f, 0.2, 0.3 + 0.1 * f, 0.95) for f in range(4)})
    bag = view(2, "bag", {f: (0.22 + 0.1 * f, 0.45, 0.28 + 0.1 * f, 0.55) for f in range(4)})
    assert carrying_score(person, bag, True, CFG) == 1.0
    assert carrying_score(person, bag, False, CFG) == 0.0
    away = view(3, "bag", {f: (0.9, 0.45, 0.95, 0.55) for f in range(4)})
    assert carrying_score(person, away, True, CFG) == 0.0


def test_carrying_an_object_that_moves_with_the_person():
    """A suitcase pulled at the walker's side, outside the walker's box: held by motion together only."""
    person = view(1, "person", {f: (0.1 + 0.1 * f, 0.2, 0.25 + 0.1 * f, 0.95) for f in range(4)})
    suitcase = view(2, "suitcase", {f: (0.26 + 0.1 * f, 0.6, 0.36 + 0.1 * f, 0.95) for f in range(4)})
    assert carrying_score(person, suitcase, True, CFG) == 1.0
    standing = view(3, "suitcase", {f: (0.26 + 0.1 * min(f, 1), 0.6, 0.36 + 0.1 * min(f, 1), 0.95) for f in range(4)})
    assert carrying_score(person, standing, True, CFG) == 0.0            # left behind after one step
    passing_car = view(4, "car", {f: (0.26 + 0.1 * f, 0.6, 0.36 + 0.1 * f, 0.95) for f in range(4)})
    assert carrying_score(person, passing_car, True, CFG) == 0.0         # too big to carry
    dog = view(5, "dog", person.boxes)
    assert carrying_score(dog, suitcase, True, CFG) == 0.0               # only a person carries


def test_a_still_object_hidden_by_a_person_persists():
    """A table is not detected while a person stands in front of it (frames 3-5): the person is in front of
    it, and walks to it and away again."""
    from stages.relate import temporal_relations
    frames = [Frame(i, i * 1.0) for i in range(9)]
    table = (0.45, 0.3, 0.6, 0.8)
    walk = {1: (0.1, 0.1, 0.3, 1.0), 2: (0.3, 0.1, 0.5, 1.0), 3: (0.42, 0.1, 0.62, 1.0),
            4: (0.42, 0.1, 0.62, 1.0), 5: (0.42, 0.1, 0.62, 1.0), 6: (0.6, 0.1, 0.8, 1.0), 7: (0.78, 0.1, 0.98, 1.0)}
    detections = [Detection(f, table, "dining table", 0.9, 1) for f in (0, 1, 2, 6, 7, 8)]
    detections += [Detection(f, box, "person", 0.9, 2) for f, box in walk.items()]
    dsg = DynamicSceneGraph("v", VideoMeta("v.mp4", 9.0, 1.0, 100, 100, "h264"), frames, detections,
                            tracks=[Track(1, "dining table", 0, 8), Track(2, "person", 1, 7)])
    events = {(r.subject, r.predicate, r.object): (r.first_frame, r.last_frame)
              for r in temporal_relations(dsg, CFG, {1: 0.0, 2: 0.2})}
    assert events[(2, "in front of", 1)] == (3, 5)
    assert events[(1, "approaching", 2)][0] == 1 and events[(1, "moving away", 2)][1] == 7
    assert (1, "in front of", 2) not in events                   # the moving person is never kept


def test_a_still_object_gone_from_its_place_and_back_elsewhere_was_moved():
    """A bottle lifted out of the picture (frames 3-5) and put back a little aside: still by its median speed,
    moving all the same; the same gap while a person's box covers it, or back in place, or gone one frame: still."""
    from stages.relate import track_motion
    place, aside = (0.40, 0.3, 0.50, 0.86), (0.42, 0.3, 0.52, 0.86)      # IoU 0.67
    def motion(back, gone=(3, 4, 5), cover=None):
        boxes = {f: (place if f < gone[0] else back) for f in range(9) if f not in gone}
        views = {1: TrackView(1, "bottle", boxes)}
        if cover:
            views[2] = TrackView(2, "person", {f: cover for f in gone})
        attrs = track_motion(views, {1: 0.001, **({2: 0.0} if cover else {})}, CFG)
        return {a.name: a.value for a in attrs if a.target == 1}
    assert motion(aside) == {"motion": "moving"}                          # no speed: it moved unseen
    assert motion(place) == {"motion": "still"}                           # back where it stood: a detector gap
    assert motion(aside, gone=(4,)) == {"motion": "still"}                # one frame missed: a flicker
    assert motion(aside, cover=(0.3, 0.1, 0.6, 1.0)) == {"motion": "still"}   # hidden by a person, not gone


def test_the_real_clip_facts_are_things_a_dsg_can_state():
    """tests/stages/data/real_clips.json facts (scripts/report_detections.py facts_seen): COCO labels, and
    predicates the relate stage or the FREQ prior emits, or a track attribute."""
    import json
    from pathlib import Path
    from stages.detectors.ssd import COCO_LABELS
    from stages.predicate_prior import supporting_geometry
    clips = json.loads((Path(__file__).parent / "data" / "real_clips.json").read_text())["clips"]
    coco = set(COCO_LABELS.values()) - {""}
    for name, clip in clips.items():
        assert clip["facts"], name
        for fact in clip["facts"]:
            assert {fact["subject"], fact.get("object", fact["subject"])} <= coco, fact
            assert ("attribute" in fact) != ("predicates" in fact), fact
            for p in fact.get("predicates", []):
                assert p in FRAME_PREDICATES or p in TRACK_PREDICATES or supporting_geometry(p), p
        assert all(set(labels) <= coco for labels in clip["misread"].values()), name


# ------------------------------------------------------------- stage
def test_merge_attributes_keeps_the_detector_value():
    existing = [Attribute("detection", 0, "color", "red", 1.0)]
    merged = merge_attributes(existing, [Attribute("detection", 0, "color", "blue", 0.9),
                                         Attribute("detection", 0, "size", "small", 0.8),
                                         Attribute("detection", 1, "color", "blue", 0.9)])
    assert [(a.target, a.name, a.value) for a in merged] == [(0, "color", "red"), (0, "size", "small"),
                                                             (1, "color", "blue")]


def _scene():
    """A person walks right holding a red cup, towards a blue car that stays put; 4 frames at 2 fps."""
    frames = [Frame(i * 15, i * 0.5) for i in range(4)]
    images = []
    detections = []
    for f in range(4):
        image = np.full((100, 200, 3), 240, np.uint8)
        px = 0.05 + 0.1 * f
        person = (px, 0.2, px + 0.2, 0.95)
        cup = (px + 0.12, 0.45, px + 0.17, 0.55)
        car = (0.7, 0.5, 0.95, 0.9)
        image[50:90, 140:190] = (20, 40, 220)
        image[45:55, int((px + 0.12) * 200):int((px + 0.17) * 200)] = (220, 20, 20)
        images.append(image)
        detections += [Detection(f, person, "person", 0.9, 1), Detection(f, cup, "cup", 0.8, 2),
                       Detection(f, car, "car", 0.95, 3)]
    dsg = DynamicSceneGraph("v", VideoMeta("v.mp4", 2.0, 30.0, 200, 100, "h264"), frames, detections,
                            attributes=[Attribute("detection", 2, "color", "silver", 1.0)],
                            tracks=[Track(1, "person", 0, 3), Track(2, "cup", 0, 3), Track(3, "car", 0, 3)])
    return VideoTask("v", "test", "v", "v.mp4", dsg=dsg, images=images, frames=frames)


def test_relate_stage_fills_attributes_relations_and_track_relations():
    stage = RelateStage(RelateConfig())
    stage.setup()
    task = stage.process_batch([_scene()])[0]
    assert task.failure is None
    dsg = task.dsg
    attrs = {(a.target_kind, a.target, a.name): a.value for a in dsg.attributes}
    assert attrs[("detection", 1, "color")] == "red"
    assert attrs[("detection", 2, "color")] == "silver"          # the detector's value stays
    assert attrs[("detection", 0, "size")] in {"medium", "large"}
    assert attrs[("track", 1, "motion")] == "moving" and attrs[("track", 1, "speed")] == "slow"
    assert attrs[("track", 3, "motion")] == "still" and ("track", 3, "speed") not in attrs
    triples = [(r.frame, dsg.detections[r.subject].label, r.predicate, dsg.detections[r.object].label)
               for r in dsg.relations]
    # the held cup: holding, and near back (its depth order against the holder says nothing);
    # the car once the person stands beside it (frame 2: less than their mean height apart) and is near it
    assert [t for t in triples if t[2] != "near"] == [(f, "person", "holding", "cup") for f in range(3)] + [
        (2, "person", "next to", "car"), (3, "person", "holding", "cup"), (3, "car", "right of", "person")]
    assert [t for t in triples if t[2] == "near"] == [(f, "cup", "near", "person") for f in range(4)] + [
        (3, "person", "near", "car")]
    assert all(dsg.detections[r.subject].frame == dsg.detections[r.object].frame == r.frame for r in dsg.relations)
    temporal = [(r.subject, r.predicate, r.object) for r in dsg.track_relations]
    assert {p for _, p, _ in temporal} <= set(TRACK_PREDICATES)
    assert (1, "approaching", 3) in temporal and (1, "carrying", 2) in temporal
    assert (3, "approaching", 1) not in temporal                 # symmetric: stored once
    assert not any(p == "passing" for _, p, _ in temporal)       # nobody crosses anybody


def test_relate_stage_without_prior_or_images():
    task = _scene()
    task.images = None
    stage = RelateStage(RelateConfig(use_prior=False))
    stage.process_batch([task])
    assert task.failure is None
    assert not any(a.name == "color" and a.target != 2 for a in task.dsg.attributes)
    assert {r.predicate for r in task.dsg.relations} <= set(FRAME_PREDICATES)


def test_relate_stage_without_dsg_fails_the_task_only():
    bad = VideoTask("b", "test", "b", "b.mp4")
    good = _scene()
    RelateStage(RelateConfig(use_prior=False)).process_batch([bad, good])
    assert bad.failure is not None and bad.failure.stage == "relate"
    assert good.failure is None and good.dsg.relations


def test_one_frame_tracks_neither_enter_nor_leave():
    from stages.relate import temporal_relations
    frames = [Frame(i, i * 1.0) for i in range(5)]
    detections = [Detection(2, (0.0, 0.4, 0.1, 0.6), "dog", 0.9, 7),                       # a blip at the border
                  Detection(2, (0.0, 0.4, 0.1, 0.6), "car", 0.9, 8), Detection(3, (0.1, 0.4, 0.2, 0.6), "car", 0.9, 8)]
    dsg = DynamicSceneGraph("v", VideoMeta("v.mp4", 5.0, 1.0, 100, 100, "h264"), frames, detections,
                            tracks=[Track(7, "dog", 2, 2), Track(8, "car", 2, 3)])
    events = {(r.subject, r.predicate) for r in temporal_relations(dsg, CFG, {})}
    assert (8, "entering") in events and not any(s == 7 for s, _ in events)


# ---------------------------------------------------------------- which relations are stored
def _dets(*specs):
    return [Detection(0, box, label, score) for box, label, score in specs]


def test_far_pairs_have_no_relation_and_near_ones_one_predicate_per_ordered_pair():
    dets = _dets(((0.1, 0.4, 0.2, 0.5), "bottle", 0.9), ((0.22, 0.4, 0.32, 0.5), "bottle", 0.9),
                 ((0.8, 0.4, 0.9, 0.5), "bottle", 0.9))
    assert pair_relations(dets, 0, 2, CFG) == []                 # far apart: nothing said
    rels = pair_relations(dets, 0, 1, CFG)
    assert [(r.subject, r.predicate, r.object) for r in rels] == [(0, "near", 1), (1, "right of", 0)]
    # read with their meaning, these say all four facts of the pair
    said = {(r.subject, r.predicate, r.object) for r in rels} | {
        (r.object, q, r.subject) for r in rels for q in reverse_predicates(r.predicate)}
    assert said == {(0, "near", 1), (1, "near", 0), (1, "right of", 0), (0, "left of", 1)}


def test_neighbours_in_a_row_are_next_to_each_other_when_nothing_stands_between():
    # three bottles standing on one table, each two bottle widths from the next: not near, but a row
    # (a 16:9 frame: the 0.27-wide gaps are 0.86 bottle heights in pixels)
    left, middle, right = (0.06, 0.3, 0.16, 0.86), (0.43, 0.3, 0.52, 0.86), (0.79, 0.3, 0.88, 0.87)
    dets = _dets((left, "bottle", 0.9), (middle, "bottle", 0.9), (right, "bottle", 0.9))
    said = {(r.subject, r.predicate, r.object) for r in frame_relations(dets, [0, 1, 2], CFG, aspect=16 / 9)}
    assert said == {(0, "next to", 1), (1, "next to", 2)}            # left and right: the middle one between
    lifted = (0.43, 0.05, 0.52, 0.6)                                    # off the table: not in the row
    assert frame_relations(_dets((left, "bottle", 0.9), (lifted, "bottle", 0.9)), [0, 1], CFG, aspect=16 / 9) == []
    # the same boxes in a frame twice as wide (2.7 heights apart in pixels): not next to each other
    assert frame_relations(dets, [0, 1, 2], CFG, aspect=5.0) == []
    # the synthetic world relates every pair by geometry alone (pairs=all): no row rule there
    assert "next to" not in {r.predicate for r in frame_relations(dets, [0, 1, 2], RelateConfig(pairs="all"))}


def test_an_interaction_wins_over_proximity_and_direction():
    table, cup = (0.2, 0.5, 0.8, 0.9), (0.45, 0.38, 0.52, 0.53)
    rels = pair_relations(_dets((table, "thing", 0.9), (cup, "widget", 0.8)), 0, 1, RelateConfig(use_prior=False))
    assert [(r.subject, r.predicate, r.object) for r in rels] == [(1, "on", 0), (0, "near", 1)]


def test_the_prior_names_the_predicate_where_it_knows_the_labels():
    from stages.predicate_prior import PredicatePrior
    prior = PredicatePrior.load()
    horse, man = (0.3, 0.5, 0.7, 0.9), (0.42, 0.2, 0.58, 0.62)
    rels = pair_relations(_dets((man, "man", 0.9), (horse, "horse", 0.9)), 0, 1, CFG, prior)
    assert (0, "ride", 1) in {(r.subject, r.predicate, r.object) for r in rels}
    # COCO's "dining table" is the table's "table"; a flat or unknown prior leaves geometry
    person, table = (0.45, 0.1, 0.65, 0.95), (0.5, 0.3, 0.75, 0.8)
    rels = pair_relations(_dets((person, "person", 0.9), (table, "dining table", 0.8)), 0, 1, CFG, prior)
    assert rels[0].predicate not in GEOMETRIC_PREDICATES
    rels = pair_relations(_dets((person, "circle", 0.9), (table, "square", 0.8)), 0, 1, CFG, prior)
    assert {r.predicate for r in rels} <= set(GEOMETRIC_PREDICATES)


def test_a_frame_keeps_its_best_relations_up_to_the_cap():
    # a row of ten touching boxes: nine near pairs, 18 relations without a cap
    dets = [Detection(0, (0.05 + 0.09 * k, 0.4, 0.14 + 0.09 * k, 0.5), "bottle", 0.5 + 0.01 * k) for k in range(10)]
    assert len(frame_relations(dets, list(range(10)), RelateConfig(max_relations_per_frame=100))) == 18
    capped = frame_relations(dets, list(range(10)), RelateConfig(max_relations_per_frame=5))
    assert len(capped) == 5
    assert frame_relations([], [], CFG) == []


def test_relate_stage_survives_no_detections_and_one_detection():
    for detections in ([], [Detection(0, (0.1, 0.1, 0.3, 0.3), "cup", 0.9, 0)]):
        dsg = DynamicSceneGraph("v", VideoMeta("v.mp4", 2.0, 1.0, 64, 64, "h264"), [Frame(0, 0.0), Frame(1, 1.0)],
                                detections, tracks=[Track(0, "cup", 0, 0)] if detections else [])
        task = VideoTask("v", "test", "v", "v.mp4", dsg=dsg, images=[np.zeros((64, 64, 3), np.uint8)] * 2)
        stage = RelateStage()
        stage.setup()
        [task] = stage.process_batch([task])
        assert task.failure is None and task.dsg.relations == [] and task.dsg.track_relations == []


@pytest.mark.parametrize("label, predicate", [("bicycle", "riding"), ("horse", "riding"), ("chair", "sitting on")])
def test_a_person_over_a_bicycle_or_chair_rides_or_sits_on_it(label, predicate):
    person, under = (0.40, 0.20, 0.60, 0.70), (0.35, 0.45, 0.65, 0.80)
    geometry = pair_geometry(person, under, "person", label, CFG)
    assert geometry[predicate] >= 0.9
    beside = pair_geometry((0.05, 0.20, 0.30, 0.95), under, "person", label, CFG)   # standing next to it
    assert beside[predicate] == 0.0
    assert pair_geometry(under, person, label, "person", CFG)[predicate] == 0.0
    dets = [Detection(0, person, "person", 0.9), Detection(0, under, label, 0.9)]
    stored = [(r.subject, r.predicate) for r in pair_relations(dets, 0, 1, RelateConfig(use_prior=False))]
    assert stored[0] == (0, predicate) and (1, "below") not in stored      # "below" is implied by it
