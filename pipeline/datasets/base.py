"""The dataset contract, its config, ``build_dataset`` and the shared normalisation.

A dataset turns files on disk into :class:`stages.base.VideoTask` work items,
one per video, in a deterministic order. One file per dataset
(``activitynet.py``, ``msrvtt.py``, ``manifest.py``, ``synthetic.py``,
``sample.py``), each registered in :data:`DATASETS`. Contract::

    ds = build_dataset(DatasetConfig(name="activitynet", data_root="/data/anet", split="val_2"))
    for task in ds.tasks():        # Iterator[VideoTask], same order every run
        task.key, task.video_path, task.captions   # captions: list[CaptionInput]
    ds.stats()                     # {"videos": n, "captions_whitespace_stripped": n, ...}
    ds.describe_layout()           # the expected layout, as shown in error messages

Rules every dataset follows:

* A missing or malformed data root raises :class:`UserError` from the
  constructor, with one message that shows the expected layout.
* Keys are the dataset's own ids, unmodified; the pipeline refuses unsafe ones.
* A missing video still yields a task (``video_path`` where the file should
  be), counted in ``videos_missing``, whose ``failure`` is already set
  (``missing_file``): the listing stats each local file and asks for each URL
  object's metadata, so a missing one never reaches a worker.
* Each task carries its input fingerprint (:func:`input_fingerprint`: captions,
  times, the video's size and mtime, or a URL object's size and ETag), stored
  with its row: a rerun redoes the samples whose inputs changed and skips the
  rest. URL objects are asked about in batches, ``URL_THREADS`` requests at a
  time, after the listing (one HEAD each), unless the videos folder's listing
  already told (S3 and GCS listings carry size and ETag: no request at all) or
  many of a manifest's videos share an S3 folder, which is then listed as far
  as that pays (:mod:`pipeline.datasets.url_versions`).
* An entry the dataset cannot read (a malformed line, a duplicate id) has the
  fingerprint of its failure reason, which no readable entry has: once the
  user corrects it, it is redone on the next run without ``--retry-failed``.
* ``limit`` counts tasks that can run: failure rows met on the way (missing
  files, bad entries) come along without counting.
* A bad entry (malformed line, duplicate id) yields a task whose ``failure``
  is already set (stage ``"dataset"``), so it ends as a failure row.
* Caption quirks are normalised and counted in :meth:`Dataset.stats`, never
  dropped silently (see :func:`normalise_captions`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from abc import ABC, abstractmethod
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

from schemas.errors import UserError
from schemas.options import runtime
from schemas.storage import is_url, list_versions, location, object_version
from schemas.records import FailureRecord
from schemas.store import BAD_RECORD  # noqa: F401  (re-exported: the datasets name their bad lines with it)
from pipeline.datasets.url_versions import FolderListings
from stages.base import CaptionInput, VideoTask
from stages.registry import Registry

DATASETS = Registry("dataset")

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
DATASET_STAGE = "dataset"

# Every counter appears in stats() even when zero, so stats.json has a fixed shape.
STAT_KEYS = (
    "videos", "captions", "negatives", "negatives_dropped",
    "captions_whitespace_stripped", "captions_empty_dropped",
    "segments_overlapping", "segments_clamped_to_duration", "segments_negative_start_clamped",
    "segments_invalid_swapped", "segments_partial_time_dropped",
    "videos_missing", "duplicate_ids", "malformed_entries", "invalid_utf8_replaced",
)
# BAD_RECORD (schemas.store): the failure reason of an entry the dataset cannot read (a malformed line, a bad
# JSON entry); the store counts it per line.
# The failure reason of a video that is not there (the same name decode gives it).
MISSING_FILE = "missing_file"
URL_THREADS = 16    # URL videos' metadata requests (HEAD) in flight at once while listing
URL_BATCH = 256     # tasks read ahead to ask about their URL videos together


@dataclass
class DatasetConfig:
    """Where a dataset lives and which part of it to read.

    ``data_root`` is a folder (or, for ``manifest``, the ``.jsonl``/``.csv``
    file); ``captions``/``videos`` override the default layout; ``mapping``
    is a JSON ``{id: relative path}`` or CSV ``id,path`` file mapping ids to
    videos (relative to the videos folder); ``limit`` caps the tasks yielded.
    """

    name: str = "sample"
    data_root: Optional[str] = None
    split: str = "train"
    captions: Optional[str] = None
    videos: Optional[str] = None
    mapping: Optional[str] = None
    limit: Optional[int] = runtime(None)


class Dataset(ABC):
    """Base class: subclasses implement ``_iter_tasks`` and ``describe_layout``."""

    name: str = "dataset"

    def __init__(self, cfg: DatasetConfig):
        self.cfg = cfg
        self._stats: Counter = Counter({k: 0 for k in STAT_KEYS})

    @abstractmethod
    def _iter_tasks(self) -> Iterator[VideoTask]:
        """Yield every task in order; count quirks into ``self._stats``."""

    @abstractmethod
    def describe_layout(self) -> str:
        """One line: the files this dataset expects."""

    def tasks(self) -> Iterator[VideoTask]:
        """Tasks in a deterministic order, at most ``cfg.limit`` of them that can run
        (failure rows met before the limit is reached come along, uncounted).

        Counters restart on each call, so after a full pass :meth:`stats`
        describes exactly the tasks yielded.
        """
        self._stats = Counter({k: 0 for k in STAT_KEYS})
        limit = self.cfg.limit
        if limit is not None and limit <= 0:
            return
        runnable, source, first = 0, self._iter_tasks(), True
        pool = ThreadPoolExecutor(URL_THREADS, thread_name_prefix="finsta-url-version")   # threads start on use
        listings = FolderListings(MISSING_FILE)
        try:
            # read ahead at most as many tasks as could still run (each makes counts in stats)
            while limit is None or runnable < limit:
                batch = list(islice(source, URL_BATCH if limit is None else min(URL_BATCH, limit - runnable)))
                if not batch:
                    return
                first = self._stamp_url_versions(batch, pool, listings, first)
                for task in batch:
                    self._stats["videos"] += 1
                    yield task
                    runnable += task.failure is None
        except (PermissionError, ConnectionError) as error:   # credentials, the network (after retries)
            raise UserError(f"{self.name}: {error}") from None
        finally:   # a stop (Ctrl-C) does not wait for requests in flight
            pool.shutdown(wait=False, cancel_futures=True)

    def _stamp_url_versions(self, batch: list[VideoTask], pool: ThreadPoolExecutor, listings: FolderListings,
                            first: bool) -> bool:
        """Finish the fingerprints of the URL tasks in ``batch`` whose version no listing of the videos
        folder gave: from ``listings`` (the S3 folders many of them share) or one metadata request each,
        in parallel. An absent object fails its task (``missing_file``). The first request of the run is
        a HEAD made alone: its PermissionError/ConnectionError stop the listing (credentials, the
        endpoint: one line before any worker); later ones leave that task without a fingerprint
        (nothing to compare: decode reports its error). Returns ``first``."""
        pending = [task for task in batch if task.failure is None and not task.fingerprint and is_url(task.video_path)]
        if first and pending:
            self._stamp(pending[0], _version_or_error(pending[0].video_path, strict=True))
            pending, first = pending[1:], False
        listed = listings.versions([task.video_path for task in pending])
        for task in pending:
            if task.video_path in listed:
                self._stamp(task, listed[task.video_path])
        pending = [task for task in pending if task.video_path not in listed]
        for task, version in zip(pending, pool.map(_version_or_error, [t.video_path for t in pending])):
            self._stamp(task, version)
        return first

    def _stamp(self, task: VideoTask, version: object) -> None:
        """Set a URL task's fingerprint from its object's ``version`` (``MISSING_FILE``: fail it)."""
        if version == MISSING_FILE:
            self._fail_missing(task)
            task.fingerprint = input_fingerprint(task.captions, MISSING_FILE)
        elif version is not None:
            task.fingerprint = input_fingerprint(task.captions, [task.video_path, version])

    def stats(self) -> dict[str, int]:
        """Normalisation counters of the last :meth:`tasks` pass (complete once exhausted)."""
        return dict(self._stats)

    # ---------------------------------------------------------------- helpers
    def checked_root(self) -> Optional[Path]:   # a UrlPath for s3://, gs://, http(s):// roots
        """``cfg.data_root`` as a folder, or None when ``captions`` and ``videos`` replace it.

        Raises the layout error when neither is usable.
        """
        cfg = self.cfg
        root = location(cfg.data_root) if cfg.data_root else None
        if root is None and not (cfg.captions and cfg.videos):
            raise self.layout_error("no data root given")
        if root is not None and not root.is_dir() and not (cfg.captions and cfg.videos):
            raise self.layout_error(f"data root {root} is not a folder")
        return root

    def layout_error(self, problem: str) -> UserError:
        return UserError(f"{self.name}: {problem}; expected {self.describe_layout()}")

    def failed_task(self, key: str, reason: str, message: str, video_path: str = "",
                    video_id: Optional[str] = None) -> VideoTask:
        """A task that ends as a failure row without entering any stage. Its fingerprint is that of the
        failure's reason (the same for every bad entry, so an unchanged one is not redone), which no
        readable entry has: the corrected entry is a changed input."""
        task = VideoTask(key=key, source=self.name, video_id=video_id or key, video_path=video_path)
        task.failure = FailureRecord(key, DATASET_STAGE, reason, message, video_path)
        task.fingerprint = input_fingerprint([], [reason])
        if reason == "duplicate_key":
            self._stats["duplicate_ids"] += 1
        else:
            self._stats["malformed_entries"] += 1
        return task

    def make_task(self, key: str, video_id: str, video_path: Path | str, captions: list[CaptionInput],
                  version: object = None) -> VideoTask:
        """A live task; counts its captions, and fails it (``missing_file``) when its local video
        is not there: one stat here saves a worker, and a shard, per missing file. A URL video's
        ``version`` (:func:`schemas.storage.object_version`, or ``MISSING_FILE``) comes from a folder
        listing when one was made; else :meth:`tasks` asks for it and finishes the fingerprint."""
        path = str(video_path)
        self._stats["captions"] += sum(c.negative_of is None for c in captions)
        self._stats["negatives"] += sum(c.negative_of is not None for c in captions)
        task = VideoTask(key=key, source=self.name, video_id=video_id, video_path=path, captions=captions)
        if is_url(path):
            if version is not None:
                self._stamp(task, version)
            return task
        try:
            status = os.stat(path)
            video: object = [status.st_size, status.st_mtime_ns]
        except OSError:   # as os.path.exists: not there, or not reachable
            video = MISSING_FILE
            self._fail_missing(task)
        task.fingerprint = input_fingerprint(captions, video)
        return task

    def _fail_missing(self, task: VideoTask) -> None:
        self._stats["videos_missing"] += 1
        task.failure = FailureRecord(task.key, DATASET_STAGE, MISSING_FILE, f"no such file: {task.video_path}",
                                     task.video_path)


def _version_or_error(url: str, strict: bool = False) -> object:
    """``object_version(url)``, ``MISSING_FILE`` when the object is absent, or None when it cannot be
    asked (denied, the network; raised instead when ``strict``)."""
    try:
        return object_version(url)
    except FileNotFoundError:
        return MISSING_FILE
    except (PermissionError, ConnectionError):
        if strict:
            raise
        return None


def input_fingerprint(captions: list[CaptionInput], video: object) -> str:
    """What a sample was made from, as 16 hex digits: its captions (text, times, negatives) and its video
    (a local file's size and mtime, ``missing_file``, or a URL with its object's size and ETag or
    update time). The store keeps it with each row; a rerun redoes a sample whose fingerprint changed."""
    data = [[c.text, c.start, c.end, c.negative_of, c.negative_type] for c in captions]
    return hashlib.sha256(json.dumps([data, video]).encode()).hexdigest()[:16]


def build_dataset(cfg: DatasetConfig) -> Dataset:
    """Instantiate the dataset named by ``cfg.name`` (importing the package registers all)."""
    import pipeline.datasets  # noqa: F401  (registers every dataset)
    try:
        return DATASETS.get(cfg.name)(cfg)
    except (PermissionError, ConnectionError) as error:   # a URL data root: credentials, the network
        raise UserError(f"{cfg.name}: {error}") from None


# ------------------------------------------------------------ normalisation
_SPACES = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Collapse runs of whitespace (newlines, tabs, doubled spaces) and strip."""
    return _SPACES.sub(" ", text).strip()


