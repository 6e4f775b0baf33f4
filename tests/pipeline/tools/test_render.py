"""inspect's text (describe) and picture (render_png) of one sample."""
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.datasets.sample import SAMPLE_DATA
from pipeline.tools.describe import describe
from pipeline.tools.render import decode_frame, pick_frames, render_png, track_color
from schemas.records import (Attribute, CrossLink, Detection, DynamicSceneGraph, Frame, HolisticSceneGraph,
                             Relation, SampleFeatures, TextEdge, TextNode, TextSceneGraph, Track,
                             TrackRelation, VideoMeta, VideoSample)

CLIP = SAMPLE_DATA / "bottles.mp4"


def bottle_sample(path: str = str(CLIP)) -> VideoSample:
    """A hand-made DSG/HSG of the vendored clip (boxes placed where the bottles are)."""
    frames = [Frame(index=round(t * 15), timestamp=t) for t in (0.0, 1.5, 3.0, 4.5, 6.0, 7.5)]
    bottles = {1: (0.02, 0.30, 0.17, 0.88), 2: (0.44, 0.30, 0.56, 0.88), 3: (0.80, 0.30, 0.93, 0.88)}
    detections, relations = [], []
    for f in range(len(frames)):
        present = [1, 2, 3] if f in (0, 1, 5) else [2, 3]
        first = len(detections)
        for t in present:
            detections.append(Detection(f, bottles[t], "bottle", 0.9, track_id=t))
        if f == 1:
            detections.append(Detection(f, (0.0, 0.0, 0.2, 0.35), "hand", 0.7, track_id=4))
            relations.append(Relation(f, len(detections) - 1, first, "near", 0.8))
        relations.append(Relation(f, first + len(present) - 2, first + len(present) - 1, "left of", 0.95))
    dsg = DynamicSceneGraph(
        video_id="intel-bottles",
        meta=VideoMeta(path=path, duration=9.0, fps=15.0, width=480, height=270, codec="h264", num_frames=135),
        frames=frames, detections=detections,
        attributes=[Attribute("track", 1, "color", "blue"), Attribute("detection", 0, "shape", "bottle")],
        relations=relations,
        tracks=[Track(1, "bottle", 0, 5), Track(2, "bottle", 0, 5), Track(3, "bottle", 0, 5), Track(4, "hand", 1, 1)],
        track_relations=[TrackRelation(4, 1, "approaching", 0, 1, 0.8), TrackRelation(1, -1, "leaving", 1, 2, 0.7)])
    grab = TextSceneGraph("intel-bottles#1", "A hand grabs the left bottle and lifts it off the table.",
                          nodes=[TextNode(0, "object", "hand", "hand", (2, 6)),
                                 TextNode(1, "relation", "grabs", "grab", (7, 12)),
                                 TextNode(2, "attribute", "left", "left", (17, 21)),
                                 TextNode(3, "object", "bottle", "bottle", (22, 28)),
                                 TextNode(4, "relation", "lifts off", "lift off", (33, 42)),
                                 TextNode(5, "object", "table", "table", (50, 55))],
                          edges=[TextEdge(0, 1, "subj_pred"), TextEdge(1, 3, "pred_obj"),
                                 TextEdge(3, 2, "obj_attr"), TextEdge(0, 4, "subj_pred"), TextEdge(4, 5, "pred_obj")],
                          start=0.9, end=2.5)
    three = TextSceneGraph("intel-bottles#0", "Three water bottles with blue caps stand in a row on a white table.",
                           nodes=[TextNode(0, "object", "bottles", "bottle", (12, 19), count=3),
                                  TextNode(1, "attribute", "blue", "blue", (25, 29)),
                                  TextNode(2, "relation", "stand on", "stand on", (35, 40))],
                           edges=[TextEdge(0, 1, "obj_attr"), TextEdge(0, 2, "subj_pred")], start=0.0, end=1.0)
    swapped = TextSceneGraph("intel-bottles#n0", "A bottle grabs the left hand.", start=0.9, end=2.5)
    hsgs = [HolisticSceneGraph(three, [CrossLink(0, 1, 0.71, "minilm"), CrossLink(0, 2, 0.69, "minilm")], (0, 0)),
            HolisticSceneGraph(grab, [CrossLink(0, 4, 0.83, "minilm"), CrossLink(3, 1, 0.77, "minilm")], (1, 1)),
            HolisticSceneGraph(swapped, [], (1, 1), negative_of=1, negative_type="swap_subject_object")]
    return VideoSample("intel-bottles", "sample", dsg, hsgs)


def test_describe_shows_every_graph():
    features = SampleFeatures(np.zeros((6, 8), np.float16), np.zeros((16, 8), np.float16),
                              np.zeros((9, 4), np.float16), np.zeros((3, 4), np.float16))
    text = describe(bottle_sample(), features)
    print(text)
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


def test_pick_frames_spreads_evenly():
    assert pick_frames(3, 6) == [0, 1, 2]
    assert pick_frames(11, 6) == [0, 2, 4, 6, 8, 10]
    assert pick_frames(0, 6) == [] and pick_frames(5, 1) == [0]


def test_decode_frame_reads_the_clip_and_fails_softly(tmp_path):
    image = decode_frame(str(CLIP), 0.0, 96, 54)
    assert image.size == (96, 54)
    pixels = np.asarray(image)
    assert pixels.std() > 5  # a picture, not a flat fill
    assert decode_frame(str(tmp_path / "gone.mp4"), 0.0, 96, 54) is None
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    assert decode_frame(str(tmp_path / "junk.mp4"), 0.0, 96, 54) is None


def _strip(png: Path) -> np.ndarray:
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return pixels[46:46 + 157, 16:16 + 280]   # the first thumbnail


def test_render_png_draws_frames_and_graph(tmp_path):
    out = render_png(bottle_sample(), tmp_path / "deep" / "s.png")
    assert out == tmp_path / "deep" / "s.png"
    image = Image.open(out)
    assert image.format == "PNG" and image.width >= 1200 and image.height > 400
    first = _strip(out)
    assert first.std() > 20  # a real frame: not the grey placeholder
    # the box of track 1 is drawn on the first frame in its colour
    assert (np.abs(first - np.array(track_color(1))).sum(axis=2) < 30).sum() > 100


def test_render_png_without_the_video_draws_placeholders(tmp_path):
    out = render_png(bottle_sample(path=str(tmp_path / "moved.mp4")), tmp_path / "s.png", max_frames=3)
    first = _strip(out)
    grey = (np.abs(first - 165).sum(axis=2) < 6).mean()
    assert grey > 0.5
    assert Image.open(out).width == 1200


def test_render_png_of_an_empty_sample(tmp_path):
    empty = VideoSample("k", "manifest", DynamicSceneGraph("k", VideoMeta("", 0.0, 0.0, 0, 0, "")))
    assert render_png(empty, tmp_path / "e.png").is_file()
    assert "DSG    0 sampled frames" in describe(empty)
