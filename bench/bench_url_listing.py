"""What URL-video fingerprints cost the listing: ``Dataset.tasks()`` over a manifest of N ``s3://`` videos
in one folder, as build-sgs and its dry run list: ``manifest`` (the folder's listing read as far as it pays,
pipeline/datasets/url_versions.py) and ``manifest_heads`` (one metadata request per video, ``URL_THREADS``
at a time: what every manifest video cost before, forced here with ``PAGE_COST`` out of reach), against
the same listing over an ActivityNet-style layout of the same N objects on S3 (``folder``: the videos
folder listed once, no request per video).

Objects live on a local S3 server (moto's standalone server on 127.0.0.1, the test server; its own CPU is
not counted, and on a loaded machine it is what bounds the wall time). Per round, both listings run,
alternating which goes first; reported: wall time and this process's CPU time of each, their ratio
(``ratio = manifest wall / manifest_heads wall``, ``cpu_ratio`` likewise by CPU, ``vs_folder`` = manifest
wall / folder wall) and the load average. The load-independent figures are ``cpu_per_url_ms`` (this
process's CPU per URL video: ``manifest`` and, as ``heads_cpu_per_url_ms``, ``manifest_heads``).

Usage::

    python bench/bench_url_listing.py [--videos 1000] [--rounds 3] [--every 1]

``--every K``: the folder holds K times as many objects and the manifest names every K-th (a sparse
manifest: where listing pays less, or not at all).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_url_inputs import start_s3  # noqa: E402


def write_inputs(work: Path, endpoint: str, videos: int, every: int = 1) -> tuple[str, str]:
    """N x ``every`` tiny objects under s3://bench-urls/anet/videos/, a manifest naming every ``every``-th
    by URL (N of them), and the same captions as an ActivityNet captions file next to them; returns
    (manifest, ActivityNet root)."""
    import boto3
    from concurrent.futures import ThreadPoolExecutor

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="bench-urls")
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: client.put_object(Bucket="bench-urls", Key=f"anet/videos/v_{i:07d}.mp4", Body=b"x"),
                      range(videos * every)))
    entries = {f"v_{i:07d}": {"duration": 4.0, "timestamps": [[0.0, 4.0]], "sentences": ["a man walks"]}
               for i in range(0, videos * every, every)}
    client.put_object(Bucket="bench-urls", Key="anet/captions/train.json", Body=json.dumps(entries).encode())
    manifest = work / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": key, "video": f"s3://bench-urls/anet/videos/{key}.mp4",
                                            "captions": ["a man walks"]}) + "\n" for key in entries))
    return str(manifest), "s3://bench-urls/anet"


def timed(cfg, heads: bool = False) -> tuple[float, float, list]:
    from pipeline.datasets import build_dataset, url_versions
    page_cost, url_versions.PAGE_COST = url_versions.PAGE_COST, (1 << 62) if heads else url_versions.PAGE_COST
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        tasks = list(build_dataset(cfg).tasks())
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        url_versions.PAGE_COST = page_cost
    assert all(t.fingerprint and t.failure is None for t in tasks)
    return wall, cpu, [t.fingerprint for t in tasks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--every", type=int, default=1)
    args = parser.parse_args()
    proc, endpoint = start_s3()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_ENDPOINT_URL=endpoint)
    try:
        from pipeline.datasets import DatasetConfig
        with tempfile.TemporaryDirectory(prefix="finsta-bench-urls-") as work:
            manifest, root = write_inputs(Path(work), endpoint, args.videos, args.every)
            configs = {"manifest": DatasetConfig("manifest", data_root=manifest),
                       "manifest_heads": DatasetConfig("manifest", data_root=manifest),
                       "folder": DatasetConfig("activitynet", data_root=root)}
            order = list(configs)
            rounds = []
            for number in range(args.rounds):
                load = os.getloadavg()[0]
                figures, prints = {}, {}
                for name in order[number % 3:] + order[:number % 3]:   # each goes first once in 3 rounds
                    wall, cpu, prints[name] = timed(configs[name], heads=name == "manifest_heads")
                    assert len(prints[name]) == args.videos
                    figures[name] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
                assert prints["manifest"] == prints["manifest_heads"]   # the same fingerprints either way
                rounds.append({"round": number, "load": round(load, 1), **figures,
                               "ratio": round(figures["manifest"]["wall_s"] / figures["manifest_heads"]["wall_s"], 4),
                               "cpu_ratio": round(figures["manifest"]["cpu_s"] / figures["manifest_heads"]["cpu_s"], 4),
                               "vs_folder": round(figures["manifest"]["wall_s"] / figures["folder"]["wall_s"], 2),
                               "cpu_per_url_ms": round(1000 * figures["manifest"]["cpu_s"] / args.videos, 2),
                               "heads_cpu_per_url_ms": round(1000 * figures["manifest_heads"]["cpu_s"] / args.videos, 2)})
                print(json.dumps(rounds[-1]), flush=True)
            summary = {"videos": args.videos, "objects": args.videos * args.every}
            for name in ("ratio", "cpu_ratio", "vs_folder", "cpu_per_url_ms", "heads_cpu_per_url_ms", "load"):
                summary[f"{name}_range"] = [min(r[name] for r in rounds), max(r[name] for r in rounds)]
            print(json.dumps(summary))
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
