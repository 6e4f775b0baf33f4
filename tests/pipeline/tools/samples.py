"""A hand-made sample of the vendored bottles clip, shared by the describe and render tests."""
from pipeline.datasets.sample import SAMPLE_DATA
from schemas.records import (Attribute, CrossLink, Detection, DynamicSceneGraph, Frame, HolisticSceneGraph,
                             Relation, TextEdge, TextNode, TextSceneGraph, Track, TrackRelation, VideoMeta,
                             VideoSample)

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
