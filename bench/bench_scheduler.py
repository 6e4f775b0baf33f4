"""The Ray executor's own cost: driver CPU time per sample with trivial stages, from 1k to 10k samples.

Issue 25's target: at 10k tiny samples the scheduler in the driver (pipeline/executors/ray.py) costs at most
2 ms of CPU per sample, and that cost is flat from 1k to 10k. The stages here do nothing (a named bench
double, :class:`PassStage`, returns its batch), so what is measured is the driver: feeding, dispatching,
``ray.wait`` over every actor's head call, moving a batch's tasks between pools, deadlines, the node table.

Per run and size N (a fresh local Ray with ``--num-cpus``, ``--pools`` pools of ``--workers`` actors, batch 1):

* ``scheduler``: the executor as a build runs it. Its samples take microseconds, so after the first calls
  each actor call carries up to ``MAX_BUNDLE`` batches (``RayExecutor._bundle``: a call should last
  ``CALL_S``; each batch still runs alone in the actor). ``cpu_ms_per_sample``: the driver's CPU time
  (``time.process_time``: this process, Ray's client threads included) from the first finished sample to
  the last, over the samples in between; start-up (Ray, actors) is left out, it does not grow with N;
* ``one_batch_per_call``: the same with ``MAX_BUNDLE = 1``, one actor call per sample per pool, what a pool
  of slow samples costs per call (and what this bench measured before calls carried several batches);
* the reference measured in the same run: the same N one-sample calls on the same number of bare Ray actors
  (``ray.get`` of a round of calls to actors that return their argument), the least any driver that sends
  each sample to an actor pays; ``ratio`` = scheduler / reference, ``ratio_one_batch_per_call`` likewise;
* ``wall_s`` and ``samples_per_s`` (the machine is shared: read them with ``load``).

Each size runs ``--runs`` times; the JSON holds every run, min–max ranges, ``flat`` = (CPU per sample at
the largest N) / (at the smallest), for both ways, and the load average when each run was measured.

    nice -n 10 .venv/bin/python bench/bench_scheduler.py [--sizes 1000 10000] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import BuildConfig, apply_overrides  # noqa: E402
from pipeline.plan import Pool  # noqa: E402
from schemas.stop import StopSignals  # noqa: E402
from stages.base import Resources, VideoTask  # noqa: E402


class PassStage:
    """Bench double for a stage: set up in no time, returns its batch unchanged."""

    name = "pass"

    def setup(self) -> None:
        pass

    def process_batch(self, tasks: list[VideoTask]) -> list[VideoTask]:
        return tasks


class PassPool(Pool):
    """A pool of :class:`PassStage` (the catalog's stages would decode videos)."""

    def build(self) -> list[PassStage]:
        return [PassStage() for _ in self.stage_names]


def pools(count: int, workers: int) -> list[Pool]:
    return [PassPool(name=f"pass{i}", stage_names=["pass"], sections=[None], resources=Resources(cpus=1.0),
                     batch_size=1, workers=workers, drop_images_after=None, images_leave=False,
                     time_budgets=[600.0]) for i in range(count)]


def tasks(n: int) -> list[VideoTask]:
    return [VideoTask(key=f"s{i:06d}", source="bench", video_id=f"s{i:06d}", video_path=__file__)
            for i in range(n)]


def scheduler_run(n: int, args, max_bundle: int = 0) -> dict:
    """N samples through the executor; the driver's CPU between the first and the last finished sample.
    ``max_bundle``: batches one actor call may carry (0: the executor's own ``MAX_BUNDLE``)."""
    from pipeline.executors import ray as executor_module

    cfg = apply_overrides(BuildConfig(), [f"run.num_cpus={args.num_cpus}"])
    default = executor_module.MAX_BUNDLE
    with StopSignals() as stop:
        executor_module.MAX_BUNDLE = max_bundle or default
        executor = executor_module.RayExecutor(pools(args.pools, args.workers), cfg, stop)
        done, first = 0, None
        try:
            for task in executor.run(tasks(n)):
                if task is None:
                    continue
                assert task.failure is None, task.failure
                done += 1
                if first is None:
                    first = (time.process_time(), time.perf_counter())
            cpu, wall = time.process_time() - first[0], time.perf_counter() - first[1]
        finally:
            executor.close()
            executor_module.MAX_BUNDLE = default
    assert done == n, (done, n)
    return {"cpu_ms_per_sample": round(1000 * cpu / (n - 1), 4), "wall_s": round(wall, 2),
            "samples_per_s": round((n - 1) / wall, 1)}


def reference_run(n: int, args) -> dict:
    """The same N one-sample calls on bare Ray actors, a round of one call per actor at a time."""
    import ray

    from schemas.ray_runtime import start_ray

    session = start_ray(None, timeout_s=120, num_cpus=args.num_cpus)
    try:
        @ray.remote(num_cpus=1.0 / (args.pools * args.workers))
        class Echo:
            def call(self, item):
                return item

        actors = [Echo.remote() for _ in range(args.pools * args.workers)]
        ray.get([actor.call.remote(None) for actor in actors])
        items = tasks(n)
        cpu, wall = time.process_time(), time.perf_counter()
        for start in range(0, n, len(actors)):
            ray.get([actor.call.remote(item) for actor, item in zip(actors, items[start:start + len(actors)])])
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        session.close()
    return {"cpu_ms_per_sample": round(1000 * cpu / n, 4), "wall_s": round(wall, 2)}


def span(values: list[float]) -> list[float]:
    return [min(values), max(values)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pools", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    runs = []
    for run in range(args.runs):
        for n in args.sizes:
            load = os.getloadavg()[0]
            ours, single, ref = scheduler_run(n, args), scheduler_run(n, args, max_bundle=1), reference_run(n, args)
            runs.append({"run": run, "samples": n, "load": round(load, 2), "scheduler": ours,
                         "one_batch_per_call": single, "reference": ref,
                         "ratio": round(ours["cpu_ms_per_sample"] / ref["cpu_ms_per_sample"], 2),
                         "ratio_one_batch_per_call": round(single["cpu_ms_per_sample"] / ref["cpu_ms_per_sample"], 2)})
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    sizes = {}
    for n in args.sizes:
        mine = [r for r in runs if r["samples"] == n]
        sizes[str(n)] = {"cpu_ms_per_sample": span([r["scheduler"]["cpu_ms_per_sample"] for r in mine]),
                         "one_batch_per_call_cpu_ms_per_sample": span(
                             [r["one_batch_per_call"]["cpu_ms_per_sample"] for r in mine]),
                         "reference_cpu_ms_per_sample": span([r["reference"]["cpu_ms_per_sample"] for r in mine]),
                         "ratio": span([r["ratio"] for r in mine]),
                         "ratio_one_batch_per_call": span([r["ratio_one_batch_per_call"] for r in mine]),
                         "samples_per_s": span([r["scheduler"]["samples_per_s"] for r in mine]),
                         "load": span([r["load"] for r in mine])}
    small, large = str(min(args.sizes)), str(max(args.sizes))
    flat = {key: [round(sizes[large][key][i] / sizes[small][key][i], 2) for i in (0, 1)]
            for key in ("cpu_ms_per_sample", "one_batch_per_call_cpu_ms_per_sample")}
    print(json.dumps({"bench": "scheduler", "pools": args.pools, "workers": args.workers, "batch": 1,
                      "num_cpus": args.num_cpus, "target_cpu_ms_per_sample": 2.0, "sizes": sizes,
                      "flat_large_over_small": flat, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
