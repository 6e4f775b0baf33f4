"""The shard store: Arrow graph tables + Zarr v3 dense features, committed atomically, checked on every path.

Layout of a dataset folder (full column list in docs/format.md)::

    OUT/
      manifest.json                 the header (format, version, config, feature dims, host); no shard list
      .finsta.lock                  the writer's lock: pid, host and start time of the run that holds it
      quarantine/                   shards that failed their check, moved aside (their samples are redone)
      shards/shard-000000/
        samples.arrow               Arrow IPC file, one row per VideoSample
        failures.arrow              Arrow IPC file, one row per FailureRecord
        features.zarr/              Zarr v3 group: one array per FEATURE_ARRAYS name (frame, detection, …)
        shard.json                  this shard's keys, row counts, bytes, sha256 per file, config hash
        _DONE                       sha256 of shard.json, written last; a shard without it does not exist

Commit protocol: everything is written into ``shards/.tmp-<name>-<pid>``, each
file fsynced, the folder renamed to its final name, the parent fsynced, then
``_DONE`` is written (temp name + fsync + rename). No dataset-wide file is
rewritten: the shard folders are the index (:class:`KeyIndex` in memory). A
crash at any point leaves either a complete shard or nothing that a reader
sees; :class:`DatasetWriter` removes the debris on open.

Integrity: one writer at a time (:class:`WriterLock`, an OS lock that a crash
releases); the writer checks the metadata of every shard it adopts (``_DONE``
against ``shard.json``, every file's size, the config hash, keys seen in
another shard; every file's sha256 too with ``check_data=True``) and
quarantines what does not match; readers check a file's sha256 the first time
they read it (``open_dataset(..., verify=False)`` skips that); ``verify``
checks everything.

Example::

    with DatasetWriter("out", config={"detector": "color"}, feature_dims=dims) as writer:
        writer.write_shard([(sample, features)], failures=[])
    ds = open_dataset("out")
    sample, features = ds.get(ds.keys()[0])
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pyarrow as pa
import zarr
from zarr.storage import FsspecStore

try:
    import fcntl
except ImportError:  # not on Windows: the lock falls back to the pid check
    fcntl = None

from schemas.arrow import (FAILURES_SCHEMA, records_to_table, samples_schema, table_to_records, from_row)
from schemas.errors import UserError
from schemas.options import diff, diff_text
from schemas import storage
from schemas.storage import UrlPath, location
from schemas.records import (FEATURE_ARRAYS, OPTIONAL_FEATURES, FailureRecord, SampleFeatures, VideoSample,
                             feature_dtype)
from schemas.version import FORMAT_NAME, SCHEMA_VERSION

MANIFEST = "manifest.json"
SHARDS = "shards"
DONE = "_DONE"
SHARD_INFO = "shard.json"
MERGED_PREFIX = ".merged-"   # a compaction's merged shard, committed but hidden until its old shards are gone
LOCK = ".finsta.lock"
QUARANTINE = "quarantine"
STATS = "stats.json"
# What finsta writes at the top of OUT: the only names --overwrite removes.
WRITTEN_NAMES = (MANIFEST, SHARDS, STATS, QUARANTINE, LOCK)
_WRITTEN_TEMP = re.compile(r"^\.(manifest|stats)\.json\.tmp-\d+$")
_SHARD_NAME = re.compile(r"^shard-(\d{6,})$")
_REQUIRED_FILES = ("samples.arrow", "failures.arrow", "features.zarr/zarr.json")
DUPLICATE_KEY = "duplicate_key"
BAD_RECORD = "bad_record"           # a dataset entry (a manifest line) that cannot be read; counted per line
_WHOLE_ARRAY_BYTES = 64 << 20
# Version 3 shard folders are version 4 shard folders without per-file sizes; a version-3 manifest's
# shard list is ignored (shards/ is the truth) and the next writer rewrites manifest.json as version 4.
READABLE_VERSIONS = (3, SCHEMA_VERSION)
_KEY_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-#=+@]{0,199}$")
_PACKAGES = ("finsta", "pyarrow", "zarr", "numpy", "torch", "ray", "spacy", "stanza", "opencv-python-headless",
             "sentence-transformers")


class CorruptShardError(UserError):
    """A reader found a file that does not match its stored sha256: the data is not served."""


def check_key(key: str) -> Optional[str]:
    """Why ``key`` cannot name a sample on disk, or None when it is safe.

    Keys become file-system-adjacent names and must never escape the output
    folder: no separators, no leading dot, no ``..``.
    """
    if not isinstance(key, str) or not _KEY_OK.match(key) or ".." in key:
        return f"unsafe sample key {key!r}: use letters, digits and ._-#=+@ (no '/', no leading '.', no '..')"
    return None


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sha256_file(path: Path | UrlPath) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _fsync_dir(path: Path | UrlPath) -> None:
    if isinstance(path, UrlPath):   # an object is durable once its PUT returns; there are no folders
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path | UrlPath, data: bytes) -> None:
    if isinstance(path, UrlPath):   # a PUT replaces the whole object at once
        path.write_bytes(data)
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


# The store's file I/O seam: everything that lists, reads, publishes or removes goes through these few
# functions (and _write_atomic above), so another file system (object storage) can stand in for them.
# The commit rule needs no rename: a shard's files, then shard.json, then _DONE last.
# On an s3:// or gs:// dataset the paths are schemas.storage.UrlPath objects (the same small API as Path,
# every call through pyarrow.fs); a shard's files are written in place under their final names (the
# Zarr group through zarr's FsspecStore), committed by _DONE last, and readers read objects into memory.
def fs_read(path: Path) -> bytes:
    return path.read_bytes()


def fs_list(folder: Path) -> list[Path]:
    return list(folder.iterdir())


def fs_exists(path: Path) -> bool:
    return path.exists()


def fs_remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def fs_remove_tree(folder: Path | UrlPath) -> None:
    if isinstance(folder, UrlPath):
        storage.remove_tree(str(folder), first=(DONE,))   # uncommitted first
        return
    shutil.rmtree(folder, ignore_errors=True)


def fs_sizes(folder: Path | UrlPath, rels: list[str]) -> dict[str, Optional[int]]:
    """The size in bytes of each of ``rels`` inside ``folder`` (None: missing); one listing on S3."""
    if isinstance(folder, UrlPath):
        listed = storage.list_tree(str(folder))
        return {rel: listed.get(rel) for rel in rels}
    sizes: dict[str, Optional[int]] = {}
    for rel in rels:
        try:
            sizes[rel] = (folder / rel).stat().st_size if (folder / rel).is_file() else None
        except OSError:
            sizes[rel] = None
    return sizes


def _move_tree(source: Path | UrlPath, target: Path | UrlPath) -> None:
    """Move a shard folder. Locally a rename; on S3 a server-side copy of every object (shard.json, then
    _DONE last, so the copy is committed only when whole), then the source is removed (_DONE first)."""
    if not isinstance(source, UrlPath):
        os.rename(source, target)
        _fsync_dir(Path(target).parent)
        return
    rels = sorted(storage.list_tree(str(source)), key=lambda rel: (rel == DONE, rel == SHARD_INFO, rel))
    for rel in rels:
        storage.copy_object(str(source / rel), str(target / rel))
    fs_remove_tree(source)


def _commit_folder(tmp: Path | UrlPath, final: Path | UrlPath, done: bytes) -> None:
    """Publish a shard written in ``tmp`` as ``final`` and commit it: ``_DONE`` (``done``: the sha256 of its
    shard.json) last. Locally a rename first; on an object store the shard was written in place."""
    if tmp != final:
        os.rename(tmp, final)
        _fsync_dir(final.parent)
    _write_atomic(final / DONE, done)


class _RecordingStore(FsspecStore):
    """zarr's fsspec store writing a shard's ``features.zarr`` on an object store, recording each object's
    sha256 and size as it goes (the bytes are never read back to hash them)."""

    def __init__(self, folder: UrlPath):
        fs, path = storage.fsspec_filesystem(str(folder))
        super().__init__(fs, path=path)
        self.written: dict[str, tuple[str, int]] = {}

    async def set(self, key: str, value, byte_range=None) -> None:
        data = value.to_bytes()
        self.written[key] = (hashlib.sha256(data).hexdigest(), len(data))
        await super().set(key, value, byte_range)


class _CheckedStore(FsspecStore):
    """zarr's fsspec store reading a shard's ``features.zarr`` on an object store; every object is checked
    against its sha256 (``check``) the first time it is read, before zarr decodes it."""

    def __init__(self, folder: UrlPath, check):
        fs, path = storage.fsspec_filesystem(str(folder))
        super().__init__(fs, read_only=True, path=path)
        self.check = check

    async def get(self, key: str, prototype, byte_range=None):
        if byte_range is not None:   # finsta writes whole chunks; a partial read is checked on the whole
            await self.get(key, prototype)
        buffer = await super().get(key, prototype, byte_range)
        if buffer is not None and byte_range is None:
            self.check(key, buffer.to_bytes())
        return buffer


def _write_arrow(path: Path | UrlPath, table: pa.Table) -> Optional[tuple[str, int]]:
    """An Arrow IPC file. On an object store one PUT of the serialized bytes: returns their
    ``(sha256, size)`` (they are never read back to hash them)."""
    if isinstance(path, Path):
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        return None
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue().to_pybytes()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), len(data)


def _files_of(folder: Path | UrlPath) -> list[Path | UrlPath]:
    if isinstance(folder, UrlPath):
        return [folder / rel for rel in sorted(storage.list_tree(str(folder)))]
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class ShardInfo:
    """One shard's entry in the manifest (``shard.json`` also holds the full ``config``)."""

    name: str
    keys: list[str]
    failed_keys: list[str]
    rows: int
    failure_rows: int
    bytes: int
    files: dict[str, str]  # relative path → sha256
    config_hash: Optional[str] = None   # None: written before shards carried it
    replaces: list[str] = field(default_factory=list)   # shards this one merged (compaction)
    sizes: dict[str, int] = field(default_factory=dict)  # relative path → bytes (empty: written by version 3)
    # Each row's input fingerprint (pipeline.datasets.base.input_fingerprint), parallel to ``keys`` and to
    # ``failed_keys``: a rerun redoes a sample whose input changed since. "" or absent: not known.
    fingerprints: list[str] = field(default_factory=list)
    failure_fingerprints: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Any) -> "ShardInfo":
        """Raises ValueError when ``data`` is not a well-formed entry."""
        if not isinstance(data, dict):
            raise ValueError("not an object")
        names = {f.name for f in fields(cls)}
        info = cls(**{k: v for k, v in data.items() if k in names})
        if not (isinstance(info.name, str) and isinstance(info.files, dict) and isinstance(info.keys, list)
                and isinstance(info.failed_keys, list) and set(map(type, info.keys)) <= {str}
                and all(isinstance(k, str) and isinstance(v, str) for k, v in info.files.items())
                and isinstance(info.replaces, list) and all(isinstance(r, str) for r in info.replaces)
                and isinstance(info.sizes, dict) and all(isinstance(v, int) for v in info.sizes.values())
                and all(isinstance(fps, list) and set(map(type, fps)) <= {str}
                        for fps in (info.fingerprints, info.failure_fingerprints))):
            raise ValueError("fields of the wrong type")
        return info


