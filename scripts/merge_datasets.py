"""Concatenate finsta datasets (same feature dims, same host) into a new one, shard by shard.

    .venv/bin/python scripts/merge_datasets.py OUT SRC [SRC ...]

Used by docs/results.md for the 900-video training set (three worlds of 300 videos). Keys must be distinct
across the sources (synthetic keys carry their world seed, so they are).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.store import DatasetWriter, open_dataset  # noqa: E402


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, sources = sys.argv[1], sys.argv[2:]
    first = open_dataset(sources[0]).manifest
    dims, host = first["feature_dims"], first.get("host")
    for source in sources[1:]:   # one host model per dataset: training refuses a mix of hosts' features
        manifest = open_dataset(source).manifest
        if manifest["feature_dims"] != dims:
            sys.exit(f"{source} has feature dims {manifest['feature_dims']}, {sources[0]} has {dims}")
        if manifest.get("host") != host:
            sys.exit(f"{source} was made by host {manifest.get('host')}, {sources[0]} by {host}: not merged")
    writer = DatasetWriter(out, config={"merged": sources}, feature_dims=dims, overwrite=True, host=host)
    seen: set[str] = set()
    for source in sources:
        dataset = open_dataset(source)
        for name in dataset.shard_names():
            samples = list(dataset.iter_shard(name))
            clash = seen & {s.key for s, _ in samples}
            if clash:
                sys.exit(f"duplicate keys across sources, e.g. {sorted(clash)[0]}")
            seen |= {s.key for s, _ in samples}
            writer.write_shard(samples, [])
    print(f"{out}: {len(open_dataset(out))} videos")


if __name__ == "__main__":
    main()
