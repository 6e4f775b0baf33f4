"""The shard store: Arrow graph tables + Zarr v3 dense features, committed atomically.

Layout of a dataset folder (full column list in docs/format.md)::

    OUT/
      manifest.json                 dataset index (rebuilt from the shards on open)
      shards/shard-000000/
        samples.arrow               Arrow IPC file, one row per VideoSample
        failures.arrow              Arrow IPC file, one row per FailureRecord
        features.zarr/              Zarr v3 group: one array per FEATURE_ARRAYS name (frame, detection, …)
        shard.json                  this shard's keys, row counts, bytes, sha256 per file
        _DONE                       written last; a shard without it does not exist

Commit protocol: everything is written into ``shards/.tmp-<name>-<pid>``, each
file fsynced, the folder renamed to its final name, the parent fsynced, then
``_DONE`` is written (temp name + fsync + rename) and the manifest rewritten
the same way. A crash at any point leaves either a complete shard or nothing
that a reader sees; :class:`DatasetWriter` removes the debris on open.

Example::

    writer = DatasetWriter("out", config={"detector": "color"}, feature_dims=dims)
    writer.write_shard([(sample, features)], failures=[])
    ds = open_dataset("out")
    sample, features = ds.get(ds.keys()[0])
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pyarrow as pa
import zarr

from schemas.arrow import (FAILURES_SCHEMA, records_to_table, samples_schema, table_to_records, from_row)
from schemas.errors import UserError
from schemas.options import diff, diff_text
from schemas.records import (FEATURE_ARRAYS, OPTIONAL_FEATURES, FailureRecord, SampleFeatures, VideoSample,
                             feature_dtype)
from schemas.version import FORMAT_NAME, SCHEMA_VERSION

MANIFEST = "manifest.json"
SHARDS = "shards"
DONE = "_DONE"
SHARD_INFO = "shard.json"
_WHOLE_ARRAY_BYTES = 64 << 20
_KEY_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-#=+@]{0,199}$")
_PACKAGES = ("finsta", "pyarrow", "zarr", "numpy", "torch", "ray", "spacy", "stanza", "opencv-python-headless",
             "sentence-transformers")


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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _write_arrow(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@dataclass
class ShardInfo:
    """One shard's entry in the manifest."""

    name: str
    keys: list[str]
    failed_keys: list[str]
    rows: int
    failure_rows: int
    bytes: int
    files: dict[str, str]  # relative path → sha256

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---------------------------------------------------------------- writing
class DatasetWriter:
    """Appends shards to a dataset folder; safe to reopen after any crash.

    ``config`` is what produced the data (stored, hashed); reopening a folder
    written with another config raises :class:`UserError` unless
    ``overwrite=True``, which deletes the old dataset first. ``host`` names the
    host models that made the features (the identity of the embed stages'
    config; stored as the manifest's ``host``, read by ``train``/``eval``).
    """

    def __init__(self, root: str | os.PathLike, config: dict[str, Any], feature_dims: dict[str, int],
                 overwrite: bool = False, host: Optional[dict[str, Any]] = None):
        self.root = Path(root)
        self.config = config
        self.host = host
        self.feature_dims = {name: int(feature_dims[name] if name in feature_dims else OPTIONAL_FEATURES[name])
                             for name in FEATURE_ARRAYS}
        if overwrite and self.root.exists():
            shutil.rmtree(self.root)
        (self.root / SHARDS).mkdir(parents=True, exist_ok=True)
        old = _read_manifest(self.root / MANIFEST) if (self.root / MANIFEST).exists() else None
        if old is not None:
            _check_version(old, self.root)
            if old.get("config_hash") != config_hash(config):
                changes = diff(old.get("config", {}), config)
                raise UserError(f"{self.root} was built with other options ({diff_text(changes)}); rerun with the "
                                f"old values to continue, --overwrite to start over, or use another --out")
        self._remove_debris()
        self.shards = _scan_shards(self.root)
        self.created = old.get("created") if old else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._write_manifest()

    def _remove_debris(self) -> None:
        for entry in (self.root / SHARDS).iterdir():
            if entry.name.startswith(".tmp-") or (entry.is_dir() and not (entry / DONE).exists()):
                shutil.rmtree(entry, ignore_errors=True)

    def committed_keys(self) -> set[str]:
        return {key for shard in self.shards for key in shard.keys}

    def failed_keys(self) -> set[str]:
        return {key for shard in self.shards for key in shard.failed_keys} - self.committed_keys()

    def write_shard(self, samples: list[tuple[VideoSample, SampleFeatures]],
                    failures: list[FailureRecord]) -> str:
        """Commit one shard atomically and return its name."""
        for sample, _ in samples:
            problem = check_key(sample.key)
            if problem:
                raise ValueError(problem)
        name = f"shard-{(int(self.shards[-1].name.split('-')[1]) + 1) if self.shards else 0:06d}"
        tmp = self.root / SHARDS / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        refs = self._write_features(tmp / "features.zarr", [features for _, features in samples])
        table = records_to_table([s for s, _ in samples], VideoSample,
                                 {"features": (samples_schema(FEATURE_ARRAYS).field("features"), refs)}) \
            if samples else samples_schema(FEATURE_ARRAYS).empty_table()
        _write_arrow(tmp / "samples.arrow", table)
        failure_table = records_to_table(failures, FailureRecord) if failures else FAILURES_SCHEMA.empty_table()
        _write_arrow(tmp / "failures.arrow", failure_table)
        files = {}
        for path in _files_of(tmp):
            with open(path, "rb+") as handle:
                os.fsync(handle.fileno())
            files[path.relative_to(tmp).as_posix()] = sha256_file(path)
        info = ShardInfo(name, [s.key for s, _ in samples], [f.key for f in failures], len(samples), len(failures),
                         sum((tmp / rel).stat().st_size for rel in files), files)
        _write_atomic(tmp / SHARD_INFO, json.dumps(info.as_dict(), indent=1).encode())
        for folder in sorted({p.parent for p in _files_of(tmp)}, key=lambda p: -len(p.parts)):
            _fsync_dir(folder)
        final = self.root / SHARDS / name
        os.rename(tmp, final)
        _fsync_dir(final.parent)
        _write_atomic(final / DONE, sha256_file(final / SHARD_INFO).encode())
        self.shards.append(info)
        self._write_manifest()
        return name

    def _write_features(self, path: Path, features: list[SampleFeatures]) -> list[dict[str, dict[str, int]]]:
        group = zarr.open_group(store=str(path), mode="w", zarr_format=3)
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
        manifest = {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": self.config,
            "config_hash": config_hash(self.config),
            "feature_dims": self.feature_dims,
            "host": self.host,
            "package_versions": package_versions(),
            "shards": [shard.as_dict() for shard in self.shards],
        }
        _write_atomic(self.root / MANIFEST, json.dumps(manifest, indent=1, default=str).encode())


