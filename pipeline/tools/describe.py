"""One sample's scene graphs as readable text (what ``cli.py inspect OUT --key KEY [--all]`` prints).

By default a summary of tens of lines: the counts, the tracks (most detections
first), the relations that hold in the most frames, and each caption's graph as
``subject -predicate-> object`` triples with its links to tracks. ``full=True``
(``--all``) lists everything: every frame's relations, every TSG node and edge,
every caption and hard negative.

Example::

    from schemas.store import open_dataset
    from pipeline.tools.describe import describe
    sample, features = open_dataset("out/sample").get("intel-bottles")
    print(describe(sample, features))

Output, abridged::

    sample intel-bottles (source: sample)
    video  .../bottles.mp4  9.00 s  480x270  15.00 fps  h264  135 frames
    DSG    9 sampled frames (0.00-8.00 s), 27 detections, 7 tracks, 104 relations, 3 track relations, 85 attributes
      tracks (most detections first)
        T2 bottle   #0-#8 (0.00-8.00 s)  9 detections  motion=still color=gray size=medium
      top relations (8 of 41 distinct; 104 in all frames)
        T3 bottle  left of  T2 bottle    9 frames  #0-#8  score 1.00
      track relations
        T0 person  leaving  #0-#1  (1.00)
    HSG    5 captions, 0 negatives
      [1] 0.90-2.50 s  frames #1-#2  "A hand grabs the left bottle and lifts it off the table."
          graph  hand -grabs-> left bottle · hand -lifts-> left bottle · left bottle -off-> table
          links  left bottle ↔ T2 bottle 0.92 (minilm+time)
    (summary; --all lists every relation per frame, every TSG node and edge, every negative)
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Optional

from schemas.records import (DynamicSceneGraph, HolisticSceneGraph, SampleFeatures, TextNode, TextSceneGraph,
                             VideoSample)

SUMMARY_TRACKS = 10
SUMMARY_RELATIONS = 8
SUMMARY_TRACK_RELATIONS = 6
SUMMARY_CAPTIONS = 10
SUMMARY_NOTE = "(summary; --all lists every relation per frame, every TSG node and edge, every negative)"


def describe(sample: VideoSample, features: Optional[SampleFeatures] = None, full: bool = False) -> str:
    """The sample's video facts, DSG, and each caption's TSG and cross-modal links, as text.

    ``full=False``: a summary (tens of lines); ``full=True``: everything, one line per relation.
    """
    dsg = sample.dsg
    lines = [f"sample {sample.key} (source: {sample.source})", _video_line(dsg)]
    lines += _dsg_lines(dsg) if full else _dsg_summary(dsg)
    lines += _hsg_lines(sample.hsgs, dsg) if full else _hsg_summary(sample.hsgs, dsg)
    if features is not None:
        shapes = ", ".join(f"{name} {a.shape[0]}x{a.shape[1] if a.ndim > 1 else 0}"
                           for name, a in features.as_dict().items())
        lines.append(f"features  {shapes}")
    if not full:
        lines.append(SUMMARY_NOTE)
    return "\n".join(lines)


def _more(hidden: int, what: str) -> list[str]:
    return [f"    +{hidden} more {what} (--all)"] if hidden > 0 else []


def _video_line(dsg: DynamicSceneGraph) -> str:
    m = dsg.meta
    frames = f"  {m.num_frames} frames" if m.num_frames >= 0 else ""
    return f"video  {m.path}  {m.duration:.2f} s  {m.width}x{m.height}  {m.fps:.2f} fps  {m.codec}{frames}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _frame(dsg: DynamicSceneGraph, i: int) -> str:
    if 0 <= i < len(dsg.frames):
        return f"#{i} {dsg.frames[i].timestamp:.2f} s"
    return f"#{i}"


def track_names(dsg: DynamicSceneGraph) -> dict[int, str]:
    """``{track id: "T<id> <label>"}``."""
    return {t.id: f"T{t.id} {t.label}" for t in dsg.tracks}


def _detection_name(dsg: DynamicSceneGraph, index: int) -> str:
    if not 0 <= index < len(dsg.detections):
        return f"det{index}?"
    d = dsg.detections[index]
    return f"T{d.track_id} {d.label}" if d.track_id >= 0 else f"d{index} {d.label}"


def _dsg_lines(dsg: DynamicSceneGraph) -> list[str]:
    lines = [_counts_line(dsg, _plural(len(dsg.frames), "sampled frame")), shots_line(dsg)]
    if dsg.frames:
        stamps = " ".join(f"{f.timestamp:.2f}" for f in dsg.frames[:24])
        more = f" … (+{len(dsg.frames) - 24})" if len(dsg.frames) > 24 else ""
        lines.append(f"  frames at (s)  {stamps}{more}")
    per_track = Counter(d.track_id for d in dsg.detections)
    track_attrs: dict[int, list[str]] = defaultdict(list)
    det_attrs: dict[int, list[str]] = defaultdict(list)
    for a in dsg.attributes:
        (track_attrs if a.target_kind == "track" else det_attrs)[a.target].append(f"{a.name}={a.value}")
    # A detection attribute shown once per track value, so a 50-frame track does not repeat "color=red" 50 times.
    for i, d in enumerate(dsg.detections):
        for text in det_attrs.get(i, []):
            if d.track_id >= 0 and text not in track_attrs[d.track_id]:
                track_attrs[d.track_id].append(text)
    if dsg.tracks:
        lines.append("  tracks")
        width = max(len(f"T{t.id} {t.label}") for t in dsg.tracks)
        for t in dsg.tracks:
            span = _span(dsg, t.first_frame, t.last_frame)
            attrs = "  " + " ".join(track_attrs[t.id]) if track_attrs.get(t.id) else ""
            lines.append(f"    {f'T{t.id} {t.label}':<{width}}  frames {span}  "
                         f"{_plural(per_track.get(t.id, 0), 'detection')}{attrs}")
    untracked = [i for i, d in enumerate(dsg.detections) if d.track_id < 0]
    if untracked:
        labels = Counter(dsg.detections[i].label for i in untracked)
        lines.append("  untracked detections  " + ", ".join(f"{n}× {lab}" for lab, n in sorted(labels.items())))
    if dsg.relations:
        lines.append("  relations per frame")
        for r in dsg.relations:
            lines.append(f"    {_frame(dsg, r.frame):<12}  {_detection_name(dsg, r.subject)}  {r.predicate}  "
                         f"{_detection_name(dsg, r.object)}  ({r.score:.2f})")
    if dsg.track_relations:
        lines.append("  track relations")
        lines += [_track_relation_line(dsg, r) for r in dsg.track_relations]
    return lines


def _counts_line(dsg: DynamicSceneGraph, frames: str) -> str:
    return (f"DSG    {frames}, {_plural(len(dsg.detections), 'detection')}, "
            f"{_plural(len(dsg.tracks), 'track')}, {_plural(len(dsg.relations), 'relation')}, "
            f"{_plural(len(dsg.track_relations), 'track relation')}, {_plural(len(dsg.attributes), 'attribute')}")


def shots_line(dsg: DynamicSceneGraph, most: int = 12) -> str:
    """``  shots  3: frames 0-59 (0.00-2.36 s) | 60-109 ...`` (native frame numbers)."""
    if not dsg.shots:
        return "  shots  not segmented"
    shown = " | ".join(f"{s.first_index}-{s.last_index} ({s.start:.2f}-{s.end:.2f} s)" for s in dsg.shots[:most])
    more = f" | +{len(dsg.shots) - most} more" if len(dsg.shots) > most else ""
    return f"  shots  {len(dsg.shots)}: native frames {shown}{more}"


def track_attributes(dsg: DynamicSceneGraph) -> dict[int, list[str]]:
    """``{track id: ["color=gray", "size=small/medium", ...]}``: a track's own attributes and its
    detections', each name once with its distinct values in order of appearance."""
    values: dict[int, dict[str, list[str]]] = defaultdict(dict)

    def add(track_id: int, name: str, value: str) -> None:
        seen = values[track_id].setdefault(name, [])
        if value not in seen:
            seen.append(value)

    for a in dsg.attributes:
        if a.target_kind == "track":
            add(a.target, a.name, a.value)
        elif 0 <= a.target < len(dsg.detections) and dsg.detections[a.target].track_id >= 0:
            add(dsg.detections[a.target].track_id, a.name, a.value)
    return {t: [f"{name}={'/'.join(v)}" for name, v in names.items()] for t, names in values.items()}


