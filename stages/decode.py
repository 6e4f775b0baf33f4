"""Video decoding: probe, sample frames with exact timestamps, stream them as RGB.

One ``ffmpeg`` subprocess per video (argument list built with ffmpeg-python,
run with :class:`subprocess.Popen`, never a shell) selects the frames inside
its filter graph and writes them as raw frames to a pipe; Python reads one
frame at a time, so memory does not grow with the video's length. The pipe
carries ``rgb24``, except when the frames keep the native size of an 8-bit
BT.601 ``yuv420p`` stream: then it carries ``yuv420p`` (half the bytes: moving
raw frames between processes is what limits full-size decoding) and OpenCV
converts each frame to RGB, on one thread, with the same BT.601 limited-range
matrix ffmpeg uses (values within a few levels of ffmpeg's own rgb24; ``DecodeConfig.transport
= "rgb24"`` forces ffmpeg's conversion). ffmpeg is
killed by a watchdog timer when ``DecodeConfig.timeout_s`` runs out (wall time
from the call, probe and the consumer's time between frames included).

How frames are chosen (``select`` filter, evaluated on every decoded frame):
the sampler walks a grid of target times ``T0 + k·P`` and keeps, for each
target, the *first frame whose timestamp is ≥ target − 0.49/native_fps*, i.e.
the frame nearest the target (ties go to the later frame). A frame is never
returned twice, so asking for more frames than the video has returns each
frame once.

* ``mode="fps"``:      ``T0 = 0``, ``P = 1/fps``, over the whole video.
* ``mode="uniform"``:  ``K = num_frames`` targets at the centres of K equal
  segments of the duration (``P = D/K``, ``T0 = P/2``).
* ``mode="windows"``:  only frames inside the union of the given ``(start, end)``
  windows (seconds); the first frame of each window is kept, then frames
  nearest the ``1/fps`` grid. A window shorter than one native frame is
  widened to one frame. With no windows it behaves as ``"fps"``.

The shot stream (``DecodeConfig.shot_stream``, on when ``segment_shots`` cuts
shots): the same ffmpeg run splits the decoded frames before ``select`` and
also writes every native frame scaled to 48×27 RGB to a temporary file, read
when the video is done (``task.shot_stream``). Decoding is most of what
finding cuts costs, and this way a video is decoded once, not twice.

How timestamps are recorded: a ``showinfo`` filter after ``select`` logs each
kept frame's integer ``pts`` and the stream time base to stderr (a temporary
file, read after each frame; showinfo logs a frame before it reaches the pipe), so
``Frame.timestamp = pts · time_base`` exactly (seconds from the start of the
file, as players show it). ``Frame.index`` (the native
frame number) is ``round((timestamp − stream_start) · native_fps)``: exact for
constant-frame-rate video, nominal for variable frame rate.

Failures raise :class:`SampleError` with a stable ``reason``:
``missing_file`` (also a dangling symlink), ``empty_file``, ``unreadable``
(a directory, a FIFO/device, or no read permission), ``not_a_video`` (ffprobe cannot open it and it has no known video
container signature), ``no_video_stream`` (e.g. audio only), ``corrupt_video``
(a known container ffprobe cannot open, decoder/demuxer errors such as a
truncated file, a non-zero ffmpeg exit, or no frames), ``empty_window`` (all
windows lie past the end), ``unknown_duration`` (uniform mode without a
duration), ``network_error`` (a URL input unreachable after retries) and ``timeout``.
A URL input (``s3://``, ``gs://``, ``http(s)://``, see :mod:`schemas.storage`) is
checked first (a missing object is ``missing_file`` naming the URL, no or wrong
credentials ``unreadable``); ffmpeg reads http(s) and presigned s3 URLs itself
with range requests, so a large object is never downloaded whole; messages
never hold a signature. Errors found while streaming are raised at the end
of iteration, after the frames already yielded: consume the whole iterator
before trusting the frames (:func:`decode_video` does).

Example::

    cfg = DecodeConfig(mode="fps", fps=2.0, short_side=224)
    for frame, rgb in iter_frames("clip.mp4", cfg):
        print(frame.index, frame.timestamp, rgb.shape)   # 12 0.48 (224, 398, 3)
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import threading
import time
from collections import deque
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Optional, Sequence

import ffmpeg
import numpy as np

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None

from schemas.errors import SampleError, UserError
from schemas.options import runtime
from schemas.records import Frame, VideoMeta
from schemas.storage import is_url, media_source, redact
from stages.base import Resources, Stage, VideoTask

MODES = ("fps", "uniform", "windows")
# The shot stream's frame size (width, height): TransNetV2's input, what segment_shots reads (3.9 kB a frame).
SHOT_SIZE = (48, 27)
# Its scaler: "area" averages every source pixel of a cell. ffmpeg's default (bicubic) widened to a 16:1
# reduction cost ~0.6 of the ~2.1 CPU-s of decoding the ../shared clips' 2960 frames; area ~0.15.
SHOT_SCALER = "area"
TRANSPORTS = ("auto", "rgb24")
# Streams whose YUV→RGB matrix is BT.601 limited range, the one ffmpeg and OpenCV both apply by default.
_BT601_SPACES = ("", "unknown", "bt470bg", "smpte170m")
_LIMITED_RANGES = ("", "unknown", "tv")
Window = tuple[float, float]

# Demuxer/decoder messages that mean the data itself is damaged or cut short.
_CORRUPTION_MARKERS = ("partial file", "ended prematurely", "corrupt input packet",
                       "corrupt decoded frame", "invalid data found", "moov atom not found",
                       "truncat", "error while decoding")
_SHOWINFO_FRAME = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(-?\d+)\s+pts_time:\s*(\S+)")
_SHOWINFO_TIMEBASE = re.compile(r"config in time_base:\s*(\d+)/(\d+)")


@dataclass
class DecodeConfig:
    """How to sample frames (see the module docstring for the exact rules).

    ``short_side``: resize so the shorter side has this many pixels (aspect
    kept; 0 keeps the native size). ``max_pixels``: frames larger than this
    many pixels (after ``short_side``) are scaled down to fit, aspect kept
    (default 1920×1080; 0 = no cap). ``max_frames``: stop after this many
    frames (default 600, ten minutes at 1 fps; 0 = no cap). Both caps are
    applied inside ffmpeg's filter graph, so a frame never reaches this
    process larger than ``max_pixels`` and never more than ``max_frames`` of
    them: one sample's frames take at most ``3 · max_pixels · max_frames``
    bytes (3.7 GB at the defaults; an 8192×8192 clip is decoded as 1440×1440).
    ``timeout_s``: wall-clock limit for probing and for decoding one video. ``max_decode_errors``: error lines from ffmpeg tolerated before
    the video counts as corrupt (0 = strict; raise it for messy web video).
    ``threads``: ffmpeg decoder threads (0 = ffmpeg's choice: frame threads on every core). One, the
    default, matches the one CPU the stage declares: the ../shared clips' decode with the shot stream
    took 3.05–3.16 CPU-s with one thread vs 3.53–3.94 with ffmpeg's choice (same frames).
    ``transport``: pixel format on the pipe: ``"auto"`` (see the module
    docstring) or ``"rgb24"`` (always ffmpeg's own RGB conversion).
    ``shot_stream``: the same ffmpeg run also scales every native frame to
    :data:`SHOT_SIZE` for ``segment_shots`` (``task.shot_stream``): one decode of
    the video instead of two. The build turns it on when ``segment_shots.method``
    is not ``none``.
    """

    mode: str = "fps"
    fps: float = 1.0
    num_frames: int = 8
    short_side: int = 0
    timeout_s: float = runtime(300.0)
    max_frames: int = 600
    max_pixels: int = 1920 * 1080
    max_decode_errors: int = 0
    threads: int = runtime(1)
    transport: str = "auto"
    shot_stream: bool = runtime(False)

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise UserError(f"decode transport {self.transport!r} is not one of {', '.join(TRANSPORTS)}")
        if self.mode not in MODES:
            raise UserError(f"decode mode {self.mode!r} is not one of {', '.join(MODES)}")
        if not 0 < self.fps < float("inf"):
            raise UserError(f"decode fps must be > 0, got {self.fps}")
        if self.mode == "uniform" and self.num_frames < 1:
            raise UserError(f"decode num_frames must be >= 1, got {self.num_frames}")
        if self.short_side < 0 or self.max_frames < 0 or self.max_pixels < 0 or not self.timeout_s > 0:
            raise UserError("decode short_side/max_frames/max_pixels must be >= 0 and timeout_s > 0")


@dataclass
class ProbeInfo:
    """What decoding needs beyond :class:`VideoMeta`.

    ``stream_index`` is the absolute index of the chosen video stream;
    ``start_offset`` its start time relative to the file's start (what ffmpeg
    subtracts); ``stream_duration`` is None when the container does not say.
    """

    meta: VideoMeta
    stream_index: int
    start_offset: float
    stream_duration: Optional[float]
    format_name: str
    pix_fmt: str = ""
    color_space: str = ""
    color_range: str = ""


# ------------------------------------------------------------------ probing
def probe(path: str, timeout_s: float = 60.0) -> VideoMeta:
    """Container/stream facts of ``path``'s first video stream; raises :class:`SampleError`.

    ``width``/``height`` are the displayed size (after rotation metadata),
    i.e. the size of the frames :func:`iter_frames` returns without resizing.
    """
    return probe_info(path, timeout_s).meta


def probe_info(path: str, timeout_s: float = 60.0) -> ProbeInfo:
    """:func:`probe` plus the facts :func:`iter_frames` needs (see :class:`ProbeInfo`)."""
    url = _check_readable(path)
    # Same arguments as ffmpeg.probe; run here because ffmpeg-python 0.2's probe has no timeout.
    args = ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", url]
    try:
        done = subprocess.run(args, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise SampleError("timeout", f"ffprobe took longer than {timeout_s:g}s on {path}") from None
    stderr = done.stderr.decode("utf-8", "replace").strip()
    if done.returncode != 0:
        reason = "corrupt_video" if _has_video_signature(path) else "not_a_video"
        raise SampleError(reason, f"ffprobe cannot open {path}: {_tail(stderr)}")
    info = json.loads(done.stdout.decode("utf-8", "replace") or "{}")
    return _parse_probe(path, info)


def _check_readable(path: str) -> str:
    """Fail early with a precise reason for local paths; returns the URL to hand ffmpeg."""
    if "://" in path:
        return path
    if not os.path.exists(path):
        raise SampleError("missing_file", f"no such file: {path}")
    if not os.path.isdir(path) and not os.path.isfile(path):
        # a FIFO or device would block the open below, and is not a video file
        raise SampleError("unreadable", f"not a regular file: {path}")
    try:
        with open(path, "rb") as handle:
            first = handle.read(1)
    except (IsADirectoryError, PermissionError, OSError) as error:
        raise SampleError("unreadable", f"cannot read {path}: {error.strerror or error}") from None
    if not first:
        raise SampleError("empty_file", f"zero-byte file: {path}")
    # "file:" stops ffmpeg from reading a leading "-" as an option or "x:" as a protocol.
    return "file:" + os.path.abspath(path)


def _has_video_signature(path: str) -> bool:
    """Does the file start like a video container (so a probe failure means corruption)?"""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    return (head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")
            or head.startswith((b"\x1a\x45\xdf\xa3", b"GIF87a", b"GIF89a", b"OggS", b"FLV",
                                b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3",
                                b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"))
            or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
            or head[:1] == b"\x47")  # MPEG-TS sync byte


def _parse_probe(path: str, info: dict) -> ProbeInfo:
    streams = info.get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video"
             and not s.get("disposition", {}).get("attached_pic")]
    if not video:
        kinds = sorted({s.get("codec_type", "?") for s in streams}) or ["none"]
        raise SampleError("no_video_stream", f"{path} has no video stream (streams: {', '.join(kinds)})")
    stream, fmt = video[0], info.get("format", {})
    fps = _rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate"))
    width, height = int(stream.get("width") or 0), int(stream.get("height") or 0)
    if width <= 0 or height <= 0:
        raise SampleError("corrupt_video", f"{path}: video stream has no frame size")
    if _rotation(stream) % 180 == 90:  # ffmpeg autorotates, so frames come out transposed
        width, height = height, width
    stream_duration = _float(stream.get("duration"))
    duration = stream_duration if stream_duration is not None else _float(fmt.get("duration"))
    nb_frames = stream.get("nb_frames")
    if nb_frames and str(nb_frames).isdigit():
        num_frames = int(nb_frames)
    else:
        num_frames = int(round(duration * fps)) if duration and fps else -1
    start = (_float(stream.get("start_time")) or 0.0) - (_float(fmt.get("start_time")) or 0.0)
    meta = VideoMeta(path=path, duration=float(duration or 0.0), fps=float(fps), width=width,
                     height=height, codec=str(stream.get("codec_name", "")), num_frames=num_frames)
    return ProbeInfo(meta, int(stream.get("index", 0)), max(0.0, start), stream_duration,
                     str(fmt.get("format_name", "")), str(stream.get("pix_fmt", "")),
                     str(stream.get("color_space", "")), str(stream.get("color_range", "")))


def _rate(text: Optional[str]) -> float:
    try:
        value = Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(value) if 0 < value < 10_000 else 0.0


def _float(text) -> Optional[float]:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _rotation(stream: dict) -> int:
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            return int(round(float(side["rotation"]))) % 360
    return int(float(stream.get("tags", {}).get("rotate", 0) or 0)) % 360


# ------------------------------------------------------------------ sampling plan
def merge_windows(windows: Sequence[Window]) -> list[Window]:
    """Sorted, disjoint union of ``(start, end)`` windows (empty/negative ones dropped)."""
    spans = sorted((max(0.0, float(s)), float(e)) for s, e in windows if float(e) >= max(0.0, float(s)))
    merged: list[list[float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


@dataclass
class _Plan:
    first_target: float
    period: float
    windows: Optional[list[Window]]
    max_frames: int
    coverage_end: Optional[float]  # the last target ≤ this many seconds, if known


def _plan(info: ProbeInfo, cfg: DecodeConfig, windows: Optional[Sequence[Window]]) -> _Plan:
    duration = info.meta.duration
    if cfg.mode == "uniform":
        if duration <= 0:
            raise SampleError("unknown_duration", f"{info.meta.path}: uniform sampling needs a duration")
        period = duration / cfg.num_frames
        cap = cfg.num_frames if not cfg.max_frames else min(cfg.num_frames, cfg.max_frames)
        return _Plan(period / 2, period, None, cap, duration - period / 2)
    merged = None
    if cfg.mode == "windows" and windows:
        # a window shorter than one native frame (e.g. a point in time) still gets the frame after its start
        step = 1.0 / info.meta.fps if info.meta.fps else 0.0
        merged = merge_windows([(s, max(float(e), float(s) + step)) for s, e in windows
                                if float(e) >= float(s)])
    if merged is not None and duration > 0:
        merged = [(s, e) for s, e in merged if s < duration]
        if not merged:
            raise SampleError("empty_window", f"{info.meta.path}: every window starts after "
                              f"the video ends ({duration:.3f}s)")
    end = duration if duration > 0 else None
    if merged is not None and end is not None:
        end = min(end, merged[-1][1])
    return _Plan(0.0, 1.0 / cfg.fps, merged, cfg.max_frames, end)


def _select_expr(plan: _Plan, native_fps: float) -> str:
    """The ``select`` expression; register 0 holds (next target − first target)."""
    half = 0.49 / native_fps if native_fps > 0 else 0.0
    t0, p = f"{plan.first_target:.9f}", f"{plan.period:.9f}"
    keep = f"gte(t,ld(0)+{t0}-{half:.9f})"
    if plan.windows:
        inside = "+".join(f"between(t,{s:.6f},{e:.6f})" for s, e in plan.windows)
        keep = f"{keep}*({inside})"
    advance = f"st(0,(floor((t+{half:.9f}-{t0})/{p})+1)*{p})"
    return f"if({keep},1+0*{advance},0)"


def output_size(width: int, height: int, short_side: int, max_pixels: int = 0) -> tuple[int, int]:
    """``(width, height)`` after resizing the shorter side to ``short_side`` (0 = unchanged), then
    scaling down, aspect kept, until ``width · height ≤ max_pixels`` (0 = no cap)."""
    if short_side > 0 and min(width, height) != short_side:
        scale = short_side / min(width, height)
        if width <= height:
            width, height = short_side, max(1, int(round(height * scale)))
        else:
            width, height = max(1, int(round(width * scale))), short_side
    if max_pixels > 0 and width * height > max_pixels:
        scale = (max_pixels / (width * height)) ** 0.5
        width, height = max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)
    return width, height


def frame_size(info: ProbeInfo, cfg: DecodeConfig) -> tuple[int, int]:
    """The size of the frames :func:`iter_frames` returns for this video and config."""
    return output_size(info.meta.width, info.meta.height, cfg.short_side, cfg.max_pixels)


def pipe_format(info: ProbeInfo, cfg: DecodeConfig) -> str:
    """The pixel format ffmpeg writes to the pipe: ``"yuv420p"`` or ``"rgb24"`` (module docstring)."""
    width, height = frame_size(info, cfg)
    native = (width, height) == (info.meta.width, info.meta.height)
    if (cfg.transport == "auto" and native and width % 2 == 0 and height % 2 == 0
            and info.pix_fmt == "yuv420p" and info.color_space in _BT601_SPACES
            and info.color_range in _LIMITED_RANGES):
        return "yuv420p"
    return "rgb24"


def ffmpeg_args(url: str, info: ProbeInfo, cfg: DecodeConfig,
                windows: Optional[Sequence[Window]] = None, output: str = "pipe:",
                showinfo: bool = True, pix_fmt: Optional[str] = None,
                shot_file: Optional[str] = None) -> list[str]:
    """The full ffmpeg command line :func:`iter_frames` runs (benchmarks reuse it).

    ``showinfo=False``, ``output="/dev/null"`` and ``pix_fmt="rgb24"`` give the
    identical decode to RGB without our timestamp logging: the reference the
    decode benchmark compares to. ``pix_fmt`` defaults to :func:`pipe_format`.
    ``shot_file``: a second output, every decoded frame scaled to :data:`SHOT_SIZE`
    as raw ``rgb24`` (the frames :func:`stages.segment_shots.decode_small` gives).
    """
    plan = _plan(info, cfg, windows)
    width, height = frame_size(info, cfg)
    input_kwargs = {"threads": cfg.threads} if cfg.threads else {}
    if url.startswith(("http://", "https://")):   # a dropped connection resumes at its byte offset
        input_kwargs.update(reconnect=1, reconnect_on_network_error=1, reconnect_delay_max=8)
    stream = ffmpeg.input(url, **input_kwargs)[str(info.stream_index)]
    if shot_file is not None:
        split = stream.split()
        stream, shots = split[0], split[1].filter("scale", *SHOT_SIZE, flags=SHOT_SCALER)
    stream = stream.filter("select", _select_expr(plan, info.meta.fps))
    if (width, height) != (info.meta.width, info.meta.height):
        stream = stream.filter("scale", width, height, flags="area")
    if showinfo:
        stream = stream.filter("showinfo", checksum=0)
    out_kwargs = {"format": "rawvideo", "pix_fmt": pix_fmt or pipe_format(info, cfg), "fps_mode": "passthrough"}
    if plan.max_frames:
        out_kwargs["frames:v"] = plan.max_frames
    outputs = ffmpeg.output(stream, output, **out_kwargs)
    if shot_file is not None:   # a file, not a pipe: ffmpeg never waits on a reader of the second output
        outputs = ffmpeg.merge_outputs(outputs, ffmpeg.output(shots, shot_file, format="rawvideo", pix_fmt="rgb24",
                                                              fps_mode="passthrough"))
    args = outputs.get_args()
    return ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-loglevel", "+level+info", "-y", *args]


# ------------------------------------------------------------------ decoding
class _StderrLog:
    """Parses ffmpeg's stderr as it arrives: showinfo timestamps, errors, corruption markers."""

    def __init__(self):
        self.timestamps: deque[Fraction] = deque()
        self.time_base: Optional[Fraction] = None
        self.errors: deque[str] = deque(maxlen=8)
        self.error_count = 0
        self.corruption: Optional[str] = None
        self.last_lines: deque[str] = deque(maxlen=8)
        self._partial = b""

    def feed(self, data: bytes) -> None:
        """Take a chunk of stderr; ``b""`` (end of stream) flushes an unterminated last line."""
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop() if data else b""
        for raw in lines:
            self._line(raw.decode("utf-8", "replace").rstrip())

    def _line(self, line: str) -> None:
        if "showinfo" in line:
            match = _SHOWINFO_FRAME.search(line)
            if match:
                if self.time_base is not None:
                    self.timestamps.append(int(match.group(2)) * self.time_base)
                else:  # never seen, but fall back to the printed value (6 significant digits)
                    self.timestamps.append(Fraction(match.group(3)))
                return
            match = _SHOWINFO_TIMEBASE.search(line)
            if match and self.time_base is None:
                self.time_base = Fraction(int(match.group(1)), int(match.group(2)))
                return
        if not line or "[info]" in line:
            return
        self.last_lines.append(line)
        if "[error]" in line or "[fatal]" in line:
            self.error_count += 1
            self.errors.append(line)
        low = line.lower()
        if self.corruption is None and any(marker in low for marker in _CORRUPTION_MARKERS):
            self.corruption = line


def iter_frames(path: str, cfg: DecodeConfig, windows: Optional[Sequence[Window]] = None,
                info: Optional[ProbeInfo] = None, shot_file: Optional[str] = None
                ) -> Iterator[tuple[Frame, np.ndarray]]:
    """Yield ``(Frame, rgb)`` for the sampled frames of ``path``, in time order.

    ``rgb`` is a fresh ``H×W×3`` uint8 array. ``windows`` are ``(start, end)``
    seconds, used when ``cfg.mode == "windows"``. ``info`` skips the probe.
    ``shot_file``: ffmpeg also writes the shot stream there (:func:`ffmpeg_args`),
    complete once the iterator is exhausted.
    Raises :class:`SampleError` (see the module docstring); errors detected
    while streaming are raised after the last frame.
    """
    deadline = time.monotonic() + cfg.timeout_s
    info = info or probe_info(path, cfg.timeout_s)
    url = _check_readable(path)
    if info.format_name == "gif" and not _gif_complete(path):
        raise SampleError("corrupt_video", f"{path}: GIF has no trailer byte (truncated)")
    transport = pipe_format(info, cfg)
    args = ffmpeg_args(url, info, cfg, windows, pix_fmt=transport, shot_file=shot_file)
    plan = _plan(info, cfg, windows)
    width, height = frame_size(info, cfg)
    # A yuv420p frame arrives as one plane of 1.5·H rows (Y, then U and V) and is
    # converted as soon as it is complete.
    shape = (height * 3 // 2, width) if transport == "yuv420p" else (height, width, 3)
    to_rgb = _yuv420p_to_rgb if transport == "yuv420p" else None
    frame_bytes = int(np.prod(shape))

    # stderr goes to a file, read after each frame: ffmpeg never blocks on it, and
    # blocking reads of the frame pipe cost a fraction of a select() loop's wake-ups.
    # showinfo logs a frame before the frame reaches the pipe, so its timestamp is
    # in the file by the time the frame's last byte is read.
    with tempfile.NamedTemporaryFile(prefix="finsta-ffmpeg-", suffix=".log") as stderr_file, \
            open(stderr_file.name, "rb") as stderr_reader:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=stderr_file, bufsize=0)
        expired = threading.Event()
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), _expire, (proc, expired))
        watchdog.daemon = True
        watchdog.start()
        log = _StderrLog()
        count, last_time, filled = 0, 0.0, 0
        ready: deque[np.ndarray] = deque()  # complete frames whose timestamp has not been read yet

        def timed_frames() -> Iterator[tuple[Frame, np.ndarray]]:
            nonlocal count, last_time
            while ready and log.timestamps:
                frame = _frame(log.timestamps.popleft(), info, count)
                count, last_time = count + 1, frame.timestamp
                yield frame, ready.popleft()

        image = np.empty(shape, np.uint8)
        try:
            _grow_pipe(proc.stdout.fileno(), frame_bytes)
            while True:
                filled = _read_frame(proc.stdout, memoryview(image.reshape(-1)))
                if filled < frame_bytes:
                    break
                if to_rgb is not None:
                    ready.append(to_rgb(image))  # a fresh RGB array: the yuv buffer is reused
                else:
                    ready.append(image)
                    image = np.empty(shape, np.uint8)
                news = stderr_reader.read()
                if news:
                    log.feed(news)
                yield from timed_frames()
            returncode = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
        log.feed(stderr_reader.read())
        log.feed(b"")
        if expired.is_set():
            returncode = None
        if returncode == 0:
            yield from timed_frames()

    if returncode is None:
        raise SampleError("timeout", f"decoding {path} took longer than {cfg.timeout_s:g}s "
                          f"({count} frames done)")
    detail = " | ".join(log.errors) or " | ".join(log.last_lines)
    if returncode != 0:
        raise SampleError("corrupt_video", f"ffmpeg exited with {returncode} on {path}: {_tail(detail)}")
    if log.corruption is not None:
        raise SampleError("corrupt_video", f"{path}: {_tail(log.corruption)}")
    if log.error_count > cfg.max_decode_errors:
        raise SampleError("corrupt_video", f"{path}: {log.error_count} decode errors: {_tail(detail)}")
    if filled:
        raise SampleError("corrupt_video", f"{path}: ffmpeg stopped in the middle of frame {count}")
    if ready:
        raise SampleError("corrupt_video", f"{path}: {len(ready)} frames arrived without a timestamp")
    if count == 0:
        raise SampleError("corrupt_video", f"{path}: no frame could be decoded")
    _check_coverage(path, info, plan, count, last_time)


