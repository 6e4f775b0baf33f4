"""Small test videos generated with ffmpeg's lavfi sources (no data files needed).

Every helper writes one file and returns its path; they need only ``ffmpeg`` on
PATH and take well under a second for the default sizes. The container and
codec follow the file suffix:

=========  ===========================  =====================================
suffix     container                    video codec
=========  ===========================  =====================================
``.mp4``   ISO BMFF (``+faststart``)    H.264 (libx264, yuv420p)
``.mkv``   Matroska                     H.264 (libx264, yuv420p)
``.webm``  WebM                         VP8 (libvpx)
``.avi``   AVI                          MPEG-4 Part 2
``.gif``   animated GIF                 GIF (gray palette for ``index``)
=========  ===========================  =====================================

With ``pattern="index"`` each frame encodes its own native frame number in
three vertical grey bands (base-16 digits, least significant on the left), so
a test can check *which* frame a decoder returned::

    from tests.stages.video_fixtures import make_video, read_index
    path = make_video(tmp_path / "a.mp4", seconds=2, fps=25)
    # ... decode frame k ...
    assert read_index(image) == k          # survives lossy coding and resizing

Bad inputs for the failure paths: :func:`make_audio_only`,
:func:`make_zero_byte`, :func:`make_truncated`, :func:`make_text_file`,
:func:`make_unreadable` and, all at once, :func:`make_bad_inputs`.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

CONTAINERS = (".mp4", ".mkv", ".webm", ".avi", ".gif")

_CODEC_ARGS = {
    ".mp4": ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
             "-movflags", "+faststart"],
    ".mov": ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"],
    ".mkv": ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"],
    ".webm": ["-c:v", "libvpx", "-b:v", "1M", "-crf", "4", "-pix_fmt", "yuv420p"],
    ".avi": ["-c:v", "mpeg4", "-q:v", "2", "-pix_fmt", "yuv420p"],
    ".gif": ["-c:v", "gif"],
}

# Three bands, 16 grey levels each: level = digit * 16 + 8, read back as level // 16,
# so coding/resizing errors up to ±7 grey levels still decode to the right digit.
_INDEX_LUM = ("(if(lt(X,W/3),mod(N,16),if(lt(X,2*W/3),mod(floor(N/16),16),"
              "mod(floor(N/256),16)))*16+8)")
MAX_INDEX_FRAMES = 16 ** 3


def _run_ffmpeg(args: list[str], timeout: float = 120.0) -> None:
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    done = subprocess.run(cmd, capture_output=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({done.returncode}): {done.stderr.decode(errors='replace')}")


def make_video(path: str | Path, *, seconds: float = 2.0, fps: float = 10.0,
               size: tuple[int, int] = (96, 64), pattern: str = "index",
               audio: bool = False, extra_args: tuple[str, ...] = ()) -> Path:
    """Write a ``seconds``-long constant-frame-rate video; codec by suffix (see module doc).

    ``size`` is ``(width, height)``. ``pattern``: ``"index"`` (frames encode their
    native number, see :func:`read_index`; at most :data:`MAX_INDEX_FRAMES` frames)
    or ``"testsrc"`` (ffmpeg's moving test card; cheap for long videos).
    ``audio=True`` adds a sine track (not for ``.gif``). ``extra_args`` go
    before the output path (e.g. ``("-g", "1")``).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _CODEC_ARGS:
        raise ValueError(f"unsupported suffix {suffix!r}; use one of {sorted(_CODEC_ARGS)}")
    w, h = size
    if pattern == "index":
        if round(seconds * fps) > MAX_INDEX_FRAMES:
            raise ValueError(f"index pattern holds at most {MAX_INDEX_FRAMES} frames")
        fmt = "gray" if suffix == ".gif" else "yuv420p"
        source = (f"nullsrc=s={w}x{h}:r={fps}:d={seconds},format=gray,"
                  f"geq=lum='{_INDEX_LUM}',format={fmt}")
    elif pattern == "testsrc":
        source = f"testsrc=s={w}x{h}:r={fps}:d={seconds}"
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    args = ["-f", "lavfi", "-i", source]
    if audio and suffix != ".gif":
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
                 "-c:a", "libopus" if suffix == ".webm" else "aac" if suffix != ".avi" else "mp3"]
    args += _CODEC_ARGS[suffix] + list(extra_args) + [str(path)]
    _run_ffmpeg(args)
    return path


def read_index(image: np.ndarray) -> int:
    """The native frame number encoded by ``make_video(pattern="index")`` in an RGB image."""
    gray = np.asarray(image, np.float32)
    gray = gray.mean(axis=2) if gray.ndim == 3 else gray
    h, w = gray.shape
    index = 0
    for band in range(3):
        # sample the middle of each band, away from edges blurred by chroma/resizing
        x0, x1 = int(w * (band / 3 + 1 / 12)), int(w * (band / 3 + 3 / 12))
        level = float(np.median(gray[h // 4: 3 * h // 4 + 1, x0:max(x1, x0 + 1)]))
        index += int(np.clip(level // 16, 0, 15)) * 16 ** band
    return index


def make_audio_only(path: str | Path, seconds: float = 1.0) -> Path:
    """An audio-only file (AAC in ``.m4a``/``.mp4``, Opus in ``.webm``/``.ogg``, else by ffmpeg's default)."""
    path = Path(path)
    codec = {".webm": "libopus", ".ogg": "libopus", ".m4a": "aac", ".mp4": "aac"}.get(path.suffix.lower())
    args = ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    args += (["-c:a", codec] if codec else []) + [str(path)]
    _run_ffmpeg(args)
    return path


def make_zero_byte(path: str | Path) -> Path:
    """An empty file with a video suffix."""
    path = Path(path)
    path.write_bytes(b"")
    return path


def make_truncated(path: str | Path, source: str | Path, fraction: float = 0.5) -> Path:
    """The first ``fraction`` of ``source``'s bytes (a download cut short)."""
    data = Path(source).read_bytes()
    path = Path(path)
    path.write_bytes(data[: max(1, int(len(data) * fraction))])
    return path


def make_text_file(path: str | Path) -> Path:
    """A plain text file, whatever its suffix (``clip.mp4`` that is not a video)."""
    path = Path(path)
    path.write_text("this is a caption file, not a video\n" * 20)
    return path


def make_unreadable(path: str | Path) -> Path:
    """A path that exists but cannot be read as a file, even by root: a directory.

    (``chmod 000`` does not stop root, and the test suite may run as root.)
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_bad_inputs(directory: str | Path) -> dict[str, Path]:
    """One file per failure case, keyed by the ``SampleError.reason`` decoding must give.

    Keys: ``missing_file``, ``empty_file``, ``not_a_video``, ``no_video_stream``,
    ``corrupt_video`` (an mp4 whose ``moov`` index was cut off), ``unreadable``.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    whole = make_video(d / "whole_for_truncation.mov", seconds=2.0, fps=10)  # moov at the end
    return {
        "missing_file": d / "does_not_exist.mp4",
        "empty_file": make_zero_byte(d / "empty.mp4"),
        "not_a_video": make_text_file(d / "notes.mp4"),
        "no_video_stream": make_audio_only(d / "audio.m4a"),
        "corrupt_video": make_truncated(d / "cut.mp4", whole, 0.5),
        "unreadable": make_unreadable(d / "a_directory.mp4"),
    }


def make_all_containers(directory: str | Path, **kwargs) -> dict[str, Path]:
    """One video per container in :data:`CONTAINERS` (``kwargs`` go to :func:`make_video`)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    return {suffix: make_video(d / f"clip{suffix}", **kwargs) for suffix in CONTAINERS}