# ---------------------------------------------------------------- the writer's lock
class WriterLock:
    """One writer per dataset folder: an exclusive ``flock`` on ``OUT/.finsta.lock``.

    The kernel drops the lock when its process ends, however it ends (kill -9,
    OOM, power loss on reboot), so a crash never blocks the next run. The file
    holds the holder's pid, host and start time (for the refusal message); it
    is emptied on a clean release, so content found by a new holder means the
    last run did not release it: a *stale* lock, reported and taken over. On a
    file system without ``flock`` (some NFS setups) the pid is checked instead.

    Example::

        lock = WriterLock(Path("out"))
        stale = lock.acquire()     # UserError naming pid and start time when another run holds it
        ...
        lock.release()
    """

    def __init__(self, root: Path):
        self.path = root / LOCK
        self.fd: Optional[int] = None

    def acquire(self) -> Optional[dict]:
        """Take the lock; returns the stale holder's record, if one was left behind."""
        fd = _open_lock_file(self.path)
        try:
            previous = _read_holder(fd)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise self._refusal(_read_holder(fd)) from None
                except OSError as error:
                    if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                        raise
                    self._check_pid(previous)
            else:
                self._check_pid(previous)
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return previous or None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        os.close(self.fd)   # closing drops the flock
        self.fd = None

    def _check_pid(self, holder: Optional[dict]) -> None:
        if holder and holder.get("host") == socket.gethostname() and holder.get("pid") != os.getpid() \
                and _pid_alive(holder.get("pid")):
            raise self._refusal(holder)

    def _refusal(self, holder: Optional[dict]) -> UserError:
        holder = holder or {}
        who = f"pid {holder.get('pid', '?')}"
        if holder.get("host") and holder.get("host") != socket.gethostname():
            who += f" on {holder['host']}"
        return UserError(f"{self.path.parent} is being written by another build-sgs ({who}, started "
                         f"{holder.get('started', '?')}); wait for it to finish or use another --out")


class ObjectWriterLock(storage.ObjectLock):
    """:class:`WriterLock` for an s3:// dataset: a lease in ``OUT/.finsta.lock`` taken by a conditional
    create (:class:`schemas.storage.ObjectLock` says what it guarantees)."""

    def __init__(self, root: UrlPath):
        super().__init__(root / LOCK)

    def acquire(self) -> Optional[dict]:
        try:
            return super().acquire()
        except storage.LockHeld as held:
            refusal = WriterLock._refusal(self, held.holder)
            expires = held.holder.get("expires")
            if isinstance(expires, (int, float)):   # a run that died holds it until its lease runs out
                refusal = UserError(f"{refusal} (if that run is gone, its lock expires at "
                                    f"{time.strftime('%H:%M:%S', time.localtime(expires))})")
            raise refusal from None


def _lock_for(root: Path | UrlPath) -> WriterLock | ObjectWriterLock:
    return ObjectWriterLock(root) if isinstance(root, UrlPath) else WriterLock(root)


