"""Geometric and temporal predicates, and the ``relate`` stage that writes them.

Per-frame predicates score an ordered pair ``(subject, object)`` of detections
on the same sampled frame; boxes are normalised xyxy, ``y`` grows downwards.
``w``, ``h``, ``cx``, ``cy`` are a box's size and centre; ``mw``/``mh`` the
pair's mean width/height; ``clip`` clips to [0, 1].

=========== ================================================= ================================================
predicate   rule (emitted when score ≥ ``min_score``)         score
=========== ================================================= ================================================
left of     subject's centre left of object's                 clip((cx_o − cx_s) / mw)
right of    mirror of *left of*                               clip((cx_s − cx_o) / mw)
above       subject's centre above object's                   clip((cy_o − cy_s) / mh)
below       mirror of *above*                                 clip((cy_s − cy_o) / mh)
on          subject resting on the object's upper part:       x-overlap / w_s × clip(1.5 − |y2_s − (y1_o +
            smaller, bottom edge within [y1_o − 0.1 h_o,      0.1 h_o)| / (0.3 h_o))
            y1_o + 0.4 h_o], centre above the object's
            centre
near        boxes close relative to their size                clip(1 − gap / (near_scale · mean diagonal))
next to     side by side in a row: heights overlap by ≥ half  clip(1 − gap / (2 · next_to_scale · mean
            the shorter box, bottom edges within a quarter    height)), in pixels: a gap of
            of the mean height; only between neighbours (no   ``next_to_scale`` mean heights scores 0.5
            third box between them, :func:`frame_relations`)
in front of overlapping boxes (≥ ``occlusion_min`` of the     clip(0.5 + overlap / smaller area) ×
            smaller one): on a ground plane seen from above   clip(Δ bottom / (0.25 mh)), Δ bottom = y2_s − y2_o
            the horizon, the box whose bottom edge is lower
            is nearer the camera
behind      mirror of *in front of*                           same with Δ bottom = y2_o − y2_s
riding      subject a person, object in ``ridden_labels``;     share of the narrower box's width that
            the person's bottom edge inside the object's box  overlaps the other
            (from 10% of its height to 15% below it), centre
            above the object's centre
sitting on  the same rule for an object in ``seat_labels``    same
holding     subject is a person (``person_labels``), object   share of the object inside the person ×
            small (area ≤ ``small_ratio`` × person's), mostly (1 − area ratio / small_ratio) ^ 0.25, 0 when
            inside the person's box, not in the bottom 15%    the object's centre is in the bottom 15%
            (feet), not a body part (``body_part_labels``);
            or grasped from above: the person's box (often    or the share of the object's width under
            only an arm on real video) comes down from above  the person's box, whichever is higher
            the object and ends in its top ``grasp_band``,
            the object no larger than that box, not one of
            ``unheld_labels`` (tables, cars…)
=========== ================================================= ================================================

Per-track predicates (:class:`schemas.records.TrackRelation`), over the
sampled frames both tracks share (unary ones have ``object == -1``). A still
track (``motion=still``) persists between its detections: on a frame of its span
it was not detected on, it keeps the box of its detection before (an object
hidden by the person standing at it is still there).

=========== ================================================= ================================================
predicate   rule                                              score
=========== ================================================= ================================================
approaching centre distance falls by ≥ ``approach_min`` from  clip(2 · fall / first distance): halving it → 1
            the start to the closest point (distances
            averaged over two frames); spans start → closest
moving away centre distance grows by ≥ ``approach_min`` from  clip(2 · growth / last distance)
            the closest point to the end; spans closest → end
in front of a still track is not detected while the subject's mean share of the still box covered
            box covers ≥ ``hidden_min`` of its kept box, on
            ≥ ``min_track_frames`` frames; spans those frames
passing     the sign of cx_s − cx_o flips while the subject   clip(1 − closest gap / (near_scale · diagonal))
            moves (the subject goes by the object)
entering    born after the first sampled frame with its first 1 − border distance / ``edge_margin``
            box touching the frame border (unary; tracks of
            ≥ ``min_track_frames`` frames)
leaving     dies before the last sampled frame with its last  same, on the last box
            box touching the frame border (unary)
carrying    subject *holding* object on ≥ half the shared     share of shared frames with *holding*, or of
            frames while the subject track is *moving*, or    steps moving together, the higher
            the object moving with the person on ≥ half the
            steps between shared frames (near at both ends,
            displacement within ``together_tolerance`` of
            the person's), not an ``unheld_labels`` object
=========== ================================================= ================================================

A track whose median speed says ``motion=still`` is ``motion=moving`` after all
when it was *moved while unseen* (:func:`moved_unseen`): it vanished for at least
``moved_min_gap`` sampled frames without any other box covering ``hidden_min``
of its place (so it was not hidden: it was gone) and came back elsewhere (IoU of
its boxes before and after < ``moved_max_iou``; a still object's boxes overlap
at IoU ≈ 0.95 from frame to frame). A bottle lifted out of the picture and put
back a little aside moves in no sampled frame the detector sees, yet it moved.
Score: 0.5 + (``moved_max_iou`` − IoU) / ``moved_max_iou``.

``approaching`` and ``moving away`` depend only on the pair's distance, so they
are symmetric and stored once (subject = the lower track id).

Which per-frame relations are stored (the graph constraint of the SGG
benchmarks, :func:`pair_relations`): only pairs of near boxes (``near`` ≥
``min_score``; contact and overlap are always near) take part, and pairs that
are not near but stand *next to* each other as neighbours in a row (three
bottles on a shelf a hand's width apart: people say "next to", and a box
between them would break the row); each ordered pair gets **at most one**
predicate, the first of

1. the caption predicate the FREQ prior (:class:`stages.predicate_prior.PredicatePrior`)
   picks when it knows the label pair (``ride``, ``sit at``, ``hold``…; the rule
   is in that module's docstring);
2. an interaction (``riding``, ``sitting on``, ``holding``, then ``on``, ``in front of``, ``behind``);
3. ``near``;
4. the directional predicate of the dominant axis.

A symmetric predicate (``near``, ``next to``…) is stored once, and the reverse
pair then stores its first predicate not implied by it (``A near B`` and ``B
right of A``; ``A left of B`` implies ``B right of A``). A frame keeps its
``max_relations_per_frame`` best-scoring relations. Readers expand a stored
relation by these rules (:data:`SYMMETRIC_PREDICATES`, :data:`INVERSE_PREDICATES`).

Example::

    stage = RelateStage(RelateConfig())
    stage.setup()
    stage.process_batch(tasks)  # after detect and track; fills task.dsg attributes/relations/track_relations
"""
from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from schemas.errors import UserError
from schemas.records import Attribute, Detection, DynamicSceneGraph, Relation, TrackRelation
from stages.attributes import (AttributeConfig, box_area, box_color, centre_speed, frame_size, motion_attributes,
                               relative_size)