def _scan_shards(root: Path) -> list[ShardInfo]:
    shards = []
    for folder in sorted((root / SHARDS).glob("shard-*")):
        if (folder / DONE).exists():
            shards.append(ShardInfo(**json.loads((folder / SHARD_INFO).read_text())))
    return shards


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {path}: {error}; run `python cli.py verify {path.parent}`") from None


def _check_version(manifest: dict[str, Any], root: Path) -> None:
    if manifest.get("format") != FORMAT_NAME:
        raise UserError(f"{root} is not a finsta dataset (manifest format {manifest.get('format')!r})")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(f"{root} was written with schema version {version}; this finsta reads version "
                        f"{SCHEMA_VERSION}: rebuild it with `build-sgs --overwrite` (or use the finsta release "
                        f"that wrote it)")


# ---------------------------------------------------------------- reading
class Dataset:
    """Read access to a dataset folder; see :func:`open_dataset`."""

    def __init__(self, root: Path, manifest: dict[str, Any], cache_shards: int = 4):
        self.root = root
        self.manifest = manifest
        self.feature_dims: dict[str, int] = manifest["feature_dims"]
        self._key_to_shard: dict[str, str] = {}
        for shard in manifest["shards"]:
            for key in shard["keys"]:
                self._key_to_shard[key] = shard["name"]
        self._cache: OrderedDict[tuple, tuple[pa.Table, dict[str, int], dict[str, Any]]] = OrderedDict()
        self._cache_size = cache_shards

    def keys(self) -> list[str]:
        return list(self._key_to_shard)

    def __len__(self) -> int:
        return len(self._key_to_shard)

    def shard_names(self) -> list[str]:
        return [shard["name"] for shard in self.manifest["shards"]]

    def failed_keys(self) -> set[str]:
        """Keys recorded as failed and never committed since (from the manifest alone)."""
        return {key for shard in self.manifest["shards"] for key in shard["failed_keys"]} - set(self._key_to_shard)

    def failures(self) -> list[FailureRecord]:
        """The latest failure of every key that never committed."""
        latest: dict[str, FailureRecord] = {}
        for name in self.shard_names():
            table = pa.ipc.open_file(pa.memory_map(str(self.root / SHARDS / name / "failures.arrow"))).read_all()
            for record in table_to_records(table, FailureRecord):
                if record.key not in self._key_to_shard:
                    latest[record.key] = record
        return list(latest.values())

    def shard_columns(self, name: str, features: tuple[str, ...] = FEATURE_ARRAYS
                      ) -> tuple[pa.Table, dict[str, int], dict[str, Any]]:
        """One shard as columns, for readers that skip the record objects (``finsta_model.columnar``).

        Returns ``(table, rows, arrays)``: the ``samples.arrow`` table (memory-mapped: a column
        that is never touched is never read from disk), ``{key: row}``, and each feature array
        named in ``features`` (numpy when the shard is small, else the Zarr array) that the rows'
        ``features`` offsets index; the others are not opened. Shards are cached (most recently
        used first).
        """
        cache_key = (name, tuple(features))
        if cache_key not in self._cache:
            folder = self.root / SHARDS / name
            table = pa.ipc.open_file(pa.memory_map(str(folder / "samples.arrow"))).read_all()
            rows = {key: i for i, key in enumerate(table.column("key").to_pylist())}
            group = zarr.open_group(store=str(folder / "features.zarr"), mode="r")
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
        table, rows, arrays = self.shard_columns(self._key_to_shard[key])
        return self._sample(table.slice(rows[key], 1).to_pylist()[0], arrays)

    def iter_shard(self, name: str) -> Iterator[tuple[VideoSample, SampleFeatures]]:
        table, _, arrays = self.shard_columns(name)
        for batch in table.to_batches(max_chunksize=64):  # bounded memory, one conversion per chunk
            for record in batch.to_pylist():
                yield self._sample(record, arrays)

    def iter_samples(self) -> Iterator[tuple[VideoSample, SampleFeatures]]:
        for name in self.shard_names():
            yield from self.iter_shard(name)


