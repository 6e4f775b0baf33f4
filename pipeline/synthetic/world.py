"""Scene and motion sampling for the synthetic world, and its per-frame ground truth.

A *world* is one video: 2–5 flat shapes (circle / square / triangle × colour ×
size) on a plain or textured background, and a timeline of *events* (move
left/right/up/down, approach or move away from another object, appear,
disappear, stop) at a slow or fast speed. Everything is drawn from one
``numpy.random.Generator`` so a (seed, index) pair always gives the same world.

Example::

    >>> cfg = WorldConfig(duration=4.0)
    >>> world = sample_world(cfg, np.random.default_rng([7, 0]), "synth_7_00000")
    >>> truth = world_truth(world)
    >>> len(truth["frames"]) == world.num_frames
    True

Geometry conventions (pixels internally, normalised ``xyxy`` in the truth):
an object's ``size_px`` is the side of its bounding square (circle diameter,
square side, triangle base = height); ``pos[t, i]`` is object ``i``'s centre at
rendered frame ``t`` (timestamp ``t / fps``). Spatial predicates between two
objects follow :func:`spatial_predicates` (documented in docs/synthetic.md).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

SHAPES = ("circle", "square", "triangle")
# Saturated, well-separated hues: the colour detector keys on hue and saturation.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 135, 20),
    "yellow": (235, 215, 25),
    "green": (30, 170, 50),
    "blue": (35, 70, 225),
    "purple": (145, 45, 195),
}
SIZES = ("small", "large")
# Side of the bounding square as a fraction of min(width, height).
SIZE_FRACTION = {"small": (0.10, 0.125), "large": (0.18, 0.22)}
# Speeds in fractions of min(width, height) per second.
SPEED_FRACTION = {"slow": 0.12, "fast": 0.30}
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
DIFFICULTIES = ("easy", "medium", "hard")
EVENT_KINDS = ("move", "approach", "move_away", "appear", "disappear", "stop")
SPATIAL_PREDICATES = ("left of", "right of", "above", "below", "near")
# Two objects are "near" when the gap between their boxes is below this
# fraction of their boxes' mean diagonal (relative to size, as people judge it).
NEAR_GAP_RATIO = 0.25
# approach / move_away change the pair's centre distance by at least this × min(W, H).
APPROACH_MIN_CHANGE = 0.08
# An object counts as visible (a detection target) from this visible fraction on.
MIN_VISIBILITY = 0.5


@dataclass(frozen=True)
class WorldConfig:
    """Generation parameters shared by every video of a synthetic set."""

    duration: float = 6.0
    fps: int = 8
    width: int = 320
    height: int = 240
    objects_min: int = 2
    objects_max: int = 4
    difficulty: str = "medium"

    def __post_init__(self):
        if not (1.0 <= self.duration <= 600.0):
            raise ValueError(f"duration must be within [1, 600] s, got {self.duration}")
        if not (1 <= self.fps <= 60):
            raise ValueError(f"fps must be within [1, 60], got {self.fps}")
        if self.width < 64 or self.height < 64 or self.width % 2 or self.height % 2:
            raise ValueError(f"width and height must be even and ≥ 64, got {self.width}x{self.height}")
        if not (2 <= self.objects_min <= self.objects_max <= 5):
            raise ValueError(f"need 2 ≤ objects-min ≤ objects-max ≤ 5, got {self.objects_min}..{self.objects_max}")
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {self.difficulty!r}")

    @property
    def num_frames(self) -> int:
        return int(round(self.duration * self.fps))

    @property
    def unit(self) -> float:
        """The length unit sizes and speeds scale with: min(width, height) in pixels."""
        return float(min(self.width, self.height))


@dataclass
class WorldObject:
    id: int
    shape: str
    color: str
    size: str
    size_px: float
    appear_frame: int = 0           # first visible frame
    disappear_frame: int = -1       # first invisible frame after the object left; -1: never

    @property
    def label(self) -> str:
        return self.shape


@dataclass
class Event:
    """Something that happens over rendered frames ``[start_frame, end_frame)``.

    ``subjects`` has two entries for a coordinated move ("the red circle and
    the blue square move left"); ``object`` is the other object of
    ``approach``/``move_away``.
    """

    kind: str
    subjects: list[int]
    start_frame: int
    end_frame: int
    object: Optional[int] = None
    direction: Optional[str] = None
    speed: Optional[str] = None


@dataclass
class Background:
    kind: str                       # plain | stripes | checker | noise
    base: tuple[int, int, int]
    contrast: int = 0
    period: int = 16
    seed: int = 0


@dataclass
class World:
    video_id: str
    config: WorldConfig
    background: Background
    objects: list[WorldObject]
    events: list[Event]
    pos: np.ndarray                 # float64 [T, n, 2] centres in pixels
    vel: np.ndarray                 # float64 [T, n, 2] pixels per second at each frame
    speed_of: np.ndarray            # object [T, n]: "slow" | "fast" | "" at each frame
    z_order: list[int] = field(default_factory=list)  # drawing order, last on top

    @property
    def num_frames(self) -> int:
        return self.pos.shape[0]

    def visible(self, t: int, i: int) -> bool:
        obj = self.objects[i]
        return t >= obj.appear_frame and (obj.disappear_frame < 0 or t < obj.disappear_frame)

    def box_px(self, t: int, i: int) -> tuple[float, float, float, float]:
        half = self.objects[i].size_px / 2.0
        cx, cy = self.pos[t, i]
        return (cx - half, cy - half, cx + half, cy + half)


# ------------------------------------------------------------- geometry
def box_gap(a, b) -> float:
    """Euclidean gap between two xyxy boxes (0 when they touch or overlap)."""
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return float(np.hypot(dx, dy))


def boxes_overlap(a, b, margin: float = 0.0) -> bool:
    return not (a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1])


def spatial_predicates(a, b) -> list[str]:
    """Geometric predicates of pixel box ``a`` (subject) relative to box ``b`` (object).

    Exactly one directional predicate, picked by the dominant axis of the
    centre offset (image y grows downward): ``left of``/``right of`` when
    ``|dx| ≥ |dy|``, else ``above``/``below``; plus ``near`` when the boxes'
    gap is below ``NEAR_GAP_RATIO`` × their mean diagonal.
    """
    dx = (b[0] + b[2]) / 2.0 - (a[0] + a[2]) / 2.0
    dy = (b[1] + b[3]) / 2.0 - (a[1] + a[3]) / 2.0
    if abs(dx) >= abs(dy):
        preds = ["left of" if dx > 0 else "right of"]
    else:
        preds = ["above" if dy > 0 else "below"]
    diagonal = (np.hypot(a[2] - a[0], a[3] - a[1]) + np.hypot(b[2] - b[0], b[3] - b[1])) / 2.0
    if box_gap(a, b) < NEAR_GAP_RATIO * diagonal:
        preds.append("near")
    return preds


# ------------------------------------------------------------- sampling
def _sample_background(cfg: WorldConfig, rng: np.random.Generator) -> Background:
    # Backgrounds stay unsaturated so that only objects carry hue.
    grey = int(rng.integers(150, 225))
    tint = rng.integers(-8, 9, size=3)
    base = tuple(int(np.clip(grey + d, 0, 255)) for d in tint)
    if cfg.difficulty == "easy":
        return Background("plain", base)
    kinds = ("plain", "stripes", "checker", "noise")
    kind = kinds[int(rng.integers(len(kinds)))] if cfg.difficulty == "medium" else kinds[1 + int(rng.integers(3))]
    contrast = int(rng.integers(10, 22)) if cfg.difficulty == "medium" else int(rng.integers(18, 32))
    return Background(kind, base, contrast, int(rng.integers(10, 28)), int(rng.integers(2**31)))


def _sample_objects(cfg: WorldConfig, rng: np.random.Generator) -> list[WorldObject]:
    n = int(rng.integers(cfg.objects_min, cfg.objects_max + 1))
    names = list(COLORS)
    if cfg.difficulty == "hard":
        colors = [names[int(rng.integers(len(names)))] for _ in range(n)]
    else:
        colors = [names[int(k)] for k in rng.permutation(len(names))[:n]]
    objects = []
    for i in range(n):
        size = SIZES[int(rng.integers(2))]
        lo, hi = SIZE_FRACTION[size]
        objects.append(WorldObject(i, SHAPES[int(rng.integers(3))], colors[i], size,
                                   float(round(rng.uniform(lo, hi) * cfg.unit))))
    return objects


def _initial_positions(cfg: WorldConfig, objects: list[WorldObject], rng: np.random.Generator) -> np.ndarray:
    margin = 0.04 * cfg.unit
    gap = 0.10 * cfg.unit
    for _ in range(2000):
        pos = np.zeros((len(objects), 2))
        boxes = []
        ok = True
        for i, obj in enumerate(objects):
            half = obj.size_px / 2
            for _ in range(200):
                c = rng.uniform([margin + half, margin + half],
                                [cfg.width - margin - half, cfg.height - margin - half])
                box = (c[0] - half, c[1] - half, c[0] + half, c[1] + half)
                if all(box_gap(box, other) >= gap for other in boxes):
                    break
            else:
                ok = False
                break
            pos[i] = c
            boxes.append(box)
        if ok:
            return pos
    raise RuntimeError("could not place objects without overlap; lower objects-max or raise the resolution")


class _Timeline:
    """Velocity plan under construction; positions integrate velocities frame by frame."""

    def __init__(self, cfg: WorldConfig, objects: list[WorldObject], start: np.ndarray):
        self.cfg = cfg
        self.objects = objects
        self.start = start
        t, n = cfg.num_frames, len(objects)
        self.vel = np.zeros((t, n, 2))
        self.speed = np.full((t, n), "", dtype=object)
        self.busy = np.zeros((t, n), bool)
        self.pos = self._integrate(self.vel)

    def _integrate(self, vel: np.ndarray) -> np.ndarray:
        pos = np.empty_like(vel)
        pos[0] = self.start
        if len(vel) > 1:
            pos[1:] = self.start + np.cumsum(vel[:-1], axis=0) / self.cfg.fps
        return pos

    def valid(self, pos: np.ndarray, allow_overlap: bool) -> bool:
        cfg = self.cfg
        half = np.array([o.size_px / 2 for o in self.objects])
        margin = 0.02 * cfg.unit
        if np.any(pos[:, :, 0] - half < margin) or np.any(pos[:, :, 0] + half > cfg.width - margin):
            return False
        if np.any(pos[:, :, 1] - half < margin) or np.any(pos[:, :, 1] + half > cfg.height - margin):
            return False
        if allow_overlap:
            return True
        # Boxes keep a clear gap so colour blobs never merge after compression.
        gap = 0.03 * cfg.unit
        n = len(self.objects)
        for i in range(n):
            for j in range(i + 1, n):
                sep = np.abs(pos[:, i] - pos[:, j]) - (half[i] + half[j])
                if np.any((sep[:, 0] < gap) & (sep[:, 1] < gap)):
                    return False
        return True

    def propose(self, subjects: list[int], first: int, last: int, velocity: np.ndarray,
                allow_overlap: bool) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """Velocities and positions with ``subjects`` moving over ``[first, last)``, or None if invalid."""
        if self.busy[first:last, subjects].any():
            return None
        vel = self.vel.copy()
        for s in subjects:
            vel[first:last, s] = velocity
        pos = self._integrate(vel)
        return (vel, pos) if self.valid(pos, allow_overlap) else None

    def commit(self, subjects: list[int], first: int, last: int, plan: tuple[np.ndarray, np.ndarray],
               speed: str) -> None:
        self.vel, self.pos = plan
        for s in subjects:
            self.speed[first:last, s] = speed
            self.busy[first:last, s] = True


def sample_world(cfg: WorldConfig, rng: np.random.Generator, video_id: str) -> World:
    """Draw one video's objects, background and event timeline."""
    background = _sample_background(cfg, rng)
    objects = _sample_objects(cfg, rng)
    timeline = _Timeline(cfg, objects, _initial_positions(cfg, objects, rng))
    allow_overlap = cfg.difficulty == "hard"
    fps, total = cfg.fps, cfg.num_frames
    events: list[Event] = []
    target = max(2, int(round(cfg.duration / 2.0))) + (1 if cfg.difficulty == "hard" else 0)
    n = len(objects)
    ends_at = np.full(n, -1)        # last frame any event touched, per object

    for _ in range(300):
        if len(events) >= target:
            break
        kind = ("move", "move", "move", "approach", "approach", "move_away", "move_away", "appear",
                "disappear")[int(rng.integers(9))]
        length = int(round(rng.uniform(1.2, 2.4) * fps))
        first = int(rng.integers(0, max(1, total - length)))
        last = min(total, first + length)
        if last - first < max(2, fps // 2):
            continue
        subject = int(rng.integers(n))
        obj = objects[subject]
        if kind == "appear":
            # Appears once, before anything else happens to it; stays still until then.
            if ends_at[subject] >= 0 or obj.appear_frame > 0 or first < fps // 2 or first > total - 2 * fps:
                continue
            if any(subject in e.subjects or e.object == subject for e in events):
                continue
            obj.appear_frame = first
            timeline.busy[:first + fps, subject] = True
            events.append(Event("appear", [subject], first, min(total, first + fps)))
            ends_at[subject] = first + fps
            continue
        if kind == "disappear":
            if obj.disappear_frame >= 0 or first < ends_at[subject] or first < fps or first > total - fps:
                continue
            if sum(1 for o in objects if o.disappear_frame < 0) <= 2:
                continue
            if any((subject in e.subjects or e.object == subject) and e.end_frame > first - fps // 2
                   for e in events):
                continue
            obj.disappear_frame = first
            timeline.busy[first - fps // 2:, subject] = True
            events.append(Event("disappear", [subject], max(0, first - fps // 2), min(total, first + fps // 2)))
            ends_at[subject] = total
            continue
        if first < obj.appear_frame + fps // 2 or (obj.disappear_frame >= 0 and last > obj.disappear_frame - fps):
            continue
        speed = ("slow", "fast")[int(rng.integers(2))]
        magnitude = SPEED_FRACTION[speed] * cfg.unit
        if kind == "move":
            direction = tuple(DIRECTIONS)[int(rng.integers(4))]
            subjects = [subject]
            if rng.random() < 0.3:
                partner = int(rng.integers(n))
                if partner != subject and _present(objects[partner], first, last):
                    subjects.append(partner)
            velocity = np.array(DIRECTIONS[direction]) * magnitude
            found = _shortest_fit(timeline, subjects, first, last, velocity, allow_overlap, fps)
            if found is None or not _distance_events_hold(events, found[1][1], cfg.unit):
                continue
            last, plan = found
            timeline.commit(subjects, first, last, plan, speed)
            events.append(Event("move", sorted(subjects), first, last, direction=direction, speed=speed))
        else:
            other = int(rng.integers(n))
            if other == subject or not _present(objects[other], first, last):
                continue
            offset = timeline.pos[first, other] - timeline.pos[first, subject]
            dist = float(np.hypot(*offset))
            if dist < 1e-6:
                continue
            unit = offset / dist * (1.0 if kind == "approach" else -1.0)
            found = _shortest_fit(timeline, [subject], first, last, unit * magnitude, allow_overlap, fps)
            if found is None:
                continue
            last, plan = found
            event = Event(kind, [subject], first, last, object=other, speed=speed)
            # too little, or the partner's own motion cancels it, or it undoes an earlier one
            if not _distance_events_hold(events + [event], plan[1], cfg.unit):
                continue
            timeline.commit([subject], first, last, plan, speed)
            events.append(event)
        ends_at[subjects if kind == "move" else [subject]] = last
        # A stop is said only when the object then rests for a while.
        rest = min(total, last + fps)
        if last < total - fps // 2 and rng.random() < 0.35 and not timeline.busy[last:rest, subject].any() \
                and (obj.disappear_frame < 0 or rest <= obj.disappear_frame):
            timeline.busy[last:rest, subject] = True
            events.append(Event("stop", [subject], max(0, last - fps // 2), rest))

    events.sort(key=lambda e: (e.start_frame, e.end_frame, e.kind, e.subjects))
    order = [int(k) for k in rng.permutation(n)]
    return World(video_id, cfg, background, objects, events, timeline.pos, timeline.vel, timeline.speed, order)


def _shortest_fit(timeline: _Timeline, subjects: list[int], first: int, last: int, velocity: np.ndarray,
                  allow_overlap: bool, fps: int) -> Optional[tuple[int, tuple[np.ndarray, np.ndarray]]]:
    """The longest of the full, ¾ and ½ spans that keeps the world valid, with its plan."""
    span = last - first
    for length in (span, (3 * span) // 4, span // 2):
        if length < max(3, fps // 2 + 1):
            break
        plan = timeline.propose(subjects, first, first + length, velocity, allow_overlap)
        if plan is not None:
            return first + length, plan
    return None


def _distance_events_hold(events: list[Event], pos: np.ndarray, unit: float) -> bool:
    """Every approach (move_away) shrinks (grows) the pair's centre distance by ≥ 0.08·unit."""
    for e in events:
        if e.kind not in ("approach", "move_away"):
            continue
        s, o = e.subjects[0], e.object
        end = min(e.end_frame, len(pos) - 1)
        change = np.hypot(*(pos[end, o] - pos[end, s])) - np.hypot(*(pos[e.start_frame, o] - pos[e.start_frame, s]))
        if (change > -APPROACH_MIN_CHANGE * unit) if e.kind == "approach" else (change < APPROACH_MIN_CHANGE * unit):
            return False
    return True


def _present(obj: WorldObject, first: int, last: int) -> bool:
    return first >= obj.appear_frame and (obj.disappear_frame < 0 or last <= obj.disappear_frame)


# ------------------------------------------------------------- truth
def world_truth(world: World, visibility: Optional[np.ndarray] = None,
                visible_boxes: Optional[list[list[Optional[tuple]]]] = None) -> dict:
    """The per-frame answer key of one world, as a JSON-ready dict.

    ``visibility[t, i]`` (visible fraction of object ``i`` at frame ``t``) and
    ``visible_boxes[t][i]`` (pixel box of its visible pixels) come from the
    renderer, which knows the drawing order; without them every present object
    counts as fully visible.
    """
    cfg = world.config
    w, h = float(cfg.width), float(cfg.height)
    frames = []
    for t in range(world.num_frames):
        entries = []
        present = []
        for i, obj in enumerate(world.objects):
            if not world.visible(t, i):
                continue
            frac = 1.0 if visibility is None else float(visibility[t, i])
            box = world.box_px(t, i)
            vbox = box if visible_boxes is None else visible_boxes[t][i]
            moving = bool(np.hypot(*world.vel[t, i]) > 0 or (t > 0 and np.hypot(*world.vel[t - 1, i]) > 0))
            speed = world.speed_of[t, i] or (world.speed_of[t - 1, i] if t > 0 else "")
            entries.append({
                "id": i,
                "box": _norm(box, w, h),
                "visible_box": _norm(vbox, w, h) if vbox is not None else None,
                "visibility": round(frac, 4),
                "motion": "moving" if moving else "still",
                "speed": speed or None,
            })
            if frac >= MIN_VISIBILITY:
                present.append(i)
        relations = []
        for i in present:
            for j in present:
                if i != j:
                    for pred in spatial_predicates(world.box_px(t, i), world.box_px(t, j)):
                        relations.append([i, pred, j])
        frames.append({"index": t, "timestamp": round(t / cfg.fps, 6), "objects": entries, "relations": relations})
    return {
        "video_id": world.video_id,
        "width": cfg.width, "height": cfg.height, "fps": cfg.fps,
        "duration": round(world.num_frames / cfg.fps, 6), "num_frames": world.num_frames,
        "difficulty": cfg.difficulty,
        "background": asdict(world.background),
        "objects": [{"id": o.id, "label": o.label, "shape": o.shape, "color": o.color, "size": o.size,
                     "size_px": o.size_px, "appear_frame": o.appear_frame,
                     "disappear_frame": o.disappear_frame} for o in world.objects],
        "events": [event_record(e, cfg.fps) for e in world.events],
        "frames": frames,
    }


def event_record(event: Event, fps: int) -> dict:
    record = asdict(event)
    record["start"] = round(event.start_frame / fps, 6)
    record["end"] = round(event.end_frame / fps, 6)
    return record


def _norm(box, w: float, h: float) -> list[float]:
    x1, y1, x2, y2 = box
    return [round(min(max(x1 / w, 0.0), 1.0), 6), round(min(max(y1 / h, 0.0), 1.0), 6),
            round(min(max(x2 / w, 0.0), 1.0), 6), round(min(max(y2 / h, 0.0), 1.0), 6)]