from stages.base import Stage, VideoTask

Box = tuple[float, float, float, float]


PAIR_RULES = ("auto", "near", "all")


@dataclass
class RelateConfig:
    """Thresholds of the predicates (module table) and the attribute rules.

    ``pairs``: which box pairs of a frame get relations: ``near`` (near or
    interacting boxes only, as scene-graph benchmarks annotate salient pairs),
    ``all`` (every pair: the synthetic world's truth relates every pair and its
    captions name far pairs, "the red circle is left of the blue square"), or
    ``auto`` (= ``all`` on the synthetic dataset, ``near`` on real data).
    """

    pairs: str = "auto"
    min_score: float = 0.5
    near_scale: float = 0.5
    next_to_scale: float = 1.0           # neighbours in a row are "next to" up to this many mean heights apart
    occlusion_min: float = 0.1
    small_ratio: float = 0.25
    grasp_band: float = 0.35             # a hand from above ends in this top share of a held object's box
    ridden_labels: tuple[str, ...] = ("bicycle", "motorcycle", "horse", "elephant", "skateboard", "surfboard")
    seat_labels: tuple[str, ...] = ("chair", "couch", "bench", "bed", "toilet", "sofa", "stool")
    person_labels: tuple[str, ...] = ("person", "man", "woman", "boy", "girl", "child", "people", "player",
                                      "skier", "surfer", "rider", "lady", "guy", "kid")
    # Too big or fixed to be held: a person behind them often ends at their top edge, like a hand.
    unheld_labels: tuple[str, ...] = ("dining table", "table", "desk", "counter", "bed", "couch", "sofa", "bench",
                                      "car", "truck", "bus", "train", "boat", "airplane", "refrigerator", "oven",
                                      "sink", "toilet", "tv", "door", "wall", "fence")
    # Parts of a person sit inside its box too, but are never "held".
    body_part_labels: tuple[str, ...] = ("face", "head", "hand", "arm", "leg", "ear", "eye", "hair", "mouth",
                                         "neck", "nose", "finger", "foot", "body", "tail", "wing")
    max_detections_per_frame: int = 20   # the highest-scoring ones take part in pairs
    max_relations_per_frame: int = 12    # the highest-scoring relations of a frame are kept
    approach_min: float = 0.1
    together_tolerance: float = 0.5      # moving with a person: its step within this share of the person's step
    hidden_min: float = 0.5              # share of a still object's box another box covers while it is unseen
    moved_min_gap: int = 2               # sampled frames a still object is gone (not hidden) before it counts as moved
    moved_max_iou: float = 0.9           # ... and its box after the gap overlaps its box before less than this
    edge_margin: float = 0.05
    min_track_frames: int = 2            # shorter tracks (one-frame blips) have no entering/leaving
    use_prior: bool = True
    prior_path: str = ""                 # "" = the shipped stages/data/predicate_prior.json
    prior_min_score: float = 0.2
    prior_min_prob: float = 0.2          # a flat prior (five predicates at 0.1) knows nothing: geometry decides
    attributes: AttributeConfig = field(default_factory=AttributeConfig)

    def __post_init__(self) -> None:
        if self.pairs not in PAIR_RULES:
            raise UserError(f"relate.pairs {self.pairs!r} is not one of {', '.join(PAIR_RULES)}")
        if self.max_relations_per_frame < 0:
            raise UserError(f"relate.max_relations_per_frame must be >= 0, got {self.max_relations_per_frame}")

    def resolved(self, dataset: Optional[str] = None) -> "RelateConfig":
        """A copy with ``pairs = auto`` replaced by what it stands for on ``dataset``."""
        cfg = copy.deepcopy(self)
        if cfg.pairs == "auto":
            cfg.pairs = "all" if dataset == "synthetic" else "near"
        return cfg