def top_relations(dsg: DynamicSceneGraph) -> tuple[list[tuple[str, str, str, list[int], float]], int]:
    """Per-frame relations grouped by (subject, predicate, object) as ``(subject, predicate, object,
    frames, mean score)``, the ones that hold in the most frames first, and how many groups that is.

    A mirror of a listed group (object and subject swapped, same frames and score: "B right of A"
    after "A left of B", "B near A" after "A near B") says nothing new and is left out of the list.
    """
    groups: dict[tuple[str, str, str], list] = defaultdict(list)
    for r in dsg.relations:
        groups[(_detection_name(dsg, r.subject), r.predicate, _detection_name(dsg, r.object))].append(r)
    rows = [(s, p, o, sorted({r.frame for r in rels}), sum(r.score for r in rels) / len(rels))
            for (s, p, o), rels in groups.items()]
    rows.sort(key=lambda row: (-len(row[3]), -row[4], row[0], row[1], row[2]))
    listed, kept = set(), []
    for s, p, o, frames, score in rows:
        if (o, s, tuple(frames), round(score, 3)) in listed:
            continue
        listed.add((s, o, tuple(frames), round(score, 3)))
        kept.append((s, p, o, frames, score))
    return kept, len(rows)


def _dsg_summary(dsg: DynamicSceneGraph) -> list[str]:
    span = f" ({dsg.frames[0].timestamp:.2f}-{dsg.frames[-1].timestamp:.2f} s)" if dsg.frames else ""
    lines = [_counts_line(dsg, _plural(len(dsg.frames), "sampled frame") + span), shots_line(dsg)]
    per_track = Counter(d.track_id for d in dsg.detections)
    attrs = track_attributes(dsg)
    if dsg.tracks:
        lines.append("  tracks (most detections first)")
        tracks = sorted(dsg.tracks, key=lambda t: (-per_track.get(t.id, 0), t.id))
        width = max(len(f"T{t.id} {t.label}") for t in tracks[:SUMMARY_TRACKS])
        for t in tracks[:SUMMARY_TRACKS]:
            extra = "  " + " ".join(attrs[t.id]) if attrs.get(t.id) else ""
            lines.append(f"    {f'T{t.id} {t.label}':<{width}}  {_span(dsg, t.first_frame, t.last_frame)}  "
                         f"{_plural(per_track.get(t.id, 0), 'detection')}{extra}")
        lines += _more(len(tracks) - SUMMARY_TRACKS, "tracks")
    untracked = Counter(d.label for d in dsg.detections if d.track_id < 0)
    if untracked:
        lines.append("  untracked detections  " + ", ".join(f"{n}× {lab}" for lab, n in sorted(untracked.items())))
    rows, distinct = top_relations(dsg)
    if rows:
        lines.append(f"  top relations ({min(len(rows), SUMMARY_RELATIONS)} of {distinct} distinct, mirrors left "
                     f"out; {len(dsg.relations)} in all frames)")
        shown = rows[:SUMMARY_RELATIONS]
        width = max(len(f"{s}  {p}  {o}") for s, p, o, _, _ in shown)
        for s, p, o, frames, score in shown:
            lines.append(f"    {f'{s}  {p}  {o}':<{width}}  {_plural(len(frames), 'frame')}  "
                         f"#{frames[0]}-#{frames[-1]}  score {score:.2f}")
        lines += _more(len(rows) - SUMMARY_RELATIONS, "relations")
    if dsg.track_relations:
        lines.append("  track relations")
        lines += [_track_relation_line(dsg, r) for r in dsg.track_relations[:SUMMARY_TRACK_RELATIONS]]
        lines += _more(len(dsg.track_relations) - SUMMARY_TRACK_RELATIONS, "track relations")
    return lines


