"""``build-sgs``: where a sample goes, from the dataset to a committed shard.

Flow (docs/architecture.md)::

    dataset.tasks() ─ select (resume, changed inputs, retry, key safety, duplicates)
      → preflight: every stage checks its packages and files, in this process, before any worker starts
      → executor (pipeline/executors/): the pools of pipeline/plan.py, stage after stage in catalog order
            decode → detect → track → relate → embed_visual → parse_captions → merge_hsg → embed_text
      → driver (here): VideoTask → (VideoSample, SampleFeatures) | FailureRecord → shards of ``write.shard_size``

Every sample ends committed or as a failure row, whatever the number of
workers and nodes (shards hold samples in completion order). A shard is
committed when it is full or has been open ``write.shard_max_seconds``, and on
SIGINT/SIGTERM every finished sample is committed before the run ends
(:class:`pipeline.stop.Interrupted`), so kill -9 loses at most the samples in
flight and about a minute of finished ones; the rerun skips every committed key.

Example::

    cfg = BuildConfig(dataset=DatasetConfig(name="sample"))
    result = run_build(cfg, Path("out/sample"))
    result.committed, result.failed
"""
from __future__ import annotations

import functools
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from pipeline.config import finalize
from pipeline.datasets.base import MISSING_FILE, build_dataset
from pipeline.executors import make_executor
from pipeline.plan import build_stages, plan_pools, stage_names
from pipeline.progress import Progress
from pipeline.stop import Interrupted
from schemas.options import adopt_older
from schemas.stop import StopRun, StopSignals
from schemas.errors import UserError
from schemas.records import FEATURE_ARRAYS, FailureRecord, SampleFeatures, VideoSample
from schemas.storage import is_url
from schemas.storage import preflight as storage_preflight
from schemas.store import DUPLICATE_KEY, DatasetWriter, check_key, open_dataset
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


def continue_older(cfg, out: Path) -> list[str]:
    """An output made before some option existed continues with the value it was made with
    (:func:`schemas.options.adopt_older`), not today's default: e.g. ``detect.ssd.precision`` f32 for one made
    before bf16 was the default. Returns a note per option adopted."""
    if cfg.run.overwrite or not (out / "manifest.json").exists():
        return []
    try:
        old = json.loads((out / "manifest.json").read_text()).get("config")
    except (OSError, ValueError, AttributeError):      # the store reports an unreadable manifest itself
        return []
    if not isinstance(old, dict):
        return []
    return [f"{out} was made before {name} existed: continuing with {functools.reduce(getattr, name.split('.'), cfg)!r}, "
            f"the value it was made with" for name in adopt_older(cfg, old)]


def preflight(cfg) -> None:
    """Every stage's cheap checks (packages, weight files, options), here, before a worker starts."""
    for stage in build_stages(cfg):
        try:
            stage.preflight()
        except UserError as error:
            raise UserError(f"stage {stage.name} cannot start: {error}") from None
    if cfg.run.executor == "ray" and cfg.run.ray_address:
        from schemas.ray_runtime import check_address
        check_address(cfg.run.ray_address)


def check_url_access(tasks: list[VideoTask]) -> None:
    """Read one byte of the first URL video, so missing or wrong credentials stop the run here, in
    one line, before Ray starts (every worker reads with the same standard credentials)."""
    url = next((task.video_path for task in tasks if is_url(task.video_path)), None)
    if url is None:
        return
    try:
        storage_preflight(url)
    except (PermissionError, ConnectionError) as error:
        raise UserError(f"cannot read the input videos: {error}") from None


# ------------------------------------------------------------------ result
@dataclass
class BuildResult:
    out: Path
    total: int = 0
    committed: int = 0
    failed: int = 0
    skipped_committed: int = 0
    skipped_failed: int = 0
    changed: int = 0                  # samples run again because their input fingerprint changed
    gone: set = field(default_factory=set)   # recorded failures whose keys the listing no longer has
    to_run: int = 0
    missing: int = 0                  # of the failure rows this run: local videos not there (MISSING_FILE)
    failed_early: int = 0             # failure rows this run made before any stage (missing, bad entries, keys)
    failures_by_reason: Counter = field(default_factory=Counter)
    stage_seconds: Counter = field(default_factory=Counter)
    stage_frames: Counter = field(default_factory=Counter)
    stage_bytes: Counter = field(default_factory=Counter)
    dataset_stats: dict = field(default_factory=dict)
    wall_seconds: float = 0.0
    first_result_seconds: Optional[float] = None  # start-up share: Ray, workers, model loads
    shards_written: int = 0
    committed_this_run: int = 0       # samples and failure rows this run committed
    in_flight: int = 0                # started and not finished when the run stopped
    sample_counts: Counter = field(default_factory=Counter)   # what stages counted (task.counts)
    store_notes: list = field(default_factory=list)            # what opening OUT found (quarantine, stale lock)
    cluster: dict = field(default_factory=dict)                # the executor's report(): nodes lost, pools' busy share

    @property
    def all_failed(self) -> bool:
        """This run handled samples and every one of them failed (the CLI exits 1)."""
        handled = self.to_run + self.failed_early
        return handled > 0 and sum(self.failures_by_reason.values()) >= handled


