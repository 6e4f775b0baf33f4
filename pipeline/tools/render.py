"""One sample as a picture (what ``cli.py inspect OUT --key KEY --png FILE`` draws).

Top: ``max_frames`` sampled frames in time order, picked to show every track
(the tracks captions link to first, then the most detections, ties spread over
the video: see ``frames_to_draw``), decoded by timestamp with ffmpeg, with
each detection's box, track id and label, and the frame's relations as lines
between box centres (per pair of boxes the best scored predicate, the
``MAX_RELATIONS_PER_FRAME`` strongest; ``describe`` lists them all). Labels
are drawn after every line, moved off each other, so no line strikes a label.
A line under the strip names the frames left out. A frame that cannot be
decoded (the video moved, or is gone) is drawn as a grey placeholder, boxes
still on it.
Below: the graphs. Each caption's TSG on the left (nodes as chips coloured by
kind, ordered so that subject, predicate and object sit side by side; each
edge an arc labelled with its kind, arrowhead at its target), the DSG's
tracks on the right, and the cross-modal links as lines from a TSG object to
its track (thicker = higher score). The title's counts are describe's.

Example::

    from schemas.store import open_dataset
    from pipeline.tools.render import render_png, frames_note
    sample, _ = open_dataset("out/sample").get("intel-bottles")
    render_png(sample, "bottles.png")            # -> Path("bottles.png")
    frames_note(sample)   # "frames drawn: #0 #1 #3 #5 #7 #8; left out 3 of 9: #2, #4, #6 (7 detections); every track is drawn"
"""
from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.tools.describe import node_text
from schemas.records import DynamicSceneGraph, HolisticSceneGraph, TextSceneGraph, VideoSample

THUMB_WIDTH = 280
MARGIN = 16
GAP = 10
MIN_WIDTH = 1200
MAX_CAPTIONS = 8
MAX_TRACKS = 24
MAX_RELATIONS_PER_FRAME = 4
MAX_FRAMES = 6
DECODE_TIMEOUT_S = 30.0

# Okabe–Ito-like qualitative palette: distinct for colour-blind readers too.
TRACK_COLORS = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (213, 94, 0), (204, 121, 167),
                (0, 114, 178), (240, 228, 66), (120, 94, 240), (160, 82, 45), (90, 90, 90)]
NODE_COLORS = {"object": (204, 229, 255), "attribute": (255, 236, 179),
               "relation": (209, 242, 209), "pred_attribute": (240, 214, 240)}
INK = (30, 30, 30)
RELATION_INK = (200, 0, 0)
MUTED = (120, 120, 120)
BACKGROUND = (255, 255, 255)


def track_color(track_id: int) -> tuple[int, int, int]:
    return TRACK_COLORS[track_id % len(TRACK_COLORS)] if track_id >= 0 else (200, 200, 200)


def _font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans where the system has it (clear spacing); Pillow's own font otherwise."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        pass
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def pick_frames(count: int, max_frames: int) -> list[int]:
    """Up to ``max_frames`` indices spread evenly over ``range(count)``, first and last included."""
    if count <= 0 or max_frames <= 0:
        return []
    if count <= max_frames:
        return list(range(count))
    if max_frames == 1:
        return [0]
    return sorted({round(i * (count - 1) / (max_frames - 1)) for i in range(max_frames)})


def frames_to_draw(dsg: DynamicSceneGraph, max_frames: int = MAX_FRAMES,
                   hsgs: Sequence[HolisticSceneGraph] = ()) -> list[int]:
    """Up to ``max_frames`` sampled frames, in time order, chosen one by one: the frame showing the
    most tracks not drawn yet that a caption links to, then the most tracks not drawn yet, then the
    most detections, then the farthest from those chosen (so a clip whose objects come and go shows
    each of them, what the captions name first, and equal frames spread over the video)."""
    count = len(dsg.frames)
    per_frame = Counter(d.frame for d in dsg.detections if 0 <= d.frame < count)
    shows: dict[int, set] = {i: set() for i in range(count)}
    for i, d in enumerate(dsg.detections):
        if 0 <= d.frame < count:
            shows[d.frame].add(d.track_id if d.track_id >= 0 else ("detection", i))
    linked = {link.track_id for h in hsgs for link in h.links}
    chosen: list[int] = []
    drawn: set = set()
    while len(chosen) < min(max_frames, count):
        def value(i: int) -> tuple:
            new = shows[i] - drawn
            gap = min((abs(i - c) for c in chosen), default=count)
            return len(new & linked), len(new), per_frame.get(i, 0), gap, -i
        best = max((i for i in range(count) if i not in chosen), key=value)
        chosen.append(best)
        drawn |= shows[best]
    return sorted(chosen)