def _track_relation_line(dsg: DynamicSceneGraph, r) -> str:
    names = track_names(dsg)
    obj = f"  {names.get(r.object, f'T{r.object}')}" if r.object >= 0 else ""
    return f"    {names.get(r.subject, f'T{r.subject}')}  {r.predicate}{obj}  #{r.first_frame}-#{r.last_frame}  ({r.score:.2f})"


def _hsg_summary(hsgs: list[HolisticSceneGraph], dsg: DynamicSceneGraph) -> list[str]:
    positives = [(j, h) for j, h in enumerate(hsgs) if h.negative_of is None]
    kinds = Counter(h.negative_type for h in hsgs if h.negative_of is not None)
    negatives = sum(kinds.values())
    by_kind = f" ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})" if negatives else ""
    lines = [f"HSG    {_plural(len(positives), 'caption')}, {_plural(negatives, 'negative')}{by_kind}"]
    names = track_names(dsg)
    for j, h in positives[:SUMMARY_CAPTIONS]:
        lines.append(_caption_line(j, h))
        lines.append("      graph  " + (" · ".join(tsg_triples(h.tsg)) or "(no nodes)"))
        if h.links:
            lines.append("      links  " + " · ".join(_link_text(h.tsg, link, names) for link in h.links))
    if len(positives) > SUMMARY_CAPTIONS:
        lines.append(f"  +{len(positives) - SUMMARY_CAPTIONS} more captions (--all)")
    return lines


