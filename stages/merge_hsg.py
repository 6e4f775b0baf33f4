"""HSG merge: each caption's TSG + links from its objects to the video's DSG tracks.

For every TSG in ``task.tsgs`` the stage builds a :class:`HolisticSceneGraph`
with the caption's sampled-frame window and its cross-modal links.

**Frame window.** The sampled frames partition the video's time: an instant
belongs to its nearest sampled frame (frame ``i`` covers the half-way points
to its neighbours; the first starts at 0 s, the last ends at the video's
duration). A caption's ``[start, end]`` is clamped to ``[0, duration]``
(``start > end`` is swapped; a missing ``start`` is 0, a missing ``end`` is
the video's end) and the window is every frame whose cover it touches, so it
is never empty. Untimed captions (neither time given) get the whole video.
**Shots**: a window that reaches across a cut into a shot for less than
``min_shot_overlap_s`` of the caption's interval (an annotator's sloppy
boundary) loses that shot's frames, unless nothing would remain.
A caption that starts after the video ended clamps to the end: its window
is the last frame. A video with no sampled frame is a ``no_frames`` failure.

**Link score** of TSG object ``o`` and track ``t`` (deterministic):

* ``label`` — the scorer's phrase↔label similarity in ``[0, 1]`` (MiniLM
  by default; see :mod:`stages.linking`); the object's lemma against the
  track's label. A track is a candidate only if this is at least
  ``min_label_similarity`` and within ``label_margin`` of the phrase's
  best match among the *known labels* (the video's track labels plus
  ``known_labels``: by default :data:`KNOWN_LABELS`, the COCO classes, the
  ``lite`` detector's names, the synthetic shapes and common scene/body
  words; add your detector's vocabulary). Bare MiniLM similarity cannot
  tell "boy"→person (0.59) from "room"→person (0.58); the nearest known
  label can: "boy" is nearest to person, "room" to room, "table" to table,
  "circle" to circle (not the square that happens to be in the video).
* ``attributes`` — for each name in ``attribute_names`` (colour, size)
  where both sides have a value: 1 if the track's value is among the
  object's attribute words (negated attributes, "not red", are not among
  them), else 0; averaged. The track's value is its
  track-level attribute when there is one, else the majority vote of its
  detections' attributes (ties: higher total score, then alphabetical).
* ``time`` — overlap of the caption's interval with the track's lifespan
  (the covers of its first..last frame), as intersection / the shorter
  of the two, so a short track inside a long caption scores 1. With
  ``require_time_overlap`` a timed caption never links a track outside it.

``score = Σ wₖ·sₖ / Σ wₖ`` over the components that apply (no colour on
either side, or an untimed caption, drop that term), so a score means the
same whatever evidence exists. An object keeps its best tracks with
``score ≥ link_threshold``: at most ``max_links_per_object``, or the
object's ``count`` ("two dogs") when ``count_aware``. ``CrossLink.method``
names what scored the link, e.g. ``"minilm+color+time"``.

**Choosing among tracks of one kind.** When an object (linked to one track) has
several candidates of its best candidate's label, a spatial word picks one by
position ("the left bottle": ``+spatial``, :func:`pick_by_position`); without
one, the caption's relations do ("a man holds a bottle": the bottle track the
DSG says the person track is holding in the caption's window, by a predicate
that shows the caption's: ``+relation``, :func:`pick_by_relation`).

Example::

    stage = MergeHSGStage(MergeHSGConfig(link_threshold=0.6))
    stage.setup()
    stage.process_batch([task])   # task.hsgs[j] ↔ task.tsgs[j]
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from schemas.errors import SampleError, UserError
from schemas.records import (CrossLink, DynamicSceneGraph, Frame, HolisticSceneGraph, TextNode, TextSceneGraph,
                             Track)
from stages.base import CaptionInput, Resources, Stage, VideoTask
from stages.embed_visual import crop_box
from stages.predicate_prior import supporting_geometry
from stages.relate import reverse_predicates
from stages.linking import (LinkScorer, LinkScorerConfig, TrackEvidence, build_link_scorer, link_scorer_class,
                            normalize_label)

# Words a caption uses for each agreement attribute, and the spellings they fold to;
# values a DSG reports for that attribute are always accepted too.
ATTRIBUTE_WORDS: dict[str, frozenset[str]] = {
    "color": frozenset("red orange yellow green blue purple pink brown black white gray silver gold "
                       "beige tan navy violet cyan magenta teal maroon".split()),
    "size": frozenset("small large".split()),
}
# Things captions name: COCO-80, the lite detector's names, the synthetic shapes, and
# scene/body words that must not fall back onto the nearest object class.
KNOWN_LABELS: tuple[str, ...] = (
    'airplane', 'apple', 'arm', 'backpack', 'bag', 'ball', 'banana', 'barrel', 'baseball bat',
    'baseball glove', 'basket', 'bear', 'bed', 'bench', 'bicycle', 'bird', 'boat', 'book', 'bookcase',
    'bottle', 'bowl', 'box', 'broccoli', 'bucket', 'building', 'burger', 'bus', 'cake', 'car', 'carrot',
    'cart', 'cat', 'cell phone', 'chair', 'circle', 'clock', 'coat', 'couch', 'cow', 'cup',
    'dining table', 'dog', 'donut', 'door', 'elephant', 'face', 'fence', 'field', 'fire hydrant',
    'floor', 'fork', 'frisbee', 'giraffe', 'glass', 'grass', 'ground', 'guitar', 'hair', 'hair drier',
    'hand', 'handbag', 'hat', 'head', 'helmet', 'horse', 'hot dog', 'jeans', 'keyboard', 'kite',
    'knife', 'lamp', 'laptop', 'leg', 'microwave', 'mirror', 'monitor', 'motorcycle', 'mouse',
    'orange', 'oven', 'parking meter', 'person', 'phone', 'piano', 'pillow', 'pizza', 'plate', 'pot',
    'potted plant', 'racket', 'refrigerator', 'remote', 'road', 'room', 'sand', 'sandwich',
    'scissors', 'sheep', 'shirt', 'shoe', 'sign', 'sink', 'skateboard', 'ski', 'skis', 'sky', 'snow',
    'snowboard', 'spoon', 'sports ball', 'square', 'stop sign', 'stove', 'street', 'suit', 'suitcase',
    'sunglasses', 'surfboard', 'table', 'teddy bear', 'television', 'tennis racket', 'tie', 'toaster',
    'toilet', 'toothbrush', 'traffic light', 'train', 'trash can', 'tree', 'triangle', 'truck', 'tv',
    'umbrella', 'vase', 'wall', 'water', 'wheel', 'window', 'wine glass', 'zebra',
)
WORD_ALIASES: dict[str, str] = {"grey": "gray", "colour": "color", "big": "large", "huge": "large",
                                "tiny": "small", "little": "small"}


@dataclass
class MergeHSGConfig:
    """Link scoring knobs (see the module doc for how they combine)."""

    scorer: LinkScorerConfig = field(default_factory=LinkScorerConfig)
    label_weight: float = 0.6
    attribute_weight: float = 0.25
    time_weight: float = 0.15
    attribute_names: tuple[str, ...] = ("color", "size")
    min_label_similarity: float = 0.55
    label_margin: float = 0.05
    known_labels: tuple[str, ...] = KNOWN_LABELS
    link_threshold: float = 0.5
    max_links_per_object: int = 1
    count_aware: bool = True
    require_time_overlap: bool = True
    min_shot_overlap_s: float = 0.5

    def __post_init__(self):
        if isinstance(self.scorer, dict):
            self.scorer = LinkScorerConfig(**self.scorer)
        self.attribute_names = tuple(self.attribute_names)
        self.known_labels = tuple(self.known_labels)
        weights = (self.label_weight, self.attribute_weight, self.time_weight)
        if min(weights) < 0 or self.label_weight <= 0:
            raise UserError(f"merge weights must be ≥ 0 with label_weight > 0, got {weights}")
        for name in ("min_label_similarity", "label_margin", "link_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"merge {name} must be within [0, 1], got {getattr(self, name)}")
        if self.max_links_per_object < 1:
            raise UserError(f"max_links_per_object must be ≥ 1, got {self.max_links_per_object}")


# ------------------------------------------------------------------ time
class Timeline:
    """Sampled frames as a partition of the video's time (see the module doc)."""

    def __init__(self, frames: list[Frame], duration: float = 0.0):
        if not frames:
            raise SampleError("no_frames", "the video has no sampled frame to anchor captions to")
        times = np.array([f.timestamp for f in frames], np.float64)
        if np.any(np.diff(times) < 0):
            raise SampleError("unsorted_frames", "sampled frame timestamps are not in order")
        step = float(np.median(np.diff(times))) if len(times) > 1 else (duration if duration > 0 else 1.0)
        self.end = max(float(duration) if duration and duration > 0 else 0.0, float(times[-1]) + step / 2)
        self.bounds = np.concatenate([[min(0.0, float(times[0]))], (times[1:] + times[:-1]) / 2, [self.end]])
        self.count = len(frames)

    def caption_interval(self, start: Optional[float], end: Optional[float]) -> Optional[tuple[float, float]]:
        """The clamped ``(start, end)`` in seconds, or None when the caption is untimed."""
        start = None if start is None or math.isnan(start) else float(start)
        end = None if end is None or math.isnan(end) else float(end)
        if start is None and end is None:
            return None
        s = start if start is not None else 0.0
        e = end if end is not None else self.end
        s, e = min(s, e), max(s, e)
        lo, hi = float(self.bounds[0]), self.end
        return min(max(s, lo), hi), min(max(e, lo), hi)

    def window(self, interval: Optional[tuple[float, float]]) -> tuple[int, int]:
        """Inclusive sampled-frame range covering ``interval`` (whole video for None)."""
        last = self.count - 1
        if interval is None:
            return 0, last
        s, e = interval
        if e <= s:
            i = int(np.searchsorted(self.bounds, s, side="right")) - 1
            i = min(max(i, 0), last)
            return i, i
        first = int(np.searchsorted(self.bounds[1:], s, side="right"))
        final = int(np.searchsorted(self.bounds[:-1], e, side="left")) - 1
        first, final = min(max(first, 0), last), min(max(final, 0), last)
        return min(first, final), max(first, final)

    def span(self, first_frame: int, last_frame: int) -> tuple[float, float]:
        """Seconds covered by sampled frames ``first_frame..last_frame``."""
        first = min(max(first_frame, 0), self.count - 1)
        last = min(max(last_frame, first), self.count - 1)
        return float(self.bounds[first]), float(self.bounds[last + 1])


