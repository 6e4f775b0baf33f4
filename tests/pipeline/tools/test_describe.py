"""inspect's text of one sample: the summary (default) and everything (``--all``)."""
import numpy as np

from pipeline.tools.describe import describe, top_relations, tsg_triples
from schemas.records import (Detection, DynamicSceneGraph, Frame, Relation, SampleFeatures, TextEdge, TextNode,
                             TextSceneGraph, Track, VideoMeta, VideoSample)
from tests.pipeline.tools.samples import bottle_sample


def test_describe_all_shows_every_graph():
    features = SampleFeatures(np.zeros((6, 8), np.float16), np.zeros((16, 8), np.float16),
                              np.zeros((9, 4), np.float16), np.zeros((3, 4), np.float16))
    text = describe(bottle_sample(), features, full=True)
    assert text.splitlines()[0] == "sample intel-bottles (source: sample)"
    assert "480x270" in text and "9.00 s" in text
    assert "DSG    6 sampled frames, 16 detections, 4 tracks, 7 relations, 2 track relations, 2 attributes" in text
    assert "T1 bottle  frames #0-#5 (0.00-7.50 s)  3 detections  color=blue shape=bottle" in text
    assert "#1 1.50 s     T4 hand  near  T1 bottle  (0.80)" in text
    assert "T4 hand  approaching  T1 bottle  #0-#1  (0.80)" in text and "T1 bottle  leaving  #1-#2" in text
    assert "HSG    2 captions, 1 negative" in text
    assert '[1] 0.90-2.50 s  frames #1-#1  "A hand grabs the left bottle and lifts it off the table."' in text
    assert "0 bottles×3 (object)" in text
    assert "hand -subj_pred-> grabs" in text and "bottle -obj_attr-> left" in text
    assert "hand ↔ T4 hand 0.83 (minilm)" in text
    assert "negative of [1] (swap_subject_object)" in text
    assert "features  frame 6x8, detection 16x8, text_node 9x4, caption 3x4" in text
    assert "--all" not in text


def test_describe_summarises_by_default():
    text = describe(bottle_sample())
    lines = text.splitlines()
    assert "DSG    6 sampled frames (0.00-7.50 s), 16 detections, 4 tracks, 7 relations" in lines[2]
    tracks = lines.index("  tracks (most detections first)")
    assert [line.split()[0] for line in lines[tracks + 1:tracks + 5]] == ["T2", "T3", "T1", "T4"]
    assert "    T1 bottle  #0-#5 (0.00-7.50 s)  3 detections  color=blue shape=bottle" in lines
    assert "  top relations (2 of 2 distinct, mirrors left out; 7 in all frames)" in lines
    assert "    T2 bottle  left of  T3 bottle  6 frames  #0-#5  score 0.95" in lines
    assert "HSG    2 captions, 1 negative (swap_subject_object 1)" in lines
    assert "      graph  hand -grabs-> bottle · hand -lifts off-> table · bottle: left" in lines
    assert "      links  hand ↔ T4 hand 0.83 (minilm) · bottle ↔ T1 bottle 0.77 (minilm)" in lines
    assert "A bottle grabs the left hand." not in text        # negatives: counted, listed with --all
    assert lines[-1].startswith("(summary; --all lists")


def busy_sample(frames: int = 60, objects: int = 6) -> VideoSample:
    """Every pair of ``objects`` tracked boxes related both ways in every frame: a long clip's DSG."""
    detections, relations = [], []
    for f in range(frames):
        first = len(detections)
        for t in range(objects):
            detections.append(Detection(f, (0.1 * t, 0.1, 0.1 * t + 0.08, 0.5), "cup", 0.9, track_id=t))
        for a in range(objects):
            for b in range(objects):
                if a != b:
                    relations.append(Relation(f, first + a, first + b, "left of" if a < b else "right of", 0.9))
    dsg = DynamicSceneGraph("busy", VideoMeta("busy.mp4", frames / 2, 25.0, 320, 240, "h264"),
                            frames=[Frame(i * 12, i / 2) for i in range(frames)], detections=detections,
                            relations=relations, tracks=[Track(t, "cup", 0, frames - 1) for t in range(objects)])
    return VideoSample("busy", "test", dsg, [])


def test_a_long_clip_is_tens_of_lines_and_all_of_it_with_all():
    sample = busy_sample()
    summary, everything = describe(sample).splitlines(), describe(sample, full=True).splitlines()
    assert len(everything) > 1800 and len(summary) < 40, (len(summary), len(everything))
    assert "  top relations (8 of 30 distinct, mirrors left out; 1800 in all frames)" in summary
    assert "    +7 more relations (--all)" in summary    # 15 after mirrors, 8 shown


def test_top_relations_group_frames_and_leave_out_mirrors():
    rows, distinct = top_relations(busy_sample(frames=3, objects=2).dsg)
    assert distinct == 2
    assert rows == [("T0 cup", "left of", "T1 cup", [0, 1, 2], 0.9)]


def test_tsg_triples_read_like_the_caption():
    tsg = TextSceneGraph("c", "two men quickly push a red cart; a dog",
                         nodes=[TextNode(0, "object", "men", "man", (4, 7), count=2),
                                TextNode(1, "relation", "push", "push", (16, 20)),
                                TextNode(2, "pred_attribute", "quickly", "quickly", (8, 15)),
                                TextNode(3, "object", "cart", "cart", (27, 31)),
                                TextNode(4, "attribute", "red", "red", (23, 26)),
                                TextNode(5, "object", "dog", "dog", (35, 38))],
                         edges=[TextEdge(0, 1, "subj_pred"), TextEdge(1, 3, "pred_obj"), TextEdge(1, 2, "pred_adv"),
                                TextEdge(3, 4, "obj_attr")])
    assert tsg_triples(tsg) == ["men×2 -push quickly-> cart", "cart: red", "dog"]
    assert tsg_triples(TextSceneGraph("e", "")) == []


def test_describe_an_empty_sample():
    empty = VideoSample("k", "manifest", DynamicSceneGraph("k", VideoMeta("", 0.0, 0.0, 0, 0, "")))
    assert "DSG    0 sampled frames" in describe(empty)
    assert "HSG    0 captions, 0 negatives" in describe(empty)
