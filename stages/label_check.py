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

A label outside every kind (or without ImageNet classes) is left as the
detector gave it: cars seen from straight above read as ``cell phone`` cross
kinds, and the classifier, trained on side views, does not see cars there
either (measured on the car clip).

Example::

    checker = LabelChecker(LabelCheckConfig()); checker.setup()
    new_label = checker.check_label("chair", [crop1, crop2, crop3])   # "dining table", or None to keep
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from schemas.errors import UserError

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
KIND_OF = {label: kind for kind, labels in SUPERCATEGORIES.items() for label in labels}
INPUT_SIZE = 224
LITE_MEAN, LITE_STD = np.full(3, 127.0, np.float32), np.full(3, 128.0, np.float32)


@dataclass
class LabelCheckConfig:
    """``enabled``: check track labels (needs the decoded frames); ``crops``: detections classified per track;
    ``margin``: context around a box, share of its size; ``share``: votes another label needs;
    ``min_prob``: its mean ImageNet probability at least."""

    enabled: bool = True
    crops: int = 6
    margin: float = 0.1
    share: float = 0.6
    min_prob: float = 0.1

    def __post_init__(self) -> None:
        if self.crops < 1 or not 0.5 <= self.share <= 1.0 or not 0.0 <= self.min_prob <= 1.0 or self.margin < 0:
            raise UserError("track.labels: crops >= 1, share in [0.5, 1], min_prob in [0, 1] and margin >= 0 "
                            f"are required, got {self}")


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
    """EfficientNet-Lite0 with its ImageNet head (torch, on the CPU: a few crops per track), crops scaled as
    Lite0 was trained, ``(x - 127) / 128``: on the ../shared clips' crops that gives the right label of the
    kind the most probability on 69 % of the table's crops against 33 % with ImageNet's mean/std (bottles and
    cars: 100 % either way)."""

    def __init__(self, cfg: Optional[LabelCheckConfig] = None):
        self.cfg = cfg or LabelCheckConfig()
        self.model = None
        self.group_matrix: Optional[np.ndarray] = None
        self.columns: dict[str, int] = {}

    def setup(self) -> None:
        if self.model is not None:
            return
        from stages.detectors.lite import load_label_groups
        from stages.hosts.efficientnet import load_efficientnet_lite0

        names, self.group_matrix = load_label_groups()
        self.columns = label_columns(names)
        self.model = load_efficientnet_lite0()

    def group_probs(self, crops: list[np.ndarray]) -> np.ndarray:
        """``[len(crops), groups]``: each crop's ImageNet probability summed per object group."""
        import torch

        from stages.hosts.efficientnet import to_input

        batch = np.stack([to_input(crop, INPUT_SIZE, LITE_MEAN, LITE_STD) for crop in crops])
        with torch.inference_mode():
            probs = torch.softmax(self.model(torch.from_numpy(batch)), dim=1).numpy()
        return probs @ self.group_matrix

    def check_label(self, label: str, crops: list[np.ndarray]) -> Optional[str]:
        """The label the crops of a track labelled ``label`` show instead, or None to keep it."""
        if KIND_OF.get(label) is None or label not in self.columns or not crops:
            return None
        return vote(label, self.group_probs(crops), self.columns, self.cfg)
