"""Captions for a synthetic world: templated sentences, their gold TSGs and hard negatives.

Every event becomes an ActivityNet-style sentence with its ``[start, end]``
seconds; a spatial sentence describes where two objects are relative to each
other, and a sequence sentence joins two consecutive events ("..., then ...").
Templates vary verbs (moves / slides / glides), adverbs (quickly / rapidly /
slowly ...), voice ("is approached by") and coordination ("the red circle and
the blue square move left"). Object phrases use the colour detector's words:
the noun is the shape, the colour (and sometimes the size) an adjective.

Each sentence is built as a :class:`_Builder` that records, while the text is
written, the gold TSG nodes with their character spans and which world object
each object node refers to. Hard negatives are rebuilt from perturbed clause
specs (swap subject and object, reverse two events, change a relation or an
adverb), so their TSGs are exact too.

Example::

    caps = caption_world(world, rng)
    caps[0].text, caps[0].start, caps[0].end     # 'The red circle moves left quickly.', 1.25, 3.5
    caps[0].tsg.nodes[0].label, caps[0].refs       # 'red', {1: 0}
    [n.type for n in caps[0].negatives]            # ['change_relation', 'change_adverb']
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from pipeline.synthetic.world import Event, World, spatial_predicates
from schemas.records import TextEdge, TextNode, TextSceneGraph

NEGATIVE_TYPES = ("swap_subject_object", "reverse_order", "change_relation", "change_adverb")
ADVERBS = {"fast": ("quickly", "rapidly", "fast"), "slow": ("slowly", "gradually")}
OPPOSITE_DIRECTION = {"left": "right", "right": "left", "up": "down", "down": "up"}
OPPOSITE_SPATIAL = {"left of": "right of", "right of": "left of", "above": "below", "below": "above",
                    "near": "far from"}
# verb surface → lemma for every verb a template can write.
VERBS = {
    "moves": "move", "move": "move", "slides": "slide", "slide": "slide", "glides": "glide", "glide": "glide",
    "travels": "travel", "travel": "travel", "moving": "move",
    "moves toward": "move toward", "approaches": "approach", "heads toward": "head toward",
    "moves away from": "move away from", "drifts away from": "drift away from", "retreats from": "retreat from",
    "appears": "appear", "shows up": "show up", "pops up": "pop up", "disappears": "disappear",
    "vanishes": "vanish", "stops": "stop", "comes to a halt": "come to a halt", "starts moving": "start moving",
}
SPATIAL_SURFACE = {"left of": ("to the left of", "left of"), "right of": ("to the right of", "right of"),
                   "above": ("above",), "below": ("below", "under"), "near": ("near", "close to"),
                   "far from": ("far from",)}


# ------------------------------------------------------------- clause specs
@dataclass(frozen=True)
class Clause:
    """One predication, before it is written: enough to rewrite it for a negative.

    ``kind``: move | approach | move_away | appear | disappear | stop | spatial;
    ``subjects``/``object`` are world object ids; ``predicate`` is the spatial
    predicate; ``adverb`` the speed adverb word; ``form`` picks the template.
    """

    kind: str
    subjects: tuple[int, ...]
    object: Optional[int] = None
    direction: Optional[str] = None
    predicate: Optional[str] = None
    adverb: Optional[str] = None
    form: int = 0


@dataclass
class Negative:
    text: str
    type: str
    tsg: TextSceneGraph


@dataclass
class Caption:
    """A sentence, its time span, gold TSG, object references and hard negatives.

    ``refs`` maps gold TSG object node id → world object id.
    """

    text: str
    start: float
    end: float
    tsg: TextSceneGraph
    refs: dict[int, int]
    clauses: list[Clause]
    connective: Optional[str] = None
    negatives: list[Negative] = field(default_factory=list)


# ------------------------------------------------------------- builder
class _Builder:
    """Writes a sentence token by token while recording the gold TSG."""

    def __init__(self, world: World, mention_size: frozenset[int]):
        self.world = world
        self.mention_size = mention_size
        self.text = ""
        self.nodes: list[TextNode] = []
        self.edges: list[TextEdge] = []
        self.refs: dict[int, int] = {}

    def _write(self, words: str) -> tuple[int, int]:
        if words in (",", "."):
            self.text += words
            return (len(self.text) - 1, len(self.text))
        if self.text:
            self.text += " "
        start = len(self.text)
        self.text += words
        return (start, len(self.text))

    def _node(self, kind: str, label: str, lemma: str, span: tuple[int, int]) -> int:
        self.nodes.append(TextNode(len(self.nodes), kind, label, lemma, span))
        return len(self.nodes) - 1

    def word(self, words: str) -> None:
        self._write(words)

    def mention(self, obj_id: int, determiner: str = "the") -> int:
        obj = self.world.objects[obj_id]
        first_word = obj.size if obj_id in self.mention_size else obj.color
        self._write("an" if determiner == "a" and first_word[0] in "aeiou" else determiner)
        attrs = []
        if obj_id in self.mention_size:
            attrs.append(self._node("attribute", obj.size, obj.size, self._write(obj.size)))
        attrs.append(self._node("attribute", obj.color, obj.color, self._write(obj.color)))
        node = self._node("object", obj.shape, obj.shape, self._write(obj.shape))
        for a in attrs:
            self.edges.append(TextEdge(node, a, "obj_attr"))
        self.refs[node] = obj_id
        return node

    def predicate(self, surface: str, lemma: Optional[str] = None, label: Optional[str] = None) -> int:
        span = self._write(surface)
        if label is not None and label != surface:   # the node covers only part of the written words
            offset = surface.index(label)
            span = (span[0] + offset, span[0] + offset + len(label))
        return self._node("relation", label or surface, lemma or VERBS[surface], span)

    def adverb(self, word: str) -> int:
        return self._node("pred_attribute", word, word, self._write(word))

    def link(self, subjects: list[int], pred: int, obj: Optional[int] = None, adverbs: tuple[int, ...] = ()) -> None:
        for s in subjects:
            self.edges.append(TextEdge(s, pred, "subj_pred"))
        if obj is not None:
            self.edges.append(TextEdge(pred, obj, "pred_obj"))
        for a in adverbs:
            self.edges.append(TextEdge(pred, a, "pred_adv"))

    def finish(self, caption_id: str, start: float, end: float) -> tuple[str, TextSceneGraph, dict[int, int]]:
        self._write(".")
        text = self.text[0].upper() + self.text[1:]
        return text, TextSceneGraph(caption_id, text, self.nodes, self.edges, start, end), dict(self.refs)


def _write_clause(b: _Builder, c: Clause, first_in_sentence: bool) -> None:
    """Append one clause to the sentence under construction (templates live here)."""
    det = "the"
    if c.kind == "move":
        plural = len(c.subjects) > 1
        verbs = ("move", "slide", "glide", "travel") if plural else ("moves", "slides", "glides", "travels")
        if c.form % 5 == 4 and c.adverb and c.adverb.endswith("ly") and first_in_sentence:  # fronted adverb
            adv = b.adverb(c.adverb)
            b.word(",")
            subjects = _mentions(b, c.subjects, det)
            pred = b.predicate(verbs[c.form % 4])
            direction = b.adverb(c.direction)
            b.link(subjects, pred, None, (direction, adv))
            return
        subjects = _mentions(b, c.subjects, det)
        if c.form % 5 == 3 and not plural:                          # progressive
            b.word("is")
            pred = b.predicate("moving")
        else:
            pred = b.predicate(verbs[c.form % 4])
        advs = [b.adverb(c.direction)]
        if c.adverb:
            advs.append(b.adverb(c.adverb))
        b.link(subjects, pred, None, tuple(advs))
    elif c.kind in ("approach", "move_away"):
        if c.kind == "approach" and c.form % 4 == 3:                # passive
            obj = b.mention(c.object, det)
            b.word("is")
            adv = b.adverb(c.adverb) if c.adverb else None
            pred = b.predicate("approached by", "approach", "approached")
            subj = b.mention(c.subjects[0], det)
            b.link([subj], pred, obj, (adv,) if adv is not None else ())
            return
        options = (("moves toward", "approaches", "heads toward") if c.kind == "approach"
                   else ("moves away from", "drifts away from", "retreats from"))
        subj = b.mention(c.subjects[0], det)
        pred = b.predicate(options[c.form % 3])
        obj = b.mention(c.object, det)
        advs = (b.adverb(c.adverb),) if c.adverb else ()
        b.link([subj], pred, obj, advs)
    elif c.kind in ("appear", "disappear", "stop", "start"):
        options = {"appear": ("appears", "shows up", "pops up"), "disappear": ("disappears", "vanishes"),
                   "stop": ("stops", "comes to a halt"), "start": ("starts moving",)}[c.kind]
        subj = b.mention(c.subjects[0], "a" if c.kind == "appear" and first_in_sentence else det)
        surface = options[c.form % len(options)]
        pred = b.predicate(surface, VERBS[surface])
        b.link([subj], pred)
    elif c.kind == "spatial":
        subj = b.mention(c.subjects[0], det)
        b.word("is")
        surfaces = SPATIAL_SURFACE[c.predicate]
        surface = surfaces[c.form % len(surfaces)]
        pred = b.predicate(surface, surface)
        obj = b.mention(c.object, det)
        b.link([subj], pred, obj)
    else:
        raise ValueError(f"unknown clause kind {c.kind!r}")


def _mentions(b: _Builder, ids: tuple[int, ...], det: str) -> list[int]:
    nodes = []
    for k, obj_id in enumerate(ids):
        if k:
            b.word("and")
        nodes.append(b.mention(obj_id, det))
    return nodes


CONNECTIVES = ("then", "before", "after")


def render_sentence(world: World, clauses: list[Clause], connective: Optional[str], caption_id: str,
                    start: float, end: float, mention_size: frozenset[int]
                    ) -> tuple[str, TextSceneGraph, dict[int, int]]:
    """Write one or two clauses as a sentence; two clauses are joined by ``connective``.

    ``then``: "A, then B"; ``before``: "A before B"; ``after``: "after A, B"
    (all three mean A happened first).
    """
    b = _Builder(world, mention_size)
    if len(clauses) == 1:
        _write_clause(b, clauses[0], True)
    elif connective == "then":
        _write_clause(b, clauses[0], True)
        b.word(",")
        b.word("then")
        _write_clause(b, clauses[1], False)
    elif connective == "before":
        _write_clause(b, clauses[0], True)
        b.word("before")
        _write_clause(b, clauses[1], False)
    elif connective == "after":
        b.word("after")
        _write_clause(b, clauses[0], False)
        b.word(",")
        _write_clause(b, clauses[1], False)
    else:
        raise ValueError(f"two clauses need a connective in {CONNECTIVES}, got {connective!r}")
    return b.finish(caption_id, start, end)


# ------------------------------------------------------------- world → captions
def _event_clause(world: World, event: Event, rng: np.random.Generator) -> Clause:
    adverb = None
    if event.speed:
        choices = ADVERBS[event.speed]
        adverb = choices[int(rng.integers(len(choices)))]
    if event.kind == "move" and rng.random() < 0.15 and event.speed == "slow":
        adverb = None       # not every caption says how fast
    return Clause(event.kind, tuple(event.subjects), event.object, event.direction, None, adverb,
                  int(rng.integers(60)))


def _spatial_clause(world: World, rng: np.random.Generator) -> Optional[tuple[Clause, int, int]]:
    """A directional (or near) relation that holds between two objects for ≥ 1 s, and its frame span."""
    cfg = world.config
    n = len(world.objects)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    for k in rng.permutation(len(pairs)):
        i, j = pairs[int(k)]
        holds = []
        for t in range(world.num_frames):
            if world.visible(t, i) and world.visible(t, j):
                holds.append(set(spatial_predicates(world.box_px(t, i), world.box_px(t, j))))
            else:
                holds.append(set())
        for pred in sorted(set().union(*holds)):
            run_start, best = None, None
            for t in range(world.num_frames + 1):
                inside = t < world.num_frames and pred in holds[t]
                if inside and run_start is None:
                    run_start = t
                if not inside and run_start is not None:
                    if t - run_start >= cfg.fps and (best is None or t - run_start > best[1] - best[0]):
                        best = (run_start, t)
                    run_start = None
            if best is not None:
                clause = Clause("spatial", (i,), j, None, pred, None, int(rng.integers(60)))
                return clause, best[0], best[1]
    return None


def caption_world(world: World, rng: np.random.Generator) -> list[Caption]:
    """All captions of ``world`` sorted by start time, each with its hard negatives."""
    fps = world.config.fps
    specs: list[tuple[list[Clause], Optional[str], int, int]] = []
    for event in world.events:
        specs.append(([_event_clause(world, event, rng)], None, event.start_frame, event.end_frame))
    # Join two events that follow each other into one "A, then B" sentence.
    ordered = sorted(world.events, key=lambda e: e.start_frame)
    pairs = [(a, b) for a in ordered for b in ordered
             if a is not b and a.end_frame <= b.start_frame + fps // 4 and b.start_frame > a.start_frame + fps // 2
             and _distinct_event(a, b)]
    if pairs:
        a, b = pairs[int(rng.integers(len(pairs)))]
        connective = CONNECTIVES[int(rng.integers(len(CONNECTIVES)))]
        specs.append(([_event_clause(world, a, rng), _event_clause(world, b, rng)], connective,
                      a.start_frame, b.end_frame))
    spatial = _spatial_clause(world, rng)
    if spatial is not None:
        clause, first, last = spatial
        specs.append(([clause], None, first, last))
    specs.sort(key=lambda s: (s[2], s[3]))

    mention_size = _needs_size(world, rng)
    captions = []
    for index, (clauses, connective, first, last) in enumerate(specs):
        start, end = round(first / fps, 3), round(last / fps, 3)
        cid = f"{world.video_id}#{index}"
        text, tsg, refs = render_sentence(world, clauses, connective, cid, start, end, mention_size)
        caption = Caption(text, start, end, tsg, refs, clauses, connective)
        for ntype, nclauses, nconn in hard_negatives(clauses, connective, rng):
            ntext, ntsg, _ = render_sentence(world, nclauses, nconn, f"{cid}~{ntype}", start, end, mention_size)
            if ntext != text:
                caption.negatives.append(Negative(ntext, ntype, ntsg))
        captions.append(caption)
    return captions


def _distinct_event(a: Event, b: Event) -> bool:
    # "X stops, then X ..." right after its own move reads oddly; keep pairs that differ.
    return not (b.kind == "stop" and b.subjects == a.subjects) and not (a.kind == "stop" and a.subjects == b.subjects)


def _needs_size(world: World, rng: np.random.Generator) -> frozenset[int]:
    """Objects whose mention includes the size: always when colour+shape is ambiguous, else sometimes."""
    out = set()
    for i, o in enumerate(world.objects):
        twins = [p for p in world.objects if p.id != o.id and p.color == o.color and p.shape == o.shape]
        if twins or rng.random() < 0.2:
            out.add(i)
    return frozenset(out)


def hard_negatives(clauses: list[Clause], connective: Optional[str], rng: np.random.Generator
                   ) -> list[tuple[str, list[Clause], Optional[str]]]:
    """Perturbed clause lists, at most one per type, each false in the world by construction."""
    out = []
    swap_at = [k for k, c in enumerate(clauses) if c.object is not None and c.predicate != "near"]
    if swap_at:
        k = swap_at[int(rng.integers(len(swap_at)))]
        c = clauses[k]
        swapped = replace(c, subjects=(c.object,), object=c.subjects[0])
        out.append(("swap_subject_object", _put(clauses, k, swapped), connective))
    if len(clauses) == 2:
        out.append(("reverse_order", [clauses[1], clauses[0]], connective))
    k = int(rng.integers(len(clauses)))
    changed = _change_relation(clauses[k])
    if changed is not None:
        out.append(("change_relation", _put(clauses, k, changed), connective))
    adverbed = [k for k, c in enumerate(clauses) if c.adverb]
    if adverbed:
        k = adverbed[int(rng.integers(len(adverbed)))]
        c = clauses[k]
        other = "slow" if c.adverb in ADVERBS["fast"] else "fast"
        word = ADVERBS[other][int(rng.integers(len(ADVERBS[other])))]
        out.append(("change_adverb", _put(clauses, k, replace(c, adverb=word)), connective))
    return out


def _change_relation(c: Clause) -> Optional[Clause]:
    if c.kind == "move":
        return replace(c, direction=OPPOSITE_DIRECTION[c.direction])
    if c.kind in ("approach", "move_away"):
        return replace(c, kind="move_away" if c.kind == "approach" else "approach", form=c.form % 3)
    if c.kind in ("appear", "disappear"):
        return replace(c, kind="disappear" if c.kind == "appear" else "appear")
    if c.kind == "stop":
        return replace(c, kind="start", form=0)
    if c.kind == "spatial":
        return replace(c, predicate=OPPOSITE_SPATIAL[c.predicate])
    return None


def _put(clauses: list[Clause], k: int, clause: Clause) -> list[Clause]:
    out = list(clauses)
    out[k] = clause
    return out


# ------------------------------------------------------------- gold forms
def tsg_to_dict(tsg: TextSceneGraph) -> dict:
    return {"caption_id": tsg.caption_id, "text": tsg.text, "start": tsg.start, "end": tsg.end,
            "nodes": [{"id": n.id, "kind": n.kind, "label": n.label, "lemma": n.lemma, "span": list(n.span),
                       "count": n.count} for n in tsg.nodes],
            "edges": [{"src": e.src, "dst": e.dst, "kind": e.kind} for e in tsg.edges]}


def tsg_from_dict(d: dict) -> TextSceneGraph:
    return TextSceneGraph(d["caption_id"], d["text"],
                          [TextNode(n["id"], n["kind"], n["label"], n["lemma"], tuple(n["span"]), n.get("count", 1))
                           for n in d["nodes"]],
                          [TextEdge(e["src"], e["dst"], e["kind"]) for e in d["edges"]], d.get("start"), d.get("end"))
