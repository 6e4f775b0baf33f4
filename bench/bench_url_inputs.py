"""build-sgs throughput with the sample's videos read from an S3 server (and the dataset written there
too) vs the same videos as local files into a local folder.

The sample's videos (pipeline/sample_data's two real clips) and their captions are
written as two manifests: one of local paths, one on a local S3 server (moto's standalone server on
127.0.0.1, the test server) listing ``s3://`` URLs. Each round builds both, alternating which goes
first (a third build reads from S3 and writes ``--out s3://``), with the sequential executor (one process: no Ray start-up noise), and reports wall time,
CPU time of the build process, the wall time after the first result (models loaded) and the load
average, after one uncounted warm-up build (the first build on a machine converts and caches models). The figure is ``ratio = local wall / s3 wall`` (throughput from S3 relative to local,
target >= 0.9) per round, and its range over the rounds (``s3_out_ratio``: the same with the output
on S3 too); ``cpu_ratio`` (local CPU s / S3 CPU s of the
build process, the server's own CPU not counted) is the load-independent view of the same.

Usage::

    python bench/bench_url_inputs.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def start_s3() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"moto server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)


def write_manifests(work: Path, endpoint: str) -> tuple[Path, str, int]:
    """The sample as a local manifest and as an s3:// one on the server; returns both and the count."""
    import boto3

    from pipeline.datasets import DatasetConfig, build_dataset
    tasks = list(build_dataset(DatasetConfig("sample")).tasks())
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="bench")
    local_lines, s3_lines = [], []
    for task in tasks:
        captions = [{"text": c.text, "start": c.start, "end": c.end} for c in task.captions if c.negative_of is None]
        key = f"videos/{task.key}{Path(task.video_path).suffix}"
        client.put_object(Bucket="bench", Key=key, Body=Path(task.video_path).read_bytes())
        local_lines.append({"id": task.key, "video": str(Path(task.video_path).resolve()), "captions": captions})
        s3_lines.append({**local_lines[-1], "video": f"s3://bench/{key}"})
    local = work / "local.jsonl"
    local.write_text("".join(json.dumps(line) + "\n" for line in local_lines))
    client.put_object(Bucket="bench", Key="m.jsonl", Body="".join(json.dumps(line) + "\n" for line in s3_lines))
    return local, "s3://bench/m.jsonl", len(tasks)


def build(data_root: str, out, env: dict) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "cli.py", "build-sgs", "--dataset", "manifest", "--data-root", data_root,
                           "--out", str(out), "--executor", "sequential", "--quiet"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"build of {data_root} failed: {done.stderr[-2000:]}")
    from schemas.storage import location
    run = json.loads(location(f"{out}/stats.json").read_text())["run"]
    return {"wall_s": round(wall, 2), "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
            "after_first_result_s": round(wall - run["first_result_seconds"], 2), "samples": run["samples_run"],
            "load_1min": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server, endpoint = start_s3()
    try:
        env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_DEFAULT_REGION": "us-east-1"}
        os.environ.update(env)
        with tempfile.TemporaryDirectory(prefix="finsta-bench-url-") as tmp:
            work = Path(tmp)
            local, s3, count = write_manifests(work, endpoint)
            build(str(local), work / "warm-up", env)   # not counted: the first build fills the model caches
            rounds = []
            for n in range(args.rounds):
                order = [("local", str(local), work / f"out-local-{n}"), ("s3", s3, work / f"out-s3-{n}"),
                         ("s3_out", s3, f"s3://bench/out-{n}")]
                result = {}
                for name, root, out in (order if n % 2 == 0 else order[::-1]):
                    result[name] = build(root, out, env)
                result["ratio"] = round(result["local"]["wall_s"] / result["s3"]["wall_s"], 3)
                result["s3_out_ratio"] = round(result["local"]["wall_s"] / result["s3_out"]["wall_s"], 3)
                result["cpu_ratio"] = round(result["local"]["cpu_s"] / result["s3"]["cpu_s"], 3)
                result["ratio_after_first_result"] = round(
                    result["local"]["after_first_result_s"] / result["s3"]["after_first_result_s"], 3)
                rounds.append(result)
                print(json.dumps({"round": n, **result}), file=sys.stderr)
    finally:
        server.kill()
        server.wait()
    ratios = [r["ratio"] for r in rounds]
    out_ratios = [r["s3_out_ratio"] for r in rounds]
    steady = [r["ratio_after_first_result"] for r in rounds]
    print(json.dumps({"videos": count, "executor": "sequential",
                      "throughput_ratio_s3_vs_local": {"min": min(ratios), "max": max(ratios), "each": ratios},
                      "throughput_ratio_s3_in_and_out_vs_local": {"min": min(out_ratios), "max": max(out_ratios),
                                                                  "each": out_ratios},
                      "ratio_after_first_result": {"min": min(steady), "max": max(steady), "each": steady},
                      "cpu_ratio_s3_vs_local": [r["cpu_ratio"] for r in rounds],
                      "target": 0.9, "rounds": rounds}, indent=1))


if __name__ == "__main__":
    main()
