"""The stage contract and the work item that flows between stages.

A stage is a small class in the style of NeMo Curator's video stages:

* ``resources`` declares what one worker needs (the Ray pipeline reads it);
* ``setup()`` runs once per worker and loads models;
* ``process_batch(tasks)`` is pure on typed records: it returns the tasks with
  its results filled in, and never raises for a bad sample: it sets
  ``task.failure`` instead, and skips tasks that already carry a failure.

Example::

    class Upper(Stage):
        name = "upper"
        def process_one(self, task):
            task.captions = [c.upper() for c in task.captions]
            return task
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from schemas.errors import SampleError
from schemas.records import (DynamicSceneGraph, FailureRecord, Frame, HolisticSceneGraph,
                             TextSceneGraph, VideoMeta)


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs; ``gpus`` may be fractional."""

    cpus: float = 1.0
    gpus: float = 0.0


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
    dsg: Optional[DynamicSceneGraph] = None
    detection_features: Optional[np.ndarray] = None
    frame_features: Optional[np.ndarray] = None
    tsgs: list[TextSceneGraph] = field(default_factory=list)
    hsgs: list[HolisticSceneGraph] = field(default_factory=list)
    text_node_features: Optional[np.ndarray] = None
    caption_features: Optional[np.ndarray] = None
    failure: Optional[FailureRecord] = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_frames: dict[str, int] = field(default_factory=dict)
    stage_bytes: dict[str, int] = field(default_factory=dict)

    def fail(self, stage: str, error: BaseException) -> None:
        reason = error.reason if isinstance(error, SampleError) else type(error).__name__
        message = error.message if isinstance(error, SampleError) else str(error)
        self.failure = FailureRecord(self.key, stage, reason, message[:2000], self.video_path)


class Stage:
    """Base class: override ``setup`` and ``process_one`` (or ``process_batch``)."""

    name: str = "stage"
    resources: Resources = Resources()
    batch_size: int = 1

    def setup(self) -> None:
        """Load models; called once per worker before the first batch."""

    def process_one(self, task: VideoTask) -> VideoTask:
        raise NotImplementedError

    def process_batch(self, tasks: list[VideoTask]) -> list[VideoTask]:
        """Run ``process_one`` on each live task; a raised error becomes its failure."""
        for task in tasks:
            if task.failure is not None:
                continue
            started = time.perf_counter()
            try:
                self.process_one(task)
            except Exception as error:  # a bad sample must not stop the batch
                if not isinstance(error, SampleError):
                    error = SampleError(type(error).__name__, f"{error} | {_last_frame(error)}")
                task.fail(self.name, error)
            task.stage_seconds[self.name] = task.stage_seconds.get(self.name, 0.0) + (
                time.perf_counter() - started)
        return tasks


def _last_frame(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
