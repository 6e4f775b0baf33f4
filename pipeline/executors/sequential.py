"""The in-process executor: every pool's stages in this process, one task at a time.

Example::

    for task in run_sequential(plan_pools(cfg), tasks):
        ...   # finished (or failed) tasks, in input order
"""
from __future__ import annotations

from typing import Iterator

from pipeline.executors import run_stages, setup_stages
from pipeline.plan import Pool
from stages.base import VideoTask


def run_sequential(pools: list[Pool], tasks: list[VideoTask]) -> Iterator[VideoTask]:
    built = []
    for pool in pools:
        stages = pool.build()
        setup_stages(stages)
        built.append((pool, stages))
    for task in tasks:
        batch = [task]
        for pool, stages in built:
            batch = run_stages(stages, batch, pool.drop_images_after)
        yield from batch