# ------------------------------------------------------------- geometry
def _size(b: Box) -> tuple[float, float]:
    return b[2] - b[0], b[3] - b[1]


def _centre(b: Box) -> tuple[float, float]:
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def _clip(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def _intersection(a: Box, b: Box) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def box_gap(a: Box, b: Box) -> float:
    """Euclidean distance between two boxes (0 when they touch or overlap)."""
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return float(np.hypot(dx, dy))


def _mean_wh(s: Box, o: Box) -> tuple[float, float]:
    (ws, hs), (wo, ho) = _size(s), _size(o)
    return max((ws + wo) / 2, 1e-6), max((hs + ho) / 2, 1e-6)


def score_left_of(s: Box, o: Box, s_label: str, o_label: str, cfg: RelateConfig) -> float:
    return _clip((_centre(o)[0] - _centre(s)[0]) / _mean_wh(s, o)[0])


def score_right_of(s: Box, o: Box, s_label: str, o_label: str, cfg: RelateConfig) -> float:
    return score_left_of(o, s, o_label, s_label, cfg)


def score_above(s: Box, o: Box, s_label: str, o_label: str, cfg: RelateConfig) -> float:
    return _clip((_centre(o)[1] - _centre(s)[1]) / _mean_wh(s, o)[1])


def score_below(s: Box, o: Box, s_label: str, o_label: str, cfg: RelateConfig) -> float:
    return score_above(o, s, o_label, s_label, cfg)


def score_on(s: Box, o: Box, s_label: str, o_label: str, cfg: RelateConfig) -> float:
    (ws, _), (_, ho) = _size(s), _size(o)
    if box_area(s) >= box_area(o) or _centre(s)[1] >= _centre(o)[1] or ws <= 0 or ho <= 0:
        return 0.0
    x_overlap = max(0.0, min(s[2], o[2]) - max(s[0], o[0])) / ws
    # The supporting surface is the object's top band: from a little above its
    # top edge (perspective) down to 40% of its height.
    band_top, band_bottom = o[1] - 0.1 * ho, o[1] + 0.4 * ho
    if s[3] < band_top or s[3] > band_bottom:
        return 0.0
    target = o[1] + 0.1 * ho
    closeness = 1.0 - abs(s[3] - target) / (0.3 * ho)
    return _clip(x_overlap * _clip(closeness + 0.5))


def score_near(s: Box, o: Box, s_label: str, o_label: str, cfg: RelateConfig) -> float:
    (ws, hs), (wo, ho) = _size(s), _size(o)
    diagonal = (np.hypot(ws, hs) + np.hypot(wo, ho)) / 2
    return _clip(1.0 - box_gap(s, o) / max(cfg.near_scale * diagonal, 1e-6))


def score_next_to(s: Box, o: Box, cfg: RelateConfig, aspect: float = 1.0) -> float:
    """Side by side in a row: the boxes' heights overlap by at least half the shorter one and their bottom
    edges (what they stand on) lie within a quarter of their mean height; closer than ``next_to_scale`` mean
    heights scores over 0.5, in pixels (``aspect`` = frame width / height). Whether a third box stands
    between them is the caller's (:func:`frame_relations`)."""
    (_, hs), (_, ho) = _size(s), _size(o)
    mh = _mean_wh(s, o)[1]
    y_overlap = min(s[3], o[3]) - max(s[1], o[1])
    if y_overlap < 0.5 * min(hs, ho) or abs(s[3] - o[3]) > 0.25 * mh:
        return 0.0
    gap = max(0.0, max(s[0], o[0]) - min(s[2], o[2])) * aspect
    return _clip(1.0 - gap / (2 * cfg.next_to_scale * mh))


def _between(a: Box, b: Box, c: Box) -> bool:
    """Box ``c`` stands in the horizontal gap between ``a`` and ``b`` (or overlaps it) at their height."""
    left, right = (a, b) if a[0] <= b[0] else (b, a)
    return c[0] < right[0] and c[2] > left[2] and min(a[3], b[3], c[3]) - max(a[1], b[1], c[1]) > 0


def score_in_front_of(s: Box, o: Box, s_label: str, o_label: str, cfg: RelateConfig) -> float:
    smaller = min(box_area(s), box_area(o))
    if smaller <= 0:
        return 0.0
    overlap = _intersection(s, o) / smaller
    if overlap < cfg.occlusion_min:
        return 0.0
    return _clip(0.5 + overlap) * _clip((s[3] - o[3]) / (0.25 * _mean_wh(s, o)[1]))


def score_behind(s: Box, o: Box, s_label: str, o_label: str, cfg: RelateConfig) -> float:
    return score_in_front_of(o, s, o_label, s_label, cfg)


def score_holding(s: Box, o: Box, s_label: str, o_label: str, cfg: RelateConfig) -> float:
    """The object in the person's hand: small and inside the person's box, or grasped from above."""
    if s_label not in cfg.person_labels or o_label in cfg.person_labels or o_label in cfg.body_part_labels:
        return 0.0
    if box_area(o) <= 0:
        return 0.0
    return max(_held_inside(s, o, cfg), _grasped(s, o, o_label, cfg))


def _held_inside(s: Box, o: Box, cfg: RelateConfig) -> float:
    ratio = box_area(o) / max(box_area(s), 1e-9)
    if ratio > cfg.small_ratio:
        return 0.0
    inside = _intersection(s, o) / box_area(o)
    if _centre(o)[1] > s[3] - 0.15 * _size(s)[1]:  # at the feet: standing by it, not holding it
        return 0.0
    return _clip(inside * (1.0 - ratio / cfg.small_ratio) ** 0.25)


def _grasped(s: Box, o: Box, o_label: str, cfg: RelateConfig) -> float:
    """A hand reaching down onto the object: on real video the detector often sees only an arm, a box that
    comes from above the object and ends on its top (``grasp_band`` of its height), no larger than the
    box; the share of the object's width under it."""
    wo, ho = _size(o)
    if o_label in cfg.unheld_labels or box_area(o) > box_area(s) or s[1] >= o[1] or not o[1] <= s[3] <= o[1] + cfg.grasp_band * ho:
        return 0.0
    return _clip(max(0.0, min(s[2], o[2]) - max(s[0], o[0])) / max(wo, 1e-9))


def _mounted(s: Box, o: Box) -> float:
    """How well person box ``s`` sits over ``o``: the person's bottom edge inside ``o``'s box (down to a
    little below it), centre above ``o``'s centre; the share of ``o``'s width the person covers."""
    ws, (wo, ho) = _size(s)[0], _size(o)
    if ws <= 0 or wo <= 0 or ho <= 0 or _centre(s)[1] >= _centre(o)[1]:
        return 0.0
    if not o[1] + 0.1 * ho <= s[3] <= o[3] + 0.15 * ho:
        return 0.0
    return _clip(max(0.0, min(s[2], o[2]) - max(s[0], o[0])) / min(ws, wo))


def score_riding(s: Box, o: Box, s_label: str, o_label: str, cfg: RelateConfig) -> float:
    """A person over a bicycle/horse/… (``ridden_labels``): bottom edge inside it, overlapping it."""
    if s_label not in cfg.person_labels or o_label not in cfg.ridden_labels:
        return 0.0
    return _mounted(s, o)


def score_sitting_on(s: Box, o: Box, s_label: str, o_label: str, cfg: RelateConfig) -> float:
    """A person over a chair/couch/… (``seat_labels``): bottom edge inside it, overlapping it."""
    if s_label not in cfg.person_labels or o_label not in cfg.seat_labels:
        return 0.0
    return _mounted(s, o)


ScoreFn = Callable[[Box, Box, str, str, RelateConfig], float]
# The per-frame predicate table: name → score function (rules in the module docstring).
GEOMETRIC_PREDICATES: dict[str, ScoreFn] = {
    "left of": score_left_of, "right of": score_right_of, "above": score_above, "below": score_below,
    "on": score_on, "near": score_near, "in front of": score_in_front_of, "behind": score_behind,
    "holding": score_holding, "riding": score_riding, "sitting on": score_sitting_on,
}


# Every per-frame predicate relate stores by geometry: the table's pair scores, and "next to" of
# neighbours in a row (it needs the frame's other boxes: :func:`pair_relations`).
FRAME_PREDICATES = (*GEOMETRIC_PREDICATES, "next to")


def pair_geometry(s: Box, o: Box, s_label: str, o_label: str, cfg: RelateConfig) -> dict[str, float]:
    """Every geometric predicate's score for an ordered pair (including those under ``min_score``)."""
    return {name: fn(s, o, s_label, o_label, cfg) for name, fn in GEOMETRIC_PREDICATES.items()}


# Which predicates say the same thing of a pair read the other way round (stored once).
# The per-track predicates (the module's second table); unary ones have object -1.
TRACK_PREDICATES = ("approaching", "moving away", "in front of", "passing", "entering", "leaving", "carrying")
# approaching / moving away are track predicates of the pair's distance (stored once, subject = lower id).
SYMMETRIC_PREDICATES = frozenset({"near", "next to", "beside", "close to", "approaching", "moving away"})
INVERSE_PREDICATES = {"left of": "right of", "right of": "left of", "above": "below", "below": "above",
                      "in front of": "behind", "behind": "in front of"}
# Per ordered pair, the first group with a predicate wins (most informative first): what the
# subject does with the object (contact, occlusion), then proximity, then direction.
INTERACTION_PREDICATES = ("riding", "sitting on", "holding", "on", "in front of", "behind")
DIRECTIONAL_PREDICATES = ("left of", "right of", "above", "below")


# What a stored contact predicate already says of the reverse pair: the depth order of a held
# object against its holder's box, or of a cup against the table it stands on, means nothing;
# "cup on table" says "table below cup".
CONTACT_IMPLIES = {"holding": frozenset({"in front of", "behind"}),
                   "riding": frozenset({"below", "in front of", "behind"}),
                   "sitting on": frozenset({"below", "in front of", "behind"}),
                   "on": frozenset({"below", "in front of", "behind"})}


def reverse_predicates(predicate: str) -> set[str]:
    """What a stored ``(s, predicate, o)`` says of ``(o, ·, s)``: ``near`` → ``near``, ``left of`` → ``right of``.

    Readers of a DSG expand stored relations with it (``eval-dsg`` does).
    """
    if predicate in SYMMETRIC_PREDICATES:
        return {predicate}
    return {INVERSE_PREDICATES[predicate]} if predicate in INVERSE_PREDICATES else set()


def implied(predicate: str) -> set[str]:
    """Predicates the reverse ordered pair needs no more once ``predicate`` is stored:
    :func:`reverse_predicates`, and for ``holding``/``on`` the reverse's depth order / ``below``."""
    return reverse_predicates(predicate) | set(CONTACT_IMPLIES.get(predicate, ()))


def ranked_predicates(s: Detection, o: Detection, scores: dict[str, float], cfg: RelateConfig,
                      prior=None) -> list[tuple[str, float]]:
    """The predicates of one ordered pair, most informative first (see ``RelateConfig``).

    1. the FREQ prior's caption predicate, when the prior knows this label pair,
       the geometry supports it and its probability is ≥ ``prior_min_prob``
       (``ride``, ``sit at``, ``hold``…);
    2. interactions, in this order: ``riding``, ``sitting on``, ``holding``, ``on``, ``in front of``, ``behind``
       (a held cup is also "behind" the person's box, but holding says more);
    3. ``near``;
    4. the one directional predicate of the dominant axis (centre offset
       relative to the pair's mean width vs mean height).
    Only scores ≥ ``min_score`` count.
    """
    kept = {name: v for name, v in scores.items() if v >= cfg.min_score}
    out: list[tuple[str, float]] = []
    if prior is not None and kept and prior.knows_pair(s.label, o.label):
        chosen = prior.caption_predicate(s.label, o.label, kept, min_score=cfg.prior_min_score,
                                         min_prob=cfg.prior_min_prob)
        if chosen:
            out.append(chosen)
    out += [(p, kept[p]) for p in INTERACTION_PREDICATES if p in kept]
    if "near" in kept:
        out.append(("near", kept["near"]))
    (sx, sy), (ox, oy) = _centre(s.box), _centre(o.box)
    mw, mh = _mean_wh(s.box, o.box)
    horizontal = abs(ox - sx) / mw >= abs(oy - sy) / mh
    direction = ("left of" if ox > sx else "right of") if horizontal else ("above" if oy > sy else "below")
    if direction in kept:
        out.append((direction, kept[direction]))
    return out


def _priority(predicate: str) -> int:
    """0 for a caption predicate of the prior, then riding < sitting on < holding < on < in front of =
    behind < near < direction."""
    if predicate in ("in front of", "behind"):
        return 1 + INTERACTION_PREDICATES.index("in front of")
    if predicate in INTERACTION_PREDICATES:
        return 1 + INTERACTION_PREDICATES.index(predicate)
    if predicate == "near":
        return 1 + len(INTERACTION_PREDICATES)
    return 2 + len(INTERACTION_PREDICATES) if predicate in DIRECTIONAL_PREDICATES else 0


def pair_relations(detections: list[Detection], i: int, j: int, cfg: RelateConfig, prior=None,
                   others: Sequence[int] = (), aspect: float = 1.0) -> list[Relation]:
    """At most one relation per ordered pair of detections ``i``, ``j`` (same frame); when ``cfg.pairs`` is
    ``near``, none unless they are near, or else neighbours in a row: ``i next to j`` (:func:`score_next_to`)
    when none of the frame's ``others`` stands between them (``aspect``: the frame's width / height).

    The more informative of the two directions' first predicates is stored (the
    order of :func:`ranked_predicates`, then the higher score); the other
    direction stores its first predicate that the stored one does not already
    imply (a symmetric predicate holds both ways, ``left of`` implies the
    other's ``right of``). Near = the ``near`` score reaches ``min_score``
    (touching and overlapping boxes always are); interactions need overlap, so
    they only occur between near boxes.
    """
    a, b = detections[i], detections[j]
    ab = pair_geometry(a.box, b.box, a.label, b.label, cfg)
    if ab["near"] < cfg.min_score and cfg.pairs != "all":      # auto without a dataset: near
        score = score_next_to(a.box, b.box, cfg, aspect)
        if score < cfg.min_score or any(_between(a.box, b.box, detections[k].box) for k in others if k not in (i, j)):
            return []
        return [Relation(a.frame, i, j, "next to", score)]       # symmetric: stored once
    ba = pair_geometry(b.box, a.box, b.label, a.label, cfg)
    ranked = {(i, j): ranked_predicates(a, b, ab, cfg, prior), (j, i): ranked_predicates(b, a, ba, cfg, prior)}
    firsts = [(pair, options[0]) for pair, options in ranked.items() if options]
    if not firsts:
        return []
    first_pair, first = min(firsts, key=lambda item: (_priority(item[1][0]), -item[1][1]))   # ties: (i, j)
    out = [Relation(a.frame, first_pair[0], first_pair[1], first[0], first[1])]
    other = (first_pair[1], first_pair[0])
    for predicate, score in ranked[other]:
        if predicate not in implied(first[0]):
            out.append(Relation(a.frame, other[0], other[1], predicate, score))
            break
    return out


def frame_relations(detections: list[Detection], indices: list[int], cfg: RelateConfig,
                    prior=None, aspect: float = 1.0) -> list[Relation]:
    """Relations among the detections ``indices`` (all of one frame): per near pair or pair of neighbours in a
    row (:func:`pair_relations`), the ``max_relations_per_frame`` best-scoring ones, in detection order."""
    ranked = sorted(indices, key=lambda i: -detections[i].score)[: cfg.max_detections_per_frame]
    ranked.sort()
    out = [r for k, i in enumerate(ranked) for j in ranked[k + 1:]
           for r in pair_relations(detections, i, j, cfg, prior, ranked, aspect)]
    best = sorted(range(len(out)), key=lambda k: -out[k].score)[: cfg.max_relations_per_frame]
    return [out[k] for k in sorted(best)]


# ------------------------------------------------------------- temporal
@dataclass
class TrackView:
    """A track's boxes by sampled-frame index, with the frames' timestamps."""

    id: int
    label: str
    boxes: dict[int, Box]

    @property
    def frames(self) -> list[int]:
        return sorted(self.boxes)

    @property
    def first(self) -> int:
        return min(self.boxes)

    @property
    def last(self) -> int:
        return max(self.boxes)


def _border_distance(b: Box) -> float:
    return min(b[0], b[1], 1.0 - b[2], 1.0 - b[3])


def entering_score(track: TrackView, cfg: RelateConfig, shot_firsts: frozenset = frozenset({0})) -> float:
    """Near a border on its first frame, unless that frame starts a shot (there from the start)."""
    first = track.frames[0]
    if first == 0 or first in shot_firsts:
        return 0.0
    return _clip(1.0 - _border_distance(track.boxes[first]) / cfg.edge_margin)


def leaving_score(track: TrackView, last_frame: int, cfg: RelateConfig,
                  shot_lasts: frozenset = frozenset()) -> float:
    """Near a border on its last frame, unless that frame ends the video or a shot."""
    last = track.frames[-1]
    if last >= last_frame or last in shot_lasts:
        return 0.0
    return _clip(1.0 - _border_distance(track.boxes[last]) / cfg.edge_margin)


def _distances(a: TrackView, b: TrackView, shared: list[int]) -> np.ndarray:
    return np.array([np.hypot(*(np.subtract(_centre(a.boxes[f]), _centre(b.boxes[f])))) for f in shared])


def approach_events(a: TrackView, b: TrackView, cfg: RelateConfig) -> dict[str, tuple[float, int, int]]:
    """``approaching`` / ``moving away`` → (score, first frame, last frame) over the shared frames.

    The pair's distance, averaged over two frames, falls from the start to its closest point
    (approaching: start → closest) and grows from there to the end (moving away: closest → end); a person
    who walks to a table and away again does both. Only changes ≥ ``approach_min`` count.
    """
    shared = sorted(a.boxes.keys() & b.boxes.keys())
    if len(shared) < 2:
        return {}
    d = _distances(a, b, shared)
    k = 2 if len(d) >= 4 else 1
    smooth = np.convolve(d, np.ones(k) / k, mode="valid")       # smooth[i] = mean of d[i:i + k]
    m = int(np.argmin(smooth))
    first, closest, last = float(smooth[0]), float(smooth[m]), float(smooth[-1])
    out = {}
    if first - closest >= cfg.approach_min:
        out["approaching"] = (_clip(2 * (first - closest) / max(first, 1e-6)), shared[0], shared[m + k - 1])
    if last - closest >= cfg.approach_min:
        out["moving away"] = (_clip(2 * (last - closest) / max(last, 1e-6)), shared[m], shared[-1])
    return out


def passing_score(a: TrackView, b: TrackView, moving: bool, cfg: RelateConfig) -> float:
    shared = sorted(a.boxes.keys() & b.boxes.keys())
    if len(shared) < 2 or not moving:
        return 0.0
    side = [np.sign(_centre(a.boxes[f])[0] - _centre(b.boxes[f])[0]) for f in shared]
    side = [v for v in side if v != 0]
    if len(side) < 2 or side[0] == side[-1]:
        return 0.0
    gap = min(box_gap(a.boxes[f], b.boxes[f]) for f in shared)
    sizes = [np.hypot(*_size(a.boxes[f])) + np.hypot(*_size(b.boxes[f])) for f in shared]
    return _clip(1.0 - gap / max(cfg.near_scale * float(np.mean(sizes)) / 2, 1e-6))


def carrying_score(a: TrackView, b: TrackView, moving: bool, cfg: RelateConfig) -> float:
    """Share of the shared frames on which the moving person ``a`` holds ``b``, or of the steps between
    them on which ``b`` moves with ``a`` (:func:`moves_with`), whichever is higher; 0 under a half."""
    shared = sorted(a.boxes.keys() & b.boxes.keys())
    if not shared or not moving:
        return 0.0
    held = sum(score_holding(a.boxes[f], b.boxes[f], a.label, b.label, cfg) >= cfg.min_score for f in shared)
    share = max(held / len(shared), moves_with(a, b, shared, cfg))
    return share if share >= 0.5 else 0.0


def moves_with(a: TrackView, b: TrackView, shared: list[int], cfg: RelateConfig) -> float:
    """Motion together: the share of steps between consecutive shared frames on which object ``b``, touching
    or near person ``a`` at both ends, moves as ``a`` does (its centre's displacement within
    ``together_tolerance`` × ``a``'s of ``a``'s displacement). A bag swinging at a walker's side is
    carried though it sticks out of the walker's box."""
    if (a.label not in cfg.person_labels or b.label in cfg.person_labels or b.label in cfg.body_part_labels
            or b.label in cfg.unheld_labels or len(shared) < 2):
        return 0.0
    together = 0
    for f, g in zip(shared, shared[1:]):
        step_a = np.subtract(_centre(a.boxes[g]), _centre(a.boxes[f]))
        step_b = np.subtract(_centre(b.boxes[g]), _centre(b.boxes[f]))
        moved = np.hypot(*step_a)
        close = all(score_near(a.boxes[h], b.boxes[h], a.label, b.label, cfg) >= cfg.min_score for h in (f, g))
        together += bool(close and moved > 0 and np.hypot(*(step_b - step_a)) <= cfg.together_tolerance * moved)
    return together / (len(shared) - 1)


def track_views(dsg: DynamicSceneGraph) -> dict[int, TrackView]:
    views: dict[int, TrackView] = {}
    labels = {t.id: t.label for t in dsg.tracks}
    for det in dsg.detections:
        if det.track_id < 0:
            continue
        view = views.setdefault(det.track_id, TrackView(det.track_id, labels.get(det.track_id, det.label), {}))
        # Two detections of one track on a frame should not happen; keep the first.
        view.boxes.setdefault(det.frame, det.box)
    return views


def track_speed(view: TrackView, times: list[float]) -> Optional[float]:
    frames = view.frames
    return centre_speed([view.boxes[f] for f in frames], [times[f] for f in frames])


def persisting(view: TrackView, all_frames: range) -> TrackView:
    """A still track between its detections: each sampled frame of its span it was not detected on gets the
    box of the detection before it (a table hidden by the person standing at it is still there)."""
    boxes, box = {}, None
    for f in all_frames:
        if view.first <= f <= view.last:
            box = view.boxes.get(f, box)
            boxes[f] = box
    return TrackView(view.id, view.label, boxes)


def hiding_score(a: TrackView, still: TrackView, kept: TrackView, cfg: RelateConfig) -> tuple[float, list[int]]:
    """``a`` in front of a still track: on the frames the still track was not detected (``kept`` holds its
    box there), ``a``'s box covers at least ``hidden_min`` of that box. (mean cover, those frames)."""
    frames, covers = [], []
    for f in sorted(a.boxes.keys() & kept.boxes.keys() - still.boxes.keys()):
        box = kept.boxes[f]
        cover = _intersection(a.boxes[f], box) / max(box_area(box), 1e-9)
        if cover >= cfg.hidden_min:
            frames.append(f)
            covers.append(cover)
    if len(frames) < cfg.min_track_frames:
        return 0.0, []
    return float(np.mean(covers)), frames


def moved_unseen(view: TrackView, views: dict[int, TrackView], cfg: RelateConfig) -> float:
    """The score of the track having been moved while unseen (module docstring), 0 when it was not: a gap of
    at least ``moved_min_gap`` sampled frames in its detections on which no other track's box covers
    ``hidden_min`` of its box before the gap, and its box after the gap at IoU < ``moved_max_iou``."""
    frames = view.frames
    best = 0.0
    for before, after in zip(frames, frames[1:]):
        if after - before - 1 < cfg.moved_min_gap:
            continue
        place, back = view.boxes[before], view.boxes[after]
        overlap = _intersection(place, back)
        iou = overlap / max(box_area(place) + box_area(back) - overlap, 1e-9)
        if iou >= cfg.moved_max_iou:
            continue
        hidden = any(_intersection(other.boxes[f], place) >= cfg.hidden_min * box_area(place)
                     for other in views.values() if other.id != view.id
                     for f in range(before + 1, after) if f in other.boxes)
        if not hidden:
            best = max(best, _clip(0.5 + (cfg.moved_max_iou - iou) / cfg.moved_max_iou))
    return best


def track_motion(views: dict[int, TrackView], speeds: dict[int, Optional[float]],
                 cfg: RelateConfig) -> list[Attribute]:
    """``motion`` (and ``speed`` when moving) of every track with a speed: from its median speed
    (:func:`stages.attributes.motion_attributes`), or ``moving`` when still but moved while unseen."""
    out = []
    for tid, speed in sorted(speeds.items()):
        if speed is None:
            continue
        found = motion_attributes(speed, cfg.attributes)
        if found[0][1] == "still":
            moved = moved_unseen(views[tid], views, cfg)
            if moved >= cfg.min_score:
                found = [("motion", "moving", moved)]
        out += [Attribute("track", tid, name, value, score) for name, value, score in found]
    return out


def temporal_relations(dsg: DynamicSceneGraph, cfg: RelateConfig,
                       speeds: dict[int, Optional[float]]) -> list[TrackRelation]:
    """Unary events of each track, then the pair events (module table). A still track persists between its
    detections (:func:`persisting`) for approaching / moving away / passing and for ``in front of`` (what
    hides it); carrying needs both detected."""
    views = track_views(dsg)
    last_frame = len(dsg.frames) - 1
    shot_of = dsg.frame_shots()   # tracks never cross a cut (track stage), so pairs share one shot
    firsts = frozenset(f for f in range(len(shot_of)) if f == 0 or shot_of[f] != shot_of[f - 1])
    lasts = frozenset(f - 1 for f in firsts if f > 0)
    moving = {tid: (s is not None and s >= cfg.attributes.moving_speed) for tid, s in speeds.items()}
    out: list[TrackRelation] = []
    for tid, view in sorted(views.items()):
        frames = view.frames
        if len(frames) < cfg.min_track_frames:
            continue
        for name, score in (("entering", entering_score(view, cfg, firsts)),
                            ("leaving", leaving_score(view, last_frame, cfg, lasts))):
            if score >= cfg.min_score:
                out.append(TrackRelation(tid, -1, name, frames[0], frames[-1], score))
    kept = {tid: persisting(view, range(len(dsg.frames)))
            if speeds.get(tid) is not None and not moving[tid] and len(view.boxes) >= cfg.min_track_frames else view
            for tid, view in views.items()}
    for a_id, a in sorted(kept.items()):
        for b_id, b in sorted(kept.items()):
            if a_id == b_id:
                continue
            if b is not views[b_id]:
                score, hidden = hiding_score(views[a_id], views[b_id], b, cfg)
                if score >= cfg.min_score:
                    out.append(TrackRelation(a_id, b_id, "in front of", hidden[0], hidden[-1], score))
            shared = sorted(a.boxes.keys() & b.boxes.keys())
            if len(shared) < 2:
                continue
            # approaching / moving away depend on the pair's distance only: symmetric, stored once
            events = approach_events(a, b, cfg) if a_id < b_id else {}
            events["passing"] = (passing_score(a, b, moving.get(a_id, False), cfg), shared[0], shared[-1])
            events["carrying"] = (carrying_score(views[a_id], views[b_id], moving.get(a_id, False), cfg),
                                  shared[0], shared[-1])
            out += [TrackRelation(a_id, b_id, name, first, last, score)
                    for name, (score, first, last) in events.items() if score >= cfg.min_score]
    return out


# ------------------------------------------------------------- attributes
def detection_attributes(dsg: DynamicSceneGraph, images: Optional[list[np.ndarray]],
                         cfg: AttributeConfig) -> list[Attribute]:
    """colour (needs the frame images), size and relative size of every detection."""
    by_frame: dict[int, list[int]] = defaultdict(list)
    for i, det in enumerate(dsg.detections):
        by_frame[det.frame].append(i)
    out = []
    for i, det in enumerate(dsg.detections):
        if images is not None and det.frame < len(images):
            color = box_color(images[det.frame], det.box, cfg.color_crop)
            if color and color[1] >= cfg.color_min_share:
                out.append(Attribute("detection", i, "color", color[0], color[1]))
        out.append(Attribute("detection", i, "size", *frame_size(det.box, cfg)))
        others = [dsg.detections[j].box for j in by_frame[det.frame] if j != i]
        rel = relative_size(det.box, others, cfg)
        if rel:
            out.append(Attribute("detection", i, "relative_size", *rel))
    return out


def merge_attributes(existing: list[Attribute], new: list[Attribute]) -> list[Attribute]:
    """``existing`` plus the ``new`` ones whose (target, name) is not there yet."""
    seen = {(a.target_kind, a.target, a.name) for a in existing}
    out = list(existing)
    for a in new:
        if (a.target_kind, a.target, a.name) not in seen:
            seen.add((a.target_kind, a.target, a.name))
            out.append(a)
    return out


# ------------------------------------------------------------- the stage
class RelateStage(Stage):
    """Attributes, per-frame relations and track relations of ``task.dsg``.

    Runs after detection and tracking; needs ``task.images`` for colours
    (without them, colour is skipped). Detector-given attributes win over
    computed ones of the same name.
    """

    name = "relate"
    config_class = RelateConfig
    needs = ("dsg",)
    uses = ("images",)
    produces = ("dsg",)

    def __init__(self, cfg: Optional[RelateConfig] = None):
        super().__init__(cfg)
        self.prior = None

    def preflight(self) -> None:
        if self.cfg.use_prior and self.cfg.prior_path and not Path(self.cfg.prior_path).is_file():
            raise UserError(f"relate.prior_path {self.cfg.prior_path} does not exist: give a predicate-prior "
                            "JSON (scripts/build_predicate_prior.py writes one) or leave it empty")

    def setup(self) -> None:
        if self.cfg.use_prior:
            from stages.predicate_prior import PRIOR_PATH, PredicatePrior
            self.prior = PredicatePrior.load(self.cfg.prior_path or PRIOR_PATH)

    def process_one(self, task: VideoTask) -> VideoTask:
        dsg = task.dsg
        attributes = detection_attributes(dsg, task.images, self.cfg.attributes)
        times = [f.timestamp for f in dsg.frames]
        views = track_views(dsg)
        speeds = {tid: track_speed(view, times) for tid, view in views.items()}
        attributes += track_motion(views, speeds, self.cfg)
        dsg.attributes = merge_attributes(dsg.attributes, attributes)
        by_frame: dict[int, list[int]] = defaultdict(list)
        for i, det in enumerate(dsg.detections):
            by_frame[det.frame].append(i)
        aspect = dsg.meta.width / dsg.meta.height if dsg.meta.width > 0 and dsg.meta.height > 0 else 1.0
        dsg.relations = [r for f in sorted(by_frame)
                         for r in frame_relations(dsg.detections, by_frame[f], self.cfg, self.prior, aspect)]
        dsg.track_relations = temporal_relations(dsg, self.cfg, speeds)
        return task