def _open_lock_file(path: Path) -> int:
    """Open (or create) the lock file without following a symlink: the lock is truncated and rewritten,
    so it must be our own regular file, never a link to someone else's file (issue 26 item 2)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UserError(f"{path} is a symbolic link; finsta writes its lock there: remove the link "
                            "(the file it points to is left alone) and rerun") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise UserError(f"{path} is not finsta's lock file (a {'hard link' if stat.S_ISREG(st.st_mode) else 'special file'}); "
                        "remove it and rerun")
    return fd


def _read_holder(fd: int) -> Optional[dict]:
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data) if data.strip() else None
        return holder if isinstance(holder, dict) else None
    except (OSError, ValueError):
        return None


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------- what is a finsta dataset
def is_finsta_dataset(root: Path) -> bool:
    """Does ``root`` hold a finsta dataset (a finsta manifest, or committed shards)?"""
    manifest = root / MANIFEST
    if manifest.is_file():
        try:
            if json.loads(manifest.read_text()).get("format") == FORMAT_NAME:
                return True
        except (OSError, ValueError, AttributeError):
            pass
    shards = root / SHARDS
    return shards.is_dir() and any(_SHARD_NAME.match(p.name) and ((p / DONE).exists() or (p / SHARD_INFO).exists())
                                   for p in shards.iterdir())


def _foreign_entries(root: Path) -> list[str]:
    """Entries of ``root`` that finsta did not write."""
    return sorted(p.name for p in root.iterdir() if p.name not in WRITTEN_NAMES and not _WRITTEN_TEMP.match(p.name))


def check_overwrite(root: Path) -> None:
    """Refuse ``--overwrite`` on anything but a finsta dataset or an empty/new folder (one-line UserError)."""
    if not root.exists():
        return
    if not root.is_dir():
        raise UserError(f"--out {root} is a file; give a folder")
    if is_finsta_dataset(root):
        return
    others = _foreign_entries(root)
    if others:
        shown = ", ".join(repr(name) for name in others[:3]) + (", …" if len(others) > 3 else "")
        raise UserError(f"--overwrite refused: {root} is not a finsta dataset (no {MANIFEST} or {SHARDS}/) and "
                        f"holds {len(others)} other entries ({shown}); give an empty or new folder as --out")


def remove_dataset(root: Path) -> None:
    """Delete what finsta wrote in ``root`` (manifest, stats, shards, quarantine); nothing else.

    Inside ``shards/`` only shard folders and their temporaries go; the lock file stays (its holder is the caller).
    """
    for name in (MANIFEST, STATS):
        (root / name).unlink(missing_ok=True)
    for entry in root.iterdir():
        if _WRITTEN_TEMP.match(entry.name):
            entry.unlink(missing_ok=True)
    fs_remove_tree(root / QUARANTINE)
    shards = root / SHARDS
    if shards.is_dir():
        for entry in shards.iterdir():
            if _SHARD_NAME.match(entry.name) or entry.name.startswith((".tmp-", MERGED_PREFIX)):
                fs_remove_tree(entry) if entry.is_dir() else fs_remove(entry)
        if isinstance(shards, Path) and not any(shards.iterdir()):
            shards.rmdir()


def _make_root(root: Path) -> None:
    try:
        (root / SHARDS).mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserError(f"cannot write the dataset folder {root}: {error.strerror or error}; "
                        "give a folder you can write as --out") from None


# ---------------------------------------------------------------- checking a shard
def check_shard(folder: Path, full: bool = False, files: bool = True, listed: Optional[dict[str, int]] = None
                ) -> tuple[Optional[str], Optional[ShardInfo], dict]:
    """``(problem, info, config)`` for one shard folder: problem is None when it is intact.

    Intact means: ``_DONE`` holds the sha256 of ``shard.json``; ``shard.json`` is a well-formed entry
    naming this folder; every listed file exists inside the folder with its recorded size (``files``),
    and with its sha256 when ``full`` (``verify``; a writer's resume checks metadata only, readers
    hash each file on first read). ``listed``: the folder's files and sizes, when already listed.
    """
    try:
        raw = (folder / SHARD_INFO).read_bytes()
        done = (folder / DONE).read_text().strip()
    except OSError as error:
        return (f"{Path(error.filename).name}: {error.strerror}" if error.filename else str(error)), None, {}
    if hashlib.sha256(raw).hexdigest() != done:
        return f"{SHARD_INFO} does not match {DONE} (edited or damaged)", None, {}
    try:
        data = json.loads(raw)
        info = ShardInfo.from_dict(data)
    except (ValueError, TypeError) as error:
        return f"{SHARD_INFO} is not a valid shard entry ({error})", None, {}
    if folder.name not in (info.name, MERGED_PREFIX + info.name):
        return f"{SHARD_INFO} names {info.name!r}, not this folder (copied from elsewhere?)", None, {}
    for rel in _REQUIRED_FILES:
        if rel not in info.files:
            return f"{SHARD_INFO} does not list {rel}", None, {}
    for rel in info.files:
        if rel.startswith("/") or ".." in Path(rel).parts:
            return f"{SHARD_INFO} lists a path outside the shard ({rel!r})", None, {}
    on_disk = ({rel: listed.get(rel) for rel in info.files} if listed is not None
               else fs_sizes(folder, sorted(info.files))) if files else {}
    for rel, digest in sorted(info.files.items()):
        path = folder / rel
        if not files:
            continue
        size = on_disk[rel]
        if size is None:
            return f"{rel}: missing", None, {}
        if rel in info.sizes and info.sizes[rel] != size:
            return f"{rel}: truncated or altered ({size} bytes, {SHARD_INFO} says {info.sizes[rel]})", None, {}
        if full and sha256_file(path) != digest:
            return f"{rel}: corrupted (sha256 mismatch)", None, {}
    return None, info, data.get("config", {}) if isinstance(data.get("config"), dict) else {}


def _shard_order(folder: Path) -> str:
    return folder.name[len(MERGED_PREFIX):] if folder.name.startswith(MERGED_PREFIX) else folder.name


@dataclass
class _Scan:
    """What ``shards/`` holds, from metadata only (:func:`_scan_shards`)."""

    intact: list[tuple[Path, ShardInfo, dict]] = field(default_factory=list)   # committed, in name order
    damaged: list[tuple[Path, str]] = field(default_factory=list)              # committed but failing its check
    superseded: list[Path] = field(default_factory=list)   # old shards a committed merged shard replaces
    debris: list[Path] = field(default_factory=list)       # interrupted commits: never read, removed by a writer


def _scan_shards(shards: Path, files: bool = True, full: bool = False) -> _Scan:
    """Every shard folder: committed (``_DONE`` present) ones checked by :func:`check_shard` (metadata, no
    data hashes), the rest debris. A committed merged shard (``replaces``) supersedes its old shards in
    whatever state a kill left them, so they are neither served nor quarantined."""
    scan = _Scan()
    listing = _list_shards(shards)
    if listing is None and not shards.is_dir():
        return scan
    entries = sorted(fs_list(shards) if listing is None else [shards / name for name in listing], key=_shard_order)
    for entry in entries:
        shard_like = _SHARD_NAME.match(_shard_order(entry))
        listed = listing.get(entry.name) if listing is not None else None
        is_dir = entry.is_dir() if listing is None else listed is not None
        if entry.name.startswith(".tmp-") or (shard_like and is_dir and not (
                (entry / DONE).exists() if listing is None else DONE in listed)):
            scan.debris.append(entry)
        elif shard_like and is_dir:
            problem, info, config = check_shard(entry, full=full, files=files, listed=listed)
            scan.damaged.append((entry, problem)) if problem else scan.intact.append((entry, info, config))
    replaced = {old for _, info, _ in scan.intact for old in info.replaces}
    # a merged shard whose copy under its final name is committed too (S3 has no rename: _move_tree)
    replaced |= {MERGED_PREFIX + info.name for folder, info, _ in scan.intact if folder.name == info.name}
    scan.superseded = [entry for entry in entries if entry.name in replaced]
    scan.intact = [item for item in scan.intact if item[0].name not in replaced]
    scan.damaged = [item for item in scan.damaged if item[0].name not in replaced]
    scan.debris = [entry for entry in scan.debris if entry.name not in replaced]
    return scan


def _list_shards(shards: Path | UrlPath) -> Optional[dict[str, Optional[dict[str, int]]]]:
    """On an object store, what ``shards/`` holds from one listing (S3: a LIST request per 1,000 objects,
    instead of requests per shard): each folder name → its files and sizes (None: an object directly
    under ``shards/``). None for a local folder (the file system answers each question cheaply)."""
    if not isinstance(shards, UrlPath):
        return None
    listing: dict[str, Optional[dict[str, int]]] = {}
    for rel, size in storage.list_tree(str(shards)).items():
        folder, _, inner = rel.partition("/")
        if inner:
            listing.setdefault(folder, {})[inner] = size
        else:
            listing.setdefault(folder, None)
    return listing


def fingerprints_of(shards: list[ShardInfo]) -> dict[str, str]:
    """Key → the input fingerprint its standing row was made from (a committed row's, else its latest
    failure's); keys written without one are left out."""
    latest = {key: fp for shard in shards for key, fp in zip(shard.failed_keys, shard.failure_fingerprints) if fp}
    latest.update((key, fp) for shard in shards for key, fp in zip(shard.keys, shard.fingerprints) if fp)
    return latest


def _remove_shard(folder: Path | UrlPath) -> None:
    """Uncommit first (``_DONE`` goes), then delete: a kill halfway leaves debris, never a damaged shard."""
    if isinstance(folder, Path):
        fs_remove(folder / DONE)
        _fsync_dir(folder)
    fs_remove_tree(folder)   # on an object store: _DONE first, then the rest in batches



# ---------------------------------------------------------------- writing
class DatasetWriter:
    """Appends shards to a dataset folder; safe to reopen after any crash, one writer at a time.

    ``config`` is what produced the data (stored in the manifest and in each
    shard, hashed); reopening a folder written with another config raises
    :class:`UserError` unless ``overwrite=True``, which deletes the old dataset
    first (only a finsta dataset, only what finsta wrote: :func:`remove_dataset`).
    Opening takes the folder's :class:`WriterLock`, removes commit debris,
    checks every shard (:func:`check_shard`) and moves a damaged, foreign or
    duplicated one to ``quarantine/`` (``notes`` says which and why), and
    rebuilds the manifest from the shards it keeps. Close it (or use ``with``)
    to release the lock; a crash releases it too. ``host`` names the
    host models that made the features (the identity of the embed stages'
    config; stored as the manifest's ``host``, read by ``train``/``eval``).
    """

    def __init__(self, root: str | os.PathLike, config: dict[str, Any], feature_dims: dict[str, int],
                 overwrite: bool = False, host: Optional[dict[str, Any]] = None, check_data: bool = False):
        self.root = location(root)   # a Path, or a UrlPath for s3://
        self.check_data = check_data   # also hash every file of every shard on open (slow: reads all the data)
        self.config = config
        self.config_hash = config_hash(config)
        self.host = host
        self.feature_dims = {name: int(feature_dims[name] if name in feature_dims else OPTIONAL_FEATURES[name])
                             for name in FEATURE_ARRAYS}
        self.notes: list[str] = []       # what opening found and did (stale lock, quarantine, rebuilt manifest)
        self.quarantined: list[str] = []
        if overwrite:
            check_overwrite(self.root)
        _make_root(self.root)
        self.lock = _lock_for(self.root)
        stale = self.lock.acquire()
        try:
            if stale:
                self.notes.append(f"took over a stale lock of pid {stale.get('pid')} (started {stale.get('started')}), "
                                  "a run that ended without releasing it")
            if overwrite:
                remove_dataset(self.root)
                (self.root / SHARDS).mkdir(exist_ok=True)
            old = self._read_old_manifest()
            self.shards = self._adopt_shards(old)
            self.created = old.get("created") if old else _now()
            self._write_manifest()   # once per open: commits never rewrite a dataset-wide file
        except BaseException:
            self.lock.release()
            raise

    # -- lifetime
    def close(self) -> None:
        self.lock.release()

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        lock = getattr(self, "lock", None)
        if lock is not None:
            lock.release()

    # -- opening
    def _read_old_manifest(self) -> Optional[dict[str, Any]]:
        path = self.root / MANIFEST
        if not path.exists():
            return None
        try:
            old = json.loads(path.read_text())
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as error:
            self.notes.append(f"{MANIFEST} was unreadable ({error}); rebuilt from the intact shards")
            return None
        _check_version(old, self.root)
        if old.get("config_hash") != self.config_hash:
            self._refuse_config(old.get("config", {}))
        return old

    def _refuse_config(self, old_config: dict[str, Any]) -> None:
        changes = diff(old_config, self.config)
        raise UserError(f"{self.root} was built with other options ({diff_text(changes)}); rerun with the old "
                        f"values to continue, --overwrite to start over, or use another --out")

    def _adopt_shards(self, old: Optional[dict[str, Any]]) -> list[ShardInfo]:
        """Every intact shard of this config, in name order; the rest quarantined (see the class docstring).

        Reads metadata only (``_DONE``, ``shard.json``, file sizes): the data's hashes are checked by
        readers on first read and by ``verify``."""
        scan = _scan_shards(self.root / SHARDS, full=self.check_data)
        for folder in scan.debris:
            fs_remove_tree(folder)
        for folder in scan.superseded:   # a compaction cut short: its merged shard holds these rows
            _remove_shard(folder)
        checked = []
        for folder, info, config in scan.intact:
            if folder.name.startswith(MERGED_PREFIX):   # its old shards are gone now: publish it
                final = folder.with_name(info.name)
                _move_tree(folder, final)
                folder = final
            checked.append((folder, info, config))
        for folder, problem in scan.damaged:
            self._quarantine(folder, problem)
        if old is None and checked and all(info.config_hash != self.config_hash for _, info, _ in checked):
            # No manifest vouches for these shards and none was built with this config:
            # the folder is another build's, exactly as if its manifest said so.
            first = next(((info, config) for _, info, config in checked if info.config_hash is not None), None)
            if first is not None:
                self._refuse_config(first[1])
        adopted, seen = [], set()
        for folder, info, _ in checked:   # key uniqueness: a set of every key, built once per open
            if info.config_hash is None and old is None:
                self._quarantine(folder, "written without a config hash and no manifest vouches for it")
            elif info.config_hash is not None and info.config_hash != self.config_hash:
                self._quarantine(folder, f"built with other options (config hash {info.config_hash}, this run "
                                 f"{self.config_hash})")
            elif seen & set(info.keys):
                self._quarantine(folder, f"holds samples already committed in another shard "
                                 f"(e.g. {sorted(seen & set(info.keys))[0]!r}; a copy?)")
            else:
                seen |= set(info.keys)
                adopted.append(info)
        self._committed = seen   # kept up to date by write_shard: a commit never rebuilds a set of every key
        return adopted

    def _quarantine(self, folder: Path, problem: str) -> None:
        target_dir = self.root / QUARANTINE
        target_dir.mkdir(exist_ok=True)
        target = target_dir / f"{folder.name}-{time.strftime('%Y%m%dT%H%M%S')}"
        n = 1
        while target.exists():
            target, n = target_dir / f"{folder.name}-{time.strftime('%Y%m%dT%H%M%S')}-{n}", n + 1
        _move_tree(folder, target)
        fs_remove(target / DONE)   # a quarantined shard is not committed anywhere
        _write_atomic(target / "QUARANTINED.txt", (problem + "\n").encode())
        _fsync_dir(folder.parent)
        line = f"{folder.name}: {problem}; moved to {QUARANTINE}/{target.name}, its samples will be redone"
        self.quarantined.append(line)
        self.notes.append(line)

    # -- state
    def committed_keys(self) -> set[str]:
        return set(self._committed)

    def failed_keys(self) -> set[str]:
        return {key for shard in self.shards for key in shard.failed_keys} - self._committed

    def fingerprints(self) -> dict[str, str]:
        return fingerprints_of(self.shards)

    # -- committing
    def _next_name(self) -> str:
        taken = [int(m.group(1)) for p in fs_list(self.root / SHARDS) if (m := _SHARD_NAME.match(_shard_order(p)))]
        taken += [int(s.name.split("-")[1]) for s in self.shards]
        return f"shard-{max(taken) + 1 if taken else 0:06d}"

    def write_shard(self, samples: list[tuple[VideoSample, SampleFeatures]],
                    failures: list[FailureRecord], replaces: Optional[list[str]] = None,
                    fingerprints: Optional[dict[str, str]] = None) -> str:
        """Commit one shard atomically and return its name (``replaces``: see :meth:`compact`;
        ``fingerprints``: key → input fingerprint, stored for the rows it names)."""
        for sample, _ in samples:
            problem = check_key(sample.key)
            if problem:
                raise ValueError(problem)
        name = self._next_name()
        # A merged shard is committed hidden: until its old shards are gone, a plain reader of
        # shards/*/samples.arrow must not see its rows twice (issue 26 item 10).
        final = self.root / SHARDS / ((MERGED_PREFIX if replaces else "") + name)
        if isinstance(self.root, UrlPath):   # no rename: written in place, uncommitted until _DONE
            self.lock.check()
            tmp = final
        else:
            tmp = self.root / SHARDS / f".tmp-{name}-{os.getpid()}"
            fs_remove_tree(tmp)
        try:
            tmp.mkdir()
            files, info, done = self._write_files(tmp, name, samples, failures, replaces or [], fingerprints or {})
            _commit_folder(tmp, final, done)
        except BaseException:
            fs_remove_tree(tmp)
            raise
        if replaces:
            for old in replaces:
                _remove_shard(self.root / SHARDS / old)
            _move_tree(final, final.with_name(name))
            self.shards = [s for s in self.shards if s.name not in replaces] + [info]
        else:
            self.shards.append(info)
            self._committed.update(info.keys)
        return name

    def compact(self, target_rows: int, min_run: int = 2) -> list[str]:
        """Merge runs of consecutive small shards (fewer than ``target_rows`` rows each) into shards of
        about ``target_rows``, so that many small shards (time-based commits, interrupted runs) do not
        slow readers down. Returns the new shards' names.

        ``min_run``: a run that stays below ``target_rows`` is merged only when it holds at least that
        many shards (the build merges in the background with a large ``min_run``, everything at the end).

        Crash-safe: the merged shard is committed hidden (``.merged-NAME``, listing the shards it
        ``replaces``), then each old shard is uncommitted and removed, then the merged one is renamed
        into place; readers and a reopening writer that find a committed merged shard ignore (and the
        writer removes) its old shards in whatever state they are. Failure rows that no reader would count any more (their key committed, or failed again
        in a later shard) are dropped, so a merged shard never changes which failure stands.
        """
        groups, run = [], []
        for shard in self.shards:
            if shard.rows + shard.failure_rows >= target_rows:
                groups, run = groups + ([run] if len(run) > 1 else []), []
                continue
            run.append(shard)
            if sum(s.rows + s.failure_rows for s in run) >= target_rows:
                groups, run = groups + [run], []
        groups += [run] if len(run) >= max(2, min_run) else []
        written = []
        for group in groups:
            # a reader of the group's shards only: its key index costs the group, not the dataset
            reader = Dataset(self.root, {"feature_dims": self.feature_dims}, group, verify=True)
            samples = [item for shard in group for item in reader.iter_shard(shard.name)]
            failures = [f for shard in group for f in self._standing_failures(reader, shard, self._committed)]
            # each row keeps the fingerprint it was stored with: the group's own, not a map of every key
            written.append(self.write_shard(samples, failures, replaces=[shard.name for shard in group],
                                            fingerprints=fingerprints_of(group)))
        return written

    def drop_samples(self, keys: set[str], failures_of: frozenset[str] = frozenset()) -> int:
        """Remove the committed rows of ``keys`` (inputs that changed: the rerun redoes them), and the
        failure rows of ``failures_of`` (entries gone from the dataset: a corrected line keyed by its
        position). Each shard holding one is rewritten without it, committed like :meth:`compact`'s
        merged shards (a crash leaves the old shard or the new one); a shard left empty is removed.
        Returns the sample rows removed."""
        removed = 0
        self._committed -= keys   # from here on they are to be redone (a kill midway: the reopen recounts)
        for shard in [s for s in self.shards if not (keys.isdisjoint(s.keys) and failures_of.isdisjoint(s.failed_keys))]:
            reader = Dataset(self.root, {"feature_dims": self.feature_dims}, [shard], verify=True)
            samples = [item for item in reader.iter_shard(shard.name) if item[0].key not in keys]
            failures = [f for f in self._standing_failures(reader, shard, self._committed) if f.key not in failures_of]
            removed += shard.rows - len(samples)
            if samples or failures:
                self.write_shard(samples, failures, replaces=[shard.name], fingerprints=fingerprints_of([shard]))
            else:
                _remove_shard(self.root / SHARDS / shard.name)
                self.shards.remove(shard)
        return removed

    def _standing_failures(self, reader: "Dataset", shard: ShardInfo, committed: set[str]) -> list[FailureRecord]:
        later = {key for s in self.shards[self.shards.index(shard) + 1:] for key in s.failed_keys}
        table = reader.arrow_table(shard.name, "failures.arrow")
        return [f for f in table_to_records(table, FailureRecord)
                if f.error_type == DUPLICATE_KEY or (f.key not in committed and f.key not in later)]

    def _write_files(self, tmp: Path | UrlPath, name: str, samples: list[tuple[VideoSample, SampleFeatures]],
                     failures: list[FailureRecord], replaces: list[str],
                     fingerprints: dict[str, str]) -> tuple[dict[str, str], ShardInfo, bytes]:
        """Every file of the shard, shard.json last; returns ``(files, info, sha256 of shard.json)``."""
        remote = isinstance(tmp, UrlPath)
        written: dict[str, tuple[str, int]] = {}   # object store: relative path → (sha256, bytes), as written
        store = _RecordingStore(tmp / "features.zarr") if remote else str(tmp / "features.zarr")
        refs = self._write_features(store, [features for _, features in samples])
        table = records_to_table([s for s, _ in samples], VideoSample,
                                 {"features": (samples_schema(FEATURE_ARRAYS).field("features"), refs)}) \
            if samples else samples_schema(FEATURE_ARRAYS).empty_table()
        failure_table = records_to_table(failures, FailureRecord) if failures else FAILURES_SCHEMA.empty_table()
        for rel, arrow in (("samples.arrow", table), ("failures.arrow", failure_table)):
            recorded = _write_arrow(tmp / rel, arrow)
            if recorded:
                written[rel] = recorded
        if remote:
            written.update((f"features.zarr/{key}", value) for key, value in store.written.items())
        else:
            for path in _files_of(tmp):
                with open(path, "rb+") as handle:
                    os.fsync(handle.fileno())
                written[path.relative_to(tmp).as_posix()] = (sha256_file(path), path.stat().st_size)
        files = {rel: written[rel][0] for rel in sorted(written)}
        sizes = {rel: written[rel][1] for rel in files}
        keys, failed_keys = [s.key for s, _ in samples], [f.key for f in failures]
        info = ShardInfo(name, keys, failed_keys, len(samples), len(failures), sum(sizes.values()), files,
                         self.config_hash, replaces, sizes, [fingerprints.get(key, "") for key in keys],
                         [fingerprints.get(key, "") for key in failed_keys])
        data = json.dumps({**info.as_dict(), "config": self.config}, indent=1, default=str).encode()
        _write_atomic(tmp / SHARD_INFO, data)
        if not remote:
            for folder in sorted({p.parent for p in _files_of(tmp)}, key=lambda p: -len(p.parts)):
                _fsync_dir(folder)
        return files, info, hashlib.sha256(data).hexdigest().encode()

    def _write_features(self, store: str | FsspecStore, features: list[SampleFeatures]
                        ) -> list[dict[str, dict[str, int]]]:
        group = zarr.open_group(store=store, mode="w", zarr_format=3)
        refs: list[dict[str, dict[str, int]]] = [{} for _ in features]
        for name in FEATURE_ARRAYS:
            dim, dtype = self.feature_dims[name], feature_dtype(name)
            parts = []
            offset = 0
            for ref, feats in zip(refs, features):
                array = np.asarray(getattr(feats, name), dtype=dtype)
                array = array.reshape(len(array) if array.ndim else 0, dim)
                ref[name] = {"offset": offset, "count": len(array)}
                offset += len(array)
                parts.append(array)
            data = np.concatenate(parts) if parts else np.zeros((0, dim), dtype)
            array = group.create_array(name=name, shape=data.shape, dtype=dtype,
                                       chunks=(max(1, min(len(data), 4096)), max(1, dim)))
            if len(data):
                array[:] = data
        return refs

    def _write_manifest(self) -> None:
        _write_atomic(self.root / MANIFEST, json.dumps(self._manifest(), indent=1, default=str).encode())

    def _manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "updated": _now(),
            "config": self.config,
            "config_hash": self.config_hash,
            "feature_dims": self.feature_dims,
            "host": self.host,
            "package_versions": package_versions(),
        }


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        return manifest
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path} ({error}); rerun the build-sgs command that wrote "
                        f"{path.parent} to rebuild it from its shards") from None


