"""The detectron2 backend without detectron2: output conversion, label lists, the install message,
model-zoo lookup without ``detectron2.model_zoo``, the arrays-only weights unpickler; and, when
detectron2 is installed, the real library (skipped otherwise).

``FakeDetectron2Instances``/``FakeDetectron2Boxes`` stand in for detectron2's
``Instances``/``Boxes`` (which cannot be installed here); they hold the same
fields as torch tensors. ``fake_detectron2_package_double`` writes the two
files of an installed detectron2 that the zoo lookup reads.
"""
import importlib.util
import json

import numpy as np
import pytest
import torch

from schemas.errors import UserError
from stages.detect import DetectConfig, DetectStage
from stages.detectors import build_detector
from stages.detectors.detectron2 import (INSTALL, WEIGHTS_FIX, Detectron2Detector, Detectron2Options, frame_detections_from_instances,
                                        load_labels, load_pickled_weights, zoo_checkpoint_url, zoo_config_file)
from stages.base import VideoTask
from schemas.records import VideoMeta, Frame


class FakeDetectron2Boxes:
    def __init__(self, tensor):
        self.tensor = tensor

    def __len__(self):
        return len(self.tensor)


class FakeDetectron2Instances:
    def __init__(self, boxes, scores, classes):
        self.pred_boxes = FakeDetectron2Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        self.scores = torch.tensor(scores, dtype=torch.float32)
        self.pred_classes = torch.tensor(classes, dtype=torch.int64)

    def __len__(self):
        return len(self.scores)


LABELS = ["person", "bicycle", "car"]


def test_conversion_normalises_sorts_and_keeps_features_aligned():
    inst = FakeDetectron2Instances([[0, 0, 400, 300], [200, 150, 800, 600], [100, 50, 300, 200]],
                                   [0.6, 0.9, 0.7], [0, 2, 1])
    features = torch.arange(3 * 1024, dtype=torch.float32).reshape(3, 1024)
    out = frame_detections_from_instances(inst, features, (600, 800), LABELS, max_detections=10)
    assert out.labels == ["car", "bicycle", "person"]
    np.testing.assert_allclose(out.scores, [0.9, 0.7, 0.6], rtol=1e-6)
    np.testing.assert_allclose(out.boxes[0], [0.25, 0.25, 1.0, 1.0])
    np.testing.assert_allclose(out.boxes[2], [0.0, 0.0, 0.5, 0.5])
    assert out.features.shape == (3, 1024) and out.features.dtype == np.float32
    assert out.features[0, 0] == 1024 and out.features[2, 0] == 0        # rows follow their boxes
    assert out.attributes == [{}, {}, {}]


def test_conversion_clips_and_caps():
    inst = FakeDetectron2Instances([[-5, -5, 900, 700], [10, 10, 20, 20]], [0.8, 0.95], [2, 0])
    out = frame_detections_from_instances(inst, torch.zeros(2, 8), (600, 800), LABELS, max_detections=1)
    assert out.labels == ["person"] and len(out) == 1
    full = frame_detections_from_instances(inst, torch.zeros(2, 8), (600, 800), LABELS, max_detections=5)
    np.testing.assert_allclose(full.boxes[1], [0, 0, 1, 1])


def test_conversion_of_an_empty_frame():
    inst = FakeDetectron2Instances(np.zeros((0, 4)), [], [])
    out = frame_detections_from_instances(inst, torch.zeros(0, 1024), (600, 800), LABELS, 10)
    assert len(out) == 0 and out.boxes.shape == (0, 4) and out.features.shape == (0, 1024)


def test_conversion_rejects_a_label_list_that_does_not_match():
    inst = FakeDetectron2Instances([[0, 0, 1, 1]], [0.9], [7])
    with pytest.raises(ValueError, match="label list"):
        frame_detections_from_instances(inst, torch.zeros(1, 4), (10, 10), LABELS, 10)


def test_label_lists(tmp_path):
    text = tmp_path / "vg150.txt"
    text.write_text("airplane\nanimal\n\narm\n")
    assert load_labels(text) == ["airplane", "animal", "arm"]
    as_json = tmp_path / "labels.json"
    as_json.write_text(json.dumps(["man", "horse"]))
    assert load_labels(str(as_json)) == ["man", "horse"]
    assert load_labels(["a", "b"]) == ["a", "b"]
    with pytest.raises(UserError, match="not found"):
        load_labels(tmp_path / "missing.txt")


def test_registered_and_built_by_name():
    det = build_detector(DetectConfig(name="detectron2"))
    assert isinstance(det, Detectron2Detector) and det.feature_dim == 1024


@pytest.mark.skipif(importlib.util.find_spec("detectron2") is not None, reason="detectron2 is installed")
def test_missing_detectron2_gives_the_install_line():
    det = build_detector(DetectConfig(name="detectron2"))
    with pytest.raises(UserError) as caught:
        det.setup()
    assert INSTALL in str(caught.value)
    # In the stage, the missing dependency is the user's to fix: it is raised, not turned into failures.
    stage = DetectStage(DetectConfig(name="detectron2"))
    with pytest.raises(UserError):
        stage.setup()


