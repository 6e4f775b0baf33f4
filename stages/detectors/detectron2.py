"""``detectron2``: Faster R-CNN boxes with their RoI box-head features.

The paper's detector. detectron2 is imported lazily in :meth:`Detectron2Detector.setup`;
when it is missing, setup raises a :class:`UserError` with the install line
(:data:`INSTALL`; it needs torch already installed, hence ``--no-build-isolation``).

Config: ``detect.device``, ``detect.score_threshold`` (``ROI_HEADS.SCORE_THRESH_TEST``),
``detect.max_detections`` (``TEST.DETECTIONS_PER_IMAGE``) and the ``detect.detectron2``
section (:class:`Detectron2Options`):

* ``config``: a model-zoo name (``"COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"``,
  the default) or a path to a yaml file;
* ``weights``: a checkpoint path or URL (default: the zoo checkpoint of ``config``);
* ``labels``: a label-list file (one name per line, or a JSON list), for
  checkpoints outside the zoo, e.g. a Visual Genome model with the 150 VG-150
  object classes; it also sets ``ROI_HEADS.NUM_CLASSES``. Without it the
  labels are the test dataset's ``thing_classes`` (COCO's 80);
* ``opts``: ``["KEY", value, …]`` passed to ``cfg.merge_from_list``
  (``--set 'detect.detectron2.opts=["MODEL.RPN.NMS_THRESH", 0.6]'``).

Model-zoo names are resolved without ``detectron2.model_zoo``, which imports
``pkg_resources`` (gone from setuptools ≥ 81): the yaml is the installed
package's ``model_zoo/configs/<name>`` and the checkpoint URL is read, as a
literal, from the zoo's URL table in ``model_zoo/model_zoo.py``
(:func:`zoo_config_file`, :func:`zoo_checkpoint_url`).

Nothing untrusted is executed: yaml files are read with ``yaml.safe_load``
(``merge_from_file(..., allow_unsafe=False)``; detectron2's default would fall
back to ``yaml.unsafe_load``), ``.pkl`` checkpoints (the zoo's format) go
through :func:`load_pickled_weights`, an unpickler that admits only numpy
arrays, dtypes and plain containers, and ``.pth`` files through
``torch.load(..., weights_only=True)``.

Inference runs the model's parts as ``GeneralizedRCNN.inference`` does
(``preprocess_image`` → ``backbone`` → ``proposal_generator`` → ``roi_heads``),
then pools the *kept* boxes once more through ``roi_heads.box_pooler`` and
``roi_heads.box_head``: that box-head output (1024-d for the standard FPN
head; the pooled ``res5`` output, 2048-d, for C4 models) is each box's feature.

Example::

    det = build_detector(DetectConfig(name="detectron2", device="cuda",
                                      detectron2=Detectron2Options(weights="model_final.pth")))
    det.setup()
    found = det.detect(rgb_frames)     # FrameDetections, features n×1024
"""
from __future__ import annotations

import ast
import importlib.util
import json
import pickle
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from schemas.errors import UserError
from stages.detectors.base import FrameDetections
from stages.registry import DETECTORS

if TYPE_CHECKING:
    from stages.detect import DetectConfig

INSTALL = ("MAX_JOBS=2 .venv/bin/pip install --no-build-isolation "
           "'git+https://github.com/facebookresearch/detectron2.git'")
DEFAULT_CONFIG = "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"
WEIGHTS_FIX = "--set detect.detectron2.weights=PATH"


@dataclass
class Detectron2Options:
    """The ``detectron2`` backend's own options: the ``detect.detectron2`` config section."""

    backend_options: ClassVar[bool] = True

    config: str = DEFAULT_CONFIG   # model-zoo config name or yaml path
    weights: str = ""              # checkpoint path or URL ("" = the zoo checkpoint of ``config``)
    labels: str = ""               # label-list file for checkpoints outside the zoo
    opts: list = field(default_factory=list)   # ["KEY", value, ...] for cfg.merge_from_list