def _ranges(indices: list[int]) -> str:
    """``[1, 2, 3, 5, 8, 9]`` → ``#1-#3, #5, #8-#9``."""
    parts, start = [], None
    for i, index in enumerate(indices):
        if start is None:
            start = index
        if i + 1 == len(indices) or indices[i + 1] != index + 1:
            parts.append(f"#{start}" if start == index else f"#{start}-#{index}")
            start = None
    return ", ".join(parts)


def frames_note(sample: VideoSample, max_frames: int = MAX_FRAMES) -> str:
    """Which frames the picture shows and which it leaves out (said in the PNG and by ``inspect``)."""
    dsg = sample.dsg
    drawn = frames_to_draw(dsg, max_frames, sample.hsgs)
    if not drawn:
        return "no sampled frames"
    left_out = sorted(set(range(len(dsg.frames))) - set(drawn))
    text = "frames drawn: " + " ".join(f"#{i}" for i in drawn)
    if not left_out:
        return text + " (all)"
    per_frame = Counter(d.frame for d in dsg.detections)
    hidden = sum(per_frame.get(i, 0) for i in left_out)
    seen = {d.track_id for d in dsg.detections if d.frame in set(drawn)}
    unseen = [f"T{t.id}" for t in dsg.tracks if t.id not in seen]
    text += (f"; left out {len(left_out)} of {len(dsg.frames)}: {_ranges(left_out)} "
             f"({hidden} detection{'' if hidden == 1 else 's'})")
    return text + (f"; tracks in no drawn frame: {' '.join(unseen)}" if unseen else "; every track is drawn")