def _caption_line(j: int, h: HolisticSceneGraph) -> str:
    tsg = h.tsg
    when = f"{tsg.start:.2f}-{tsg.end:.2f} s  " if tsg.start is not None and tsg.end is not None else ""
    role = f"  negative of [{h.negative_of}] ({h.negative_type})" if h.negative_of is not None else ""
    return f"  [{j}] {when}frames #{h.frame_window[0]}-#{h.frame_window[1]}  \"{tsg.text}\"{role}"


def _link_text(tsg: TextSceneGraph, link, names: dict[int, str]) -> str:
    return (f"{node_label(tsg, link.text_node)} ↔ {names.get(link.track_id, f'T{link.track_id}')} "
            f"{link.score:.2f} ({link.method})")


def node_text(node: TextNode, times: str = "×") -> str:
    """What a TSG node says: ``not sit at`` for a negated one, ``bottles×3`` for a count."""
    return ("not " if node.negated else "") + node.label + (f"{times}{node.count}" if node.count != 1 else "")


def tsg_triples(tsg: TextSceneGraph) -> list[str]:
    """The TSG as ``subject -predicate-> object`` (adverbs joined to the predicate), ``object: attribute``,
    and lone objects, e.g. ``["hand -grabs-> left bottle", "bottle: blue", "table"]``."""
    def name(i: int) -> str:
        if not 0 <= i < len(tsg.nodes):
            return f"node{i}?"
        return node_text(tsg.nodes[i])

    subjects, objects, adverbs = defaultdict(list), defaultdict(list), defaultdict(list)
    attributes: dict[int, list[str]] = defaultdict(list)
    linked: set[int] = set()
    for e in tsg.edges:
        linked |= {e.src, e.dst}
        if e.kind == "subj_pred":
            subjects[e.dst].append(e.src)
        elif e.kind == "pred_obj":
            objects[e.src].append(e.dst)
        elif e.kind == "pred_adv":
            adverbs[e.src].append(name(e.dst))
        elif e.kind == "obj_attr":
            attributes[e.src].append(name(e.dst))
    triples = []
    for node in tsg.nodes:
        if node.kind != "relation" or node.id not in linked:
            continue
        predicate = " ".join([node_text(node)] + adverbs[node.id])
        for subject in subjects[node.id] or [None]:
            for obj in objects[node.id] or [None]:
                triples.append((f"{name(subject)} " if subject is not None else "")
                               + f"-{predicate}->" + (f" {name(obj)}" if obj is not None else ""))
    triples += [f"{name(i)}: {', '.join(values)}" for i, values in attributes.items()]
    triples += [name(n.id) for n in tsg.nodes if n.id not in linked]
    return triples


def _span(dsg: DynamicSceneGraph, first: int, last: int) -> str:
    if 0 <= first < len(dsg.frames) and 0 <= last < len(dsg.frames):
        return f"#{first}-#{last} ({dsg.frames[first].timestamp:.2f}-{dsg.frames[last].timestamp:.2f} s)"
    return f"#{first}-#{last}"


def _hsg_lines(hsgs: list[HolisticSceneGraph], dsg: DynamicSceneGraph) -> list[str]:
    negatives = sum(h.negative_of is not None for h in hsgs)
    lines = [f"HSG    {_plural(len(hsgs) - negatives, 'caption')}, {_plural(negatives, 'negative')}"]
    names = track_names(dsg)
    for j, h in enumerate(hsgs):
        lines.append(_caption_line(j, h))
        lines += ["      " + line for line in tsg_lines(h.tsg)]
        if h.links:
            lines.append("      links  " + " · ".join(_link_text(h.tsg, link, names) for link in h.links))
    return lines


def node_label(tsg: TextSceneGraph, node_id: int) -> str:
    if 0 <= node_id < len(tsg.nodes):
        return node_text(tsg.nodes[node_id])
    return f"node{node_id}?"


def tsg_lines(tsg: TextSceneGraph) -> list[str]:
    """``nodes …`` and ``edges …`` lines of one TSG (empty graph → one line saying so)."""
    if not tsg.nodes:
        return ["(no nodes)"]
    nodes = " · ".join(f"{n.id} {node_text(n)} ({n.kind})" for n in tsg.nodes)
    lines = [f"nodes  {nodes}"]
    if tsg.edges:
        lines.append("edges  " + " · ".join(f"{node_label(tsg, e.src)} -{e.kind}-> {node_label(tsg, e.dst)}"
                                            for e in tsg.edges))
    return lines
