"""The label check's vote on constructed classifier outputs; the real classifier on the ../shared table; the kind
from motion (rules 4-5) on constructed frames and on the ../shared car clip's top-down cars."""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from schemas.errors import UserError
from schemas.records import Detection, DynamicSceneGraph, Frame, VideoMeta
from stages.base import VideoTask
from stages import openvino_runtime
from stages.label_check import (ENGINES, KIND_OF, SUPERCATEGORIES, LabelCheckConfig, LabelChecker, TrackBoxes,
                                kind_from_motion, label_columns, vote)
from stages.track import TrackConfig, TrackStage

SHARED = Path(os.environ.get("FINSTA_SHARED", Path(__file__).resolve().parents[2] / ".." / "shared"))
PEOPLE = SHARED / "data" / "videos" / "one-by-one-person-detection.mp4"
CARS = SHARED / "data" / "videos" / "car-detection.mp4"
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


def _textured(seed: int, shift: int = 0) -> np.ndarray:
    """A 90×160 grey-noise picture (a camera moved by ``shift`` pixels sideways when non-zero)."""
    base = np.random.default_rng(seed).integers(0, 255, (90, 200), np.uint8)
    return np.repeat(base[:, 20 + shift:180 + shift, None], 3, axis=2)


def _kind_case(phone_moves=True, camera_moves=False, person_touches=False, car_alike=True):
    """A 'cell phone' moving up the picture (frames 0-1), a 'cell phone' and a 'car' of its size on frame 3
    (or a small car); what :func:`kind_from_motion` makes of them."""
    images = [_textured(0, shift=8 * f if camera_moves else 0) for f in range(4)]
    first, second = (0.4, 0.5, 0.6, 0.95), (0.4, 0.1, 0.6, 0.55) if phone_moves else (0.41, 0.5, 0.61, 0.95)
    car = (0.1, 0.4, 0.3, 0.85) if car_alike else (0.1, 0.4, 0.15, 0.5)
    tracks = [TrackBoxes("cell phone", 0, [0, 1], [first, second], [0.9, 0.9]),
              TrackBoxes("cell phone", 0, [3], [(0.6, 0.4, 0.8, 0.85)], [0.9]),
              TrackBoxes("car", 0, [3], [car], [0.8])]
    frame_boxes = {0: [first], 1: [second], 3: [(0.6, 0.4, 0.8, 0.85), car]}
    person = {1: [(0.3, 0.0, 0.45, 0.3)]} if person_touches else {}
    return kind_from_motion(tracks, frame_boxes, person, images, CFG)


def test_a_carried_thing_moving_by_itself_takes_the_label_of_like_self_moving_tracks():
    assert _kind_case() == {0: "car", 1: "car"}          # both phones: the still one is alike the moving one
    assert _kind_case(phone_moves=False) == {}            # it did not move: nothing refutes "cell phone"
    assert _kind_case(camera_moves=True) == {}            # the whole picture moved: the camera, not the object
    assert _kind_case(person_touches=True) == {}          # a person may carry it
    assert _kind_case(car_alike=False) == {}              # no like self-moving track: no label to give
    with pytest.raises(UserError, match="track.labels"):
        LabelCheckConfig(alike=0.9)


@pytest.mark.skipif(not CARS.is_file(), reason="../shared clips absent")
def test_the_top_down_cars_ssd_calls_phones_and_remotes_become_cars():
    # SSD's boxes and labels on the car clip (sampled at 1 fps): a white car crossing at 6-7 s ("cell phone"),
    # a red car at 16-18 s ("truck", then "car") beside a silver one at 17 s ("cell phone"), a white car at 27 s
    # ("remote").
    found = {6: [((0.37, 0.29, 0.61, 0.98), "cell phone", 0.99)], 7: [((0.35, 0.0, 0.52, 0.5), "cell phone", 0.98)],
             16: [((0.42, 0.51, 0.67, 1.0), "truck", 0.8)],
             17: [((0.11, 0.37, 0.34, 1.0), "cell phone", 0.95), ((0.42, 0.12, 0.62, 0.74), "car", 0.8)],
             18: [((0.38, 0.01, 0.55, 0.36), "car", 0.61)], 27: [((0.16, 0.39, 0.41, 1.0), "remote", 0.98)]}
    # Sampled at 1 fps from 6 s to 27 s as a build does; the frames without a box are blank (nothing reads them).
    seconds = list(range(6, 28))
    frames = [Frame(s * 30, float(s)) for s in seconds]
    detections = [Detection(k, box, label, score) for k, s in enumerate(seconds) for box, label, score in found.get(s, [])]
    pictures = dict(zip(sorted(found), _frames_at(CARS, sorted(found))))
    images = [pictures.get(s, np.zeros((432, 768, 3), np.uint8)) for s in seconds]
    dsg = DynamicSceneGraph("cars", VideoMeta(str(CARS), 30.0, 30.0, 768, 432, "h264"), frames, detections)
    # Stand-in for the detector's RoI features (the tracker's cosine term): one direction per car.
    car_of = [0, 0, 1, 2, 1, 1, 3]
    features = np.eye(4, dtype=np.float32)[car_of]
    task = VideoTask("cars", "t", "cars", str(CARS), dsg=dsg, images=images, frames=frames,
                     detection_features=features)
    TrackStage(TrackConfig()).process_batch([task])
    assert task.failure is None
    assert len(task.dsg.tracks) == 5 and {t.label for t in task.dsg.tracks} == {"car"}


@pytest.mark.skipif(not openvino_runtime.available(), reason="OpenVINO not installed")
def test_the_openvino_engine_gives_torchs_probabilities():
    """The default engine (the torch module and its softmax converted to OpenVINO) in f32 vs torch, on crops of
    several sizes: group probabilities within 1e-4. (In bf16, the default where the CPU has it, they move by up
    to ~0.09 on the ../shared clips' crops; the clips' track labels and facts stay the same, README.)"""
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, shape, np.uint8) for shape in ((60, 40, 3), (224, 224, 3), (300, 500, 3))]
    crops.append(np.repeat(np.linspace(0, 255, 120, dtype=np.uint8)[None, :, None], 3, axis=2).repeat(90, axis=0))
    probs = {}
    for engine in ENGINES:
        checker = LabelChecker(LabelCheckConfig(engine=engine, precision="f32"))
        checker.setup()
        probs[engine] = checker.group_probs(crops)
    assert probs["torch"].shape == (len(crops), len(checker.group_matrix[0]))
    assert np.abs(probs["openvino"] - probs["torch"]).max() <= 1e-4
    with pytest.raises(UserError, match="engine"):
        LabelCheckConfig(engine="onnx")
    with pytest.raises(UserError, match="track.labels.precision must be one of bf16, f32, not 'f16'"):
        LabelCheckConfig(precision="f16")
