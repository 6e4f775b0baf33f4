"""``build-sgs``: dataset → stages (on Ray or in-process) → committed shards.

Flow (docs/architecture.md)::

    dataset.tasks() ─ select (resume, retry, key safety, duplicates)
      → video group:   decode → detect → track → relate → embed_visual   (frames stay inside one actor)
      → caption group: parse_captions → merge_hsg → embed_text            (own pool when a stage uses a GPU)
      → driver: VideoTask → (VideoSample, SampleFeatures) | FailureRecord → shards of ``shard_size``

Each group is one Ray Data ``map_batches`` over an actor pool whose actors
call every stage's ``setup()`` once; decoded frames never leave the video
group's actor, so only graphs and features travel between processes. On CPU
only, both groups run in one actor (see :func:`stage_groups`). Order
is preserved, so the same input gives the same shards for 1 or N workers and
1 or N nodes. A shard is committed as soon as it is full, so a killed run
loses at most the samples in flight; the rerun skips every committed key.

Example::

    cfg = BuildConfig(dataset=DatasetConfig(name="sample"))
    result = run_build(cfg, Path("out/sample"))
    result.committed, result.failed
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from pipeline.config import BuildConfig
from pipeline.datasets.base import build_dataset
from pipeline.progress import Progress
from schemas.errors import UserError
from schemas.records import FEATURE_ARRAYS, FailureRecord, SampleFeatures, VideoSample
from schemas.store import DatasetWriter, check_key, open_dataset
from stages.base import Resources, Stage, VideoTask
from stages.captions.stage import CaptionParseStage
from stages.decode import DecodeStage
from stages.detectors.base import DetectStage, build_detector
from stages.embed_text import TextEmbedStage, text_feature_dims
from stages.embed_visual import VisualEmbedStage, visual_feature_dims
from stages.hsg_merge import HSGMergeStage
from stages.relations import AttributeRelationStage
from stages.tracking import TrackingStage

REPO = Path(__file__).resolve().parents[1]
SELECT_STAGE = "select"
WRITE_STAGE = "write"


# ------------------------------------------------------------------ plan
@dataclass
class StageGroup:
    """Stages that run back to back inside one worker (one Ray actor pool)."""

    name: str
    factories: list[Callable[[], Stage]]
    resources: Resources
    batch_size: int
    drop_images: bool = False

    def build(self) -> list[Stage]:
        return [make() for make in self.factories]


def stage_groups(cfg: BuildConfig) -> list[StageGroup]:
    """The pipeline's stage groups for ``cfg``, in order.

    ``cfg.run.stage_groups``: ``two`` gives the video stages and the caption
    stages their own actor pools (so a GPU detector scales apart from the CPU
    text stages); ``one`` runs every stage in one actor (no hand-over between
    processes, one copy of each model per worker); ``auto`` picks ``two`` when
    any stage asks for a GPU, else ``one``.
    """
    video = [lambda: DecodeStage(cfg.decode), lambda: DetectStage(cfg.detector), lambda: TrackingStage(cfg.tracker),
             lambda: AttributeRelationStage(cfg.relations), lambda: VisualEmbedStage(cfg.visual)]
    captions = [lambda: CaptionParseStage(cfg.parser), lambda: HSGMergeStage(cfg.merge),
                lambda: TextEmbedStage(cfg.text)]
    split = cfg.run.stage_groups
    if split not in ("auto", "one", "two"):
        raise UserError(f"run.stage_groups {split!r}: choose auto, one or two")
    if split == "auto":
        split = "two" if _group_resources(video + captions).gpus > 0 else "one"
    if split == "one":
        return [StageGroup("all", video + captions, _group_resources(video + captions), cfg.video_batch_size,
                           drop_images=True)]
    return [StageGroup("video", video, _group_resources(video), cfg.video_batch_size, drop_images=True),
            StageGroup("captions", captions, _group_resources(captions), cfg.caption_batch_size)]


def _group_resources(factories: list[Callable[[], Stage]]) -> Resources:
    declared = [make().resources for make in factories]
    return Resources(cpus=max(r.cpus for r in declared), gpus=max(r.gpus for r in declared))


def feature_dims(cfg: BuildConfig) -> dict[str, int]:
    dims = {**visual_feature_dims(cfg.visual, build_detector(cfg.detector).feature_dim), **text_feature_dims()}
    return {name: dims[name] for name in FEATURE_ARRAYS}


def stage_names(cfg: BuildConfig) -> list[str]:
    return [make().name for group in stage_groups(cfg) for make in group.factories]


# ------------------------------------------------------------------ result
@dataclass
class BuildResult:
    out: Path
    total: int = 0
    committed: int = 0
    failed: int = 0
    skipped_committed: int = 0
    skipped_failed: int = 0
    to_run: int = 0
    failures_by_reason: Counter = field(default_factory=Counter)
    stage_seconds: Counter = field(default_factory=Counter)
    stage_frames: Counter = field(default_factory=Counter)
    stage_bytes: Counter = field(default_factory=Counter)
    dataset_stats: dict = field(default_factory=dict)
    wall_seconds: float = 0.0
    first_result_seconds: Optional[float] = None  # start-up share: Ray, workers, model loads
    shards_written: int = 0


# ------------------------------------------------------------------ selection
def select_tasks(tasks: Iterable[VideoTask], committed: set[str], failed: set[str], retry_failed: bool,
                 result: BuildResult) -> tuple[list[VideoTask], list[FailureRecord]]:
    """Split the dataset into tasks to run and immediate failure rows.

    Committed keys are skipped; recorded failures are skipped unless
    ``retry_failed``, which runs *only* them. Unsafe and duplicate keys and
    tasks the dataset already failed become failure rows (once).
    """
    to_run, failures, seen = [], [], set()
    for task in tasks:
        result.total += 1
        if task.key in committed:
            result.skipped_committed += 1
            continue
        if retry_failed != (task.key in failed):
            result.skipped_failed += task.key in failed
            continue
        problem = check_key(task.key)
        if problem is None and task.key in seen:
            task.failure = FailureRecord(task.key, SELECT_STAGE, "duplicate_key",
                                         "the dataset lists this id more than once; the first was kept",
                                         task.video_path)
        elif problem is not None:
            task.failure = FailureRecord(task.key, SELECT_STAGE, "unsafe_key", problem, task.video_path)
        seen.add(task.key)
        if task.failure is not None:
            failures.append(task.failure)
        else:
            to_run.append(task)
    result.to_run = len(to_run)
    return to_run, failures


# ------------------------------------------------------------------ executors
def run_sequential(groups: list[StageGroup], tasks: list[VideoTask]) -> Iterator[VideoTask]:
    """The same stages in this process, in order; the benchmark reference."""
    built = []
    for group in groups:
        stages = group.build()
        for stage in stages:
            stage.setup()
        built.append((group, stages))
    for task in tasks:
        batch = [task]
        for group, stages in built:
            batch = _run_group(stages, batch, group.drop_images)
        yield from batch


def _run_group(stages: list[Stage], tasks: list[VideoTask], drop_images: bool) -> list[VideoTask]:
    for stage in stages:
        tasks = stage.process_batch(tasks)
    if drop_images:
        for task in tasks:
            task.images = None
    return tasks


class _GroupActor:
    """A Ray Data callable class: one stage group, models loaded once per actor."""

    def __init__(self, group: StageGroup):
        _quiet_ray_data_logs()
        self.group = group
        self.stages = group.build()
        for stage in self.stages:
            stage.setup()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tasks = _run_group(self.stages, list(batch["task"]), self.group.drop_images)
        column = np.empty(len(tasks), dtype=object)
        column[:] = tasks
        return {"task": column}


def run_on_ray(groups: list[StageGroup], tasks: list[VideoTask], cfg: BuildConfig) -> Iterator[VideoTask]:
    """Stream tasks through the groups with Ray Data, in input order."""
    import ray

    _init_ray(cfg)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False  # pipeline.progress shows per-stage counts itself
    context.print_on_execution_start = False
    workers = max(1, cfg.run.workers)
    # Every actor of every group is alive at once (streaming); shrink CPU requests that
    # would not fit the cluster rather than wait forever for them.
    wanted = sum(group.resources.cpus for group in groups) * workers
    scale = min(1.0, ray.cluster_resources().get("CPU", wanted) / wanted) if wanted else 1.0
    dataset = ray.data.from_items([{"task": task} for task in tasks], override_num_blocks=max(1, len(tasks)))
    for group in groups:
        dataset = dataset.map_batches(
            _GroupActor, fn_constructor_args=(group,), batch_size=max(1, group.batch_size),
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=group.resources.cpus * scale, num_gpus=group.resources.gpus or None, zero_copy_batch=True)
    for batch in dataset.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=1):
        yield from batch["task"]


def _init_ray(cfg: BuildConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    kwargs = dict(logging_level="ERROR", log_to_driver=not cfg.run.quiet, configure_logging=True)
    try:
        if cfg.run.ray_address:
            ray.init(address=cfg.run.ray_address, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **kwargs)
        else:
            # A local Ray inherits this process's environment, so workers find our packages
            # without a runtime_env: the worker Ray prestarts at init can then host the first
            # actor instead of a fresh one starting (seconds of CPU on a small machine).
            with _environment(PYTHONPATH=pythonpath, RAY_USAGE_STATS_ENABLED=os.environ.get(
                    "RAY_USAGE_STATS_ENABLED", "0")):
                ray.init(num_cpus=cfg.run.num_cpus or None, include_dashboard=False, **kwargs)
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


# ------------------------------------------------------------------ conversion
def to_sample(task: VideoTask, dims: dict[str, int]) -> tuple[VideoSample, SampleFeatures]:
    """A finished task as stored records; raises ValueError when rows do not align."""
    dsg = task.dsg
    if dsg is None:
        raise ValueError("no dynamic scene graph was produced")
    expected = {"frame": len(dsg.frames), "detection": len(dsg.detections),
                "text_node": sum(len(h.tsg.nodes) for h in task.hsgs), "caption": len(task.hsgs)}
    arrays = {}
    for name, source in (("frame", task.frame_features), ("detection", task.detection_features),
                         ("text_node", task.text_node_features), ("caption", task.caption_features)):
        array = np.zeros((0, dims[name]), np.float32) if source is None else np.asarray(source)
        if array.shape != (expected[name], dims[name]):
            raise ValueError(f"{name} features have shape {array.shape}, expected {(expected[name], dims[name])}")
        arrays[name] = array
    return VideoSample(task.key, task.source, dsg, list(task.hsgs)), SampleFeatures(**arrays)


# ------------------------------------------------------------------ driver
def run_build(cfg: BuildConfig, out: Path, progress: Optional[Progress] = None) -> BuildResult:
    """Run (or, with ``cfg.run.dry_run``, plan) a build into ``out``."""
    started = time.perf_counter()
    result = BuildResult(out=out)
    dataset = build_dataset(cfg.dataset)
    dims = feature_dims(cfg)
    if cfg.run.dry_run:
        committed, failed = _existing_status(out, cfg)
        select_tasks(dataset.tasks(), committed, failed, cfg.run.retry_failed, result)
        result.dataset_stats = dataset.stats()
        return result
    writer = DatasetWriter(out, cfg.identity(), dims, overwrite=cfg.run.overwrite)
    tasks, early_failures = select_tasks(dataset.tasks(), writer.committed_keys(), writer.failed_keys(),
                                         cfg.run.retry_failed, result)
    result.dataset_stats = dataset.stats()
    progress = progress or Progress(quiet=True)
    progress.start(total=len(tasks) + len(early_failures), stages=stage_names(cfg))
    samples: list[tuple[VideoSample, SampleFeatures]] = []
    failures: list[FailureRecord] = list(early_failures)
    for failure in early_failures:
        result.failures_by_reason[failure.error_type] += 1
        progress.advance(None, failed=True)

    def flush() -> None:
        nonlocal samples, failures
        if samples or failures:
            writer.write_shard(samples, failures)
            result.shards_written += 1
            progress.log(f"committed shard with {len(samples)} samples, {len(failures)} failures")
            samples, failures = [], []

    groups = stage_groups(cfg)
    finished = run_on_ray(groups, tasks, cfg) if cfg.run.executor == "ray" else run_sequential(groups, tasks)
    for task in finished:
        if result.first_result_seconds is None:
            result.first_result_seconds = time.perf_counter() - started
        for table, source in ((result.stage_seconds, task.stage_seconds), (result.stage_frames, task.stage_frames),
                              (result.stage_bytes, task.stage_bytes)):
            table.update(source)
        if task.failure is None:
            try:
                samples.append(to_sample(task, dims))
            except ValueError as error:
                task.failure = FailureRecord(task.key, WRITE_STAGE, "invalid_output", str(error), task.video_path)
        if task.failure is not None:
            failures.append(task.failure)
            result.failures_by_reason[task.failure.error_type] += 1
        progress.advance(task, failed=task.failure is not None)
        if len(samples) + len(failures) >= cfg.shard_size:
            flush()
    flush()
    result.committed = len(writer.committed_keys())
    result.failed = len(writer.failed_keys())
    result.wall_seconds = time.perf_counter() - started
    progress.finish()
    return result


def _existing_status(out: Path, cfg: BuildConfig) -> tuple[set[str], set[str]]:
    if not (out / "manifest.json").exists() or cfg.run.overwrite:
        return set(), set()
    dataset = open_dataset(out)
    return set(dataset.keys()), dataset.failed_keys()
