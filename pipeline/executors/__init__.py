"""Executors: run the planned pools (:mod:`pipeline.plan`) over tasks, finished tasks out in input order.

``sequential`` runs every pool in this process (debugging, the benchmark
reference); ``ray`` runs each pool as a Ray Data actor pool. Both build each
pool's stages once per worker, call every stage's ``setup()`` once, and pass
batches through :func:`run_stages`. A stage that cannot start (missing package
or weights, bad option) raises :class:`schemas.errors.UserError` from the
executor as one line, before any sample is marked failed.
"""
from __future__ import annotations

from typing import Optional

from stages.base import Stage, VideoTask


def setup_stages(stages: list[Stage]) -> None:
    """``setup()`` of each stage, once; a failure names the stage."""
    from schemas.errors import UserError

    for stage in stages:
        try:
            stage.setup()
        except UserError as error:
            raise UserError(f"stage {stage.name} cannot start: {error}") from None


def run_stages(stages: list[Stage], tasks: list[VideoTask], drop_images_after: Optional[str]) -> list[VideoTask]:
    """One batch through ``stages`` in order; frames dropped after ``drop_images_after``."""
    for stage in stages:
        tasks = stage.process_batch(tasks)
        if stage.name == drop_images_after:
            for task in tasks:
                task.images = None
    return tasks