def decode_frame(path: str, timestamp: float, width: int, height: int,
                 timeout: float = DECODE_TIMEOUT_S) -> Optional[Image.Image]:
    """The frame shown at ``timestamp`` seconds, scaled to ``width``×``height``; None if it cannot be read."""
    if not path or not Path(path).is_file():
        return None
    args = ["ffmpeg", "-v", "error", "-nostdin", "-ss", f"{max(timestamp, 0.0):.3f}", "-i", path,
            "-frames:v", "1", "-vf", f"scale={width}:{height}", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    try:
        done = subprocess.run(args, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 or len(done.stdout) != width * height * 3:
        return None
    return Image.fromarray(np.frombuffer(done.stdout, np.uint8).reshape(height, width, 3), "RGB")


def _placeholder(width: int, height: int, font) -> Image.Image:
    image = Image.new("RGB", (width, height), (165, 165, 165))
    draw = ImageDraw.Draw(image)
    draw.text((width / 2, height / 2), "video unavailable", fill=(240, 240, 240), font=font, anchor="mm")
    return image


def title_text(sample: VideoSample) -> str:
    """The picture's title: the same counts as ``describe``'s header lines."""
    dsg, meta = sample.dsg, sample.dsg.meta
    negatives = sum(h.negative_of is not None for h in sample.hsgs)
    return (f"{sample.key}  ({sample.source})  {meta.duration:.2f} s  {meta.width}x{meta.height}  ·  "
            f"{_plural(len(dsg.frames), 'sampled frame')}, {_plural(len(dsg.detections), 'detection')}, "
            f"{_plural(len(dsg.tracks), 'track')}, {_plural(len(dsg.relations), 'relation')}, "
            f"{_plural(len(dsg.shots), 'shot')}  ·  "
            f"{_plural(len(sample.hsgs) - negatives, 'caption')}, {_plural(negatives, 'negative')}")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def render_png(sample: VideoSample, out_png: str | Path, max_frames: int = MAX_FRAMES,
               video_path: Optional[str] = None) -> Path:
    """Draw ``sample`` to ``out_png`` (frames strip + graphs); returns the path written.

    ``video_path`` overrides ``sample.dsg.meta.path`` (e.g. when the videos moved).
    """
    dsg = sample.dsg
    meta = dsg.meta
    thumb_h = max(1, round(THUMB_WIDTH * meta.height / meta.width)) if meta.width > 0 and meta.height > 0 \
        else round(THUMB_WIDTH * 9 / 16)
    picked = frames_to_draw(dsg, max_frames, sample.hsgs)
    width = max(MIN_WIDTH, 2 * MARGIN + len(picked) * (THUMB_WIDTH + GAP))
    fonts = {"title": _font(18), "text": _font(13), "small": _font(11)}

    graph = _GraphLayout(sample, width, fonts)
    strip_top = 46
    strip_bottom = strip_top + (thumb_h + 40 if picked else 30)
    graph_top = strip_bottom + 24
    height = int(graph_top + graph.height + MARGIN)

    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, 14), title_text(sample), fill=INK, font=fonts["title"])

    source = video_path or meta.path
    if not picked:
        draw.text((MARGIN, strip_top), "no sampled frames", fill=MUTED, font=fonts["text"])
    per_frame = Counter(d.frame for d in dsg.detections)
    shot_of = dsg.frame_shots()
    for slot, frame_index in enumerate(picked):
        x = MARGIN + slot * (THUMB_WIDTH + GAP)
        frame = dsg.frames[frame_index]
        thumb = decode_frame(source, frame.timestamp, THUMB_WIDTH, thumb_h) or \
            _placeholder(THUMB_WIDTH, thumb_h, fonts["text"])
        _draw_frame_graph(thumb, dsg, frame_index, fonts)
        image.paste(thumb, (x, strip_top))
        shot = f"shot {shot_of[frame_index] + 1}/{len(dsg.shots)}  " if dsg.shots else ""
        draw.text((x, strip_top + thumb_h + 4), f"#{frame_index}  {frame.timestamp:.2f} s  (frame {frame.index})  "
                  f"{shot}{_plural(per_frame.get(frame_index, 0), 'detection')}", fill=MUTED, font=fonts["small"])
    if picked:
        note = _fit(draw, frames_note(sample, max_frames), fonts["small"], width - 2 * MARGIN)
        draw.text((MARGIN, strip_top + thumb_h + 20), note, fill=MUTED, font=fonts["small"])

    draw.line([(MARGIN, graph_top - 12), (width - MARGIN, graph_top - 12)], fill=(220, 220, 220), width=1)
    graph.draw(image, graph_top)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, format="PNG")
    return out


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> str:
    """``text``, cut at a word and ended with ``…`` when it is wider than ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    words = text.split(" ")
    while len(words) > 1 and draw.textlength(" ".join(words) + " …", font=font) > width:
        words.pop()
    return " ".join(words).rstrip(",;") + " …"


def _place(wanted: tuple[float, float, float, float], taken: list, bounds: tuple[int, int]) -> Optional[tuple]:
    """The first of ``wanted`` shifted up/down by its height that overlaps nothing in ``taken`` and
    stays inside ``bounds`` (width, height); None if every try collides."""
    x1, y1, x2, y2 = wanted
    h = y2 - y1 + 1
    for shift in (0, -h, h, -2 * h, 2 * h, -3 * h, 3 * h):
        box = (x1, y1 + shift, x2, y2 + shift)
        if box[1] < 0 or box[3] > bounds[1]:
            continue
        if not any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3] for t in taken):
            return box
    return None


def _draw_frame_graph(thumb: Image.Image, dsg: DynamicSceneGraph, frame_index: int, fonts: dict) -> list[tuple]:
    """Boxes with ``T<id> label`` and the frame's relations, on one thumbnail; returns the labels
    drawn as ``((x1, y1, x2, y2), text)``, box tags then relation labels.

    Drawn in layers (boxes, relation lines, box tags, relation labels) so no line crosses a
    label; a relation label moves up or down off the labels already placed (or is left out).
    """
    w, h = thumb.size
    draw = ImageDraw.Draw(thumb)
    small = fonts["small"]
    centres: dict[int, tuple[float, float]] = {}
    tags = []
    for i, det in enumerate(dsg.detections):
        if det.frame != frame_index:
            continue
        x1, y1, x2, y2 = det.box[0] * w, det.box[1] * h, det.box[2] * w, det.box[3] * h
        colour = track_color(det.track_id)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        name = f"T{det.track_id} {det.label}" if det.track_id >= 0 else det.label
        tags.append(((x1, y1, x2, y2), name, colour))
        centres[i] = ((x1 + x2) / 2, (y1 + y2) / 2)
    # One predicate per pair of boxes (the best scored; "A left of B" and "B right of A" are
    # one pair), the strongest few: a thumbnail cannot carry dozens of labels.
    best: dict[frozenset, object] = {}
    for rel in dsg.relations:
        if rel.frame != frame_index or rel.subject not in centres or rel.object not in centres:
            continue
        pair = frozenset((rel.subject, rel.object))
        if pair not in best or rel.score > best[pair].score:
            best[pair] = rel
    shown = sorted(best.values(), key=lambda r: -r.score)[:MAX_RELATIONS_PER_FRAME]
    for rel in shown:
        (sx, sy), (ox, oy) = centres[rel.subject], centres[rel.object]
        draw.line([(sx, sy), (ox, oy)], fill=(255, 255, 255), width=3)
        draw.line([(sx, sy), (ox, oy)], fill=RELATION_INK, width=1)
        _arrowhead(draw, (sx, sy), (ox, oy), RELATION_INK, back=4)
    taken, drawn = [], []
    for (x1, y1, x2, y2), name, colour in tags:
        tw = draw.textlength(name, font=small) + 4
        # above the box, else inside its top, else under it; above it anyway when all collide
        tries = [(x1, y1 - 14), (x1, y1 + 1), (x1, y2 + 1), (max(0, x2 - tw), y1 - 14)]
        boxes = [(x, y, x + tw, y + 13) for x, y in tries if y >= 0 and y + 13 <= h]
        box = next((b for b in boxes if _place(b, taken, (w, h)) == b), boxes[0] if boxes else (x1, y1, x1 + tw, y1 + 13))
        draw.rectangle(box, fill=colour)
        draw.text((box[0] + 2, box[1]), name, fill=(0, 0, 0), font=small)
        taken.append(box)
        drawn.append((box, name))
    for rel in shown:
        (sx, sy), (ox, oy) = centres[rel.subject], centres[rel.object]
        half = draw.textlength(rel.predicate, font=small) / 2 + 3
        mx, my = (sx + ox) / 2, (sy + oy) / 2
        mx = min(max(mx, half), w - half)
        box = _place((mx - half, my - 7, mx + half, my + 7), taken, (w, h))
        if box is None:
            continue
        taken.append(box)
        drawn.append((box, rel.predicate))
        _relation_label(draw, box, rel.predicate, small)
    return drawn


def _relation_label(draw: ImageDraw.ImageDraw, box: tuple, text: str, font) -> None:
    draw.rectangle(box, fill=(255, 255, 255), outline=RELATION_INK)
    draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), text, fill=RELATION_INK, font=font, anchor="mm")


def _arrowhead(draw: ImageDraw.ImageDraw, start: tuple[float, float], end: tuple[float, float], colour,
               size: float = 5.0, back: float = 0.0) -> None:
    """A filled triangle at ``end`` pointing away from ``start`` (``back`` pixels short of it)."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = (dx * dx + dy * dy) ** 0.5
    if length < 1e-6:
        return
    ux, uy = dx / length, dy / length
    tip = (end[0] - ux * back, end[1] - uy * back)
    base = (tip[0] - ux * size, tip[1] - uy * size)
    draw.polygon([tip, (base[0] - uy * size / 2, base[1] + ux * size / 2),
                  (base[0] + uy * size / 2, base[1] - ux * size / 2)], fill=colour)