def normalise_captions(raw: Iterable[tuple[object, Optional[float], Optional[float]]],
                       duration: Optional[float], stats: Counter) -> list[CaptionInput]:
    """Clean one video's ``(text, start, end)`` triples into captions, counting each fix.

    * whitespace collapsed and stripped → ``captions_whitespace_stripped``;
    * empty after that → dropped, ``captions_empty_dropped``;
    * only one of start/end given → made untimed, ``segments_partial_time_dropped``;
    * ``start > end`` → swapped, ``segments_invalid_swapped``;
    * ``start < 0`` → 0, ``segments_negative_start_clamped``;
    * past ``duration`` → clamped to it, ``segments_clamped_to_duration``;
    * segments overlapping another of the same video are kept (dense-caption
      events do overlap) and counted in ``segments_overlapping``.
    """
    out: list[CaptionInput] = []
    for text, start, end in raw:
        text = "" if text is None else str(text)
        clean = normalise_text(text)
        if clean != text:
            stats["captions_whitespace_stripped"] += 1
        if not clean:
            stats["captions_empty_dropped"] += 1
            continue
        if (start is None) != (end is None):
            stats["segments_partial_time_dropped"] += 1
            start = end = None
        if start is not None and end is not None:
            start, end = float(start), float(end)
            if start > end:
                stats["segments_invalid_swapped"] += 1
                start, end = end, start
            if start < 0:
                stats["segments_negative_start_clamped"] += 1
                start = 0.0
                end = max(end, 0.0)
            if duration is not None and duration > 0 and end > duration:
                stats["segments_clamped_to_duration"] += 1
                end = duration
                start = min(start, duration)
        out.append(CaptionInput(clean, start, end))
    stats["segments_overlapping"] += count_overlapping(out)
    return out