def interval_overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    """|a ∩ b| / min(|a|, |b|) in ``[0, 1]``; a zero-length interval scores 1 if it lies in the other."""
    (a0, a1), (b0, b1) = a, b
    shorter = min(a1 - a0, b1 - b0)
    if shorter <= 0:
        return 1.0 if max(a0, b0) <= min(a1, b1) else 0.0
    return max(0.0, min(a1, b1) - max(a0, b0)) / shorter


def caption_frame_window(frames: list[Frame], duration: float, start: Optional[float],
                         end: Optional[float]) -> tuple[int, int]:
    """The HSG frame window of a caption ``[start, end]`` (seconds or None) over ``frames``."""
    timeline = Timeline(frames, duration)
    return timeline.window(timeline.caption_interval(start, end))


def trim_to_shots(window: tuple[int, int], interval: Optional[tuple[float, float]],
                  dsg: DynamicSceneGraph, min_overlap_s: float) -> tuple[int, int]:
    """``window`` without the frames of shots the caption's interval enters for less than
    ``min_overlap_s`` seconds (never emptied; untimed captions and unsegmented videos unchanged)."""
    if interval is None or len(dsg.shots) < 2:
        return window
    shot_of = dsg.frame_shots()
    inside = [f for f in range(window[0], window[1] + 1)
              if min(interval[1], dsg.shots[shot_of[f]].end) - max(interval[0], dsg.shots[shot_of[f]].start)
              >= min(min_overlap_s, interval[1] - interval[0])]
    return (inside[0], inside[-1]) if inside else window


