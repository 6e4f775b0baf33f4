"""The Ray executor: each planned pool is one Ray Data ``map_batches`` over an actor pool.

Each actor builds its pool's stages once and calls every ``setup()`` once;
batches stream through the pools in input order (``preserve_order``), so the
same input gives the same shards for 1 or N workers and nodes. A GPU pool's
actors request ``resources.gpus`` each and there are as many as the cluster's
GPUs hold (or ``run.gpu_workers``). A stage that cannot start inside an actor
does not kill it: the actor answers every batch with the error, and the driver
raises it as one :class:`UserError` line.

Example::

    for task in run_on_ray(plan_pools(cfg), tasks, cfg):
        ...
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pipeline.executors import run_stages, setup_stages
from pipeline.plan import Pool
from schemas.errors import UserError
from stages.base import VideoTask, internal_error
from stages.registry import PLUGINS_VARIABLE

REPO = Path(__file__).resolve().parents[2]
# Variables a cluster's workers get from the driver (a local Ray inherits the whole environment).
FORWARDED = (PLUGINS_VARIABLE, "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class _PoolActor:
    """A Ray Data callable class: one pool's stages, models loaded once per actor."""

    def __init__(self, pool: Pool):
        _quiet_ray_data_logs()
        self.pool = pool
        self.stages = pool.build()
        self.error = ""
        try:
            setup_stages(self.stages)
        except UserError as error:
            self.error = str(error)
        except Exception as error:  # a bug in a stage's setup: one line too, with its file:line
            self.error = f"a stage of pool {pool.name} failed to start: {internal_error(error).message}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tasks = list(batch["task"])
        errors = [str(e) for e in batch["error"]]
        if not any(errors):
            errors = [self.error] * len(tasks)
        if not any(errors):
            try:
                tasks = run_stages(self.stages, tasks, self.pool.drop_images_after)
            except UserError as error:
                errors = [str(error)] * len(tasks)
        return {"task": _objects(tasks), "error": _objects(errors)}


def _objects(items: list) -> np.ndarray:
    column = np.empty(len(items), dtype=object)
    column[:] = items
    return column


def run_on_ray(pools: list[Pool], tasks: list[VideoTask], cfg: Any) -> Iterator[VideoTask]:
    """Stream tasks through the pools with Ray Data, in input order."""
    import ray

    init_ray(cfg)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False  # pipeline.progress shows per-stage counts itself
    context.print_on_execution_start = False
    cluster = ray.cluster_resources()
    gpus = cluster.get("GPU", 0.0)
    for pool in pools:
        if pool.on_gpu and gpus < pool.resources.gpus:
            raise UserError(f"pool {pool.name} asks for {pool.resources.gpus:g} GPU per worker (a stage's device is "
                            f"cuda) but the Ray cluster has {gpus:g} GPU(s); use device=cpu or a cluster with GPUs")
    # Every actor of every pool is alive at once (streaming); shrink CPU requests that
    # would not fit the cluster rather than wait forever for them.
    wanted = sum(pool.resources.cpus * pool.actors(gpus) for pool in pools)
    scale = min(1.0, cluster.get("CPU", wanted) / wanted) if wanted else 1.0
    dataset = ray.data.from_items([{"task": task, "error": ""} for task in tasks],
                                  override_num_blocks=max(1, len(tasks)))
    for pool in pools:
        dataset = dataset.map_batches(
            _PoolActor, fn_constructor_args=(pool,), batch_size=max(1, pool.batch_size), batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=pool.actors(gpus)), num_cpus=pool.resources.cpus * scale,
            num_gpus=pool.resources.gpus or None, zero_copy_batch=True)
    for batch in dataset.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=1):
        error = next((str(e) for e in batch["error"] if e), "")
        if error:
            raise UserError(error)
        yield from batch["task"]


def init_ray(cfg: Any) -> None:
    """Join ``cfg.run.ray_address``, or start this run's own local Ray (never another process's)."""
    import ray

    if ray.is_initialized():
        return
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    kwargs = dict(logging_level="ERROR", log_to_driver=not cfg.run.quiet, configure_logging=True)
    try:
        if cfg.run.ray_address:
            env = {"PYTHONPATH": pythonpath, **{name: os.environ[name] for name in FORWARDED if name in os.environ}}
            ray.init(address=cfg.run.ray_address, runtime_env={"env_vars": env}, **kwargs)
        else:
            # A local Ray inherits this process's environment, so workers find our packages
            # without a runtime_env: the worker Ray prestarts at init can then host the first
            # actor instead of a fresh one starting (seconds of CPU on a small machine).
            # address="local" always starts a new instance, even when another is recorded in
            # Ray's temp folder (a `ray start` or a test cluster on the same machine).
            with _environment(PYTHONPATH=pythonpath, RAY_USAGE_STATS_ENABLED=os.environ.get(
                    "RAY_USAGE_STATS_ENABLED", "0")):
                ray.init(address="local", num_cpus=cfg.run.num_cpus or None, include_dashboard=False, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as error:
        where = cfg.run.ray_address or "a local Ray instance"
        raise UserError(f"cannot start or join Ray at {where}: {error}".replace("\n", " ")) from None
    _quiet_ray_data_logs()


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of the block (what ``ray.init`` hands its processes)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _quiet_ray_data_logs() -> None:
    """Tasks travel as Python objects by design; Ray Data's notes about that (and its
    per-run INFO lines) would drown the progress display."""
    import ray.data  # noqa: F401  (configures the "ray.data" logger on import)

    for handler in logging.getLogger("ray.data").handlers:
        if not hasattr(handler, "_path"):  # keep Ray Data's session log file complete
            handler.setLevel(logging.ERROR)
