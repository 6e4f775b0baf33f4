"""TSG ↔ one JSON object (the line format of ``parse-captions --format json``).

Example::

    line = tsg_to_json(tsg)            # '{"caption_id": "c#0", "text": ..., "nodes": [...], ...}'
    tsg_from_json(line) == tsg         # True
"""
from __future__ import annotations

import json
from dataclasses import asdict

from schemas.records import TextEdge, TextNode, TextSceneGraph


def tsg_to_json(tsg: TextSceneGraph) -> str:
    return json.dumps(asdict(tsg), ensure_ascii=False)


def tsg_from_json(line: str) -> TextSceneGraph:
    """Inverse of :func:`tsg_to_json`; raises ValueError/KeyError/TypeError on a bad line."""
    data = json.loads(line)
    nodes = [TextNode(n["id"], n["kind"], n["label"], n["lemma"], tuple(n["span"]), n.get("count", 1),
                      bool(n.get("negated", False)))
             for n in data.get("nodes", [])]
    edges = [TextEdge(e["src"], e["dst"], e["kind"]) for e in data.get("edges", [])]
    return TextSceneGraph(data["caption_id"], data["text"], nodes, edges, data.get("start"), data.get("end"))