# ------------------------------------------------------------------ attributes
def _fold(word: str) -> str:
    word = normalize_label(word)
    return WORD_ALIASES.get(word, word)


def track_attributes(dsg: DynamicSceneGraph, name: str) -> dict[int, str]:
    """Track id → its ``name`` value: track-level when present, else the detections' majority."""
    name = _fold(name)
    own: dict[int, tuple[float, str]] = {}
    votes: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0, 0.0]))
    for attr in dsg.attributes:
        if _fold(attr.name) != name:
            continue
        value = _fold(attr.value)
        if attr.target_kind == "track":
            candidate = (-float(attr.score), value)   # highest score, then alphabetical
            if attr.target not in own or candidate < own[attr.target]:
                own[attr.target] = candidate
        elif attr.target_kind == "detection" and 0 <= attr.target < len(dsg.detections):
            track_id = dsg.detections[attr.target].track_id
            if track_id >= 0:
                tally = votes[track_id][value]
                tally[0] += 1
                tally[1] += attr.score
    out = {track_id: min(tally.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[0]
           for track_id, tally in votes.items()}
    out.update({track_id: value for track_id, (_, value) in own.items()})
    return out


def object_attribute_words(tsg: TextSceneGraph, node_id: int) -> set[str]:
    """Folded words of the attribute nodes attached to object ``node_id`` (``obj_attr`` edges).

    A negated attribute ("the car is not red") is no evidence for a red track, so it is left out.
    """
    words: set[str] = set()
    for edge in tsg.edges:
        if edge.kind == "obj_attr" and edge.src == node_id and 0 <= edge.dst < len(tsg.nodes):
            node = tsg.nodes[edge.dst]
            if node.negated:
                continue
            for text in {node.lemma, node.label}:
                words.add(_fold(text))
                words.update(_fold(w) for w in normalize_label(text).split())
    words.discard("")
    return words


# ------------------------------------------------------------------ linking
@dataclass
class TrackFacts:
    """What the linker knows about one track, gathered once per video; ``boxes`` by sampled frame."""

    track: Track
    span: tuple[float, float]
    attributes: dict[str, str]
    boxes: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)

    def position(self, window: Optional[tuple[int, int]] = None) -> Optional[tuple[float, float, float]]:
        """Mean box centre ``(x, y)`` and mean bottom edge over the frames in ``window`` (all frames
        when it holds none of them); None for a track without boxes."""
        boxes = [b for f, b in self.boxes.items() if window is None or window[0] <= f <= window[1]] or \
            list(self.boxes.values())
        if not boxes:
            return None
        array = np.asarray(boxes, np.float64)
        return (float((array[:, 0] + array[:, 2]).mean() / 2), float((array[:, 1] + array[:, 3]).mean() / 2),
                float(array[:, 3].mean()))