def _check_version(manifest: dict[str, Any], root: Path) -> None:
    if manifest.get("format") != FORMAT_NAME:
        raise UserError(f"{root} is not a finsta dataset (manifest format {manifest.get('format')!r})")
    version = manifest.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise UserError(f"{root} was written with schema version {version}; this finsta reads version "
                        f"{SCHEMA_VERSION}: rebuild it with `build-sgs --overwrite` (or use the finsta release "
                        f"that wrote it)")


# ---------------------------------------------------------------- reading
class KeyIndex:
    """Which shard holds a key, in 8 bytes a key: one sorted ``uint64`` array whose entries pack the top
    36 bits of the key's hash with its position (28 bits) in the shards' ``keys`` lists laid end to end;
    a lookup is a binary search on the hash bits, confirmed by comparing the key itself.

    Built once per :func:`open_dataset` from the ``shard.json`` key lists (at a million keys a dict of
    them cost more than everything else ``open_dataset`` does, and a sort of packed integers is the
    cheapest way found to both index and find repeated keys, bench/bench_store.py). Python's ``hash``
    is per process, so the index is never stored or pickled: :class:`Dataset` rebuilds it. Holds up to
    2**28 (268M) keys.

    Example::

        index, repeating = KeyIndex.build(shards)   # shards whose keys an earlier shard holds are left out
        index.find("v_abc")                          # → "shard-000003", or None
    """

    POSITION_BITS = 28
    _POSITION = (1 << POSITION_BITS) - 1

    def __init__(self, shards: list[ShardInfo], packed: np.ndarray, offsets: np.ndarray):
        self.shards, self.packed, self.offsets = shards, packed, offsets

    @classmethod
    def build(cls, shards: list[ShardInfo]) -> tuple["KeyIndex", list[ShardInfo]]:
        """The index of ``shards`` (in their order), and those left out: a shard holding a key that an
        earlier kept shard (or itself) already holds."""
        offsets = np.cumsum([0] + [len(s.keys) for s in shards], dtype=np.int64)
        if offsets[-1] > cls._POSITION:
            raise ValueError(f"{offsets[-1]} keys: the key index holds at most {cls._POSITION}")
        hashes = np.concatenate([np.fromiter(map(hash, s.keys), np.int64, len(s.keys)) for s in shards]
                                or [np.zeros(0, np.int64)]).view(np.uint64)
        packed = (hashes >> np.uint64(cls.POSITION_BITS) << np.uint64(cls.POSITION_BITS)) \
            | np.arange(len(hashes), dtype=np.uint64)
        packed.sort()   # equal hash bits: in position order, so an earlier shard comes first
        index = cls(shards, packed, offsets)
        prefix = packed >> np.uint64(cls.POSITION_BITS)
        repeats: dict[int, set[int]] = {}   # shard → earlier shards holding one of its keys (a rare path)
        for i in np.flatnonzero(prefix[1:] == prefix[:-1]) + 1:
            code, key = index._entry(int(packed[i]))
            for j in range(i - 1, -1, -1):   # every earlier entry with these hash bits
                if prefix[j] != prefix[i]:
                    break
                other, other_key = index._entry(int(packed[j]))
                if other_key == key:
                    repeats.setdefault(code, set()).add(other)
        dropped: set[int] = set()
        for code in sorted(repeats):
            if repeats[code] - dropped:
                dropped.add(code)
        if not dropped:
            return index, []
        kept = cls.build([s for c, s in enumerate(shards) if c not in dropped])[0]
        return kept, [shards[c] for c in sorted(dropped)]

    def _entry(self, value: int) -> tuple[int, str]:
        """(shard number, key) of one packed entry."""
        position = value & self._POSITION
        code = int(np.searchsorted(self.offsets, position, side="right")) - 1
        return code, self.shards[code].keys[position - int(self.offsets[code])]

    def __len__(self) -> int:
        return len(self.packed)

    def find(self, key: str) -> Optional[str]:
        """The name of the shard holding ``key``, or None."""
        bits = (hash(key) & 0xFFFFFFFFFFFFFFFF) >> self.POSITION_BITS
        i = int(np.searchsorted(self.packed, np.uint64(bits << self.POSITION_BITS)))
        while i < len(self.packed) and int(self.packed[i]) >> self.POSITION_BITS == bits:
            code, found = self._entry(int(self.packed[i]))
            if found == key:
                return self.shards[code].name
            i += 1
        return None

    def __contains__(self, key: str) -> bool:
        return self.find(key) is not None


