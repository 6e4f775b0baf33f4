"""inspect's picture of one sample (render_png): which frames, readable labels, counts that agree."""
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.tools.describe import describe
from pipeline.tools.render import (_draw_frame_graph, _font, _GraphLayout, _relation_label, decode_frame, frames_note,
                                   frames_to_draw, pick_frames, render_png, title_text, track_color)
from schemas.records import (CrossLink, Detection, DynamicSceneGraph, Frame, HolisticSceneGraph, Relation,
                             TextEdge, TextNode, TextSceneGraph, Track, VideoMeta, VideoSample)
from tests.pipeline.tools.samples import CLIP, bottle_sample

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
    assert frames_note(empty) == "no sampled frames"


FONTS = {"title": _font(18), "text": _font(13), "small": _font(11)}


def parking_lot(frames: int = 31) -> VideoSample:
    """The parking-lot case: two cars, each seen in a few frames that an even spread misses."""
    detections = [Detection(7, (0.1, 0.2, 0.3, 0.5), "car", 0.8, track_id=0),
                  Detection(8, (0.2, 0.2, 0.4, 0.5), "car", 0.8, track_id=0),
                  Detection(20, (0.5, 0.5, 0.7, 0.9), "car", 0.7, track_id=1),
                  Detection(20, (0.1, 0.5, 0.2, 0.9), "person", 0.7, track_id=2)]
    dsg = DynamicSceneGraph("lot", VideoMeta("lot.mp4", 30.0, 12.5, 768, 432, "h264"),
                            frames=[Frame(i * 12, float(i)) for i in range(frames)], detections=detections,
                            tracks=[Track(0, "car", 7, 8), Track(1, "car", 20, 20), Track(2, "person", 20, 20)])
    cars = TextSceneGraph("lot#0", "cars drive past", nodes=[TextNode(0, "object", "cars", "car", (0, 4))])
    return VideoSample("lot", "manifest", dsg, [HolisticSceneGraph(cars, [CrossLink(0, 1, 0.9, "minilm")], (0, 30))])


def test_the_frames_drawn_show_every_track_and_the_note_says_what_is_left_out():
    sample = parking_lot()
    assert pick_frames(31, 6) == [0, 6, 12, 18, 24, 30]           # the old even spread: no car at all
    assert frames_to_draw(sample.dsg, 2, sample.hsgs) == [7, 20]
    drawn = frames_to_draw(sample.dsg, 6, sample.hsgs)
    assert {7, 20} <= set(drawn) and len(drawn) == 6
    assert frames_to_draw(sample.dsg, 1, sample.hsgs) == [20]       # the linked car and a person: two new tracks
    assert frames_note(sample, 2) == ("frames drawn: #7 #20; left out 29 of 31: #0-#6, #8-#19, #21-#30 "
                                      "(1 detection); every track is drawn")
    assert frames_note(sample, 1).endswith("tracks in no drawn frame: T0")
    assert frames_note(bottle_sample()) == "frames drawn: #0 #1 #2 #3 #4 #5 (all)"


def test_title_counts_agree_with_the_text():
    sample = bottle_sample()
    title, text = title_text(sample), describe(sample)
    assert "2 captions, 1 negative" in title and "HSG    2 captions, 1 negative" in text
    assert "6 sampled frames, 16 detections, 4 tracks, 7 relations" in title
    assert "6 sampled frames (0.00-7.50 s), 16 detections, 4 tracks, 7 relations" in text


def crossing_frame() -> DynamicSceneGraph:
    """Four boxes whose relation lines cross each other's midpoints: labels must stay readable."""
    boxes = [(0.05, 0.40, 0.15, 0.60), (0.85, 0.40, 0.95, 0.60), (0.45, 0.05, 0.55, 0.20), (0.45, 0.80, 0.55, 0.95)]
    detections = [Detection(0, box, "cup", 0.9, track_id=t) for t, box in enumerate(boxes)]
    return DynamicSceneGraph("x", VideoMeta("x.mp4", 1.0, 1.0, 280, 158, "h264"), frames=[Frame(0, 0.0)],
                             detections=detections,
                             relations=[Relation(0, 0, 1, "left of", 0.9), Relation(0, 2, 3, "above", 0.8)],
                             tracks=[Track(t, "cup", 0, 0) for t in range(4)])


def test_no_line_strikes_a_relation_label():
    thumb = Image.new("RGB", (280, 158), (120, 120, 120))
    labels = _draw_frame_graph(thumb, crossing_frame(), 0, FONTS)
    assert [text for _, text in labels] == ["T0 cup", "T1 cup", "T2 cup", "T3 cup", "left of", "above"]
    boxes = [box for box, _ in labels]
    for i, a in enumerate(boxes):                    # tags and labels do not overlap
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    for box, text in labels[4:]:                     # each label looks exactly as drawn alone: no line over it
        alone = Image.new("RGB", thumb.size, (120, 120, 120))
        _relation_label(ImageDraw.Draw(alone), box, text, FONTS["small"])
        inside = np.s_[math.ceil(box[1]):math.floor(box[3]) + 1, math.ceil(box[0]):math.floor(box[2]) + 1]
        assert np.array_equal(np.asarray(thumb)[inside], np.asarray(alone)[inside]), text


def test_tsg_edges_are_labelled_and_labels_do_not_overlap(tmp_path):
    sample = bottle_sample()
    image = Image.new("RGB", (1400, 900), (255, 255, 255))
    layout = _GraphLayout(sample, 1400, FONTS)
    layout.draw(image, 0)
    edges = sum(len(h.tsg.edges) for h in sample.hsgs if h.negative_of is None)
    boxes = layout.label_boxes
    assert len(boxes) == edges == 7
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