def open_dataset(root: str | os.PathLike) -> Dataset:
    """Open a dataset folder for reading.

    Raises :class:`UserError` when the folder or its manifest is missing or was
    written by another ``SCHEMA_VERSION``.
    """
    root = Path(root)
    if not (root / MANIFEST).is_file():
        raise UserError(f"{root} is not a finsta dataset (no {MANIFEST}); build one with `python cli.py build-sgs`")
    manifest = _read_manifest(root / MANIFEST)
    _check_version(manifest, root)
    return Dataset(root, manifest)


def verify(root: str | os.PathLike) -> list[str]:
    """Every problem found (missing, corrupted or unexpected file), as readable lines.

    Checks each shard listed in the manifest: its done-marker, every file's
    sha256 and size, and files present but not listed. Empty list = intact.
    """
    root = Path(root)
    if not (root / MANIFEST).is_file():
        raise UserError(f"{root} is not a finsta dataset (no {MANIFEST})")
    manifest = _read_manifest(root / MANIFEST)
    problems = []
    if manifest.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"{root / MANIFEST}: schema version {manifest.get('schema_version')}, "
                        f"this finsta reads {SCHEMA_VERSION}")
    for shard in manifest.get("shards", []):
        folder = root / SHARDS / shard["name"]
        if not (folder / DONE).is_file():
            problems.append(f"{folder / DONE}: missing (shard not committed)")
        listed = set(shard["files"]) | {SHARD_INFO, DONE}
        for rel, digest in sorted(shard["files"].items()):
            path = folder / rel
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif sha256_file(path) != digest:
                problems.append(f"{path}: corrupted (sha256 mismatch)")
        if folder.is_dir():
            for path in _files_of(folder):
                if path.relative_to(folder).as_posix() not in listed:
                    problems.append(f"{path}: unexpected file")
        info = folder / SHARD_INFO
        if info.is_file() and (folder / DONE).is_file() and (folder / DONE).read_text() != sha256_file(info):
            problems.append(f"{info}: corrupted (does not match {DONE})")
    return problems
