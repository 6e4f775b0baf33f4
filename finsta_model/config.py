"""One config for a training run: model sizes, loss switches, optimiser, data.

``TrainConfig`` is the single source of truth for a run; it is stored in every
checkpoint (``config.json``) so that ``eval`` rebuilds the same model. Load
overrides from a JSON or YAML file with :func:`load_config`; CLI flags are
applied on top with :meth:`TrainConfig.replace`.

Example::

    >>> cfg = TrainConfig().replace(steps=50, use_osc=False)
    >>> cfg.steps, cfg.use_osc
    (50, False)
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.errors import UserError
from schemas.options import identity, runtime


# The largest sizes a run may have: far above any trained host (dim 64, 2 layers), far below what would exhaust a
# machine. validate() refuses a config past them, and an exported host's host.json is held to the same bounds
# (finsta_model.export.SIZE_BOUNDS), so a file can never ask a reader for a model no config could train.
SIZE_LIMITS = {"dim": 1 << 14, "heads": 1 << 8, "host_layers": 64, "host_slots": 1 << 10}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run. A field changes the result unless declared ``runtime(...)``
    (:mod:`schemas.options`): a resume keeps every other field (``steps`` aside). Sizes are small on purpose: the model is
    trained from precomputed host features on CPU in minutes. The defaults are
    the recipe of docs/results.md (chosen on the validation world): ``train``
    without ``--config`` reproduces its headline; ``--no-sg`` its baseline."""

    # model
    dim: int = 64                   # shared embedding width of every branch
    heads: int = 4
    host_layers: int = 2            # transformer layers of the host's video and text encoders
    host_fine_weight: float = 1.0   # λ_h: host score = pooled cosine + λ_h × token late interaction (0 = pooled)
    host_slots: int = 0             # object slots of the host (learned queries over its video tokens; they join the
                                    # late interaction's max); 0 = none. The same with --no-sg (same architecture)
    gtrm_layers: int = 2            # GTrm layers over the TSG
    rgtrm_layers: int = 2           # R-GTrm layers over the DSG; STGD sits between consecutive ones
    dropout: float = 0.3
    label_buckets: int = 512        # hashed label / predicate vocabulary (no fixed vocabulary needed)
    # switches (the paper's ablations)
    use_sg: bool = True             # False: host-only baseline (InfoNCE on host features, no SG branch)
    use_osc: bool = True
    use_ptc: bool = True
    use_stgd: bool = True
    # losses
    temperature: float = 0.05
    osc_weight: float = 0.5
    ptc_weight: float = 0.5
    distill_weight: float = 1.0     # host's pooled embeddings → the fused (SG-augmented) ones
    score_distill_weight: float = 1.0   # host's score rankings → the Finsta score's (KL, same sets as InfoNCE)
    align_distill_weight: float = 0.5   # host's token↔cell similarities → the SG branch's node↔unit ones
    node_distill_weight: float = 1.0    # host's phrase↔video similarities → the SG branch's node↔video ones
    distill_temperature: float = 0.25   # softmax temperature of the score / node distillation (0 = temperature)
    # representation distillation (losses.representation_distillation): the host's video embedding, frame
    # tokens and object slots (host_slots > 0) each pick their own DSG video / frame / track embedding among
    # the batch's (contrastive, teacher held fixed; slots Hungarian-matched to their video's tracks); 0 = off
    rep_distill_weight: float = 0.0
    # video-side SG-free score (needs host_slots > 0): s(c, v) = host pooled cosine + fine_grained_weight ×
    # mean over c's TSG object/relation nodes of the best cosine with v's host slots; InfoNCE on it with this
    # weight (the caption's TSG units held fixed: the teacher is not moved), and `eval` reports it; 0 = off
    video_side_weight: float = 0.0
    # box supervision of the object slots (needs host_slots > 0 and shards with cells; losses.slot_boxes): each
    # video's slots are matched to its DSG tracks and each matched slot's attention over the host's cells is
    # trained toward the cells its track's boxes cover, frame by frame; representation distillation then uses
    # the same slot↔track pairs. The detector's boxes are read at training time only (the host reads none).
    # Works with --no-sg too (boxes, no teacher); 0 = off
    slot_box_weight: float = 0.0
    # the slots' window units (needs video_side_weight > 0 and cells; finsta_model/slot_units.py): in the
    # video-side score a caption's nodes match each slot read over the caption's window (its geometry and
    # motion there) and relation nodes also directed slot pairs; the teacher's unit OSC / PTC on them with
    # this weight (slots stand for tracks through the box supervision's pairs, else cosine); 0 = off
    slot_unit_weight: float = 0.0
    # videos without captions (`make-synthetic --uncaptioned N`, or any unannotated video build-sgs processed)
    # ride along in each batch, beyond its batch_size captioned ones, and train only the representation
    # distillation (their DSG is the target); needs rep_distill_weight > 0. False: they are skipped (the
    # baseline can never use them)
    uncaptioned: bool = False
    # post-training: an exported host (`export --out DIR`) whose weights start the host ("" = from scratch);
    # its sizes must be this config's (dim, heads, host_layers, host_fine_weight, dropout), its features the shards'
    init_host: str = ""
    train_hard_negatives: bool = True   # perturbed captions as extra text negatives (for every variant alike)
    ptc_shifts: tuple[float, ...] = (-1.0, -0.5, 0.5, 1.0)  # shifted windows, in window lengths
    # retrieval score = pooled cosine + fine_grained_weight × late-interaction score over TSG nodes and
    # DSG track / directed track-pair / window units (finsta_model/fine_grained.py); 0 = pooled only
    fine_grained_weight: float = 2.0
    # optimisation
    steps: int = 900                # changes the result, but a resume may change it: it extends the run
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 10
    grad_clip: float = 1.0
    seed: int = 0
    # data
    shuffle_buffer: int = 256
    num_workers: int = 0
    threads: int = runtime(1)       # torch CPU threads; 1 is fastest for these small graphs on a busy
                                    # machine (2 threads on 2 loaded cores measured 8x slower); 0 = torch default
    cache_mb: int = runtime(1024)   # keep encoded shards in memory between epochs (0 = stream only)
    checkpoint_every: int = runtime(100)
    log_every: int = runtime(10)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that change what a run computes (all but those declared ``runtime``: threads,
        cache, how often to log and checkpoint; see schemas/options.py)."""
        return identity(self)

    @staticmethod
    def from_dict(values: dict[str, Any]) -> "TrainConfig":
        known = {f.name: f for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UserError(f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(values)
        if "ptc_shifts" in values:
            values["ptc_shifts"] = tuple(float(x) for x in values["ptc_shifts"])
        config = TrainConfig(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if self.dim % self.heads:
            raise UserError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be ≥ 1 (got {getattr(self, name)})")
        if self.batch_size < 2:
            raise UserError("batch_size must be ≥ 2: contrastive losses need negatives")
        for name in ("fine_grained_weight", "host_fine_weight", "distill_weight", "score_distill_weight",
                     "align_distill_weight", "node_distill_weight", "distill_temperature", "rep_distill_weight",
                     "host_slots", "video_side_weight", "slot_box_weight", "slot_unit_weight"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be ≥ 0 (got {getattr(self, name)})")
        if self.video_side_weight and not self.host_slots:
            raise UserError("video_side_weight needs host_slots > 0: the video side of that score is the host's slots")
        if self.slot_unit_weight and not (self.use_sg and self.video_side_weight and self.fine_grained_weight):
            raise UserError("slot_unit_weight needs the video-side score: the SG branch, video_side_weight > 0 and "
                            "fine_grained_weight > 0")
        if self.slot_box_weight and not self.host_slots:
            raise UserError("slot_box_weight needs host_slots > 0: it trains the slots' attention")
        if self.uncaptioned and not (self.use_sg and self.rep_distill_weight > 0):
            raise UserError("uncaptioned needs the SG branch and rep_distill_weight > 0: videos without captions "
                            "train only the representation distillation")
        if self.host_layers < 1:
            raise UserError(f"host_layers must be ≥ 1 (got {self.host_layers})")
        for name, limit in SIZE_LIMITS.items():
            if getattr(self, name) > limit:
                raise UserError(f"{name} must be ≤ {limit} (got {getattr(self, name)})")
        if self.num_workers < 0:
            raise UserError(f"num_workers must be ≥ 0 (got {self.num_workers})")


def load_config(path: str | Path | None) -> TrainConfig:
    """A ``TrainConfig`` from a JSON (``.json``) or YAML (``.yaml``/``.yml``) file, or the defaults."""
    if path is None:
        return TrainConfig()
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise UserError("reading a YAML config needs PyYAML: pip install pyyaml (or use a .json config)") from None
        values = yaml.safe_load(text) or {}
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise UserError(f"{path} must hold a mapping of TrainConfig fields")
    return TrainConfig.from_dict(values)


def run_config(out: str | Path, resume: bool = False, config_file: str | Path | None = None,
               **overrides: Any) -> TrainConfig:
    """The config of a run: ``config_file`` (or the defaults), or with ``resume`` and no file the run's own
    ``out/config.json``, so ``train --out RUN --resume [--steps N]`` continues (or extends) a run with its
    settings; then ``overrides`` (TrainConfig fields; None keeps the base's value)."""
    stored = Path(out) / "config.json"
    if config_file is None and resume and stored.is_file():
        config = TrainConfig.from_dict(json.loads(stored.read_text()))
    else:
        config = load_config(config_file)
    config = config.replace(**overrides)
    config.validate()
    return config
