"""One sample as a picture (what ``cli.py inspect OUT --key KEY --png FILE`` draws).

Top: a strip of up to ``max_frames`` sampled frames, decoded by timestamp with
ffmpeg, with each detection's box, track id and label, and the frame's
relations as lines between box centres (per pair of boxes the best scored
predicate, the ``MAX_RELATIONS_PER_FRAME`` strongest; ``describe`` lists them
all). A frame that cannot be decoded (the
video moved, or is gone) is drawn as a grey placeholder, boxes still on it.
Below: the graphs. Each caption's TSG on the left (nodes as chips coloured by
kind, edges as arcs), the DSG's tracks on the right, and the cross-modal links
as lines from a TSG object to its track (thicker = higher score).

Example::

    from schemas.store import open_dataset
    from pipeline.tools.render import render_png
    sample, _ = open_dataset("out/sample").get("intel-bottles")
    render_png(sample, "bottles.png")            # -> Path("bottles.png")
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from schemas.records import DynamicSceneGraph, HolisticSceneGraph, VideoSample

THUMB_WIDTH = 280
MARGIN = 16
GAP = 10
MIN_WIDTH = 1200
MAX_CAPTIONS = 8
MAX_TRACKS = 24
MAX_RELATIONS_PER_FRAME = 4
DECODE_TIMEOUT_S = 30.0

# Okabe–Ito-like qualitative palette: distinct for colour-blind readers too.
TRACK_COLORS = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (213, 94, 0), (204, 121, 167),
                (0, 114, 178), (240, 228, 66), (120, 94, 240), (160, 82, 45), (90, 90, 90)]
NODE_COLORS = {"object": (204, 229, 255), "attribute": (255, 236, 179),
               "relation": (209, 242, 209), "pred_attribute": (240, 214, 240)}
INK = (30, 30, 30)
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


def render_png(sample: VideoSample, out_png: str | Path, max_frames: int = 6,
               video_path: Optional[str] = None) -> Path:
    """Draw ``sample`` to ``out_png`` (frames strip + graphs); returns the path written.

    ``video_path`` overrides ``sample.dsg.meta.path`` (e.g. when the videos moved).
    """
    dsg = sample.dsg
    meta = dsg.meta
    thumb_h = max(1, round(THUMB_WIDTH * meta.height / meta.width)) if meta.width > 0 and meta.height > 0 \
        else round(THUMB_WIDTH * 9 / 16)
    picked = pick_frames(len(dsg.frames), max_frames)
    width = max(MIN_WIDTH, 2 * MARGIN + len(picked) * (THUMB_WIDTH + GAP))
    fonts = {"title": _font(18), "text": _font(13), "small": _font(11)}

    graph = _GraphLayout(sample, width, fonts)
    strip_top = 46
    strip_bottom = strip_top + (thumb_h + 22 if picked else 30)
    graph_top = strip_bottom + 24
    height = graph_top + graph.height + MARGIN

    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    title = (f"{sample.key}   ({sample.source})   {meta.duration:.2f} s  {meta.width}x{meta.height}  "
             f"{len(dsg.frames)} sampled frames  {len(dsg.tracks)} tracks  {len(sample.hsgs)} captions")
    draw.text((MARGIN, 14), title, fill=INK, font=fonts["title"])

    source = video_path or meta.path
    if not picked:
        draw.text((MARGIN, strip_top), "no sampled frames", fill=MUTED, font=fonts["text"])
    for slot, frame_index in enumerate(picked):
        x = MARGIN + slot * (THUMB_WIDTH + GAP)
        frame = dsg.frames[frame_index]
        thumb = decode_frame(source, frame.timestamp, THUMB_WIDTH, thumb_h) or \
            _placeholder(THUMB_WIDTH, thumb_h, fonts["text"])
        _draw_frame_graph(thumb, dsg, frame_index, fonts)
        image.paste(thumb, (x, strip_top))
        draw.text((x, strip_top + thumb_h + 4), f"#{frame_index}  {frame.timestamp:.2f} s  (frame {frame.index})",
                  fill=MUTED, font=fonts["small"])

    draw.line([(MARGIN, graph_top - 12), (width - MARGIN, graph_top - 12)], fill=(220, 220, 220), width=1)
    graph.draw(image, graph_top)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, format="PNG")
    return out


def _draw_frame_graph(thumb: Image.Image, dsg: DynamicSceneGraph, frame_index: int, fonts: dict) -> None:
    """Boxes with ``T<id> label`` and the frame's relations, on one thumbnail."""
    w, h = thumb.size
    draw = ImageDraw.Draw(thumb)
    centres: dict[int, tuple[float, float]] = {}
    for i, det in enumerate(dsg.detections):
        if det.frame != frame_index:
            continue
        x1, y1, x2, y2 = det.box[0] * w, det.box[1] * h, det.box[2] * w, det.box[3] * h
        colour = track_color(det.track_id)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        name = f"T{det.track_id} {det.label}" if det.track_id >= 0 else det.label
        tw = draw.textlength(name, font=fonts["small"])
        ty = y1 - 14 if y1 >= 14 else y1
        draw.rectangle([x1, ty, x1 + tw + 4, ty + 13], fill=colour)
        draw.text((x1 + 2, ty), name, fill=(0, 0, 0), font=fonts["small"])
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
    for rel in sorted(best.values(), key=lambda r: -r.score)[:MAX_RELATIONS_PER_FRAME]:
        (sx, sy), (ox, oy) = centres[rel.subject], centres[rel.object]
        draw.line([(sx, sy), (ox, oy)], fill=(255, 255, 255), width=3)
        draw.line([(sx, sy), (ox, oy)], fill=(200, 0, 0), width=1)
        mx, my = (sx + ox) / 2, (sy + oy) / 2
        tw = draw.textlength(rel.predicate, font=fonts["small"])
        draw.rectangle([mx - tw / 2 - 2, my - 7, mx + tw / 2 + 2, my + 7], fill=(255, 255, 255))
        draw.text((mx, my), rel.predicate, fill=(200, 0, 0), font=fonts["small"], anchor="mm")


