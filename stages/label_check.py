"""A second opinion on a track's label: an ImageNet classifier on the track's crops, within the label's kind.

A COCO detector confuses objects of one kind more than across kinds: on the
../shared clips SSD reads a small high table as a ``chair`` on every frame it
sees it, and never outputs ``dining table``. EfficientNet-Lite0's ImageNet
classifier (the weights ``embed_visual`` already uses, with their ImageNet head) tells furniture,
vehicles or kitchen things apart from a crop of the object better than the
detector's head does. So, per track (:func:`check_label`):

1. the detector's label must belong to one of COCO's supercategories
   (:data:`SUPERCATEGORIES`, the "kind") and have ImageNet classes
   (``stages/detectors/imagenet_to_objects.json``; ``person`` has none, so a
   person is never relabelled);
2. the ``crops`` highest-scoring detections of the track are cropped
   (``margin`` around the box) and classified; each crop votes for the label of
   that kind whose ImageNet classes hold the most probability;
3. the track takes another label of the kind only when that label wins at least
   ``share`` of the votes and its mean probability reaches ``min_prob`` (the
   classifier really sees one) and beats the detector label's.

The classifier never crosses kinds: cars seen from straight above read as
``cell phone`` or ``remote``, and the classifier, trained on side views, does
not reliably see cars there either (measured on the car clip). What crosses
kinds is evidence from the video itself (:func:`kind_from_motion`):

4. a track of a kind that changes place only when someone moves it
   (:data:`CARRIED_KINDS`: a phone, a cup, a chair) that moves by at least
   ``min_shift`` of its box size between two consecutive sampled frames, with
   no person box touching it and the picture outside every box unchanged (no
   camera motion: mean grey difference ≤ ``still_background``), moved by
   itself: its label is refuted for that shot;
5. every track of the shot carrying a refuted label whose boxes are alike
   (width and height within ``alike``) both a track that refuted it and a
   track of a kind that moves by itself (:data:`SELF_MOVING_KINDS`: vehicles,
   animals) takes the label of those self-moving tracks (their summed
   detection scores choose). Without such a track nothing changes: the video
   says what the object is not, not what it is.

Example::

    checker = LabelChecker(LabelCheckConfig()); checker.setup()
    new_label = checker.check_label("chair", [crop1, crop2, crop3])   # "dining table", or None to keep
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from schemas.errors import UserError
from schemas.options import added, runtime
from stages.hosts.efficientnet import ENGINES  # noqa: F401  (the Lite0 engines; re-exported for callers)
from stages.openvino_runtime import PRECISIONS

# COCO's supercategories (instances_*.json "supercategory"), the kinds whose members a detector confuses.
SUPERCATEGORIES: dict[str, tuple[str, ...]] = {
    "vehicle": ("bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat"),
    "outdoor": ("traffic light", "fire hydrant", "stop sign", "parking meter", "bench"),
    "animal": ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"),
    "accessory": ("backpack", "umbrella", "handbag", "tie", "suitcase"),
    "sports": ("frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
               "skateboard", "surfboard", "tennis racket"),
    "kitchen": ("bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl"),
    "food": ("banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake"),
    "furniture": ("chair", "couch", "potted plant", "bed", "dining table", "toilet"),
    "electronic": ("tv", "laptop", "mouse", "remote", "keyboard", "cell phone"),
    "appliance": ("microwave", "oven", "toaster", "sink", "refrigerator"),
    "indoor": ("book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush"),
}
# COCO labels whose group in imagenet_to_objects.json has another name; the rest are spelt alike.
IMAGENET_GROUP_OF = {"dining table": "table", "cell phone": "phone", "tv": "television", "handbag": "bag",
                     "sports ball": "ball", "tennis racket": "racket", "skis": "ski", "wine glass": "glass",
                     "oven": "stove"}
# Kinds whose members change place only when someone moves them, and kinds that move by themselves.
CARRIED_KINDS = ("accessory", "kitchen", "food", "furniture", "electronic", "appliance", "indoor")
SELF_MOVING_KINDS = ("vehicle", "animal")
KIND_OF = {label: kind for kind, labels in SUPERCATEGORIES.items() for label in labels}
INPUT_SIZE = 224
LITE_MEAN, LITE_STD = np.full(3, 127.0, np.float32), np.full(3, 128.0, np.float32)


@dataclass
class LabelCheckConfig:
    """``enabled``: check track labels (needs the decoded frames); ``crops``: detections classified per track;
    ``margin``: context around a box, share of its size; ``share``: votes another label needs;
    ``min_prob``: its mean ImageNet probability at least; ``min_shift``, ``still_background``, ``alike``:
    rules 4-5 (:func:`kind_from_motion`); ``engine``: ``openvino`` (``embed_visual``'s converted Lite0, run by
    :mod:`stages.openvino_runtime`) or ``torch``: the same probabilities within 1e-4 in f32; ``precision``: the
    ``openvino`` engine's, as ``embed_visual.precision`` (``bf16`` where the CPU has it, else f32; or ``f32``)."""

    enabled: bool = True
    crops: int = 6
    # Half the box on every side: on the car clip's seven top-down car boxes the classifier gives "car" the
    # most probability on 4 crops at 0.5 (3 at 0.1), and the red car's "truck" track becomes "car" (0.1:
    # "backpack" on its crop); the table's and the bottles' labels are the same either way.
    margin: float = 0.5
    share: float = 0.6
    min_prob: float = 0.1
    min_shift: float = 0.5
    still_background: float = 6.0
    alike: float = 1.5
    engine: str = runtime("openvino")
    # (outputs made before the option existed were made in f32: schemas.options.added)
    precision: str = added("bf16", before="f32")

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise UserError(f"track.labels.engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.precision not in PRECISIONS:
            raise UserError(f"track.labels.precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if (self.crops < 1 or not 0.5 <= self.share <= 1.0 or not 0.0 <= self.min_prob <= 1.0 or self.margin < 0
                or self.min_shift <= 0 or self.still_background < 0 or self.alike < 1):
            raise UserError("track.labels: crops >= 1, share in [0.5, 1], min_prob in [0, 1], margin >= 0, "
                            f"min_shift > 0, still_background >= 0 and alike >= 1 are required, got {self}")


def label_columns(group_names: Sequence[str]) -> dict[str, int]:
    """COCO label → its column in the ImageNet group matrix (labels with ImageNet classes only)."""
    column = {name: i for i, name in enumerate(group_names)}
    return {label: column[IMAGENET_GROUP_OF.get(label, label)] for label in KIND_OF
            if IMAGENET_GROUP_OF.get(label, label) in column}


def vote(label: str, group_probs: np.ndarray, columns: dict[str, int], cfg: LabelCheckConfig) -> Optional[str]:
    """The label of ``label``'s kind that the crops' group probabilities (``[crops, groups]``) choose over it
    (rules 1-3 of the module docstring), or None to keep ``label``."""
    kind = KIND_OF.get(label)
    if kind is None or label not in columns or len(group_probs) == 0:
        return None
    options = [name for name in SUPERCATEGORIES[kind] if name in columns]
    probs = group_probs[:, [columns[name] for name in options]]
    winners = np.argmax(probs, axis=1)
    best = int(np.bincount(winners, minlength=len(options)).argmax())
    chosen, mean = options[best], probs.mean(axis=0)
    if (chosen == label or np.mean(winners == best) < cfg.share or mean[best] < cfg.min_prob
            or mean[best] <= mean[options.index(label)]):
        return None
    return chosen


class LabelChecker:
    """EfficientNet-Lite0 with its ImageNet head on the CPU (a few crops per track), crops scaled as Lite0 was
    trained, ``(x - 127) / 128``: on the ../shared clips' crops that gives the right label of the kind the most
    probability on 69 % of the table's crops against 33 % with ImageNet's mean/std (bottles and cars: 100 %
    either way). Engine ``openvino``: ``embed_visual``'s OpenVINO model of Lite0 (converted once, cached; one
    single-threaded stream) and the ImageNet head in numpy; ``torch``: the torch module."""

    def __init__(self, cfg: Optional[LabelCheckConfig] = None):
        self.cfg = cfg or LabelCheckConfig()
        self.run = None       # normalised [n, 3, 224, 224] crops -> [n, 1000] ImageNet probabilities
        self.group_matrix: Optional[np.ndarray] = None
        self.columns: dict[str, int] = {}

    def setup(self) -> None:
        if self.run is not None:
            return
        from stages.detectors.lite import load_label_groups

        names, self.group_matrix = load_label_groups()
        self.columns = label_columns(names)
        self.run = self._openvino() if self.cfg.engine == "openvino" else self._torch()

    def _torch(self):
        import torch

        from stages.hosts.efficientnet import load_efficientnet_lite0

        model = load_efficientnet_lite0()

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return torch.softmax(model(torch.from_numpy(batch)), dim=1).numpy()
        return run

    def _openvino(self):
        """``embed_visual``'s own OpenVINO model of Lite0 (its default, 224 px, pooled vector: a build converts
        it once for both) and the ImageNet head, a linear layer on that vector, in numpy."""
        import torch

        from stages.embed_visual import EmbedVisualConfig
        from stages.hosts.efficientnet import EfficientNetVisual, weights_file

        host = EfficientNetVisual(EmbedVisualConfig(engine="openvino", threads=1, image_size=INPUT_SIZE,
                                                    precision=self.cfg.precision))
        host.setup()
        state = torch.load(weights_file(), map_location="cpu", weights_only=True)
        weight, bias = state["_fc.weight"].numpy().T, state["_fc.bias"].numpy()

        def run(batch: np.ndarray) -> np.ndarray:
            logits = host.streams(batch)[0] @ weight + bias
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            return exp / exp.sum(axis=1, keepdims=True)
        return run

    def group_probs(self, crops: list[np.ndarray]) -> np.ndarray:
        """``[len(crops), groups]``: each crop's ImageNet probability summed per object group."""
        from stages.hosts.efficientnet import to_input

        batch = np.stack([to_input(crop, INPUT_SIZE, LITE_MEAN, LITE_STD) for crop in crops])
        return self.run(batch) @ self.group_matrix

    def check_label(self, label: str, crops: list[np.ndarray]) -> Optional[str]:
        """The label the crops of a track labelled ``label`` show instead, or None to keep it."""
        if KIND_OF.get(label) is None or label not in self.columns or not crops:
            return None
        return vote(label, self.group_probs(crops), self.columns, self.cfg)


@dataclass
class TrackBoxes:
    """What rules 4-5 read of one track: its label, shot, and per detection the sampled frame, box, score."""

    label: str
    shot: int
    frames: list[int]
    boxes: list[tuple[float, float, float, float]]
    scores: list[float]

    def size(self) -> tuple[float, float]:
        """Median box width and height (a box cut by the picture's edge is one of several)."""
        boxes = np.asarray(self.boxes)
        return float(np.median(boxes[:, 2] - boxes[:, 0])), float(np.median(boxes[:, 3] - boxes[:, 1]))


def _touch(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def background_change(a: np.ndarray, b: np.ndarray, boxes: Sequence) -> Optional[float]:
    """Mean absolute grey difference (0-255) of two frames outside ``boxes`` (normalised, widened by a quarter
    of their size), on 64-pixel-wide copies; None when the boxes cover more than three quarters of the picture."""
    import cv2

    width = 64
    height = max(1, round(width * a.shape[0] / a.shape[1]))
    grey = [cv2.resize(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY), (width, height),
                       interpolation=cv2.INTER_AREA).astype(np.float32) for image in (a, b)]
    outside = np.ones((height, width), bool)
    for x1, y1, x2, y2 in boxes:
        dx, dy = (x2 - x1) / 4, (y2 - y1) / 4
        outside[max(0, int((y1 - dy) * height)):int(np.ceil((y2 + dy) * height)),
                max(0, int((x1 - dx) * width)):int(np.ceil((x2 + dx) * width))] = False
    if outside.mean() < 0.25:
        return None
    return float(np.abs(grey[0] - grey[1])[outside].mean())


def moved_alone(track: TrackBoxes, frame_boxes: dict[int, list], person_boxes: dict[int, list],
                images: Sequence[np.ndarray], cfg: LabelCheckConfig) -> bool:
    """Rule 4: between two consecutive sampled frames of the track its centre moves by ``min_shift`` of its
    box size (in pixels), no person box touches it on either frame, and the picture outside every box of both
    frames stays the same (the camera did not move)."""
    if not images or track.frames[0] >= len(images):
        return False
    height, width = images[track.frames[0]].shape[:2]
    for k in range(len(track.frames) - 1):
        fa, fb = track.frames[k], track.frames[k + 1]
        a, b = track.boxes[k], track.boxes[k + 1]
        if fb != fa + 1 or fb >= len(images):
            continue
        shift = np.hypot(((b[0] + b[2]) - (a[0] + a[2])) / 2 * width, ((b[1] + b[3]) - (a[1] + a[3])) / 2 * height)
        size = np.sqrt((a[2] - a[0]) * width * (a[3] - a[1]) * height)
        if shift < cfg.min_shift * size:
            continue
        if any(_touch(box, p) for box, f in ((a, fa), (b, fb)) for p in person_boxes.get(f, [])):
            continue
        change = background_change(images[fa], images[fb], frame_boxes.get(fa, []) + frame_boxes.get(fb, []))
        if change is not None and change <= cfg.still_background:
            return True
    return False


def _alike(a: TrackBoxes, b: TrackBoxes, ratio: float) -> bool:
    return all(max(p, q) <= ratio * min(p, q) for p, q in zip(a.size(), b.size()))


def kind_from_motion(tracks: Sequence[TrackBoxes], frame_boxes: dict[int, list], person_boxes: dict[int, list],
                     images: Sequence[np.ndarray], cfg: LabelCheckConfig) -> dict[int, str]:
    """Rules 4-5 of the module docstring: ``{position in tracks: new label}``.

    ``frame_boxes``/``person_boxes``: every detection's / every person detection's box per sampled frame.
    """
    refuters = [t for t in tracks if KIND_OF.get(t.label) in CARRIED_KINDS
                and moved_alone(t, frame_boxes, person_boxes, images, cfg)]
    movers = [t for t in tracks if KIND_OF.get(t.label) in SELF_MOVING_KINDS]
    out = {}
    for i, track in enumerate(tracks):
        if not any(r.label == track.label and r.shot == track.shot and _alike(r, track, cfg.alike)
                   for r in refuters):
            continue
        votes: dict[str, float] = {}
        for mover in movers:
            if mover.shot == track.shot and _alike(mover, track, cfg.alike):
                votes[mover.label] = votes.get(mover.label, 0.0) + sum(mover.scores)
        if votes:
            out[i] = max(votes, key=votes.get)
    return out
