"""One sample's scene graphs as readable text (what ``cli.py inspect OUT --key KEY`` prints).

Example::

    from schemas.store import open_dataset
    from pipeline.tools.describe import describe
    sample, features = open_dataset("out/sample").get("intel-bottles")
    print(describe(sample, features))

Output, abridged::

    sample intel-bottles (source: sample)
    video  .../bottles.mp4  9.00 s  480x270  15.00 fps  h264  135 frames
    DSG    6 sampled frames, 14 detections, 3 tracks, 2 relations, 1 track relation, 3 attributes
      tracks
        T1 bottle   frames #0-#5 (0.00-7.50 s)  6 detections  color=blue
      relations per frame
        #2 3.00 s   T1 bottle  left of  T2 bottle  (0.91)
      track relations
        T4 hand  approaching  T1 bottle  #1-#3  (0.80)
    HSG    5 captions, 0 negatives
      [1] 0.90-2.50 s  frames #1-#2  "A hand grabs the left bottle and lifts it off the table."
          nodes  0 hand (object) · 1 grab (relation) · 2 left (attribute) · 3 bottle (object)
          edges  hand -subj_pred-> grab · grab -pred_obj-> bottle · bottle -obj_attr-> left
          links  hand ↔ T4 hand 0.83 (minilm+color+time) · bottle ↔ T1 bottle 0.77
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Optional

from schemas.records import (DynamicSceneGraph, HolisticSceneGraph, SampleFeatures, TextSceneGraph,
                             VideoSample)


def describe(sample: VideoSample, features: Optional[SampleFeatures] = None) -> str:
    """The sample's video facts, DSG, and each caption's TSG and cross-modal links, as text."""
    dsg = sample.dsg
    lines = [f"sample {sample.key} (source: {sample.source})", _video_line(dsg)]
    lines += _dsg_lines(dsg)
    lines += _hsg_lines(sample.hsgs, dsg)
    if features is not None:
        shapes = ", ".join(f"{name} {a.shape[0]}x{a.shape[1] if a.ndim > 1 else 0}"
                           for name, a in features.as_dict().items())
        lines.append(f"features  {shapes}")
    return "\n".join(lines)


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
    lines = [f"DSG    {_plural(len(dsg.frames), 'sampled frame')}, {_plural(len(dsg.detections), 'detection')}, "
             f"{_plural(len(dsg.tracks), 'track')}, {_plural(len(dsg.relations), 'relation')}, "
             f"{_plural(len(dsg.track_relations), 'track relation')}, {_plural(len(dsg.attributes), 'attribute')}"]
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
        names = track_names(dsg)
        lines.append("  track relations")
        for r in dsg.track_relations:
            obj = f"  {names.get(r.object, f'T{r.object}')}" if r.object >= 0 else ""
            lines.append(f"    {names.get(r.subject, f'T{r.subject}')}  {r.predicate}{obj}  "
                         f"#{r.first_frame}-#{r.last_frame}  ({r.score:.2f})")
    return lines


def _span(dsg: DynamicSceneGraph, first: int, last: int) -> str:
    if 0 <= first < len(dsg.frames) and 0 <= last < len(dsg.frames):
        return f"#{first}-#{last} ({dsg.frames[first].timestamp:.2f}-{dsg.frames[last].timestamp:.2f} s)"
    return f"#{first}-#{last}"


def _hsg_lines(hsgs: list[HolisticSceneGraph], dsg: DynamicSceneGraph) -> list[str]:
    negatives = sum(h.negative_of is not None for h in hsgs)
    lines = [f"HSG    {_plural(len(hsgs) - negatives, 'caption')}, {_plural(negatives, 'negative')}"]
    names = track_names(dsg)
    for j, h in enumerate(hsgs):
        tsg = h.tsg
        when = f"{tsg.start:.2f}-{tsg.end:.2f} s  " if tsg.start is not None and tsg.end is not None else ""
        role = f"  negative of [{h.negative_of}] ({h.negative_type})" if h.negative_of is not None else ""
        lines.append(f"  [{j}] {when}frames #{h.frame_window[0]}-#{h.frame_window[1]}  \"{tsg.text}\"{role}")
        lines += ["      " + line for line in tsg_lines(tsg)]
        if h.links:
            parts = [f"{node_label(tsg, link.text_node)} ↔ {names.get(link.track_id, f'T{link.track_id}')} "
                     f"{link.score:.2f} ({link.method})" for link in h.links]
            lines.append("      links  " + " · ".join(parts))
    return lines


def node_label(tsg: TextSceneGraph, node_id: int) -> str:
    if 0 <= node_id < len(tsg.nodes):
        return tsg.nodes[node_id].label
    return f"node{node_id}?"


def tsg_lines(tsg: TextSceneGraph) -> list[str]:
    """``nodes …`` and ``edges …`` lines of one TSG (empty graph → one line saying so)."""
    if not tsg.nodes:
        return ["(no nodes)"]
    nodes = " · ".join(f"{n.id} {n.label}" + (f"×{n.count}" if n.count != 1 else "") + f" ({n.kind})"
                       for n in tsg.nodes)
    lines = [f"nodes  {nodes}"]
    if tsg.edges:
        lines.append("edges  " + " · ".join(f"{node_label(tsg, e.src)} -{e.kind}-> {node_label(tsg, e.dst)}"
                                            for e in tsg.edges))
    return lines
