"""``build-sgs``: where a sample goes, from the dataset to a committed shard.

Flow (docs/architecture.md)::

    dataset.tasks() ─ select (resume, retry, key safety, duplicates)
      → preflight: every stage checks its packages and files, in this process, before any worker starts
      → executor (pipeline/executors/): the pools of pipeline/plan.py, stage after stage in catalog order
            decode → detect → track → relate → embed_visual → parse_captions → merge_hsg → embed_text
      → driver (here): VideoTask → (VideoSample, SampleFeatures) | FailureRecord → shards of ``write.shard_size``

Order is preserved, so the same input gives the same shards for 1 or N
workers and 1 or N nodes. A shard is committed as soon as it is full, so a
killed run loses at most the samples in flight; the rerun skips every
committed key.

Example::

    cfg = BuildConfig(dataset=DatasetConfig(name="sample"))
    result = run_build(cfg, Path("out/sample"))
    result.committed, result.failed
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from pipeline.config import finalize
from pipeline.datasets.base import build_dataset
from pipeline.plan import build_stages, plan_pools, stage_names
from pipeline.progress import Progress
from schemas.records import FEATURE_ARRAYS, FailureRecord, SampleFeatures, VideoSample
from schemas.store import DatasetWriter, check_key, open_dataset
from stages.base import VideoTask
from stages.detectors.base import build_detector
from stages.embed_text import text_feature_dims
from stages.embed_visual import visual_feature_dims

SELECT_STAGE = "select"
WRITE_STAGE = "write"


# Where each stored feature array comes from on a finished task.
FEATURE_SOURCES = {"frame": "frame_features", "detection": "detection_features", "text_node": "text_node_features",
                   "caption": "caption_features", "caption_token": "caption_token_features",
                   "token_span": "caption_token_spans", "frame_patch": "frame_patch_features"}


def feature_dims(cfg) -> dict[str, int]:
    dims = {**visual_feature_dims(cfg.embed_visual, build_detector(cfg.detect).feature_dim),
            **text_feature_dims(cfg.embed_text)}
    return {name: dims[name] for name in FEATURE_ARRAYS}


def host_identity(cfg) -> dict:
    """Which host models made the features: the identity of the two embed stages' config sections
    (stored as the manifest's ``host``; ``train`` and ``eval`` refuse to mix hosts)."""
    identity = cfg.identity()
    return {"embed_visual": identity["embed_visual"], "embed_text": identity["embed_text"]}


def preflight(cfg) -> None:
    """Every stage's cheap checks (packages, weight files, options), here, before a worker starts."""
    from schemas.errors import UserError

    for stage in build_stages(cfg):
        try:
            stage.preflight()
        except UserError as error:
            raise UserError(f"stage {stage.name} cannot start: {error}") from None


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


# ------------------------------------------------------------------ conversion
def to_sample(task: VideoTask, dims: dict[str, int]) -> tuple[VideoSample, SampleFeatures]:
    """A finished task as stored records; raises ValueError when rows do not align."""
    dsg = task.dsg
    if dsg is None:
        raise ValueError("no dynamic scene graph was produced")
    tokens = task.caption_token_features
    expected = {"frame": len(dsg.frames), "detection": len(dsg.detections),
                "text_node": sum(len(h.tsg.nodes) for h in task.hsgs), "caption": len(task.hsgs),
                "caption_token": 0 if tokens is None else len(tokens), "token_span": 0 if tokens is None else len(tokens)}
    patches = task.frame_patch_features
    if patches is not None and len(dsg.frames) and len(patches) % len(dsg.frames):
        raise ValueError(f"{len(patches)} frame_patch rows for {len(dsg.frames)} frames")
    expected["frame_patch"] = 0 if patches is None else len(patches)
    arrays = {}
    for name in FEATURE_ARRAYS:
        source = getattr(task, FEATURE_SOURCES[name])
        array = np.zeros((0, dims[name]), np.float32) if source is None else np.asarray(source)
        if array.shape != (expected[name], dims[name]):
            raise ValueError(f"{name} features have shape {array.shape}, expected {(expected[name], dims[name])}")
        arrays[name] = array
    spans = arrays["token_span"]
    if len(spans) and (spans[:, 0].min() < 0 or spans[:, 0].max() >= len(task.hsgs)):
        raise ValueError("token_span names a caption the sample does not have")
    return VideoSample(task.key, task.source, dsg, list(task.hsgs)), SampleFeatures(**arrays)


# ------------------------------------------------------------------ driver
def _execute(cfg, tasks: list[VideoTask]):
    pools = plan_pools(cfg)
    if cfg.run.executor == "ray":
        from pipeline.executors.ray import run_on_ray
        return run_on_ray(pools, tasks, cfg)
    from pipeline.executors.sequential import run_sequential
    return run_sequential(pools, tasks)


def run_build(cfg, out: Path, progress: Optional[Progress] = None) -> BuildResult:
    """Run (or, with ``cfg.run.dry_run``, plan) a build into ``out``."""
    started = time.perf_counter()
    cfg, _ = finalize(cfg)   # idempotent; the CLI has already validated and shown its warnings
    result = BuildResult(out=out)
    dataset = build_dataset(cfg.dataset)
    dims = feature_dims(cfg)
    if cfg.run.dry_run:
        committed, failed = _existing_status(out, cfg)
        select_tasks(dataset.tasks(), committed, failed, cfg.run.retry_failed, result)
        result.dataset_stats = dataset.stats()
        return result
    progress = progress or Progress(quiet=True, background=False)
    progress.phase("checking stages")
    preflight(cfg)
    progress.phase("listing samples")
    writer = DatasetWriter(out, cfg.identity(), dims, overwrite=cfg.run.overwrite, host=host_identity(cfg))
    tasks, early_failures = select_tasks(dataset.tasks(), writer.committed_keys(), writer.failed_keys(),
                                         cfg.run.retry_failed, result)
    result.dataset_stats = dataset.stats()
    progress.start(total=len(tasks) + len(early_failures), stages=stage_names(cfg))
    samples: list[tuple[VideoSample, SampleFeatures]] = []
    failures: list[FailureRecord] = list(early_failures)
    for failure in early_failures:
        result.failures_by_reason[failure.error_type] += 1
        progress.advance(None, failed=True)

    def flush() -> None:
        nonlocal samples, failures
        if samples or failures:
            name = writer.write_shard(samples, failures)
            result.shards_written += 1
            progress.shard_committed(len(samples), len(failures), name)
            samples, failures = [], []

    progress.phase("starting Ray, workers and models" if cfg.run.executor == "ray" else "loading models")
    finished = _execute(cfg, tasks)
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
        if len(samples) + len(failures) >= cfg.write.shard_size:
            flush()
    flush()
    result.committed = len(writer.committed_keys())
    result.failed = len(writer.failed_keys())
    result.wall_seconds = time.perf_counter() - started
    progress.finish()
    return result


def _existing_status(out: Path, cfg) -> tuple[set[str], set[str]]:
    if not (out / "manifest.json").exists() or cfg.run.overwrite:
        return set(), set()
    dataset = open_dataset(out)
    return set(dataset.keys()), dataset.failed_keys()