def test_detect_stage_writes_detections_and_features_from_the_backend(monkeypatch):
    """DetectStage over a detectron2 backend whose model is a test double returning fixed Instances."""
    det = Detectron2Detector(DetectConfig(name="detectron2", max_detections=5))
    det.labels = LABELS
    det.model = object()  # set, so detect() does not call setup()

    def fake_detect(images):
        inst = FakeDetectron2Instances([[0, 0, 40, 30]], [0.9], [2])
        return [frame_detections_from_instances(inst, torch.ones(1, 1024), (60, 80), LABELS, 5) for _ in images]

    monkeypatch.setattr(det, "detect", fake_detect)
    stage = DetectStage(DetectConfig(name="detectron2", batch_frames=2))
    stage.detector = det
    task = VideoTask("k", "test", "v", "v.mp4", meta=VideoMeta("v.mp4", 1.0, 3.0, 80, 60, "h264"),
                     frames=[Frame(i, i / 3) for i in range(3)], images=[np.zeros((60, 80, 3), np.uint8)] * 3)
    stage.process_batch([task])
    assert task.failure is None
    assert [d.frame for d in task.dsg.detections] == [0, 1, 2]
    assert task.dsg.detections[0].label == "car" and task.dsg.detections[0].box == (0.0, 0.0, 0.5, 0.5)
    assert task.detection_features.shape == (3, 1024)


# ---------------------------------------------------------------- model zoo, weights, yaml
def fake_detectron2_package_double(root):
    """The zoo's config folder and URL table as an installed detectron2 lays them out (a test double)."""
    (root / "model_zoo" / "configs" / "COCO-Detection").mkdir(parents=True)
    (root / "model_zoo" / "configs" / "COCO-Detection" / "faster_rcnn_R_50_FPN_3x.yaml").write_text("_BASE_: x\n")
    (root / "model_zoo" / "model_zoo.py").write_text(
        "import pkg_resources\n\nclass _ModelZooUrls:\n"
        "    S3_PREFIX = 'https://dl.fbaipublicfiles.com/detectron2/'\n"
        "    CONFIG_PATH_TO_URL_SUFFIX = {\n"
        "        'COCO-Detection/faster_rcnn_R_50_FPN_3x': '137849458/model_final_280758.pkl',\n    }\n")
    return root


def test_zoo_names_resolve_without_importing_model_zoo(tmp_path):
    root = fake_detectron2_package_double(tmp_path)
    name = "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"
    assert zoo_config_file(name, root).read_text() == "_BASE_: x\n"
    assert zoo_checkpoint_url(name, root) == ("https://dl.fbaipublicfiles.com/detectron2/COCO-Detection/"
                                              "faster_rcnn_R_50_FPN_3x/137849458/model_final_280758.pkl")
    with pytest.raises(UserError, match="neither a file nor a model-zoo name"):
        zoo_config_file("COCO-Detection/nope.yaml", root)
    with pytest.raises(UserError, match=WEIGHTS_FIX.replace(".", r"\.")):
        zoo_checkpoint_url("COCO-Detection/nope.yaml", root)


def test_pickled_weights_admit_arrays_and_nothing_else(tmp_path):
    import pickle
    good = tmp_path / "model_final.pkl"
    weights = {"model": {"backbone.w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "__author__": "zoo"}
    good.write_bytes(pickle.dumps(weights, protocol=2))
    loaded = load_pickled_weights(good)
    assert loaded["__author__"] == "zoo" and loaded["model"]["backbone.w"].tolist() == [[0, 1, 2], [3, 4, 5]]

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"model": Payload()}))
    with pytest.raises(UserError, match="not a plain weights pickle") as caught:
        load_pickled_weights(bad)
    assert not marker.exists() and "\n" not in str(caught.value) and WEIGHTS_FIX in str(caught.value)


# ---------------------------------------------------------------- the real library (skipped without it)
needs_detectron2 = pytest.mark.skipif(importlib.util.find_spec("detectron2") is None,
                                      reason="detectron2 is not installed")


@needs_detectron2
def test_real_detectron2_builds_from_the_zoo_yaml_and_loads_zoo_format_weights(tmp_path):
    """Random weights saved in the model zoo's .pkl format, loaded through the safe checkpointer."""
    import pickle
    from detectron2.modeling import build_model
    det = Detectron2Detector(DetectConfig(name="detectron2"))
    d2 = det._build_cfg()
    assert d2.MODEL.WEIGHTS.startswith("https://dl.fbaipublicfiles.com/detectron2/COCO-Detection/")
    model = build_model(d2)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    path = tmp_path / "model_final_random.pkl"
    path.write_bytes(pickle.dumps({"model": state, "__author__": "finsta test"}, protocol=2))
    det = build_detector(DetectConfig(name="detectron2", score_threshold=0.0, max_detections=5,
                                      detectron2=Detectron2Options(weights=str(path))))
    det.setup()
    loaded = det.model.state_dict()
    some = next(k for k in state if k.startswith("backbone") and k.endswith("weight"))
    np.testing.assert_array_equal(loaded[some].numpy(), state[some])
    out = det.detect([np.full((120, 160, 3), 128, np.uint8)])
    assert len(out) == 1 and out[0].features.shape == (len(out[0]), det.feature_dim) and det.feature_dim == 1024
    assert len(det.labels) == 80


@needs_detectron2
def test_real_detectron2_offline_and_unsafe_yaml_are_one_line_errors(tmp_path, monkeypatch):
    det = build_detector(DetectConfig(name="detectron2", detectron2=Detectron2Options(
        weights="https://dl.fbaipublicfiles.com/detectron2/unreachable/model_final.pkl")))
    monkeypatch.setenv("HOME", str(tmp_path))         # no cached download
    with pytest.raises(UserError) as caught:
        det.setup()
    assert WEIGHTS_FIX in str(caught.value) and "\n" not in str(caught.value)
    marker = tmp_path / "ran"
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text(f"MODEL:\n  DEVICE: !!python/object/apply:os.system ['touch {marker}']\n")
    det = build_detector(DetectConfig(name="detectron2", detectron2=Detectron2Options(config=str(unsafe),
                                                                                      weights="x.pkl")))
    with pytest.raises(UserError, match="safe_load"):
        det._build_cfg()
    assert not marker.exists()