def _check_coverage(path: str, info: ProbeInfo, plan: _Plan, count: int, last_time: float) -> None:
    """Catch silent truncation: frames stopped well before the stream's declared end."""
    if info.stream_duration is None or plan.coverage_end is None:
        return
    if plan.max_frames and count >= plan.max_frames:
        return
    end = min(plan.coverage_end, info.start_offset + info.stream_duration)
    slack = max(2 * plan.period, 2.0 / info.meta.fps if info.meta.fps else 0.0, 1.0)
    if last_time < end - slack:
        raise SampleError("corrupt_video", f"{path}: frames stop at {last_time:.2f}s but the "
                          f"stream declares {info.start_offset + info.stream_duration:.2f}s (truncated?)")


def _frame(timestamp: Fraction, info: ProbeInfo, count: int) -> Frame:
    seconds = float(timestamp)
    index = int(round((seconds - info.start_offset) * info.meta.fps)) if info.meta.fps else count
    return Frame(index, seconds)


def _read_frame(pipe, view: memoryview) -> int:
    """Fill ``view`` from a blocking pipe; fewer bytes than its size means end of stream."""
    filled = 0
    while filled < len(view):
        got = pipe.readinto(view[filled:])
        if not got:
            break
        filled += got
    return filled


def _expire(proc: subprocess.Popen, expired: threading.Event) -> None:
    """The watchdog: kill ffmpeg when the decode deadline passes (the pipe then ends)."""
    expired.set()
    proc.kill()