class Dataset:
    """Read access to a dataset folder; see :func:`open_dataset`.

    With ``verify`` (the default) each file is checked against its sha256 in
    the manifest the first time this object reads it: a mismatch raises
    :class:`CorruptShardError` instead of serving the bytes. The check reads
    each file once more (measured in bench/bench_train.py); ``verify=False``
    skips it for data you have just verified yourself.
    """

    def __init__(self, root: Path, manifest: dict[str, Any], shards: list[ShardInfo], cache_shards: int = 4,
                 verify: bool = True, folders: Optional[dict[str, str]] = None, skipped: Optional[list[str]] = None,
                 index: Optional[KeyIndex] = None):
        self.root = root
        self.shards = shards
        # the header, plus the shard entries as version 3 listed them (``inspect`` counts them)
        self.manifest = {**manifest, "shards": [shard.as_dict() for shard in shards]}
        self.verify = verify
        self.skipped = skipped or []   # committed shards not served (damaged, other config, repeated keys)
        self.feature_dims: dict[str, int] = manifest["feature_dims"]
        self._folders = folders or {}  # shard name → folder name, where they differ (a merged shard not yet renamed)
        # the key index: key → shard (key → row: per shard, on its first read); ``shards`` hold distinct keys
        self._index = index if index is not None else KeyIndex.build(shards)[0]
        self._files: dict[str, dict[str, str]] = {shard.name: shard.files for shard in shards}
        self._verified: set[tuple[str, str]] = set()
        self._cache: OrderedDict[tuple, tuple[pa.Table, dict[str, int], dict[str, Any]]] = OrderedDict()
        self._cache_size = cache_shards


    def keys(self) -> list[str]:
        return [key for shard in self.shards for key in shard.keys]

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_index": None, "_cache": OrderedDict()}   # hashes are per process

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._index = KeyIndex.build(self.shards)[0]

    def shard_names(self) -> list[str]:
        return [shard.name for shard in self.shards]

    def failed_keys(self) -> set[str]:
        """Keys recorded as failed and never committed since (from the manifest alone)."""
        return {key for shard in self.shards for key in shard.failed_keys if key not in self._index}

    def fingerprints(self) -> dict[str, str]:
        """Key → input fingerprint of its standing row (see :func:`fingerprints_of`)."""
        return fingerprints_of(self.shards)

    def failures(self) -> list[FailureRecord]:
        """Every failure that stands: the latest failure of each key that never committed, each
        ``duplicate_key`` row (a dropped repeat of an id whose first occurrence may have committed), and
        each ``bad_record`` line of a key that never committed (its message names the line: 200 malformed
        lines that share an id are 200 failures, however often they are rerun).

        This is the one list every count of failures is taken from (stats.json, the final line,
        ``inspect --failures``).
        """
        latest: dict[tuple[str, str], FailureRecord] = {}
        bad_lines: dict[str, set[tuple[str, str]]] = {}   # key → its bad_record entries in ``latest``
        for name in self.shard_names():
            table = self.arrow_table(name, "failures.arrow")
            for record in table_to_records(table, FailureRecord):
                key = record.key
                if record.error_type == DUPLICATE_KEY:
                    latest[(key, DUPLICATE_KEY + record.message)] = record
                elif key in self._index:
                    continue
                elif record.error_type == BAD_RECORD:    # one per line; replaces a stage failure of the key
                    latest.pop((key, ""), None)
                    entry = (key, BAD_RECORD + record.message)
                    latest[entry] = record
                    bad_lines.setdefault(key, set()).add(entry)
                else:                                    # the latest one goes last, in time order
                    for entry in bad_lines.pop(key, ()):
                        latest.pop(entry, None)
                    latest.pop((key, ""), None)
                    latest[(key, "")] = record
        return list(latest.values())

    def _checked(self, shard: str, rel: str) -> Path:
        """The path of ``rel`` in ``shard`` (a local dataset), its sha256 checked once when ``verify`` is on."""
        path = self._folder(shard) / rel
        if self.verify and (shard, rel) not in self._verified:
            if not path.is_file():
                raise CorruptShardError(f"{path} is missing; {self._remedy()}")
            self._check_digest(shard, rel, sha256_file(path))
        return path

    def _check_digest(self, shard: str, rel: str, digest: str) -> None:
        if self._files.get(shard, {}).get(rel) != digest:
            raise CorruptShardError(f"{self._folder(shard) / rel} does not match its sha256 in the manifest "
                                    f"(corrupted): not serving it; {self._remedy()}")
        self._verified.add((shard, rel))

    def _remedy(self) -> str:
        return (f"move its shard folder out of {self.root / SHARDS} and rerun build-sgs to redo the shard's "
                "samples (`verify` lists every problem)")

    def _folder(self, shard: str) -> Path | UrlPath:
        folder = self.root / SHARDS / self._folders.get(shard, shard)
        if shard not in self._folders or fs_exists(folder / DONE):
            return folder
        return self.root / SHARDS / shard   # a merged shard renamed (copied) into place since opening

    def _read_checked(self, shard: str, rel: str) -> bytes:
        """``rel`` of ``shard`` of an object-store dataset, read into memory and checked like :meth:`_checked`."""
        try:
            data = fs_read(self._folder(shard) / rel)
        except FileNotFoundError:
            raise CorruptShardError(f"{self._folder(shard) / rel} is missing; {self._remedy()}") from None
        if self.verify and (shard, rel) not in self._verified:
            self._check_digest(shard, rel, hashlib.sha256(data).hexdigest())
        return data

    def arrow_table(self, shard: str, rel: str) -> pa.Table:
        """One of the shard's Arrow files (checked): memory-mapped when local (a column never touched is
        never read from disk), read whole into memory from an object store."""
        if isinstance(self.root, UrlPath):
            return pa.ipc.open_file(pa.BufferReader(self._read_checked(shard, rel))).read_all()
        return pa.ipc.open_file(pa.memory_map(str(self._checked(shard, rel)))).read_all()

    def _feature_group(self, shard: str, features: tuple[str, ...]) -> zarr.Group:
        """The shard's Zarr group; each file of ``features`` is checked before it is served: locally all at
        once, on an object store as zarr's fsspec store reads each object (nothing is copied to disk)."""
        folder = self._folder(shard)
        if isinstance(folder, UrlPath):
            def check(key: str, data: bytes) -> None:
                if self.verify and (shard, f"features.zarr/{key}") not in self._verified:
                    self._check_digest(shard, f"features.zarr/{key}", hashlib.sha256(data).hexdigest())
            return zarr.open_group(store=_CheckedStore(folder / "features.zarr", check), mode="r", zarr_format=3)
        self._checked(shard, "features.zarr/zarr.json")
        for rel in sorted(self._files.get(shard, {})):
            if rel.startswith(tuple(f"features.zarr/{feature}/" for feature in features)):
                self._checked(shard, rel)
        return zarr.open_group(store=str(folder / "features.zarr"), mode="r")

    def shard_columns(self, name: str, features: tuple[str, ...] = FEATURE_ARRAYS
                      ) -> tuple[pa.Table, dict[str, int], dict[str, Any]]:
        """One shard as columns, for readers that skip the record objects (``finsta_model.columnar``).

        Returns ``(table, rows, arrays)``: the ``samples.arrow`` table (memory-mapped: a column
        that is never touched is never read from disk), ``{key: row}``, and each feature array
        named in ``features`` (numpy when the shard is small, else the Zarr array) that the rows'
        ``features`` offsets index; the others are not opened. Shards are cached (most recently
        used first). Each file read is checked against its sha256 on first read (see the class
        docstring).
        """
        cache_key = (name, tuple(features))
        if cache_key not in self._cache:
            table = self.arrow_table(name, "samples.arrow")
            rows = {key: i for i, key in enumerate(table.column("key").to_pylist())}
            # only what the caller reads is checked (an exported host reads no SG array)
            group = self._feature_group(name, features)
            arrays = {}
            for feature in features:
                array = group[feature]
                # Small shards are read whole: one read beats a Zarr round trip per sample.
                arrays[feature] = array[:] if array.nbytes <= _WHOLE_ARRAY_BYTES else array
            self._cache[cache_key] = (table, rows, arrays)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(cache_key)
        return self._cache[cache_key]

    def feature_rows(self, refs: dict[str, dict[str, int]], arrays: dict[str, Any]) -> dict[str, np.ndarray]:
        """One sample's rows of each feature array in ``arrays`` (``refs``: its ``features`` column value;
        ``arrays``: from :meth:`shard_columns`), copied, so a sample kept around never pins its whole shard."""
        return {name: np.array(arrays[name][refs[name]["offset"]:refs[name]["offset"] + refs[name]["count"]])
                if refs[name]["count"] else np.zeros((0, self.feature_dims[name]), feature_dtype(name))
                for name in arrays}

    def _sample(self, record: dict[str, Any], arrays: dict[str, Any]) -> tuple[VideoSample, SampleFeatures]:
        return from_row(VideoSample, record), SampleFeatures(**self.feature_rows(record["features"], arrays))

    def get(self, key: str) -> tuple[VideoSample, SampleFeatures]:
        """The sample and its features; KeyError when ``key`` is not committed."""
        shard = self._index.find(key)
        if shard is None:
            raise KeyError(key)
        table, rows, arrays = self.shard_columns(shard)
        return self._sample(table.slice(rows[key], 1).to_pylist()[0], arrays)

    def iter_shard(self, name: str) -> Iterator[tuple[VideoSample, SampleFeatures]]:
        table, _, arrays = self.shard_columns(name)
        for batch in table.to_batches(max_chunksize=64):  # bounded memory, one conversion per chunk
            for record in batch.to_pylist():
                yield self._sample(record, arrays)

    def iter_samples(self) -> Iterator[tuple[VideoSample, SampleFeatures]]:
        for name in self.shard_names():
            yield from self.iter_shard(name)


