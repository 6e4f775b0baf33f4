"""The stage contract and the work item that flows between stages.

A stage is a small class in the style of NeMo Curator's video stages:

* ``name`` is its config section and its file's name (``stages/<name>.py``);
  ``config_class`` is the dataclass of that section; the stage is built as
  ``StageClass(config)``; the catalog (:mod:`stages.catalog`) lists them in
  pipeline order;
* ``resources`` is derived from its own config (``device="cuda"`` → GPUs,
  ``threads`` → CPUs); the pipeline plans actor pools from it;
* ``needs`` / ``uses`` / ``produces`` name the :class:`VideoTask` fields it
  requires, reads when present, and fills; a needed field that is still
  ``None`` makes the sample fail with ``missing_input`` before the stage runs
  (one check, here); the pipeline keeps decoded ``images`` on a task exactly
  until the last stage that needs or uses them, in whichever pool it runs;
* ``preflight()`` runs once in the driver before any worker starts and
  checks what can be checked cheaply (packages, weight files), raising
  :class:`UserError`; ``setup()`` runs once per worker, called by the
  executor, and loads models;
* ``process_batch(tasks)`` is pure on typed records: it returns the tasks with
  its results filled in, and never raises for a bad sample: it sets
  ``task.failure`` instead, and skips tasks that already carry a failure.
  An unexpected exception becomes ``internal_error`` with its file:line.

Example::

    @dataclass
    class UpperConfig:
        enabled: bool = True

    class UpperStage(Stage):
        name = "upper"
        config_class = UpperConfig
        needs = ("captions",)
        produces = ("captions",)
        def process_one(self, task):
            task.captions = [c.upper() for c in task.captions]
            return task
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from schemas.errors import SampleError, UserError
from schemas.records import (DynamicSceneGraph, FailureRecord, Frame, HolisticSceneGraph,
                             TextSceneGraph, VideoMeta)


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs; ``gpus`` may be fractional (0.25 = four workers share a GPU)."""

    cpus: float = 1.0
    gpus: float = 0.0

    @classmethod
    def for_device(cls, device: str, threads: int = 1, gpus: float = 1.0) -> "Resources":
        """``threads`` CPUs (at least one), and ``gpus`` of a GPU when ``device`` is CUDA."""
        return cls(cpus=float(max(1, threads)), gpus=float(gpus) if is_cuda(device) else 0.0)


def is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


@dataclass
class CaptionInput:
    """A caption as a dataset gives it (times in seconds, or None)."""

    text: str
    start: Optional[float] = None
    end: Optional[float] = None
    negative_of: Optional[int] = None
    negative_type: Optional[str] = None


@dataclass
class VideoTask:
    """One sample in flight. Fields fill in stage by stage.

    ``images`` holds decoded RGB frames (``H×W×3`` uint8) only between decode
    and the stages that need pixels; the pipeline drops them before writing.
    """

    key: str
    source: str
    video_id: str
    video_path: str
    captions: list[CaptionInput] = field(default_factory=list)
    meta: Optional[VideoMeta] = None
    frames: list[Frame] = field(default_factory=list)
    images: Optional[list[np.ndarray]] = None
    shot_stream: Optional[tuple[np.ndarray, float, float]] = None   # decode → segment_shots: every native frame
                                                                    # at 48×27 RGB, native fps, start offset (s)
    dsg: Optional[DynamicSceneGraph] = None
    detection_features: Optional[np.ndarray] = None
    frame_features: Optional[np.ndarray] = None
    frame_patch_features: Optional[np.ndarray] = None    # [frames · grid², D] host grid cells
    tsgs: list[TextSceneGraph] = field(default_factory=list)
    hsgs: list[HolisticSceneGraph] = field(default_factory=list)
    text_node_features: Optional[np.ndarray] = None
    caption_features: Optional[np.ndarray] = None
    caption_token_features: Optional[np.ndarray] = None  # [tokens, D] host token states, caption after caption
    caption_token_spans: Optional[np.ndarray] = None     # [tokens, 3] (caption, char start, char end)
    failure: Optional[FailureRecord] = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_frames: dict[str, int] = field(default_factory=dict)
    stage_bytes: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)   # per-sample events a stage counts (summed in stats.json)
    fingerprint: str = ""   # the dataset's input fingerprint (captions, times, video file); the driver stores it

    def fail(self, stage: str, error: BaseException) -> None:
        """Record ``error`` as this sample's failure at ``stage`` (not a SampleError: ``internal_error``)."""
        if not isinstance(error, SampleError):
            error = internal_error(error)
        self.failure = FailureRecord(self.key, stage, error.reason, error.message[:2000], self.video_path)