def frame_detections_from_instances(instances, features, image_size: tuple[int, int], labels: Sequence[str],
                                    max_detections: int) -> FrameDetections:
    """detectron2 ``Instances`` (network-input coordinates) + per-box features → :class:`FrameDetections`.

    ``instances`` needs ``pred_boxes.tensor`` (``n×4`` xyxy pixels of the
    resized input), ``scores`` and ``pred_classes``; ``features`` is ``n×d``
    aligned with them; ``image_size`` is that input's ``(height, width)``, so
    dividing by it gives boxes normalised to the original frame. Boxes are
    clipped to [0, 1], sorted by score and cut to ``max_detections``.
    """
    boxes = _numpy(instances.pred_boxes.tensor).reshape(-1, 4).astype(np.float32)
    scores = _numpy(instances.scores).reshape(-1).astype(np.float32)
    classes = _numpy(instances.pred_classes).reshape(-1).astype(np.int64)
    feats = _numpy(features).astype(np.float32)
    feats = feats.reshape(len(scores), feats.shape[-1] if feats.ndim > 1 else -1)
    height, width = image_size
    boxes = np.clip(boxes / np.array([width, height, width, height], np.float32), 0.0, 1.0)
    order = np.argsort(-scores, kind="stable")[:max_detections]
    names = []
    for c in classes[order]:
        if not 0 <= c < len(labels):
            raise ValueError(f"class index {c} outside the {len(labels)} labels: does the label list match "
                             "the checkpoint?")
        names.append(labels[c])
    return FrameDetections(boxes[order], names, scores[order], feats[order], [{} for _ in order])


def load_labels(spec) -> list[str]:
    """A label list from a list, a JSON-list file or a one-name-per-line text file."""
    if isinstance(spec, (list, tuple)):
        return [str(s) for s in spec]
    path = Path(str(spec))
    if not path.is_file():
        raise UserError(f"detectron2 label list not found: {path}")
    text = path.read_text()
    if text.lstrip().startswith("["):
        return [str(s) for s in json.loads(text)]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


# ------------------------------------------------------------------ model zoo without detectron2.model_zoo
def _package_root() -> Path:
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the detectron2 detector needs detectron2, which is not installed: {INSTALL} "
                        "(after torchvision for your torch; README, Optional models)")
    return Path(next(iter(spec.submodule_search_locations)))


def zoo_config_file(name: str, root: Path | None = None) -> Path:
    """The installed model-zoo yaml of ``name`` (``"COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"``)."""
    path = (root or _package_root()) / "model_zoo" / "configs" / name
    if not path.is_file():
        raise UserError(f"detectron2 config {name!r} is neither a file nor a model-zoo name "
                        f"(no {path}): fix --set detect.detectron2.config")
    return path


def zoo_checkpoint_url(name: str, root: Path | None = None) -> str:
    """The zoo checkpoint URL of config ``name``, read as a literal from ``model_zoo/model_zoo.py``'s table."""
    source = (root or _package_root()) / "model_zoo" / "model_zoo.py"
    values: dict[str, Any] = {}
    try:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ClassDef) and node.name == "_ModelZooUrls":
                for item in node.body:
                    if isinstance(item, ast.Assign) and len(item.targets) == 1 and isinstance(item.targets[0], ast.Name):
                        if item.targets[0].id in ("S3_PREFIX", "CONFIG_PATH_TO_URL_SUFFIX"):
                            values[item.targets[0].id] = ast.literal_eval(item.value)
    except (OSError, SyntaxError, ValueError) as error:
        raise UserError(f"cannot read detectron2's model-zoo table {source} ({error}): "
                        f"give the checkpoint with {WEIGHTS_FIX}") from None
    key = name.replace(".yaml", "").replace(".py", "")
    suffix = values.get("CONFIG_PATH_TO_URL_SUFFIX", {}).get(key)
    if not suffix or "S3_PREFIX" not in values:
        raise UserError(f"detectron2's model zoo has no checkpoint for {name!r}: give one with {WEIGHTS_FIX}")
    return f"{values['S3_PREFIX']}{key}/{suffix}"