EDGE_LABELS = {"subj_pred": "subj", "pred_obj": "obj", "obj_attr": "attr", "pred_adv": "adv"}


def arc_height(span: int) -> float:
    """Pixels an arc over ``span`` chips rises: nested arcs do not share an apex (or a label)."""
    return 10.0 + 11.0 * (min(max(span, 1), 4) - 1)


def node_order(tsg: TextSceneGraph) -> list[int]:
    """Node ids in drawing order: from each node nothing points to (text order), depth first along
    its edges, so a subject, its predicate and the predicate's object sit side by side."""
    children: dict[int, list[int]] = {n.id: [] for n in tsg.nodes}
    has_parent = set()
    for e in sorted(tsg.edges, key=lambda e: e.kind not in ("obj_attr", "pred_adv")):  # a node's own words first
        if e.src in children and e.dst in children:
            children[e.src].append(e.dst)
            has_parent.add(e.dst)
    order, seen = [], set()

    def visit(node_id: int) -> None:
        stack = [node_id]
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            order.append(current)
            stack.extend(reversed(children[current]))

    for node in tsg.nodes:
        if node.id not in has_parent:
            visit(node.id)
    for node in tsg.nodes:       # cycles have no root
        visit(node.id)
    return order


class _GraphLayout:
    """Positions of caption chips (left) and track chips (right); drawn after sizing."""

    CHIP_H = 22
    CHIP_GAP = 16
    LINE_H = 17

    def __init__(self, sample: VideoSample, width: int, fonts: dict):
        self.sample, self.fonts = sample, fonts
        self.left_x, self.left_w = MARGIN, int(width * 0.60)
        self.right_x = int(width * 0.72)
        self.right_w = width - MARGIN - self.right_x
        measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        self.items: list[tuple] = []          # (kind, y, payload) relative to the panel top
        self.node_boxes: dict[tuple[int, int], tuple[float, float, float, float]] = {}
        self.track_boxes: dict[int, tuple[float, float, float, float]] = {}
        self.edge_slots: dict[int, dict[int, tuple[int, int]]] = {}   # caption → node id → (row, position)
        self.label_boxes: list[tuple] = []                            # edge labels drawn so far
        self.lanes: dict[int, float] = {}                             # caption → top of its link lanes
        y = 0
        self.items.append(("header", y, "captions (TSG)"))
        y += 22
        hsgs = [(j, h) for j, h in enumerate(sample.hsgs) if h.negative_of is None]
        negatives = len(sample.hsgs) - len(hsgs)
        for j, h in hsgs[:MAX_CAPTIONS]:
            y = self._layout_caption(measure, j, h, y)
        hidden = len(hsgs) - min(len(hsgs), MAX_CAPTIONS)
        notes = ([f"+{hidden} more captions (see the text output)"] if hidden else []) + \
                ([f"{negatives} hard negatives not drawn"] if negatives else [])
        for note in notes:
            self.items.append(("note", y, note))
            y += self.LINE_H
        if not sample.hsgs:
            self.items.append(("note", y, "no captions"))
            y += self.LINE_H
        y += 8
        self.items.append(("legend", y, None))
        left_height = y + self.CHIP_H + self.LINE_H
        self.height = max(left_height, self._layout_tracks(measure))

    def _layout_caption(self, measure, j: int, h: HolisticSceneGraph, y: int) -> int:
        tsg = h.tsg
        when = f"{tsg.start:.1f}-{tsg.end:.1f} s  " if tsg.start is not None and tsg.end is not None else ""
        for line in _wrap(measure, f"[{j}] {when}{tsg.text}", self.fonts["text"], self.left_w)[:2]:
            self.items.append(("caption", y, line))
            y += self.LINE_H
        # Chips into rows (x only), then each row as high as its tallest arc needs.
        rows: list[list[tuple[int, float, float, str]]] = [[]]
        x = self.left_x
        for node_id in node_order(tsg):
            node = tsg.nodes[node_id]
            text = node_text(node, times=" x")
            chip_w = measure.textlength(text, font=self.fonts["text"]) + 14
            if x + chip_w > self.left_x + self.left_w and rows[-1]:
                rows.append([])
                x = self.left_x
            rows[-1].append((node_id, x, chip_w, text))
            x += chip_w + self.CHIP_GAP
        slot = {node_id: (r, i) for r, row in enumerate(rows) for i, (node_id, *_rest) in enumerate(row)}
        row_top = y
        for r, row in enumerate(rows):
            spans = [abs(slot[e.src][1] - slot[e.dst][1]) for e in tsg.edges
                     if e.src in slot and e.dst in slot and slot[e.src][0] == slot[e.dst][0] == r]
            row_top += (arc_height(max(spans)) + 10) if spans else 6
            for node_id, x, chip_w, text in row:
                box = (x, row_top, x + chip_w, row_top + self.CHIP_H)
                self.node_boxes[(j, node_id)] = box
                self.items.append(("node", row_top, (box, tsg.nodes[node_id].kind, text)))
            row_top += self.CHIP_H + 4
        self.edge_slots[j] = slot
        self.lanes[j] = row_top
        self.items.append(("edges", row_top, j))
        return row_top + (16 if tsg.nodes else 0)  # room for the link lanes

    def _layout_tracks(self, measure) -> int:
        dsg = self.sample.dsg
        y = 0
        self.items.append(("theader", y, "tracks (DSG)"))
        y += 22
        for track in dsg.tracks[:MAX_TRACKS]:
            span = ""
            if 0 <= track.first_frame < len(dsg.frames) and 0 <= track.last_frame < len(dsg.frames):
                span = f"  {dsg.frames[track.first_frame].timestamp:.1f}-{dsg.frames[track.last_frame].timestamp:.1f} s"
            text = f"T{track.id} {track.label}{span}"
            chip_w = min(self.right_w, measure.textlength(text, font=self.fonts["text"]) + 14)
            box = (self.right_x, y, self.right_x + chip_w, y + self.CHIP_H)
            self.track_boxes[track.id] = box
            self.items.append(("track", y, (box, track.id, text)))
            y += self.CHIP_H + 8
        if len(dsg.tracks) > MAX_TRACKS:
            self.items.append(("tnote", y, f"+{len(dsg.tracks) - MAX_TRACKS} more tracks"))
            y += self.LINE_H
        if not dsg.tracks:
            self.items.append(("tnote", y, "no tracks"))
            y += self.LINE_H
        if dsg.track_relations:
            y += 6
            self.items.append(("theader", y, "track relations"))
            y += 20
            for r in dsg.track_relations[:12]:
                obj = f" T{r.object}" if r.object >= 0 else ""
                self.items.append(("tnote", y, f"T{r.subject} {r.predicate}{obj}  (#{r.first_frame}-#{r.last_frame})"))
                y += self.LINE_H
            if len(dsg.track_relations) > 12:
                self.items.append(("tnote", y, f"+{len(dsg.track_relations) - 12} more"))
                y += self.LINE_H
        return y

    def draw(self, image: Image.Image, top: int) -> None:
        draw = ImageDraw.Draw(image)
        f_text, f_small = self.fonts["text"], self.fonts["small"]
        shift = lambda box: (box[0], box[1] + top, box[2], box[3] + top)  # noqa: E731
        for kind, y, payload in self.items:
            if kind in ("header", "theader"):
                x = self.left_x if kind == "header" else self.right_x
                draw.text((x, top + y), payload, fill=INK, font=self.fonts["title"])
            elif kind == "caption":
                draw.text((self.left_x, top + y), payload, fill=INK, font=f_text)
            elif kind in ("note", "tnote"):
                x = self.left_x if kind == "note" else self.right_x
                draw.text((x, top + y), payload, fill=MUTED, font=f_small)
            elif kind == "edges":
                self._draw_edges(draw, payload, top)
            elif kind == "legend":
                x = self.left_x
                for name, colour in NODE_COLORS.items():
                    w = draw.textlength(name, font=f_small) + 12
                    draw.rounded_rectangle([x, top + y, x + w, top + y + 16], radius=5, fill=colour, outline=MUTED)
                    draw.text((x + 6, top + y + 2), name, fill=INK, font=f_small)
                    x += w + 8
                draw.text((x + 6, top + y + 2), "coloured lines to tracks: cross-modal links (width = score)",
                          fill=MUTED, font=f_small)
                draw.text((self.left_x, top + y + 22), "edges: subj = subject → predicate, obj = predicate → "
                          "object, attr = object → attribute, adv = predicate → adverb", fill=MUTED, font=f_small)
        for kind, _, payload in self.items:
            if kind == "node":
                box, node_kind, text = payload
                draw.rounded_rectangle(shift(box), radius=7, fill=NODE_COLORS.get(node_kind, (235, 235, 235)),
                                       outline=MUTED)
                draw.text((box[0] + 7, box[1] + top + 4), text, fill=INK, font=f_text)
            elif kind == "track":
                box, track_id, text = payload
                draw.rounded_rectangle(shift(box), radius=7, fill=track_color(track_id), outline=INK)
                draw.text((box[0] + 7, box[1] + top + 4), text, fill=(0, 0, 0), font=f_text)
        self._draw_links(image, top)

    def _draw_edges(self, draw: ImageDraw.ImageDraw, j: int, top: int) -> None:
        """Each TSG edge as an arc over its row (a line between rows), arrowhead at the target,
        labelled with its kind; labels drawn last, moved off each other."""
        tsg, slot = self.sample.hsgs[j].tsg, self.edge_slots[j]
        small = self.fonts["small"]
        labels = []
        for edge in tsg.edges:
            a, b = self.node_boxes.get((j, edge.src)), self.node_boxes.get((j, edge.dst))
            if a is None or b is None:
                continue
            (ax, ay), (bx, by) = ((a[0] + a[2]) / 2, a[1] + top), ((b[0] + b[2]) / 2, b[1] + top)
            if ay == by:  # same row: an arc over the chips, higher the more chips it spans
                rise = arc_height(abs(slot[edge.src][1] - slot[edge.dst][1]))
                points = [(ax + (bx - ax) * t, ay - 4 * rise * t * (1 - t)) for t in np.linspace(0, 1, 24)]
                label_at = ((ax + bx) / 2, ay - rise)
            else:
                points = [(ax, a[3] + top if by > ay else ay), (bx, by if by > ay else b[3] + top)]
                label_at = ((points[0][0] + points[1][0]) / 2, (points[0][1] + points[1][1]) / 2)
            draw.line(points, fill=MUTED, width=1)
            _arrowhead(draw, points[-2], points[-1], MUTED, size=6)
            labels.append((label_at, EDGE_LABELS.get(edge.kind, edge.kind)))
        for (mx, my), text in labels:
            half = draw.textlength(text, font=small) / 2 + 2
            box = _place((mx - half, my - 6, mx + half, my + 6), self.label_boxes, (10 ** 6, 10 ** 6))
            if box is not None:
                self.label_boxes.append(box)
                draw.rectangle(box, fill=BACKGROUND)
                draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), text, fill=(90, 90, 90), font=small,
                          anchor="mm")

    def _draw_links(self, image: Image.Image, top: int) -> None:
        """Each link: down from its chip to a lane under the caption's chips, along it, then across
        to its track; its score on the lane (score labels drawn after every line)."""
        overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        small = self.fonts["small"]
        turn_x = self.left_x + self.left_w + 12
        labels = []
        for j, h in enumerate(self.sample.hsgs):
            for n, link in enumerate(h.links):
                node, track = self.node_boxes.get((j, link.text_node)), self.track_boxes.get(link.track_id)
                if node is None or track is None:
                    continue
                lane = self.lanes[j] + top + 4 + 3 * min(n, 3)
                start = ((node[0] + node[2]) / 2, node[3] + top)
                end = (track[0], (track[1] + track[3]) / 2 + top)
                colour = track_color(link.track_id) + (200,)
                draw.line([start, (start[0], lane), (turn_x, lane), end], fill=colour,
                          width=max(1, round(1 + 3 * link.score)), joint="curve")
                labels.append(((turn_x - 26 - 40 * n, lane), f"{link.score:.2f}"))
        for (mx, my), label in labels:
            half = draw.textlength(label, font=small) / 2 + 2
            draw.rectangle([mx - half, my - 7, mx + half, my + 7], fill=(255, 255, 255, 235))
            draw.text((mx, my), label, fill=(40, 40, 40, 255), font=small, anchor="mm")
        image.paste(Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB"))


def _wrap(measure: ImageDraw.ImageDraw, text: str, font, width: float) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and measure.textlength(candidate, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    if line:
        lines.append(line)
    if len(lines) > 2:
        lines = lines[:2]
        lines[1] = lines[1][:-1].rstrip() + "…"
    return lines