# ------------------------------------------------------------------ selection
def select_tasks(tasks: Iterable[VideoTask], committed: set[str], failed: set[str], retry_failed: bool,
                 result: BuildResult, stored: Optional[dict[str, str]] = None
                 ) -> tuple[list[VideoTask], list[FailureRecord], dict[str, str]]:
    """Split the dataset into tasks to run and immediate failure rows.

    Committed keys are skipped; recorded failures are skipped unless
    ``retry_failed``, which runs *only* them; a key whose input fingerprint
    differs from the one ``stored`` with its row (key → fingerprint) is run
    either way (``result.changed``; only a key's first entry in the listing is
    compared: a repeat is a duplicate). Unsafe and duplicate keys and tasks the
    dataset already failed become failure rows (once). Returns the tasks to
    run, the failure rows, and the fingerprint of every key selected;
    ``result.gone``: the ``failed`` keys the listing did not have.
    """
    to_run, failures, seen, listed, fingerprints = [], [], Counter(), Counter(), {}
    stored = stored or {}
    for task in tasks:
        result.total += 1
        listed[task.key] += 1
        changed = (listed[task.key] == 1 and bool(task.fingerprint) and
                   stored.get(task.key, task.fingerprint) != task.fingerprint)
        if task.key in committed and not changed:
            result.skipped_committed += 1
            continue
        if not changed and retry_failed != (task.key in failed):
            result.skipped_failed += task.key in failed
            continue
        result.changed += changed
        seen[task.key] += 1
        if task.failure is not None:   # the dataset's own verdict (bad_record, duplicate_key) stands
            pass
        elif (problem := check_key(task.key)) is not None:
            task.failure = FailureRecord(task.key, SELECT_STAGE, "unsafe_key", problem, task.video_path)
        elif seen[task.key] > 1:
            task.failure = FailureRecord(task.key, SELECT_STAGE, DUPLICATE_KEY,
                                         f"occurrence {seen[task.key]} of this id in the dataset; the first was kept",
                                         task.video_path)
        fingerprints.setdefault(task.key, task.fingerprint)
        if task.failure is not None:
            failures.append(task.failure)
            result.missing += task.failure.error_type == MISSING_FILE
        else:
            to_run.append(task)
    result.to_run, result.failed_early = len(to_run), len(failures)
    result.gone = failed - listed.keys()
    return to_run, failures, fingerprints


# ------------------------------------------------------------------ conversion
def to_sample(task: VideoTask, dims: dict[str, int]) -> tuple[VideoSample, SampleFeatures]:
    """A finished task as stored records; raises ValueError when rows do not align or a feature is not
    finite (the sample becomes an ``invalid_output`` failure row)."""
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
        if array.dtype.kind == "f" and not np.isfinite(array).all():   # NaN would train NaN, rank as ties
            raise ValueError(f"{name} features hold {int((~np.isfinite(array)).sum())} NaN or infinite value(s)")
        arrays[name] = array
    spans = arrays["token_span"]
    if len(spans) and (spans[:, 0].min() < 0 or spans[:, 0].max() >= len(task.hsgs)):
        raise ValueError("token_span names a caption the sample does not have")
    return VideoSample(task.key, task.source, dsg, list(task.hsgs)), SampleFeatures(**arrays)