def open_dataset(root: str | os.PathLike, verify: bool = True) -> Dataset:
    """Open a dataset folder for reading; ``verify=False`` skips the per-file sha256 check (see :class:`Dataset`).

    Reads ``manifest.json`` (the header) and each committed shard's ``shard.json`` (checked against its
    ``_DONE``), never the data. Committed shards that cannot be served (damaged metadata, another
    config, keys another shard holds) are left out and named in ``Dataset.skipped``; the next
    ``build-sgs`` quarantines them. Raises :class:`UserError` when the folder or its manifest is
    missing or unreadable, or was written by a ``SCHEMA_VERSION`` this finsta does not read.
    """
    root = location(root)
    if not (root / MANIFEST).is_file():
        raise UserError(f"{root} is not a finsta dataset (no {MANIFEST}); build one with `python cli.py build-sgs`")
    manifest = _read_manifest(root / MANIFEST)
    _check_version(manifest, root)
    scan = _scan_shards(root / SHARDS, files=False)
    candidates, folders = [], {}
    skipped = [f"{folder.name}: {problem}" for folder, problem in scan.damaged]
    for folder, info, _ in scan.intact:
        if info.config_hash is not None and info.config_hash != manifest.get("config_hash"):
            skipped.append(f"{folder.name}: built with other options (config hash {info.config_hash})")
        else:
            candidates.append(info)
            if folder.name != info.name:
                folders[info.name] = folder.name
    index, repeating = KeyIndex.build(candidates)
    skipped += [f"{folders.get(info.name, info.name)}: holds samples already committed in another shard"
                for info in repeating]
    return Dataset(root, manifest, index.shards, verify=verify, folders=folders, skipped=skipped, index=index)