class Stage:
    """Base class: set ``name``, ``config_class``, ``needs``, ``produces``; override
    ``setup`` and ``process_one`` (or ``process_batch``), and ``resources`` when the
    stage can use a GPU or several threads."""

    name: str = "stage"
    config_class: type = type(None)
    needs: tuple[str, ...] = ()      # VideoTask fields that must be filled (else ``missing_input``)
    uses: tuple[str, ...] = ()       # fields read when present (e.g. ``images`` for colours)
    produces: tuple[str, ...] = ()
    # Tasks per batch this stage wants (None = no preference); a pool takes the smallest of its stages'.
    batch_size: Optional[int] = None

    def __init__(self, cfg: Any = None):
        self.cfg = cfg if cfg is not None else self.config_class()

    @property
    def resources(self) -> Resources:
        """What one worker needs, derived from ``self.cfg``."""
        return Resources()

    def time_budget_s(self, default: float) -> float:
        """Wall-clock seconds one sample may spend in this stage before the executor stops it and
        records ``timeout`` (``default``: ``run.stage_timeout_s``). A stage with its own, tighter
        bound (decode's ``timeout_s``) returns a budget just above that bound."""
        return default

    def preflight(self) -> None:
        """Cheap checks in the driver before workers start (packages, files); raise UserError."""

    def setup(self) -> None:
        """Load models; called once per worker by the executor, before the first batch."""

    def process_one(self, task: VideoTask) -> VideoTask:
        raise NotImplementedError

    def missing_input(self, task: VideoTask) -> Optional[SampleError]:
        """The error for the first needed field that no earlier stage filled, else None."""
        for name in self.needs:
            if getattr(task, name) is None:
                return SampleError("missing_input", f"{self.name} needs task.{name}, which no earlier stage produced")
        return None

    def process_batch(self, tasks: list[VideoTask]) -> list[VideoTask]:
        """Run ``process_one`` on each live task that has its inputs; a raised error becomes its failure."""
        for task in self.check_inputs(tasks):
            started = time.perf_counter()
            run_guarded(self.name, task, self.process_one)
            task.stage_seconds[self.name] = task.stage_seconds.get(self.name, 0.0) + (
                time.perf_counter() - started)
        return tasks

    def check_inputs(self, tasks: list[VideoTask]) -> list[VideoTask]:
        """Fail every live task that lacks a needed input; return the live rest."""
        live = []
        for task in tasks:
            if task.failure is None:
                missing = self.missing_input(task)
                if missing is not None:
                    task.fail(self.name, missing)
                else:
                    live.append(task)
        return live


def run_guarded(stage: str, task: VideoTask, work: Callable[[VideoTask], Any]) -> None:
    """``work(task)``; a :class:`SampleError` becomes the task's failure, any other exception an
    ``internal_error`` failure naming its type and file:line (a bug: reported, and the run goes on).
    A :class:`UserError` is the user's to fix and propagates."""
    try:
        work(task)
    except UserError:
        raise
    except Exception as error:  # a bad sample must not stop the batch
        task.fail(stage, error)


def internal_error(error: BaseException) -> SampleError:
    return SampleError("internal_error", f"{type(error).__name__}: {error} | {_last_frame(error)}")


def _last_frame(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    where = Path(frames[-1].filename)
    return f"{'/'.join(where.parts[-2:])}:{frames[-1].lineno}"  # e.g. stages/track.py:117