# ------------------------------------------------------------------ safe weights
class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays/dtypes/scalars and plain containers (the allowlist of
    ``torch.load(weights_only=True)``, for numpy); anything else is refused."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex"),
               ("_codecs", "encode")}   # protocol-2 pickles store bytes as encode(str, "latin1"), as torch allows

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: a weights file holds only arrays")
        if module.startswith("numpy.core."):   # numpy 2 keeps them in numpy._core
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


def load_pickled_weights(path: str | Path) -> Any:
    """A detectron2 / Detectron1 ``.pkl`` checkpoint (dicts of numpy arrays), never running pickled code.

    Raises :class:`UserError` naming the file when it holds anything else.
    """
    try:
        with open(path, "rb") as f:
            return _ArraysOnlyUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise UserError(f"detectron2 weights {path} are not a plain weights pickle ({error}): "
                        f"convert them or give another with {WEIGHTS_FIX}") from None


def _checkpointer_class():
    """detectron2's ``DetectionCheckpointer`` with the safe loaders above (built lazily: detectron2 is optional)."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer

    class SafeDetectionCheckpointer(DetectionCheckpointer):
        def _load_file(self, filename):
            if not filename.endswith(".pkl"):
                return super()._load_file(filename)     # .pth/.pyth: _torch_load / torch's weights_only default
            data = load_pickled_weights(filename)
            if "model" in data and "__author__" in data:
                return data                              # detectron2 model-zoo format
            if "blobs" in data:                          # Caffe2 / Detectron1 model zoo
                data = data["blobs"]
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}

        def _torch_load(self, f):
            return torch.load(f, map_location="cpu", weights_only=True)

    return SafeDetectionCheckpointer


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


@DETECTORS.register("detectron2")
class Detectron2Detector:
    """Faster R-CNN (detectron2) detector; RoI box-head features."""

    feature_dim = 1024  # the standard FPN box head; setup() reads the real size
    default_score_threshold = 0.5
    summary = "Faster R-CNN, needs detectron2 installed"

    def __init__(self, cfg: "DetectConfig"):
        self.cfg = cfg.resolved()
        self.opts = self.cfg.detectron2
        self.model = None
        self.labels: list[str] = []

    @classmethod
    def preflight(cls, cfg: "DetectConfig") -> None:
        """detectron2 importable; a local weights path exists (URLs are checked when they load)."""
        import importlib.util

        if importlib.util.find_spec("detectron2") is None:
            raise UserError(f"the detectron2 detector needs detectron2, which is not installed: {INSTALL} "
                        "(after torchvision for your torch; README, Optional models)")
        weights = cfg.detectron2.weights
        if weights and "://" not in weights and not Path(weights).is_file():
            raise UserError(f"detectron2 weights {weights} do not exist: fix {WEIGHTS_FIX}")

    def _build_cfg(self):
        from detectron2.config import get_cfg

        d2 = get_cfg()
        name = self.opts.config or DEFAULT_CONFIG
        if Path(name).is_file():
            path, weights = Path(name), self.opts.weights
        else:
            path = zoo_config_file(name)
            weights = self.opts.weights or zoo_checkpoint_url(name)
        try:
            d2.merge_from_file(str(path), allow_unsafe=False)
        except Exception as error:   # yaml.constructor.ConstructorError, KeyError of an unknown option…
            raise UserError(f"detectron2 config {path} cannot be read safely ({_one_line(error)}): "
                            "finsta reads configs with yaml.safe_load (no python/ tags)") from None
        if not weights:
            raise UserError(f"detectron2: a yaml config needs {WEIGHTS_FIX} (a checkpoint path or URL)")
        d2.MODEL.WEIGHTS = weights
        d2.MODEL.DEVICE = self.cfg.device
        d2.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(self.cfg.score_threshold)
        d2.TEST.DETECTIONS_PER_IMAGE = int(self.cfg.max_detections)
        if self.opts.labels:
            self.labels = load_labels(self.opts.labels)
            d2.MODEL.ROI_HEADS.NUM_CLASSES = len(self.labels)
        d2.merge_from_list(list(self.opts.opts))
        d2.freeze()
        return d2

    def setup(self) -> None:
        try:
            import detectron2  # noqa: F401
        except ImportError as missing:
            raise UserError(f"the detectron2 detector needs detectron2, which is not installed: {INSTALL} "
                            "(after torchvision for your torch; README, Optional models)") from missing
        import detectron2.data  # noqa: F401  (registers the builtin datasets' metadata)
        import detectron2.data.transforms as T
        from detectron2.data import MetadataCatalog
        from detectron2.modeling import build_model

        d2 = self._build_cfg()
        model = build_model(d2)
        model.eval()
        try:
            _checkpointer_class()(model).load(d2.MODEL.WEIGHTS)
        except UserError:
            raise
        except Exception as error:   # no network, a 404, a truncated download, a file of another model
            raise UserError(f"detectron2 could not load the weights {d2.MODEL.WEIGHTS} ({_one_line(error)}): "
                            f"download them where there is internet and give {WEIGHTS_FIX}") from None
        if not self.labels:
            self.labels = list(MetadataCatalog.get(d2.DATASETS.TEST[0]).thing_classes) if d2.DATASETS.TEST else []
        if not self.labels:
            raise UserError("detectron2: the checkpoint's labels are unknown; give --set detect.detectron2.labels=FILE (a label-list file)")
        heads = model.roi_heads
        if hasattr(heads, "box_head"):
            self.feature_dim = int(heads.box_head.output_shape.channels)
        else:  # Res5ROIHeads (C4): pooled res5 output
            self.feature_dim = int(heads.res5[-1].out_channels)
        self.model = model
        self.aug = T.ResizeShortestEdge([d2.INPUT.MIN_SIZE_TEST, d2.INPUT.MIN_SIZE_TEST], d2.INPUT.MAX_SIZE_TEST)
        self.input_format = d2.INPUT.FORMAT

    def _box_features(self, features: dict, boxes: list) -> "torch.Tensor":  # noqa: F821
        heads = self.model.roi_heads
        if hasattr(heads, "box_head"):  # StandardROIHeads
            pooled = heads.box_pooler([features[f] for f in heads.box_in_features], boxes)
            return heads.box_head(pooled)
        pooled = heads._shared_roi_transform([features[f] for f in heads.in_features], boxes)
        return pooled.mean(dim=[2, 3])

    def detect(self, images: list[np.ndarray]) -> list[FrameDetections]:
        import torch

        if self.model is None:
            raise RuntimeError("Detectron2Detector.detect before setup()")
        if not images:
            return []
        inputs = []
        for rgb in images:
            image = rgb[:, :, ::-1] if self.input_format == "BGR" else rgb
            image = self.aug.get_transform(image).apply_image(image)
            inputs.append({"image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)), dtype=torch.float32),
                           "height": rgb.shape[0], "width": rgb.shape[1]})
        with torch.inference_mode():
            batch = self.model.preprocess_image(inputs)
            features = self.model.backbone(batch.tensor)
            proposals, _ = self.model.proposal_generator(batch, features, None)
            instances, _ = self.model.roi_heads(batch, features, proposals, None)
            kept = [x.pred_boxes for x in instances]
            box_features = self._box_features(features, kept) if sum(len(b) for b in kept) else None
        out, first = [], 0
        for inst, size in zip(instances, batch.image_sizes):
            n = len(inst)
            feats = box_features[first:first + n] if box_features is not None else np.zeros((0, self.feature_dim))
            first += n
            out.append(frame_detections_from_instances(inst, feats, tuple(size), self.labels, self.cfg.max_detections))
        return out