def _yuv420p_to_rgb(planes: np.ndarray) -> np.ndarray:
    """A fresh ``H×W×3`` RGB frame from one ``(1.5·H)×W`` yuv420p buffer (BT.601, limited range).

    Converts on one OpenCV thread. The decode stage declares one CPU (ffmpeg's
    decoder may have threads of its own); OpenCV's pool would split a frame over all
    cores and spin between frames (measured: 115 vs 86 µs of CPU per 640×360
    frame). OpenCV's thread count is process-wide, so it is restored after the
    call: a detector in the same process keeps its own setting.
    """
    import cv2  # only needed on this path; a heavy import

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420)
    finally:
        cv2.setNumThreads(threads)


def _grow_pipe(fd: int, frame_bytes: int) -> None:
    """Let a whole frame (up to 1 MiB, Linux's default cap) sit in the pipe: fewer wake-ups."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl else None
    if setpipe is None:
        return
    try:
        fcntl.fcntl(fd, setpipe, min(max(frame_bytes, 1 << 16), 1 << 20))
    except OSError:
        pass


def _gif_complete(path: str) -> bool:
    """A GIF ends with the trailer byte 0x3B; a cut-off GIF decodes silently otherwise."""
    try:
        with open(path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\x3b"
    except OSError:
        return True  # not seekable (e.g. a URL): cannot tell


def _tail(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else "…" + text[-limit:]


def decode_video(path: str, cfg: DecodeConfig, windows: Optional[Sequence[Window]] = None
                 ) -> tuple[VideoMeta, list[Frame], list[np.ndarray]]:
    """Probe and decode all sampled frames of ``path`` (only the sampled ones stay in memory).

    ``path`` may be a URL (module docstring).
    """
    meta, frames, images, _ = _decode(path, cfg, windows, shot_stream=False)
    return meta, frames, images


ShotStream = tuple[np.ndarray, float, float]   # [N, H, W, 3] uint8 every native frame, native fps, start offset (s)


def shot_frames(data: bytes) -> np.ndarray:
    """Raw ``rgb24`` frames of :data:`SHOT_SIZE` as ``[N, H, W, 3]`` (a trailing partial frame dropped)."""
    width, height = SHOT_SIZE
    frames = np.frombuffer(data, np.uint8)
    return frames[:len(frames) - len(frames) % (width * height * 3)].reshape(-1, height, width, 3)


def _decode(path: str, cfg: DecodeConfig, windows: Optional[Sequence[Window]], shot_stream: bool
            ) -> tuple[VideoMeta, list[Frame], list[np.ndarray], Optional[ShotStream]]:
    """:func:`decode_video`, and with ``shot_stream`` the shot stream of the same ffmpeg run (None if empty)."""
    frames: list[Frame] = []
    images: list[np.ndarray] = []
    stream = None
    folder = tempfile.TemporaryDirectory(prefix="finsta-shots-") if shot_stream else nullcontext(None)
    with opened_input(path, cfg.timeout_s) as source, folder as work:
        info = probe_info(source, cfg.timeout_s)
        shot_file = os.path.join(work, "shots.rgb") if work else None
        for frame, image in iter_frames(source, cfg, windows, info=info, shot_file=shot_file):
            frames.append(frame)
            images.append(image)
        if shot_file is not None and os.path.isfile(shot_file):
            with open(shot_file, "rb") as handle:
                small = shot_frames(handle.read())
            stream = (small, info.meta.fps, info.start_offset) if len(small) else None
    info.meta.path = path   # the URL the user gave, never a presigned one
    return info.meta, frames, images, stream


@contextmanager
def opened_input(path: str, timeout_s: float) -> Iterator[str]:
    """What ffmpeg opens for ``path`` (itself, a presigned URL made here, or a spool removed on exit);
    ``timeout_s`` bounds each ffmpeg run inside (a presigned URL outlives two of them).

    Storage errors become :class:`SampleError`; any SampleError raised inside names ``path``, never
    the presigned URL.
    """
    if not is_url(path):
        yield path
        return
    with ExitStack() as stack:
        try:   # the presigned URL must outlive probe and decode, each bounded by timeout_s
            source = stack.enter_context(media_source(path, expires_s=timeout_s * 2 + 60))
        except FileNotFoundError as error:
            raise SampleError("missing_file", str(error)) from None
        except PermissionError as error:
            raise SampleError("unreadable", str(error)) from None
        except ConnectionError as error:
            raise SampleError("network_error", str(error)) from None
        try:
            yield source
        except SampleError as error:
            raise SampleError(error.reason, redact(error.message.replace(source, path))) from None


class DecodeStage(Stage):
    """``task.video_path`` → ``task.meta``, ``task.frames``, ``task.images`` (and ``task.shot_stream``
    with ``cfg.shot_stream``).

    In ``windows`` mode the windows are the timed captions' ``(start, end)``;
    a video without timed captions is sampled at ``cfg.fps`` throughout.
    """

    name = "decode"
    config_class = DecodeConfig
    needs = ("video_path",)
    produces = ("meta", "frames", "images", "shot_stream")
    batch_size = 1   # a video's frames are large: one video at a time per worker

    @property
    def resources(self) -> Resources:
        return Resources(cpus=float(max(1, self.cfg.threads)))

    def time_budget_s(self, default: float) -> float:
        """Decode bounds itself (``timeout_s`` kills ffmpeg); the executor's hard limit comes after it."""
        return self.cfg.timeout_s * 2 + 30.0   # probe and decode each have timeout_s

    def process_one(self, task: VideoTask) -> VideoTask:
        windows = None
        if self.cfg.mode == "windows":
            windows = [(c.start, c.end) for c in task.captions
                       if c.start is not None and c.end is not None] or None
        meta, frames, images, task.shot_stream = _decode(task.video_path, self.cfg, windows, self.cfg.shot_stream)
        meta.path = task.video_path
        if output_size(meta.width, meta.height, self.cfg.short_side) != \
                output_size(meta.width, meta.height, self.cfg.short_side, self.cfg.max_pixels):
            task.counts["videos_downscaled_to_max_pixels"] = 1
        if self.cfg.max_frames and len(frames) >= self.cfg.max_frames:
            task.counts["videos_at_max_frames"] = 1
        task.meta, task.frames, task.images = meta, frames, images
        task.stage_frames[self.name] = len(frames)
        task.stage_bytes[self.name] = sum(image.nbytes for image in images)
        return task
