"""Executors: run the planned pools (:mod:`pipeline.plan`) over tasks and hand back each finished task.

``sequential`` runs every pool in this process (debugging, the benchmark
reference); ``ray`` runs each pool as Ray actors under this package's own
scheduler. Both build each pool's stages once per worker, call every stage's
``setup()`` once, and pass batches through :func:`run_stage`. A stage that
cannot start (missing package or weights, bad option) raises
:class:`schemas.errors.UserError` from the executor as one line, before any
sample is marked failed.

The contract every executor keeps (what :mod:`pipeline.build` relies on)::

    executor = make_executor(cfg, pools, stop)       # stop: schemas.stop.StopSignals
    for item in executor.run(tasks):                  # finished tasks, in completion order
        if item is None: ...                          # a heartbeat: at least one a second when idle
    executor.in_flight                                # tasks started and not handed back
    executor.notes                                    # lines for the user (a Ray node lost or joined), drained
    executor.report()                                 # stats.json's "cluster": nodes lost/joined, pools' busy share
    executor.close()                                  # stops every worker; safe to call twice

* every task comes back exactly once, finished or with ``task.failure`` set;
  a task whose stage ran past its time budget (``Stage.time_budget_s``) fails
  as ``timeout`` at that stage, and (Ray) one whose worker died as
  ``worker_lost``, after ``run.max_sample_retries`` retries;
* ``run`` returns early, without raising, once ``stop.signum`` is set; a
  failure that comes back after the signal is not handed back (the signal
  may have caused it: a terminal's Ctrl-C reaches ffmpeg too) and counts as
  in flight, so the rerun does that sample again.
"""
from __future__ import annotations

from typing import Any, Optional

from schemas.records import FailureRecord
from stages.base import Stage, VideoTask, internal_error

TIMEOUT = "timeout"
WORKER_LOST = "worker_lost"


def setup_stages(stages: list[Stage]) -> None:
    """``setup()`` of each stage, once; a failure names the stage."""
    from schemas.errors import UserError

    for stage in stages:
        try:
            stage.setup()
        except UserError as error:
            raise UserError(f"stage {stage.name} cannot start: {error}") from None


def run_stage(stage: Stage, tasks: list[VideoTask], drop_images_after: Optional[str]) -> list[VideoTask]:
    """One batch through one stage; frames dropped after ``drop_images_after``.

    A stage's ``process_batch`` already turns a sample's error into its failure;
    anything that still escapes (a bug in a batch-level method) fails the live
    tasks of the batch as ``internal_error`` instead of the worker. A
    :class:`UserError` propagates.
    """
    from schemas.errors import UserError

    try:
        tasks = stage.process_batch(tasks)
    except UserError:
        raise
    except Exception as error:
        for task in tasks:
            if task.failure is None:
                task.fail(stage.name, internal_error(error))
    if stage.name == drop_images_after:
        for task in tasks:
            task.images = None
    return tasks


def run_stages(stages: list[Stage], tasks: list[VideoTask], drop_images_after: Optional[str]) -> list[VideoTask]:
    """One batch through ``stages`` in order (see :func:`run_stage`)."""
    for stage in stages:
        tasks = run_stage(stage, tasks, drop_images_after)
    return tasks


def failed_copy(task: VideoTask, stage: str, reason: str, message: str) -> VideoTask:
    """``task`` as it entered the pipeline, failed at ``stage`` (its partial results are gone with its worker)."""
    out = VideoTask(key=task.key, source=task.source, video_id=task.video_id, video_path=task.video_path,
                    captions=task.captions)
    out.failure = FailureRecord(task.key, stage, reason, message[:2000], task.video_path)
    return out


def make_executor(cfg: Any, pools: list, stop: Any):
    """The executor ``cfg.run.executor`` names, for ``pools``."""
    if cfg.run.executor == "ray":
        from pipeline.executors.ray import RayExecutor
        return RayExecutor(pools, cfg, stop)
    from pipeline.executors.sequential import SequentialExecutor
    return SequentialExecutor(pools, cfg, stop)