# ------------------------------------------------------------------ driver
class _OpenShard:
    """Finished samples and failure rows waiting to be committed, and when to commit them.

    A shard is committed when it holds ``write.shard_size`` rows or when its
    oldest row has waited ``write.shard_max_seconds`` (so a kill -9 loses at
    most about that much finished work), and whatever is left at the end or
    on a stop. Failure rows made before any stage (``add_early``: missing
    files, bad entries) ride along with the first shard and count toward no
    size or age, so they never fill shards of their own; made again by the
    listing, they are cheap to lose.
    """

    def __init__(self, writer: DatasetWriter, cfg, result: BuildResult, progress: Progress,
                 fingerprints: Optional[dict[str, str]] = None):
        self.writer, self.cfg, self.result, self.progress = writer, cfg, result, progress
        self.fingerprints = fingerprints or {}   # key → input fingerprint, stored with the key's rows
        self.samples: list[tuple[VideoSample, SampleFeatures]] = []
        self.failures: list[FailureRecord] = []
        self.early: list[FailureRecord] = []
        self.opened: Optional[float] = None
        self.bytes = 0   # feature bytes of the samples waiting (write.shard_max_bytes)

    def add(self, task: VideoTask, dims: dict[str, int]) -> None:
        for table, source in ((self.result.stage_seconds, task.stage_seconds),
                              (self.result.stage_frames, task.stage_frames),
                              (self.result.stage_bytes, task.stage_bytes), (self.result.sample_counts, task.counts)):
            table.update(source)
        if task.failure is None:
            try:
                self.samples.append(to_sample(task, dims))
                self.bytes += sum(np.asarray(getattr(self.samples[-1][1], name)).nbytes for name in FEATURE_ARRAYS)
            except ValueError as error:
                task.failure = FailureRecord(task.key, WRITE_STAGE, "invalid_output", str(error), task.video_path)
        if task.failure is not None:
            self.add_failure(task.failure)
        self.progress.advance(task, failed=task.failure is not None)
        self.opened = self.opened or time.monotonic()

    def add_failure(self, failure: FailureRecord) -> None:
        self.failures.append(failure)
        self.result.failures_by_reason[failure.error_type] += 1
        self.opened = self.opened or time.monotonic()

    def add_early(self, failures: list[FailureRecord]) -> None:
        self.early = list(failures)
        self.result.failures_by_reason.update(f.error_type for f in failures)

    def due(self) -> bool:
        rows = len(self.samples) + len(self.failures)
        return rows >= self.cfg.shard_size or self.bytes >= self.cfg.shard_max_bytes or (rows > 0 and time.monotonic() - self.opened >= self.cfg.shard_max_seconds)

    def commit(self) -> None:
        failures = self.early + self.failures
        if not (self.samples or failures):
            return
        name = self.writer.write_shard(self.samples, failures, fingerprints=self.fingerprints)
        self.result.shards_written += 1
        self.result.committed_this_run += len(self.samples) + len(failures)
        self.progress.shard_committed(len(self.samples), len(failures), name)
        self.samples, self.failures, self.early, self.opened, self.bytes = [], [], [], None, 0
        # merge the small shards time-based commits leave during the run, not only at its end
        self.writer.compact(self.cfg.shard_size, min_run=self.cfg.compact_every)


def run_build(cfg, out: Path, progress: Optional[Progress] = None) -> BuildResult:
    """Run (or, with ``cfg.run.dry_run``, plan) a build into ``out``.

    Raises :class:`pipeline.stop.Interrupted` after committing every finished
    sample when SIGINT/SIGTERM arrives (its ``line()`` is what to print, its
    ``exit_code`` 130/143), and :class:`UserError` (one line) for what the user
    can fix, including a folder that cannot be written (disk full).
    """
    started = time.perf_counter()
    cfg, _ = finalize(cfg)   # idempotent; the CLI has already validated and shown its warnings
    result = BuildResult(out=out)
    progress = progress or Progress(quiet=True, background=False)
    with StopSignals(grace_s=cfg.run.stop_grace_s) as stop:
        try:
            _build(cfg, out, progress, stop, result, started)
        except StopRun as stopped:
            raise Interrupted(stopped.signum, result.committed_this_run, result.in_flight) from None
        except SystemError:   # a StopRun raised inside a native call (Ray's) comes out as a SystemError
            if stop.signum is None:
                raise
            raise Interrupted(stop.signum, result.committed_this_run, result.in_flight) from None
        except OSError as error:   # the output folder: disk full, permissions, a file system gone
            where = error.filename or out
            raise UserError(f"{error.strerror or error}: {where}; {result.committed_this_run} samples committed "
                            "this run; fix it and rerun the same command to continue") from None
    result.wall_seconds = time.perf_counter() - started
    return result


