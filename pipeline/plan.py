"""From a build config to actor pools: which stages run together, on what, and where frames go.

Derived from the catalog alone (:data:`stages.catalog.STAGES`): each stage,
built from its config section, says what it needs (``resources``) and which
task fields it reads (``needs``/``uses``). With ``run.pools``:

* ``auto``: consecutive stages on the same kind of device share a pool; a
  stage on CUDA starts a new pool that requests GPUs, sized by the GPUs the
  cluster has, while CPU stages keep theirs. On CPU only this is one pool.
* ``one``: every stage in one actor (the largest request of any stage).
* ``each``: one pool per stage (for profiling).

Each pool also carries every stage's time budget per sample
(``Stage.time_budget_s(run.stage_timeout_s)``), which the executors enforce.

Decoded frames stay on a task until the last stage that needs or uses them
(``images`` in its ``needs``/``uses``), whatever the pools: they cross a pool
boundary only when a stage behind it reads them, and are dropped inside the
pool of that last reader.

Example::

    pools = plan_pools(cfg)
    [(p.name, p.stage_names, p.resources.gpus) for p in pools]
    # [('decode…embed_text', ['decode', 'detect', ...], 0.0)]
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from stages.base import Resources, Stage
from stages.catalog import STAGES

IMAGES = "images"


@dataclass
class Pool:
    """Stages that run back to back in one worker (one Ray actor pool)."""

    name: str
    stage_names: list[str]
    sections: list[Any]                # each stage's config section, in order
    resources: Resources
    batch_size: int
    workers: int                       # actors; 0 = as many as the cluster's GPUs hold (GPU pools), or
                                       # balanced on the free CPUs (CPU pools: one to start)
    drop_images_after: Optional[str]   # the stage after which this pool drops task.images
    images_leave: bool                 # frames travel on to the next pool
    time_budgets: list[float] = field(default_factory=list)   # seconds per sample, per stage (Stage.time_budget_s)

    def build(self) -> list[Stage]:
        """Fresh stage objects (no models loaded: the executor calls ``setup()`` once)."""
        classes = {stage.name: stage for stage in STAGES}
        return [classes[name](section) for name, section in zip(self.stage_names, self.sections)]

    @property
    def on_gpu(self) -> bool:
        return self.resources.gpus > 0

    def actors(self, cluster_gpus: float) -> int:
        """Actors to start: ``workers``, or with ``workers == 0`` all the GPUs hold (GPU pool) or one (a CPU
        pool, which the Ray executor grows onto free CPUs)."""
        if self.workers:
            return self.workers
        return max(1, math.floor(cluster_gpus / self.resources.gpus + 1e-9)) if self.on_gpu else 1


def build_stages(cfg: Any) -> list[Stage]:
    """Every catalog stage built from its config section, in pipeline order."""
    return [stage(getattr(cfg, stage.name)) for stage in STAGES]


def plan_pools(cfg: Any) -> list[Pool]:
    """The actor pools for ``cfg`` (see the module docstring)."""
    stages = build_stages(cfg)
    mode = cfg.run.pools
    if mode == "one":
        runs = [stages]
    elif mode == "each":
        runs = [[stage] for stage in stages]
    else:
        runs = []
        for stage in stages:
            if runs and (runs[-1][-1].resources.gpus > 0) == (stage.resources.gpus > 0):
                runs[-1].append(stage)
            else:
                runs.append([stage])
    readers = [s.name for s in stages if IMAGES in s.needs or IMAGES in s.uses]
    last_reader = readers[-1] if readers else "decode"   # nobody reads frames: drop them after decode
    pools, passed = [], False
    for run in runs:
        names = [s.name for s in run]
        holds = last_reader in names
        resources = Resources(cpus=max(s.resources.cpus for s in run), gpus=max(s.resources.gpus for s in run))
        batches = [s.batch_size for s in run if s.batch_size]
        pools.append(Pool(
            name=names[0] if len(names) == 1 else f"{names[0]}…{names[-1]}", stage_names=names,
            sections=[s.cfg for s in run], resources=resources, batch_size=min(batches) if batches else 1,
            workers=cfg.run.gpu_workers if resources.gpus > 0 else cfg.run.workers,
            drop_images_after=last_reader if holds else None, images_leave=not (passed or holds),
            time_budgets=[s.time_budget_s(cfg.run.stage_timeout_s) for s in run]))
        passed = passed or holds
    return pools


def stage_names(cfg: Any) -> list[str]:
    return [stage.name for stage in STAGES]
