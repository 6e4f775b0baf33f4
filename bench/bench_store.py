"""The shard store at scale: does committing, resuming and opening cost grow with the dataset?

For each size N (default 10k, 100k, 1M tiny synthetic samples: one frame, no detections, no captions, so
no video work) a dataset of N samples is made, then a fresh process measures on it:

* ``commit_ms``: ``DatasetWriter.write_shard`` of 100 new samples, ``--commits`` times, alternating with the
  same commit into an empty dataset in the same process (the *start* of a run, the reference):
  ``commit_end_over_start`` = median(at N) / median(empty), by wall time and by CPU time; ``commit_bytes``:
  what each commit wrote (its shard folder: data + shard.json + _DONE; no dataset-wide file is rewritten);
* ``compact_ms``: then ``compact`` merges those small shards into one (the merge a build runs every
  ``write.compact_every`` commits), at N and in the empty dataset (``compact_cpu_end_over_start``);
* ``resume_s``: ``DatasetWriter(root, ...)`` on the N-sample dataset (lock, debris, every shard's metadata
  checked, key uniqueness);
* ``reader_open_s``: ``open_dataset(root)``; ``lookup_ms``: ``Dataset.get(key)`` of random keys (first read of
  each shard included, sha256 check on);
* ``files`` (before the measured commits), ``files_per_sample``, ``metadata_bytes_per_sample`` (manifest.json, shard.json, _DONE);
* ``peak_rss_mb`` of that measuring process (the driver's view: writer + reader over N keys).

Making the N samples: one shard of ``--shard-size`` samples is written through ``write_shard``; the others
are file-level clones of it with new keys (samples.arrow's key column rewritten, the Zarr features
hard-linked, shard.json with its own sha256s and sizes, then ``_DONE``), which is what ``write_shard``
would have left, at a fraction of the time (``make_s``). The ratio against 10k is ``vs_10k``; the 10M
figures are a linear projection from 1M (``projection_10M``). Each size runs ``--runs`` times; the JSON
holds every run, ranges, and the load average when each was measured.

    .venv/bin/python bench/bench_store.py [--sizes 10000 100000 1000000] [--runs 3]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from schemas.records import DynamicSceneGraph, Frame, SampleFeatures, VideoMeta, VideoSample  # noqa: E402
from schemas.store import DONE, MANIFEST, SHARD_INFO, SHARDS, DatasetWriter, open_dataset, sha256_file  # noqa: E402

DIMS = {"frame": 8, "detection": 4, "text_node": 3, "caption": 3}
CONFIG = {"bench": "store"}
COMMIT_ROWS = 100


def tiny(key: str) -> tuple[VideoSample, SampleFeatures]:
    meta = VideoMeta(f"/videos/{key}.mp4", 4.0, 25.0, 320, 240, "h264", 100)
    return (VideoSample(key, "bench", DynamicSceneGraph(key, meta, [Frame(0, 0.0)])),
            SampleFeatures(np.ones((1, 8), np.float32), np.zeros((0, 4)), np.zeros((0, 3)), np.zeros((0, 3))))


def make(root: Path, n: int, shard_size: int) -> None:
    """N samples: one shard written by the store, the rest its file-level clones (see the module docstring)."""
    with DatasetWriter(root, CONFIG, DIMS) as writer:
        template = root / SHARDS / writer.write_shard([tiny(f"v{i:09d}") for i in range(min(n, shard_size))], [])
    info = json.loads((template / SHARD_INFO).read_bytes())
    table = pa.ipc.open_file(pa.memory_map(str(template / "samples.arrow"))).read_all()
    for s, start in enumerate(range(shard_size, n, shard_size), start=1):
        rows = min(shard_size, n - start)
        folder = root / SHARDS / f"shard-{s:06d}"
        for path in sorted(template.rglob("*")):
            rel = path.relative_to(template)
            if path.is_dir():
                (folder / rel).mkdir(parents=True, exist_ok=True)
            elif rel.as_posix() not in ("samples.arrow", SHARD_INFO, DONE):
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                os.link(path, folder / rel)
        keys = [f"v{i:09d}" for i in range(start, start + rows)]
        part = table.slice(0, rows)
        part = part.set_column(part.schema.get_field_index("key"), "key", pa.array(keys))
        with pa.OSFile(str(folder / "samples.arrow"), "wb") as sink, pa.ipc.new_file(sink, part.schema) as out:
            out.write_table(part)
        entry = dict(info, name=folder.name, keys=keys, rows=rows)
        entry["files"] = dict(info["files"], **{"samples.arrow": sha256_file(folder / "samples.arrow")})
        entry["sizes"] = dict(info["sizes"], **{"samples.arrow": (folder / "samples.arrow").stat().st_size})
        raw = json.dumps(entry, indent=1).encode()
        (folder / SHARD_INFO).write_bytes(raw)
        (folder / DONE).write_text(hashlib.sha256(raw).hexdigest())


def measure(root: Path, n: int, commits: int) -> dict:
    empty = Path(tempfile.mkdtemp(prefix="bench-store-empty-"))
    files = sum(len(names) for _, _, names in os.walk(root))   # before the measured commits add small shards
    try:
        t, c = time.perf_counter(), time.process_time()
        writer = DatasetWriter(root, CONFIG, DIMS)
        resume_s, resume_cpu_s = time.perf_counter() - t, time.process_time() - c
        fresh = DatasetWriter(empty, CONFIG, DIMS)
        at_n, at_0 = {"wall": [], "cpu": [], "bytes": []}, {"wall": [], "cpu": [], "bytes": []}
        for i in range(commits):
            for target, times, prefix in ((fresh, at_0, "e"), (writer, at_n, "n")):
                batch = [tiny(f"{prefix}{i:05d}x{j:04d}") for j in range(COMMIT_ROWS)]
                t, c = time.perf_counter(), time.process_time()
                name = target.write_shard(batch, [])
                times["wall"].append(1000 * (time.perf_counter() - t))
                times["cpu"].append(1000 * (time.process_time() - c))
                times["bytes"].append(sum(p.stat().st_size for p in (target.root / SHARDS / name).rglob("*")
                                          if p.is_file()))
        compact = {}
        for target, label in ((fresh, "at_start"), (writer, "at_n")):   # the in-run merge of small shards
            t, c = time.perf_counter(), time.process_time()
            target.compact(COMMIT_ROWS * commits, min_run=2)
            compact[f"compact_ms_{label}"] = 1000 * (time.perf_counter() - t)
            compact[f"compact_cpu_ms_{label}"] = 1000 * (time.process_time() - c)
        writer.close()
        fresh.close()
        t, c = time.perf_counter(), time.process_time()
        dataset = open_dataset(root)
        open_s, open_cpu_s = time.perf_counter() - t, time.process_time() - c
        assert len(dataset) == n + commits * COMMIT_ROWS
        keys = random.Random(0).sample(range(n), 200)
        t = time.perf_counter()
        for i in keys:
            dataset.get(f"v{i:09d}")
        lookup_ms = 1000 * (time.perf_counter() - t) / len(keys)
        meta = (root / MANIFEST).stat().st_size + sum(p.stat().st_size for name in (SHARD_INFO, DONE)
                                                      for p in (root / SHARDS).glob(f"*/{name}"))
        median = statistics.median
        return {"n": n, "load_avg": os.getloadavg()[0], "resume_s": resume_s, "resume_cpu_s": resume_cpu_s,
                "commit_ms_at_n": median(at_n["wall"]), "commit_ms_at_start": median(at_0["wall"]),
                "commit_cpu_ms_at_n": median(at_n["cpu"]), "commit_cpu_ms_at_start": median(at_0["cpu"]),
                "commit_end_over_start": median(at_n["wall"]) / median(at_0["wall"]),
                "commit_cpu_end_over_start": median(at_n["cpu"]) / median(at_0["cpu"]),
                "commit_bytes_at_n": median(at_n["bytes"]), "commit_bytes_at_start": median(at_0["bytes"]),
                **compact, "compact_cpu_end_over_start": compact["compact_cpu_ms_at_n"] / compact["compact_cpu_ms_at_start"],
                "reader_open_s": open_s, "reader_open_cpu_s": open_cpu_s, "lookup_ms": lookup_ms, "files": files, "files_per_sample": files / n,
                "metadata_bytes_per_sample": meta / n,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    finally:
        shutil.rmtree(empty, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--commits", type=int, default=15)
    parser.add_argument("--shard-size", type=int, default=10_000)
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)   # ROOT N: the measuring child
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), int(args.measure[1]), args.commits)))
        return
    runs = []
    for run in range(args.runs):
        for n in args.sizes:
            root = Path(tempfile.mkdtemp(prefix=f"bench-store-{n}-"))
            try:
                t = time.perf_counter()
                make(root, n, args.shard_size)
                make_s = time.perf_counter() - t
                child = subprocess.run([sys.executable, __file__, "--measure", str(root), str(n),
                                        "--commits", str(args.commits)], capture_output=True, text=True, check=True)
                runs.append({"run": run, "make_s": make_s, **json.loads(child.stdout)})
            finally:
                shutil.rmtree(root, ignore_errors=True)
            print(json.dumps(runs[-1]), file=sys.stderr)
    report = {"runs": runs, "by_size": {}}
    for n in args.sizes:
        mine = [r for r in runs if r["n"] == n]
        report["by_size"][n] = {key: [min(r[key] for r in mine), max(r[key] for r in mine)]
                                for key in mine[0] if key not in ("run", "n")}
    base, top = min(args.sizes), max(args.sizes)
    pairs = [(a, b) for a in runs for b in runs if a["run"] == b["run"] and a["n"] == top and b["n"] == base]
    report["vs_%d" % base] = {
        key: [round(a[key] / b[key], 3) for a, b in pairs]
        for key in ("commit_ms_at_n", "commit_cpu_ms_at_n", "commit_bytes_at_n", "compact_cpu_ms_at_n", "resume_s", "resume_cpu_s", "reader_open_s",
                    "reader_open_cpu_s", "lookup_ms")}
    report["projection_10M"] = {key: [round(r[key] * 10_000_000 / r["n"], 2) for r in runs if r["n"] == top]
                                for key in ("resume_s", "resume_cpu_s", "reader_open_s", "reader_open_cpu_s",
                                            "peak_rss_mb")}
    report["targets"] = {"commit_at_1M_over_10k_le": 1.2, "resume_s_le": 10, "reader_open_s_le": 5,
                         "peak_rss_mb_le": 1024}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