def _build(cfg, out: Path, progress: Progress, stop: StopSignals, result: BuildResult, started: float) -> None:
    with stop.interruptible():
        older = continue_older(cfg, out)
        dataset = build_dataset(cfg.dataset)
        dims = feature_dims(cfg)
        if cfg.run.dry_run:
            committed, failed, stored = _existing_status(out, cfg)
            select_tasks(dataset.tasks(), committed, failed, cfg.run.retry_failed, result, stored)
            result.dataset_stats = dataset.stats()
            return
        progress.phase("checking stages")
        preflight(cfg)
        progress.phase("listing samples")
        writer = DatasetWriter(out, cfg.identity(), dims, overwrite=cfg.run.overwrite, host=host_identity(cfg),
                               check_data=cfg.run.check_data)
    with writer:
        result.store_notes = older + list(writer.notes)
        for note in result.store_notes:
            progress.log(note)
        with stop.interruptible():
            committed = writer.committed_keys()
            tasks, early_failures, fingerprints = select_tasks(
                dataset.tasks(), committed, writer.failed_keys(), cfg.run.retry_failed, result, writer.fingerprints())
        result.dataset_stats = dataset.stats()
        check_url_access(tasks)
        changed = committed & fingerprints.keys()   # committed before from other inputs: the old rows go
        # failures of entries the whole listing no longer has (a corrected line that was keyed by its position)
        gone = frozenset(result.gone if cfg.dataset.limit is None else ())
        if changed or gone:
            writer.drop_samples(changed, failures_of=gone)
        if changed:
            progress.log(f"{len(changed)} committed samples changed since (captions, times or video file): "
                         "redoing them")
        if gone:
            progress.log(f"{len(gone)} failure rows of entries no longer in the dataset removed")
        if tasks or early_failures:
            _run_tasks(cfg, writer, tasks, early_failures, fingerprints, dims, progress, stop, result, started)
            before = len(writer.shards)
            merged = writer.compact(cfg.write.shard_size)   # small shards (time-based, interrupted) slow readers
            if merged:
                result.store_notes.append(f"compacted {before - len(writer.shards) + len(merged)} small shards "
                                          f"into {', '.join(merged)}")
        result.committed = len(writer.committed_keys())
    result.failed = len(open_dataset(out).failures())


def _run_tasks(cfg, writer: DatasetWriter, tasks: list[VideoTask], early_failures: list[FailureRecord],
               fingerprints: dict[str, str], dims: dict[str, int], progress: Progress, stop: StopSignals,
               result: BuildResult, started: float) -> None:
    """The executor's finished tasks into shards; on a stop, every finished one is committed first.
    ``fingerprints``: key → input fingerprint, stored with each row; ``started``: when the build began
    (``first_result_seconds`` counts from there)."""
    progress.start(total=len(tasks), stages=stage_names(cfg), failed_early=len(early_failures))
    shard = _OpenShard(writer, cfg.write, result, progress, fingerprints)
    shard.add_early(early_failures)
    executor = make_executor(cfg, plan_pools(cfg), stop) if tasks else None
    stop.hard_exit_note = lambda: f"{result.committed_this_run} committed; rerun the same command to continue"
    if executor is not None:
        progress.phase("starting Ray, workers and models" if cfg.run.executor == "ray" else "loading models")
    completed = False
    try:
        for task in (executor.run(tasks) if executor else ()):
            if task is not None:
                if result.first_result_seconds is None:
                    result.first_result_seconds = time.perf_counter() - started
                shard.add(task, dims)
            while executor.notes:        # the cluster changed (a node lost or joined)
                progress.log(executor.notes.pop(0))
            if shard.due():
                shard.commit()
            if stop.signum is not None:
                break
        completed = stop.signum is None
    finally:
        result.in_flight = executor.in_flight if executor else 0
        result.cluster = executor.report() if executor else {}
        try:
            shard.commit()
        finally:
            if executor is not None:
                with stop.deadline(60.0, "the workers did not stop within 60s; exiting"):
                    executor.close()
            progress.finish() if completed else progress.finish(completed=False)
    if stop.signum is not None:
        raise Interrupted(stop.signum, result.committed_this_run, result.in_flight)


def _existing_status(out: Path, cfg) -> tuple[set[str], set[str], dict[str, str]]:
    """Committed keys, failed keys and stored fingerprints of ``out``, read only (the dry run)."""
    if not (out / "manifest.json").exists() or cfg.run.overwrite:
        return set(), set(), {}
    dataset = open_dataset(out)
    return set(dataset.keys()), dataset.failed_keys(), dataset.fingerprints()