class _GraphLayout:
    """Positions of caption chips (left) and track chips (right); drawn after sizing."""

    CHIP_H = 22
    ARC_ROOM = 16
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
        left_height = y + self.CHIP_H
        self.height = max(left_height, self._layout_tracks(measure))

    def _layout_caption(self, measure, j: int, h: HolisticSceneGraph, y: int) -> int:
        tsg = h.tsg
        when = f"{tsg.start:.1f}-{tsg.end:.1f} s  " if tsg.start is not None and tsg.end is not None else ""
        for line in _wrap(measure, f"[{j}] {when}{tsg.text}", self.fonts["text"], self.left_w)[:2]:
            self.items.append(("caption", y, line))
            y += self.LINE_H
        x = self.left_x
        row_top = y + self.ARC_ROOM
        for node in tsg.nodes:
            text = node.label + (f" x{node.count}" if node.count != 1 else "")
            chip_w = measure.textlength(text, font=self.fonts["text"]) + 14
            if x + chip_w > self.left_x + self.left_w and x > self.left_x:
                x = self.left_x
                row_top += self.CHIP_H + self.ARC_ROOM + 4
            box = (x, row_top, x + chip_w, row_top + self.CHIP_H)
            self.node_boxes[(j, node.id)] = box
            self.items.append(("node", row_top, (box, node.kind, text)))
            x += chip_w + 14
        self.items.append(("edges", row_top, j))
        return row_top + (self.CHIP_H if tsg.nodes else 0) + 20  # room for the link lanes

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
        tsg = self.sample.hsgs[j].tsg
        for edge in tsg.edges:
            a, b = self.node_boxes.get((j, edge.src)), self.node_boxes.get((j, edge.dst))
            if a is None or b is None:
                continue
            (ax, ay), (bx, by) = ((a[0] + a[2]) / 2, a[1] + top), ((b[0] + b[2]) / 2, b[1] + top)
            if ay == by:  # same row: an arc over the chips
                rise = min(self.ARC_ROOM - 2, 6 + abs(bx - ax) / 40)
                points = [(ax + (bx - ax) * t, ay - 4 * rise * t * (1 - t)) for t in np.linspace(0, 1, 24)]
            else:
                points = [(ax, ay), (bx, by)]
            draw.line(points, fill=MUTED, width=1)
            draw.ellipse([bx - 2.5, by - 2.5, bx + 2.5, by + 2.5], fill=MUTED)  # the head marks the target

    def _draw_links(self, image: Image.Image, top: int) -> None:
        overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        turn_x = self.left_x + self.left_w + 12
        for j, h in enumerate(self.sample.hsgs):
            for n, link in enumerate(h.links):
                node, track = self.node_boxes.get((j, link.text_node)), self.track_boxes.get(link.track_id)
                if node is None or track is None:
                    continue
                # Down from the chip into the gap under its row, along it, then across to the
                # track: the line never runs through the caption's other chips.
                lane = node[3] + top + 4 + 3 * min(n, 3)
                start = ((node[0] + node[2]) / 2, node[3] + top)
                end = (track[0], (track[1] + track[3]) / 2 + top)
                colour = track_color(link.track_id) + (200,)
                draw.line([start, (start[0], lane), (turn_x, lane), end], fill=colour,
                          width=max(1, round(1 + 3 * link.score)), joint="curve")
                label = f"{link.score:.2f}"
                mx, my = (turn_x + end[0]) / 2, (lane + end[1]) / 2
                half = draw.textlength(label, font=self.fonts["small"]) / 2 + 2
                draw.rectangle([mx - half, my - 7, mx + half, my + 7], fill=(255, 255, 255, 230))
                draw.text((mx, my), label, fill=(40, 40, 40, 255), font=self.fonts["small"], anchor="mm")
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
