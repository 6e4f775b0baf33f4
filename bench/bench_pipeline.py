"""build-sgs throughput on the synthetic set, Ray overhead, 1→2 CPU speed-up, driver memory.

Prints one JSON object:

* ``videos_per_hour`` (Ray, 2 CPUs) and per-stage time shares;
* ``ray_overhead``: Ray wall time / plain sequential loop over the same stages,
  both pinned to 1 core (``taskset``), target ≤ 1.2. Ray's own processes (GCS,
  raylet, agents, Ray Data's executor and helper actors) share that core, so
  this is the CPU cost of orchestration;
* ``ray_overhead_2cpu``: the same two runs (1 worker) with both cores
  available: the wall-time cost a user of a small machine sees;
* ``speedup_1_to_2_cpus``: Ray on 1 pinned core / Ray on 2 cores, target ≥ 1.6;
* ``driver_rss_ratio``: peak driver RSS with the large vs the small set, target ≤ 1.2.

Start-up (Ray, worker processes, model loads: tens of seconds on 2 cores) is a
fixed cost, so the ratios are also given "after start-up": wall time from the
first finished sample to the last.

Usage::

    python bench/bench_pipeline.py [--videos 200] [--rss-videos 50,500]
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def child(argv: list[str]) -> None:
    """Run cli.main in this process and report wall time and peak RSS as JSON on the last line."""
    import cli
    started = time.perf_counter()
    code = cli.main(argv)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = Path(argv[argv.index("--out") + 1])
    run = json.loads((out / "stats.json").read_text())["run"]
    print(json.dumps({"code": code, "wall_s": time.perf_counter() - started, "driver_peak_rss_mib": peak_kib / 1024,
                      "first_result_s": run["first_result_seconds"], "samples": run["samples_run"]}))


def steady_seconds(run: dict) -> float:
    """Wall time after the first sample came back: the per-video cost once workers and models are up."""
    return run["wall_s"] - run["first_result_s"]


def run(args: list[str], pin_one_core: bool = False) -> dict:
    command = [sys.executable, __file__, "--child", *args]
    if pin_one_core:
        command = ["taskset", "-c", "0", *command]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit(f"bench run failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def build_args(data: Path, out: Path, executor: str, workers: int, num_cpus: int) -> list[str]:
    return ["build-sgs", "--dataset", "synthetic", "--data-root", str(data), "--out", str(out), "--quiet",
            "--executor", executor, "--workers", str(workers), "--num-cpus", str(num_cpus), "--overwrite"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--rss-videos", default="50,500")
    parser.add_argument("--keep", action="store_true")
    options = parser.parse_args()
    from pipeline.synthetic.generate import generate

    work = Path(tempfile.mkdtemp(prefix="finsta-bench-"))
    try:
        data = generate(work / "data", options.videos, seed=11)
        seq = run(build_args(data, work / "seq", "sequential", 1, 1), pin_one_core=True)
        ray_one = run(build_args(data, work / "ray1", "ray", 1, 1), pin_one_core=True)
        ray_two = run(build_args(data, work / "ray2", "ray", 2, 2))
        seq_free = run(build_args(data, work / "seq-free", "sequential", 1, 2))
        ray_one_free = run(build_args(data, work / "ray1-free", "ray", 1, 2))
        stats = json.loads((work / "ray2" / "stats.json").read_text())
        small, large = (int(n) for n in options.rss_videos.split(","))
        rss = {}
        for count in (small, large):
            rss_data = generate(work / f"rss{count}", count, seed=12, duration=2.0, fps=4)
            rss[count] = run(build_args(rss_data, work / f"rss-out{count}", "ray", 2, 2))["driver_peak_rss_mib"]
        print(json.dumps({
            "videos": options.videos,
            "videos_per_hour": round(options.videos * 3600 / ray_two["wall_s"], 1),
            "stage_time_share": {name: row["share"] for name, row in stats["stages"].items()},
            "sequential_1core_s": round(seq["wall_s"], 2),
            "ray_1core_s": round(ray_one["wall_s"], 2),
            "ray_2cpu_s": round(ray_two["wall_s"], 2),
            "startup_s": {"sequential": round(seq["first_result_s"], 2), "ray_1core": round(ray_one["first_result_s"], 2),
                          "ray_2cpu": round(ray_two["first_result_s"], 2)},
            "ray_overhead": round(ray_one["wall_s"] / seq["wall_s"], 3),
            "ray_overhead_after_startup": round(steady_seconds(ray_one) / steady_seconds(seq), 3),
            "ray_overhead_target": 1.2,
            "ray_overhead_2cpu": round(ray_one_free["wall_s"] / seq_free["wall_s"], 3),
            "ray_overhead_2cpu_after_startup": round(steady_seconds(ray_one_free) / steady_seconds(seq_free), 3),
            "sequential_2cpu_s": round(seq_free["wall_s"], 2), "ray_1worker_2cpu_s": round(ray_one_free["wall_s"], 2),
            "speedup_1_to_2_cpus": round(ray_one["wall_s"] / ray_two["wall_s"], 3),
            "speedup_1_to_2_cpus_after_startup": round(steady_seconds(ray_one) / steady_seconds(ray_two), 3),
            "speedup_target": 1.6,
            "driver_peak_rss_mib": {str(k): round(v, 1) for k, v in rss.items()},
            "driver_rss_ratio": round(rss[large] / rss[small], 3),
            "driver_rss_target": 1.2,
        }))
    finally:
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
