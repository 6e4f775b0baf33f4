"""What URL-video fingerprints cost the listing: ``Dataset.tasks()`` over a manifest of N ``s3://`` videos
(one metadata request per video, ``URL_THREADS`` at a time, as build-sgs and its dry run list) against the
same listing over an ActivityNet-style layout of the same N objects on S3 (the videos folder listed once:
sizes and ETags come with the listing, no request per video).

Objects live on a local S3 server (moto's standalone server on 127.0.0.1, the test server; its own CPU is
not counted, and on a loaded machine it is what bounds the wall time). Per round, both listings run,
alternating which goes first; reported: wall time and this process's CPU time of each, their ratio
(``ratio = folder listing wall / manifest wall``) and the load average. The load-independent figure is
``cpu_per_url_ms`` (this process's CPU per URL video for the manifest's requests: boto3's per-request cost).

Usage::

    python bench/bench_url_listing.py [--videos 1000] [--rounds 3]
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


def write_inputs(work: Path, endpoint: str, videos: int) -> tuple[str, str]:
    """N tiny objects under s3://bench-urls/anet/videos/, a manifest naming each by URL, and the same
    captions as an ActivityNet captions file next to them; returns (manifest, ActivityNet root)."""
    import boto3
    from concurrent.futures import ThreadPoolExecutor

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="bench-urls")
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: client.put_object(Bucket="bench-urls", Key=f"anet/videos/v_{i:07d}.mp4", Body=b"x"),
                      range(videos)))
    entries = {f"v_{i:07d}": {"duration": 4.0, "timestamps": [[0.0, 4.0]], "sentences": ["a man walks"]}
               for i in range(videos)}
    client.put_object(Bucket="bench-urls", Key="anet/captions/train.json", Body=json.dumps(entries).encode())
    manifest = work / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": key, "video": f"s3://bench-urls/anet/videos/{key}.mp4",
                                            "captions": ["a man walks"]}) + "\n" for key in entries))
    return str(manifest), "s3://bench-urls/anet"


def timed(cfg) -> tuple[float, float, int]:
    from pipeline.datasets import build_dataset
    wall, cpu = time.perf_counter(), time.process_time()
    tasks = list(build_dataset(cfg).tasks())
    assert all(t.fingerprint and t.failure is None for t in tasks)
    return time.perf_counter() - wall, time.process_time() - cpu, len(tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    proc, endpoint = start_s3()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_ENDPOINT_URL=endpoint)
    try:
        from pipeline.datasets import DatasetConfig
        with tempfile.TemporaryDirectory(prefix="finsta-bench-urls-") as work:
            manifest, root = write_inputs(Path(work), endpoint, args.videos)
            configs = {"manifest": DatasetConfig("manifest", data_root=manifest),
                       "folder": DatasetConfig("activitynet", data_root=root)}
            rounds = []
            for number in range(args.rounds):
                load = os.getloadavg()[0]
                figures = {}
                for name in (("manifest", "folder") if number % 2 == 0 else ("folder", "manifest")):
                    wall, cpu, count = timed(configs[name])
                    assert count == args.videos
                    figures[name] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
                rounds.append({"round": number, "load": round(load, 1), **figures,
                               "ratio": round(figures["folder"]["wall_s"] / figures["manifest"]["wall_s"], 4),
                               "cpu_per_url_ms": round(1000 * figures["manifest"]["cpu_s"] / args.videos, 2)})
                print(json.dumps(rounds[-1]), flush=True)
            ratios = [r["ratio"] for r in rounds]
            per_url = [r["cpu_per_url_ms"] for r in rounds]
            print(json.dumps({"videos": args.videos, "ratio_range": [min(ratios), max(ratios)],
                              "cpu_per_url_ms_range": [min(per_url), max(per_url)]}))
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