def gather_tracks(dsg: DynamicSceneGraph, timeline: Timeline, names: tuple[str, ...]) -> list[TrackFacts]:
    """The video's tracks sorted by id, with lifespans, agreement attributes and boxes."""
    per_name = {name: track_attributes(dsg, name) for name in names}
    boxes: dict[int, dict[int, tuple]] = {}
    for det in dsg.detections:
        if det.track_id >= 0:
            boxes.setdefault(det.track_id, {}).setdefault(det.frame, tuple(det.box))
    return [TrackFacts(track, timeline.span(track.first_frame, track.last_frame),
                       {name: per_name[name][track.id] for name in names if track.id in per_name[name]},
                       boxes.get(track.id, {}))
            for track in sorted(dsg.tracks, key=lambda t: t.id)]


# ------------------------------------------------------------------ spatial words
# word → canonical spatial reference ("the left bottle", "the bottle on the left", "the one in front")
SPATIAL_WORDS = {"left": "left", "leftmost": "left", "right": "right", "rightmost": "right",
                 "middle": "middle", "center": "middle", "centre": "middle", "central": "middle",
                 "top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom",
                 "front": "front", "foreground": "front", "back": "back", "rear": "back", "background": "back",
                 "first": "first", "second": "second", "third": "third", "last": "last", "other": "other"}
