"""Typed in-memory records for the three scene graphs and the failure record.

These dataclasses are the single source of truth for the on-disk format: the
Arrow schemas in :mod:`schemas.arrow` are derived from their type hints, so a
field added here is a column there.

Conventions (every producer and consumer relies on them):

* Boxes are ``(x1, y1, x2, y2)`` normalised to ``[0, 1]`` by frame width/height.
* ``Detection.frame`` and ``Relation.frame`` index ``DynamicSceneGraph.frames``
  (the *sampled* frames), not the video's native frame numbers; the native
  number is ``Frame.index``.
* ``Relation.subject``/``object`` index ``DynamicSceneGraph.detections``.
* ``TrackRelation.subject``/``object`` and ``CrossLink.track_id`` are
  ``Track.id`` values; ``Detection.track_id`` is ``-1`` until tracking ran.
* ``TextNode.id`` equals its position in ``TextSceneGraph.nodes``;
  ``TextEdge.src``/``dst`` are node ids.
* Dense features are not held here: see :class:`SampleFeatures`.

Example::

    >>> tsg = TextSceneGraph(caption_id="v1#0", text="a man runs quickly",
    ...     nodes=[TextNode(0, "object", "man", "man", (2, 5)),
    ...            TextNode(1, "relation", "runs", "run", (6, 10)),
    ...            TextNode(2, "pred_attribute", "quickly", "quickly", (11, 18))],
    ...     edges=[TextEdge(0, 1, "subj_pred"), TextEdge(1, 2, "pred_adv")])
    >>> tsg.objects()[0].label
    'man'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

Box = tuple[float, float, float, float]
Span = tuple[int, int]

TEXT_NODE_KINDS = ("object", "attribute", "relation", "pred_attribute")
TEXT_EDGE_KINDS = ("obj_attr", "subj_pred", "pred_obj", "pred_adv")
ATTRIBUTE_TARGETS = ("detection", "track")


# ----------------------------------------------------------------- TSG
@dataclass
class TextNode:
    """A node of a textual scene graph; ``kind`` is one of ``TEXT_NODE_KINDS``.

    ``span`` is the character range ``[start, end)`` in the caption text;
    ``count`` is the number of instances an object stands for ("two dogs" → 2).
    ``negated`` marks a relation or attribute the caption denies ("the cat does
    not jump", "the car is not red"): ``label``/``lemma`` stay the positive
    words, and the fact must never be read as holding. Objects are never
    negated (a caption's "nobody" or "nothing" gives no object at all).
    """

    id: int
    kind: str
    label: str
    lemma: str
    span: Span
    count: int = 1
    negated: bool = False


@dataclass
class TextEdge:
    """A typed edge; ``kind`` is one of ``TEXT_EDGE_KINDS``.

    Directions: object→attribute, subject→predicate, predicate→object,
    predicate→adverb (``pred_attribute`` node).
    """

    src: int
    dst: int
    kind: str


@dataclass
class TextSceneGraph:
    """The TSG of one caption; ``start``/``end`` are seconds, or None."""

    caption_id: str
    text: str
    nodes: list[TextNode] = field(default_factory=list)
    edges: list[TextEdge] = field(default_factory=list)
    start: Optional[float] = None
    end: Optional[float] = None

    def objects(self) -> list[TextNode]:
        return [n for n in self.nodes if n.kind == "object"]

    def predicates(self) -> list[TextNode]:
        return [n for n in self.nodes if n.kind == "relation"]


# ----------------------------------------------------------------- DSG
@dataclass
class VideoMeta:
    """Probed container/stream facts; ``duration`` in seconds, ``fps`` native."""

    path: str
    duration: float
    fps: float
    width: int
    height: int
    codec: str
    num_frames: int = -1


@dataclass
class Frame:
    """A sampled frame: native frame ``index`` and presentation ``timestamp`` (s)."""

    index: int
    timestamp: float


@dataclass
class Detection:
    """One box on one sampled frame (``frame`` indexes ``DynamicSceneGraph.frames``)."""

    frame: int
    box: Box
    label: str
    score: float
    track_id: int = -1


@dataclass
class Attribute:
    """``name=value`` (e.g. ``color=red``, ``motion=moving``, ``speed=fast``).

    ``target_kind`` is ``"detection"`` (``target`` indexes detections) or
    ``"track"`` (``target`` is a track id).
    """

    target_kind: str
    target: int
    name: str
    value: str
    score: float = 1.0


@dataclass
class Relation:
    """A per-frame predicate between two detections of the same sampled frame."""

    frame: int
    subject: int
    object: int
    predicate: str
    score: float


@dataclass
class Track:
    """A temporal coreference chain: the detections sharing ``id``.

    ``first_frame``/``last_frame`` index ``DynamicSceneGraph.frames``.
    """

    id: int
    label: str
    first_frame: int
    last_frame: int


@dataclass
class TrackRelation:
    """A temporal predicate between tracks (``approaching``, ``entering``…).

    ``object`` is ``-1`` for unary events such as ``entering``/``leaving``.
    """

    subject: int
    object: int
    predicate: str
    first_frame: int
    last_frame: int
    score: float


@dataclass
class Shot:
    """A span of the video between two cuts: native frame numbers ``first_index``..``last_index``
    (inclusive, as ``Frame.index``) and those frames' times ``start``/``end`` (seconds)."""

    first_index: int
    last_index: int
    start: float
    end: float


@dataclass
class DynamicSceneGraph:
    """The DSG of one video. ``shots`` cover the video back to back (empty: not segmented)."""

    video_id: str
    meta: VideoMeta
    frames: list[Frame] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    tracks: list[Track] = field(default_factory=list)
    track_relations: list[TrackRelation] = field(default_factory=list)
    shots: list[Shot] = field(default_factory=list)

    def frame_shots(self) -> list[int]:
        """The shot of each sampled frame (its position in ``shots``; all 0 without shots)."""
        firsts = [shot.first_index for shot in self.shots[1:]]
        return [int(np.searchsorted(firsts, frame.index, side="right")) for frame in self.frames]


# ----------------------------------------------------------------- HSG
@dataclass
class CrossLink:
    """A TSG object node ↔ DSG track link with its score and the scorer's name."""

    text_node: int
    track_id: int
    score: float
    method: str


@dataclass
class HolisticSceneGraph:
    """One video–caption pair: the caption's TSG, links into the video's DSG
    (held once per :class:`VideoSample`) and the caption's sampled-frame window
    ``[first, last]`` (inclusive; ``(0, len(frames) - 1)`` when untimed).

    ``negative_of`` is None for a real caption; for a generated hard negative
    it is the index (in ``VideoSample.hsgs``) of the caption it perturbs and
    ``negative_type`` says how (``swap_subject_object``, ``reverse_order``,
    ``change_relation``, ``change_adverb``).
    """

    tsg: TextSceneGraph
    links: list[CrossLink] = field(default_factory=list)
    frame_window: tuple[int, int] = (0, 0)
    negative_of: Optional[int] = None
    negative_type: Optional[str] = None


@dataclass
class VideoSample:
    """The unit of work and of storage: one video, its DSG and all its captions.

    ``key`` is the sample's deterministic id (safe as a file name);
    ``source`` names the dataset it came from.
    """

    key: str
    source: str
    dsg: DynamicSceneGraph
    hsgs: list[HolisticSceneGraph] = field(default_factory=list)


@dataclass
class FailureRecord:
    """A sample that did not make it: which stage failed and why."""

    key: str
    stage: str
    error_type: str
    message: str
    video: str = ""


# ----------------------------------------------------------- features
# Every dense array a shard holds, in one place: its name, what its rows follow, and its dtype
# (float16 unless listed in FEATURE_DTYPES). The store, the Arrow ``features`` column, the manifest's
# ``feature_dims`` and docs/format.md derive from these.
FEATURE_ARRAYS = ("frame", "detection", "text_node", "caption", "caption_token", "token_span", "frame_patch")
FEATURE_DTYPES = {"token_span": "int32"}
# The host features: what an SG-free model (the exported host) reads. Everything else is scene-graph input.
HOST_FEATURES = ("frame", "caption", "caption_token", "token_span", "frame_patch")
TOKEN_SPAN_COLUMNS = ("caption", "start", "end")   # token_span's columns: caption row, character span
# Arrays a producer may leave out (a build without a token/patch host, test doubles), with their width then.
OPTIONAL_FEATURES = {"caption_token": 0, "token_span": len(TOKEN_SPAN_COLUMNS), "frame_patch": 0}


def feature_dtype(name: str) -> str:
    return FEATURE_DTYPES.get(name, "float16")


@dataclass
class SampleFeatures:
    """Dense per-sample arrays, stored in the shard's Zarr group (float16; ``token_span`` int32).

    Rows align with records: ``frame[i]`` ↔ ``dsg.frames[i]``;
    ``detection[i]`` ↔ ``dsg.detections[i]``; ``text_node`` holds the nodes of
    every HSG's TSG, caption after caption, in node order; ``caption[j]`` ↔
    ``hsgs[j]`` (sentence embedding). Host token and patch features:
    ``caption_token`` holds the text encoder's last hidden state of every token
    of every caption, caption after caption; ``token_span[r]`` =
    ``(caption j, char start, char end)`` of ``caption_token[r]`` in
    ``hsgs[j].tsg.text`` (``(j, 0, 0)`` for special tokens); ``frame_patch``
    holds ``G × G`` cells of the visual backbone's final map per frame, frame
    after frame, cells row-major (``G`` = ``embed_visual.grid``, zero rows when
    0). An array may have zero rows.
    """

    frame: np.ndarray
    detection: np.ndarray
    text_node: np.ndarray
    caption: np.ndarray
    caption_token: np.ndarray = None
    token_span: np.ndarray = None
    frame_patch: np.ndarray = None

    def __post_init__(self):
        for name, width in OPTIONAL_FEATURES.items():   # left out = no rows
            if getattr(self, name) is None:
                setattr(self, name, np.zeros((0, width), feature_dtype(name)))

    def as_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in FEATURE_ARRAYS}

    @staticmethod
    def empty(dims: dict[str, int]) -> "SampleFeatures":
        """Zero rows of every array; an optional array missing from ``dims`` gets its default width."""
        return SampleFeatures(**{n: np.zeros((0, dims.get(n, OPTIONAL_FEATURES.get(n, 0))), feature_dtype(n))
                                 for n in FEATURE_ARRAYS})
