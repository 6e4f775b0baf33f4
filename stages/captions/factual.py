"""FACTUAL notation: read gold graphs, write our TSGs in it.

A graph is a comma-separated list of parenthesised segments::

    ( man , sit on , bench ) , ( bench , is , red ) , ( dog )

``( s , p , o )`` is a relation (predicates lemmatised), ``( x , is , a )`` an
attribute (numbers are attributes: ``( dogs , is , 2 )``), ``( x )`` an object
that takes part in no other segment. FACTUAL-MR's four-part relations
(``( bike , rest , against , box )``) read as ``( bike , rest against , box )``.
A negated fact (``TextNode.negated``) is written with ``not``:
``( cat , not jump onto , counter )``, ``( car , is , not red )``.

Example::

    >>> parse_factual("( man , sit on , bench ) , ( bench , is , red )")
    [('man', 'sit on', 'bench'), ('bench', 'is', 'red')]
"""
from __future__ import annotations

import re

from schemas.records import TextSceneGraph

Segment = tuple[str, ...]

_SPACES = re.compile(r"\s+")


def _clean(element: str) -> str:
    return _SPACES.sub(" ", element.strip().lower())


def parse_factual(graph: str) -> list[Segment]:
    """The segments of a FACTUAL graph string, lower-cased, in order, duplicates dropped.

    Each segment is a 1-tuple (object), or a 3-tuple (relation, or attribute
    when the middle element is ``is``). Text that is not a graph gives ``[]``.
    """
    spaced = _SPACES.sub(" ", graph.replace("(", " ( ").replace(")", " ) ").replace(",", " , ")).strip()
    if "(" not in spaced:
        return []
    segments: list[Segment] = []
    for raw in spaced.split(") , ("):
        parts = [_clean(p) for p in raw.strip().strip("()").split(",")]
        parts = [p for p in parts if p]
        if not parts:
            continue
        if len(parts) == 2:
            parts = [parts[0], "is", parts[1]]
        elif len(parts) > 3:
            parts = [parts[0], " ".join(parts[1:-1]), parts[-1]]
        segment = tuple(parts)
        if segment not in segments:
            segments.append(segment)
    return segments


def tsg_segments(tsg: TextSceneGraph) -> list[Segment]:
    """The FACTUAL segments of a TSG: relations, attributes, then lone objects.

    Objects print their ``label`` (the surface noun phrase, as FACTUAL's
    annotators wrote them), relations their ``lemma`` ("sit on"), attributes
    their ``lemma`` (numbers as digits). A relation with a subject but no
    object whose word is a participle is a state in FACTUAL, and so are its
    adverbs: "pedestrians walking outside" → ``( pedestrians , is , walking )
    , ( pedestrians , is , outside )``; other ``pred_attribute`` nodes have no
    FACTUAL form and are left out. A negated relation or attribute keeps its
    segment with ``not`` before the predicate or the attribute, so no reader
    takes it for the positive fact: ``( cat , not jump onto , counter )``,
    ``( car , is , not red )``, ``( woman , is , not holding )``; the adverbs of
    a negated state are left out.
    """
    nodes = tsg.nodes
    subjects: dict[int, list[int]] = {}
    objects: dict[int, list[int]] = {}
    attrs: list[tuple[int, int]] = []
    adverbs: dict[int, list[int]] = {}
    for edge in tsg.edges:
        if edge.kind == "subj_pred":
            subjects.setdefault(edge.dst, []).append(edge.src)
        elif edge.kind == "pred_obj":
            objects.setdefault(edge.src, []).append(edge.dst)
        elif edge.kind == "obj_attr":
            attrs.append((edge.src, edge.dst))
        elif edge.kind == "pred_adv":
            adverbs.setdefault(edge.src, []).append(edge.dst)
    segments: list[Segment] = []
    used: set[int] = set()

    def add(segment: Segment) -> None:
        if all(segment) and segment not in segments:
            segments.append(segment)

    for node in nodes:
        if node.kind != "relation":
            continue
        for s in subjects.get(node.id, []):
            for o in objects.get(node.id, []):
                add((_clean(nodes[s].label), _negate(node, _clean(node.lemma)), _clean(nodes[o].label)))
                used.update((s, o))
            if not objects.get(node.id) and _is_participle(node.label):
                # FACTUAL writes an object-less participle as a state: ( woman , is , sitting )
                add((_clean(nodes[s].label), "is", _negate(node, _clean(node.label))))
                used.add(s)
                for a in adverbs.get(node.id, []) if not node.negated else []:  # "pedestrians walking outside"
                    add((_clean(nodes[s].label), "is", _clean(nodes[a].label)))
    for obj, attr in attrs:
        add((_clean(nodes[obj].label), "is", _negate(nodes[attr], _clean(nodes[attr].lemma))))
        used.add(obj)
    for node in nodes:
        if node.kind == "object" and node.id not in used:
            add((_clean(node.label),))
    return segments


def _negate(node, words: str) -> str:
    """``words`` with ``not`` in front when ``node`` is negated ("" stays "": no segment)."""
    return f"not {words}" if node.negated and words else words


def _is_participle(label: str) -> bool:
    return " " not in label.strip() and label.endswith(("ing", "ed")) and len(label) > 4


def format_segments(segments: list[Segment]) -> str:
    """``[('man', 'sit on', 'bench')]`` → ``'( man , sit on , bench )'``."""
    return " , ".join("( " + " , ".join(seg) + " )" for seg in segments)


def to_factual(tsg: TextSceneGraph) -> str:
    """A TSG in FACTUAL notation ("" for a graph with no nodes)."""
    return format_segments(tsg_segments(tsg))