_SPATIAL_PREPOSITIONS = ("on", "in", "at", "to")   # "the one on the left", "in the middle", "in front"


def spatial_reference(tsg: TextSceneGraph, node_id: int) -> Optional[str]:
    """The spatial word that picks object ``node_id`` among its kind: in its own phrase ("left
    bottle"), among its attributes, or as ``on/in/at the <word>`` after it ("the one on the left");
    None when there is none."""
    node = tsg.nodes[node_id]
    words = normalize_label(node.label).split()[:-1] + sorted(object_attribute_words(tsg, node_id))
    for edge in tsg.edges:
        if edge.kind == "subj_pred" and edge.src == node_id and tsg.nodes[edge.dst].lemma in _SPATIAL_PREPOSITIONS:
            words += [normalize_label(tsg.nodes[e.dst].lemma) for e in tsg.edges
                      if e.kind == "pred_obj" and e.src == edge.dst]
    return next((SPATIAL_WORDS[w] for w in words if w in SPATIAL_WORDS), None)


def pick_by_position(reference: str, candidates: list[TrackFacts], window: Optional[tuple[int, int]],
                     taken: set[int]) -> Optional[int]:
    """The track id among ``candidates`` (two or more of one kind) that ``reference`` names by its
    position in the caption's frame ``window``: left/right/top/bottom by the mean box centre, middle
    the median by x, front/back by the bottom edge (nearer the camera is lower), first/second/third/last
    by first appearance then x, other: the first not already linked by this caption (``taken``)."""
    placed = [(facts, facts.position(window)) for facts in candidates]
    placed = [(facts, pos) for facts, pos in placed if pos is not None]
    if len(placed) < 2:
        return None
    by_x = sorted(placed, key=lambda p: (p[1][0], p[0].track.id))
    order = {"left": by_x, "right": by_x[::-1], "middle": [by_x[(len(by_x) - 1) // 2]],
             "top": sorted(placed, key=lambda p: p[1][1]), "bottom": sorted(placed, key=lambda p: -p[1][1]),
             "front": sorted(placed, key=lambda p: -p[1][2]), "back": sorted(placed, key=lambda p: p[1][2])}
    if reference in order:
        return order[reference][0][0].track.id
    by_time = sorted(placed, key=lambda p: (p[0].track.first_frame, p[1][0], p[0].track.id))
    ordinal = {"first": 0, "second": 1, "third": 2, "last": len(by_time) - 1}
    if reference in ordinal:
        return by_time[ordinal[reference]][0].track.id if ordinal[reference] < len(by_time) else None
    rest = [p for p in by_time if p[0].track.id not in taken]
    return rest[0][0].track.id if reference == "other" and rest and len(rest) < len(by_time) else None


def link_objects(tsg: TextSceneGraph, tracks: list[TrackFacts], label_sims: np.ndarray, best_known: np.ndarray,
                 interval: Optional[tuple[float, float]], vocab: dict[str, set[str]], cfg: MergeHSGConfig,
                 scorer_name: str, window: Optional[tuple[int, int]] = None,
                 statements: Sequence[Statement] = ()) -> list[CrossLink]:
    """Links of ``tsg``'s object nodes.

    An object named by a spatial word ("the left bottle", "the one on the right", "the second
    car") with several candidate tracks of one label keeps only the track that word picks by
    position in the caption's frame ``window`` (:func:`pick_by_position`; method ``+spatial``).
    Else an object the caption relates to another ("a man holds a bottle") keeps only the candidate
    the DSG's ``statements`` relate to a candidate of the other in the window with a predicate that
    shows the caption's (:func:`pick_by_relation`; method ``+relation``).

    ``label_sims[k, t]`` is object ``k``'s similarity to ``tracks[t]`` and
    ``best_known[k]`` its best similarity to any known label; ``vocab[name]``
    the words that count as values of attribute ``name``.
    """
    links: list[CrossLink] = []
    by_id = {facts.track.id: facts for facts in tracks}
    candidates = {node.id: object_candidates(tsg, node, k, tracks, label_sims, best_known, interval, vocab, cfg,
                                             scorer_name)
                  for k, node in enumerate(tsg.objects())}
    for node in tsg.objects():
        scored = candidates[node.id]
        limit = max(cfg.max_links_per_object, node.count if cfg.count_aware else 1)
        if limit == 1 and len(scored) > 1:
            best_label = by_id[max(scored)[1]].track.label
            same_kind = [t for _, t, _ in scored if by_id[t].track.label == best_label]
            reference = spatial_reference(tsg, node.id)
            if reference is not None:
                chosen = pick_by_position(reference, [by_id[t] for t in same_kind], window,
                                          {link.track_id for link in links})
                tag = "+spatial"
            else:
                chosen, tag = pick_by_relation(tsg, node.id, same_kind, candidates, statements, window), "+relation"
            if chosen is not None:
                scored = [(score, t, method + tag) for score, t, method in scored if t == chosen]
        for score, track_id, method in sorted(scored, key=lambda s: (-s[0], s[1]))[:limit]:
            links.append(CrossLink(node.id, track_id, round(score, 6), method))
    return links


def object_candidates(tsg: TextSceneGraph, node, k: int, tracks: list[TrackFacts], label_sims: np.ndarray,
                      best_known: np.ndarray, interval: Optional[tuple[float, float]], vocab: dict[str, set[str]],
                      cfg: MergeHSGConfig, scorer_name: str) -> list[tuple[float, int, str]]:
    """``(score, track id, method)`` of every track object ``node`` (row ``k``) may link (module docstring)."""
    words = object_attribute_words(tsg, node.id)
    wanted = {name: words & vocab[name] for name in cfg.attribute_names}
    scored: list[tuple[float, int, str]] = []
    for t, facts in enumerate(tracks):
        label = float(label_sims[k, t])
        if label < cfg.min_label_similarity or label < best_known[k] - cfg.label_margin:
            continue
        total, weight, method = cfg.label_weight * label, cfg.label_weight, [scorer_name]
        agreements = [(name, 1.0 if facts.attributes[name] in wanted[name] else 0.0)
                      for name in cfg.attribute_names if wanted[name] and name in facts.attributes]
        if agreements and cfg.attribute_weight > 0:
            total += cfg.attribute_weight * sum(a for _, a in agreements) / len(agreements)
            weight += cfg.attribute_weight
            method += [name for name, _ in agreements]
        if interval is not None:
            overlap = interval_overlap(interval, facts.span)
            if cfg.require_time_overlap and overlap <= 0:
                continue
            if cfg.time_weight > 0:
                total += cfg.time_weight * overlap
                weight += cfg.time_weight
                method.append("time")
        score = total / weight
        if score >= cfg.link_threshold:
            scored.append((score, facts.track.id, "+".join(method)))
    return scored


# ------------------------------------------------------------------ relations
# (subject track, object track, predicate, first frame, last frame): what the DSG says of two tracks
Statement = tuple[int, int, str, int, int]
# Track events that show a caption verb ("carry" ← carrying); per-frame predicates go by supporting_geometry.
EVENT_VERBS: dict[str, tuple[str, ...]] = {"carry": ("carrying",), "hold": ("carrying",), "lift": ("carrying",),
                                           "approach": ("approaching",), "pass": ("passing",)}


def track_statements(dsg: DynamicSceneGraph) -> list[Statement]:
    """Every relation the DSG states between two tracks, per-frame and per-track, read both ways
    (:func:`stages.relate.reverse_predicates`: ``A left of B`` also says ``B right of A``)."""
    track_of = [det.track_id for det in dsg.detections]
    said = [(track_of[r.subject], track_of[r.object], r.predicate, r.frame, r.frame) for r in dsg.relations]
    said += [(r.subject, r.object, r.predicate, r.first_frame, r.last_frame) for r in dsg.track_relations]
    out: list[Statement] = []
    for a, b, predicate, first, last in said:
        if a >= 0 and b >= 0:
            out.append((a, b, predicate, first, last))
            out += [(b, a, q, first, last) for q in sorted(reverse_predicates(predicate))]
    return out


def shows(caption_predicate: str, predicate: str) -> bool:
    """Whether the DSG's ``predicate`` shows the caption's: the same words (the FREQ prior's "hold"), a
    geometric predicate that can show it (:func:`stages.predicate_prior.supporting_geometry`: "hold" ←
    holding, "next to" ← near), or a track event of its verb (:data:`EVENT_VERBS`)."""
    words = caption_predicate.split()
    return bool(words) and (predicate == caption_predicate or predicate in supporting_geometry(caption_predicate)
                            or predicate in EVENT_VERBS.get(words[0], ()))


def caption_relations(tsg: TextSceneGraph, node_id: int) -> list[tuple[TextNode, int, bool]]:
    """``(relation node, the other object's id, node_id is the subject)`` of every relation of ``node_id``."""
    out = []
    for edge in tsg.edges:
        if edge.kind == "subj_pred" and edge.src == node_id:
            out += [(tsg.nodes[edge.dst], e.dst, True) for e in tsg.edges if e.kind == "pred_obj" and e.src == edge.dst]
        elif edge.kind == "pred_obj" and edge.dst == node_id:
            out += [(tsg.nodes[edge.src], e.src, False) for e in tsg.edges if e.kind == "subj_pred" and e.dst == edge.src]
    return out


def pick_by_relation(tsg: TextSceneGraph, node_id: int, options: list[int],
                     candidates: dict[int, list[tuple[float, int, str]]], statements: Sequence[Statement],
                     window: Optional[tuple[int, int]]) -> Optional[int]:
    """The one track among ``options`` (candidates of object ``node_id``) that the DSG relates, inside the
    caption's frame ``window``, to a candidate of the object the caption relates it to, by a predicate that
    :func:`shows` the caption's ("a man holds a bottle": the bottle the person track is holding); most
    statements wins; None on a tie or when the DSG says nothing of them."""
    support: dict[int, int] = defaultdict(int)
    for relation, other, is_subject in caption_relations(tsg, node_id):
        if relation.negated or relation.kind != "relation":
            continue
        others = {t for _, t, _ in candidates.get(other, [])}
        caption_predicate = relation.lemma or relation.label
        for a, b, predicate, first, last in statements:
            if window is not None and (last < window[0] or first > window[1]):
                continue
            mine, theirs = (a, b) if is_subject else (b, a)
            if mine in options and theirs in others and mine != theirs and shows(caption_predicate, predicate):
                support[mine] += 1
    if not support:
        return None
    most = max(support.values())
    top = [t for t, n in support.items() if n == most]
    return top[0] if len(top) == 1 else None


def object_phrase(tsg: TextSceneGraph, node_id: int) -> str:
    node = tsg.nodes[node_id]
    return node.lemma or node.label


class MergeHSGStage(Stage):
    """``task.dsg`` + ``task.tsgs`` → ``task.hsgs`` (one per TSG, same order).

    ``task.captions[j]`` (when given, aligned with ``task.tsgs``) carries the
    hard-negative fields into ``hsgs[j]``. Needs ``task.dsg`` with tracks.
    """

    name = "merge_hsg"
    config_class = MergeHSGConfig
    needs = ("dsg",)
    produces = ("hsgs",)

    def __init__(self, cfg: Optional[MergeHSGConfig] = None):
        super().__init__(cfg)
        self.scorer: Optional[LinkScorer] = None

    @property
    def uses(self) -> tuple[str, ...]:
        """``tsgs`` always; ``images`` only for a scorer that compares phrases with pixels."""
        return ("tsgs", "images") if link_scorer_class(self.cfg.scorer.name).needs_pixels else ("tsgs",)

    @property
    def resources(self) -> Resources:
        return Resources.for_device(self.cfg.scorer.device, self.cfg.scorer.threads, self.cfg.scorer.gpus)

    def setup(self) -> None:
        scorer = build_link_scorer(self.cfg.scorer)
        scorer.setup()
        if self.cfg.known_labels:   # embed the vocabulary now, not inside the first sample's time
            scorer.similarity(["object"], [TrackEvidence(-1, label) for label in self.cfg.known_labels])
        self.scorer = scorer

    def process_one(self, task: VideoTask) -> VideoTask:
        captions: list[Optional[CaptionInput]] = list(task.captions)
        if not captions:
            captions = [None] * len(task.tsgs)
        if len(captions) != len(task.tsgs):
            raise SampleError("misaligned_captions", f"{len(task.captions)} captions but {len(task.tsgs)} TSGs")
        dsg = task.dsg
        timeline = Timeline(dsg.frames, dsg.meta.duration if dsg.meta is not None else 0.0)
        tracks = gather_tracks(dsg, timeline, self.cfg.attribute_names)
        statements = track_statements(dsg)
        vocab = {name: set(ATTRIBUTE_WORDS.get(name, ())) | {facts.attributes[name] for facts in tracks
                                                          if name in facts.attributes}
                 for name in self.cfg.attribute_names}
        phrases = sorted({object_phrase(tsg, node.id) for tsg in task.tsgs for node in tsg.objects()})
        evidence = [TrackEvidence(f.track.id, f.track.label, self._crops(task, f.track.id)) for f in tracks]
        sims = best = None
        if phrases and tracks:
            sims = self.scorer.similarity(phrases, evidence)
            known = sorted({normalize_label(x) for x in self.cfg.known_labels} - {normalize_label(f.track.label)
                                                                                   for f in tracks})
            best = sims.max(axis=1)
            if known:   # a known label without a track is compared by its name alone
                extra = self.scorer.similarity(phrases, [TrackEvidence(-1, label) for label in known])
                best = np.maximum(best, extra.max(axis=1))
        row = {phrase: i for i, phrase in enumerate(phrases)}
        hsgs = []
        for tsg, caption in zip(task.tsgs, captions):
            start, end = tsg.start, tsg.end
            if start is None and end is None and caption is not None:
                start, end = caption.start, caption.end
            interval = timeline.caption_interval(start, end)
            objects = tsg.objects()
            rows = [row[object_phrase(tsg, n.id)] for n in objects]
            if sims is None:
                label_sims, best_known = np.zeros((len(objects), len(tracks)), np.float32), np.zeros(len(objects))
            else:
                label_sims, best_known = sims[rows], best[rows]
            window = trim_to_shots(timeline.window(interval), interval, dsg, self.cfg.min_shot_overlap_s)
            links = link_objects(tsg, tracks, label_sims, best_known, interval, vocab, self.cfg,
                                 self.scorer.name, window, statements)
            hsgs.append(HolisticSceneGraph(tsg, links, window,
                                           caption.negative_of if caption else None,
                                           caption.negative_type if caption else None))
        task.hsgs = hsgs
        return task

    def _crops(self, task: VideoTask, track_id: int) -> list[np.ndarray]:
        """RGB crops of the track's detections, only for scorers that read pixels."""
        if not getattr(self.scorer, "needs_pixels", False) or not task.images:
            return []
        return [crop_box(task.images[det.frame], det.box, 0.0) for det in task.dsg.detections
                if det.track_id == track_id and 0 <= det.frame < len(task.images)]