def verify(root: str | os.PathLike) -> list[str]:
    """Every problem found, as readable lines; an empty list means intact.

    Checks the manifest (readable, a version this finsta reads) and every committed shard folder (its
    done-marker, ``shard.json`` against it, every file's size and sha256, files present but not listed,
    another config, keys held by two shards). Debris of interrupted commits and the old shards of a
    compaction cut short are not problems: nothing reads them and the next writer removes them.
    """
    root = location(root)
    if not (root / MANIFEST).is_file() and not (root / SHARDS).is_dir():
        raise UserError(f"{root} is not a finsta dataset (no {MANIFEST})")
    problems, manifest = [], None
    try:
        manifest = _read_manifest(root / MANIFEST)
        if manifest.get("schema_version") not in READABLE_VERSIONS:
            problems.append(f"{root / MANIFEST}: schema version {manifest.get('schema_version')}, "
                            f"this finsta reads {SCHEMA_VERSION}")
    except UserError as error:   # each shard is still checked against its own shard.json
        problems.append(f"{root / MANIFEST}: {error}")
    scan = _scan_shards(root / SHARDS)
    problems += [f"{folder}: {problem}" for folder, problem in scan.damaged]
    seen: set[str] = set()
    for folder, info, _ in scan.intact:
        problem = check_shard(folder, full=True)[0]
        if problem:
            problems.append(f"{folder / problem.split(':')[0]}: {problem.split(': ', 1)[-1]}"
                            if ": " in problem else f"{folder}: {problem}")
        listed = set(info.files) | {SHARD_INFO, DONE}
        problems += [f"{path}: unexpected file" for path in _files_of(folder)
                     if path.relative_to(folder).as_posix() not in listed]
        if manifest and info.config_hash not in (None, manifest.get("config_hash")):
            problems.append(f"{folder}: built with other options than {MANIFEST} says; rerun build-sgs to "
                            "quarantine it")
        if not seen.isdisjoint(info.keys):
            problems.append(f"{folder}: holds samples another shard holds; rerun build-sgs to quarantine it")
        seen.update(info.keys)
    if (root / SHARDS).is_dir():
        known = {p for p, _, _ in scan.intact} | {p for p, _ in scan.damaged} | set(scan.debris) | set(scan.superseded)
        problems += [f"{entry}: unexpected entry in {SHARDS}/" for entry in sorted(fs_list(root / SHARDS))
                     if entry not in known]
    return problems
