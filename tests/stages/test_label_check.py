"""The label check's vote on constructed classifier outputs; the real classifier on the ../shared table."""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from schemas.errors import UserError
from schemas.records import Detection, DynamicSceneGraph, Frame, VideoMeta
from stages.base import VideoTask
from stages.label_check import KIND_OF, SUPERCATEGORIES, LabelCheckConfig, label_columns, vote
from stages.track import TrackConfig, TrackStage

SHARED = Path(os.environ.get("FINSTA_SHARED", Path(__file__).resolve().parents[2] / ".." / "shared"))
PEOPLE = SHARED / "data" / "videos" / "one-by-one-person-detection.mp4"
GROUPS = ["table", "chair", "car", "phone", "bottle"]
COLUMNS = label_columns(GROUPS)
CFG = LabelCheckConfig()


def probs(*rows):
    """Crops' group probabilities from {group: p} dicts."""
    return np.array([[row.get(name, 0.0) for name in GROUPS] for row in rows], np.float32)


def test_coco_labels_map_to_their_imagenet_groups_and_kinds():
    assert COLUMNS == {"dining table": 0, "chair": 1, "car": 2, "cell phone": 3, "bottle": 4}
    assert KIND_OF["dining table"] == KIND_OF["chair"] == "furniture" and KIND_OF["car"] == "vehicle"
    assert "person" not in KIND_OF                        # no ImageNet class: a person is never relabelled
    assert len(KIND_OF) == sum(len(labels) for labels in SUPERCATEGORIES.values())   # each label one kind


def test_another_label_of_the_kind_needs_most_votes_and_a_higher_mean():
    table_wins = probs({"table": 0.25, "chair": 0.1}, {"table": 0.2, "chair": 0.15}, {"table": 0.1, "chair": 0.2})
    assert vote("chair", table_wins, COLUMNS, CFG) == "dining table"
    assert vote("dining table", table_wins, COLUMNS, CFG) is None           # already right
    split = probs({"table": 0.25, "chair": 0.1}, {"table": 0.1, "chair": 0.2})
    assert vote("chair", split, COLUMNS, CFG) is None                       # 1 of 2 votes < share 0.6
    faint = probs({"table": 0.05, "chair": 0.01}, {"table": 0.06, "chair": 0.02})
    assert vote("chair", faint, COLUMNS, CFG) is None                       # the classifier sees no table
    # across kinds never: a "cell phone" the classifier reads as a car keeps its label
    assert vote("cell phone", probs({"car": 0.9}, {"car": 0.8}), COLUMNS, CFG) is None
    assert vote("person", probs({"table": 0.9}), COLUMNS, CFG) is None
    with pytest.raises(UserError, match="track.labels"):
        LabelCheckConfig(share=0.3)


def test_labels_outside_every_kind_never_load_the_classifier():
    frames = [Frame(0, 0.0), Frame(1, 1.0)]
    dsg = DynamicSceneGraph("v", VideoMeta("v.mp4", 2.0, 1.0, 32, 32, "h264"), frames,
                            [Detection(f, (0.1, 0.1, 0.5, 0.5), "circle", 0.9) for f in range(2)])
    task = VideoTask("v", "t", "v", "v.mp4", dsg=dsg, images=[np.zeros((32, 32, 3), np.uint8)] * 2, frames=frames)
    stage = TrackStage(TrackConfig())
    stage.process_batch([task])
    assert task.failure is None and [t.label for t in task.dsg.tracks] == ["circle"] and stage.checker is None


def _frames_at(path: Path, seconds: list[int]) -> list[np.ndarray]:
    out = []
    for second in seconds:
        raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-ss", str(second), "-i", str(path),
                              "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"],
                             capture_output=True, check=True).stdout
        out.append(np.frombuffer(raw, np.uint8).reshape(432, 768, 3))
    return out


@pytest.mark.skipif(not PEOPLE.is_file(), reason="../shared clips absent")
def test_the_high_table_ssd_calls_a_chair_becomes_a_dining_table():
    # The empty room of the clip at six moments: SSD's "chair" box is the small round high table.
    seconds = [0, 5, 20, 50, 70, 120]
    images = _frames_at(PEOPLE, seconds)
    frames = [Frame(s * 10, float(s)) for s in seconds]
    table = (0.48, 0.18, 0.64, 0.78)
    dsg = DynamicSceneGraph("people", VideoMeta(str(PEOPLE), 139.0, 10.0, 768, 432, "h264"), frames,
                            [Detection(f, table, "chair", 0.8) for f in range(len(frames))])
    task = VideoTask("people", "t", "people", str(PEOPLE), dsg=dsg, images=images, frames=frames)
    TrackStage(TrackConfig()).process_batch([task])
    assert task.failure is None
    assert [t.label for t in task.dsg.tracks] == ["dining table"]
    assert {d.label for d in task.dsg.detections} == {"dining table"}
    # switched off, the detector's label stays
    task = VideoTask("people", "t", "people", str(PEOPLE), dsg=dsg, images=images, frames=frames)
    for d in dsg.detections:
        d.label, d.track_id = "chair", -1
    TrackStage(TrackConfig(labels=LabelCheckConfig(enabled=False))).process_batch([task])
    assert [t.label for t in task.dsg.tracks] == ["chair"]