def count_overlapping(captions: list[CaptionInput]) -> int:
    """How many timed captions overlap at least one other (touching ends do not count)."""
    timed = sorted((c.start, c.end, i) for i, c in enumerate(captions) if c.start is not None)
    overlapping: set[int] = set()
    for a in range(len(timed)):
        for b in range(a + 1, len(timed)):
            if timed[b][0] >= timed[a][1]:
                break
            if min(timed[a][1], timed[b][1]) > max(timed[a][0], timed[b][0]):
                overlapping.update((timed[a][2], timed[b][2]))
    return len(overlapping)


# ------------------------------------------------------------ video lookup
class VideoIndex:
    """Finds a video for an id in one folder: ``<id>.<ext>``, or with/without a ``v_`` prefix.

    The folder is listed once; an explicit mapping (JSON ``{id: path}`` or CSV
    ``id,path``, paths relative to the folder) takes precedence.
    """

    def __init__(self, folder: Path, mapping: Optional[dict[str, str]] = None,
                 strip_prefix: str = ""):
        self.folder = folder
        self.mapping = mapping or {}
        self.strip_prefix = strip_prefix
        self._by_stem: dict[str, str] = {}
        # name → version of each object of a listed URL folder (None: a local folder, or HTTP: no listing)
        self.versions: Optional[dict[str, list]] = None
        rank = {ext: i for i, ext in enumerate(VIDEO_EXTENSIONS)}
        if is_url(folder):
            self.versions = list_versions(str(folder))
            names = sorted(self.versions or ())
        else:
            names = sorted(e.name for e in os.scandir(folder) if e.is_file()) if folder.is_dir() else []
        for name in names:
            stem, ext = os.path.splitext(name)
            if ext.lower() not in rank:
                continue
            old = self._by_stem.get(stem)
            if old is None or rank[ext.lower()] < rank[os.path.splitext(old)[1].lower()]:
                self._by_stem[stem] = name

    def path_for(self, video_id: str) -> Path:
        """The file for ``video_id``, or where it should be (``<folder>/<id>.mp4``) if absent."""
        if video_id in self.mapping:
            return self.folder / self.mapping[video_id]
        candidates = [video_id]
        if self.strip_prefix and video_id.startswith(self.strip_prefix):
            candidates.append(video_id[len(self.strip_prefix):])
        for stem in candidates:
            if stem in self._by_stem:
                return self.folder / self._by_stem[stem]
        return self.folder / f"{video_id}{VIDEO_EXTENSIONS[0]}"

    def version_of(self, path: Path | str) -> object:
        """The listed version of a URL video directly in this folder, ``MISSING_FILE`` when the listing
        has no such object (no request per absent video), None when no listing covers ``path`` (a local
        file, a mapped path in a subfolder, an HTTP folder: :meth:`Dataset.tasks` asks)."""
        path, prefix = str(path), str(self.folder).rstrip("/") + "/"
        name = path[len(prefix):]
        if self.versions is None or not path.startswith(prefix) or "/" in name:
            return None
        return self.versions.get(name, MISSING_FILE)


def load_mapping(path: Optional[str]) -> dict[str, str]:
    """Read a ``{id: relative path}`` JSON or an ``id,path`` CSV (header optional)."""
    if not path:
        return {}
    import csv
    file = location(path)
    if not file.is_file():
        raise UserError(f"mapping file {path} not found; expected a JSON {{id: path}} or a CSV id,path")
    try:
        if file.suffix.lower() == ".json":
            data = json.loads(file.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise ValueError("not an object of id → path strings")
            return {str(k): v for k, v in data.items()}
        with file.open("r", newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh) if r]
        if rows and [c.strip().lower() for c in rows[0][:2]] == ["id", "path"]:
            rows = rows[1:]
        if any(len(r) < 2 for r in rows):
            raise ValueError("every row needs id,path")
        return {r[0].strip(): r[1].strip() for r in rows}
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(f"mapping file {path} is malformed ({error}); "
                        "expected a JSON {id: path} or a CSV id,path") from None


def as_time(value: object) -> Optional[float]:
    """A caption time from JSON/CSV: number or numeric string → float; ''/None → None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    number = float(value)  # raises ValueError for junk
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"not a finite time: {value!r}")
    return number
