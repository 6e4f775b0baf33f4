"""Training throughput on CPU: graphs/s of the train step vs what the data loader delivers.

Prints one JSON object: ``train_graphs_per_s`` (videos — each a DSG plus its
caption TSGs, with the host's token and grid-cell features — per second through
forward + backward + AdamW of the recipe (the TrainConfig defaults, or
``--config``), batches already in memory), ``host_only_train_graphs_per_s`` (the
``--no-sg`` baseline: the host alone, same run), ``loader_graphs_per_s`` (the streaming ShardStream + DataLoader,
reading and collating from the shard store, no cache, measured in the same
run, per number of worker processes), ``loader_over_train`` (the best of them;
target ≥ 5) and ``loader_over_train_by_workers``, the same with the in-process
cache of encoded shards (``cache_mb``: epochs after the first), and the
reference: ``records_path_graphs_per_s``, the record-by-record path the stream
used before columnar decoding (``Dataset.iter_shard`` → ``encode_sample`` →
``collate``, in-process). Readers check each file's sha256 on first read
(schemas.store): ``shard_read_s`` times opening the dataset and reading every
shard once with and without that check, ``verify_cost_per_epoch_s`` their
difference (the loader pays it once per epoch per worker). ``--shard-size``
sets the random dataset's shard size (small shards: interrupted builds, slow
pipelines' time-based commits), ``--compact N`` then merges them as build-sgs
does at the end of a run.

    .venv/bin/python bench/bench_train.py [--shards DIR] [--workers 0 1 2] [--steps 20]

With ``--ray-workers 1 2`` it measures data-parallel training instead
(``finsta_model.distributed``, gloo on CPU): for each worker count, graphs/s of the
training loop (``train_graphs_per_s``: all workers' videos over rank 0's loop time,
from the first batch to the last checkpoint; Ray's start-up is reported apart, as
``wall_s``) against the in-process ``train()`` of the same config measured in the
same run (``in_process_graphs_per_s``), ``--repeats`` times, alternating:

    .venv/bin/python bench/bench_train.py --ray-workers 1 2 --steps 60 --repeats 3 [--device cuda]

Without ``--shards`` it uses out/host/sgs-train (or out/host/sgs-train-11) when present, else writes a
random dataset with the test fixture's generator (host features included: 3×3 cells a frame).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finsta_model.config import TrainConfig, load_config  # noqa: E402
from finsta_model.data import ShardStream, make_loader  # noqa: E402
from finsta_model.graphs import collate, encode_sample  # noqa: E402
from finsta_model.model import FinstaModel  # noqa: E402
from schemas.store import DatasetWriter, open_dataset  # noqa: E402


def random_dataset(folder: Path, videos: int = 192, shard_size: int = 32, compact: int = 0) -> Path:
    spec = importlib.util.spec_from_file_location("fixture", ROOT / "tests" / "finsta_model" / "finsta_samples.py")
    fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixture)
    fixture.DIMS.update({"frame": 1280, "detection": 32, "text_node": 384, "caption": 384, "caption_token": 384,
                         "frame_patch": 1280})
    fixture.CELLS = 9
    rng = random.Random(0)
    writer = DatasetWriter(folder, config={"bench": 1}, feature_dims=fixture.DIMS)
    samples = [fixture.make_sample(rng, f"b{i:05d}", n_frames=12, max_objects=4, n_captions=5)
               for i in range(videos)]
    for start in range(0, videos, shard_size):
        writer.write_shard(samples[start:start + shard_size], [])
    if compact:   # what build-sgs does at the end of a run
        writer.compact(compact)
    writer.close()
    return folder


def read_all_shards_s(shards: Path, verify: bool) -> float:
    """Seconds to open the dataset and read every shard's columns once (what a loader epoch reads)."""
    start = time.perf_counter()
    dataset = open_dataset(shards, verify=verify)
    for name in dataset.shard_names():
        dataset.shard_columns(name)
    return time.perf_counter() - start


def loader_rate(shards: Path, batch: int, workers: int, cache_bytes: int = 0) -> float:
    stream = ShardStream(shards, batch, seed=0, num_logical_workers=max(1, workers), cache_bytes=cache_bytes)
    start = time.perf_counter()
    n = sum(b.num_videos for b in make_loader(stream, workers))
    return n / (time.perf_counter() - start)


def records_path_rate(shards: Path, batch: int, label_buckets: int = 512) -> float:
    """The pre-columnar loader path, shard by shard: record objects, encode_sample, collate."""
    start = time.perf_counter()
    dataset = open_dataset(shards)
    n = 0
    for name in dataset.shard_names():
        encoded = [encode_sample(sample, features, label_buckets) for sample, features in dataset.iter_shard(name)]
        encoded = [e for e in encoded if e.real_captions()]
        for i in range(0, len(encoded), batch):
            items = encoded[i:i + batch]
            n += collate(items, [e.real_captions()[:1] for e in items], True, dataset.feature_dims).num_videos
    return n / (time.perf_counter() - start)


def ray_bench(shards: Path, args: argparse.Namespace) -> dict:
    """graphs/s of ``train --ray-workers N`` for each N vs the in-process loop, same config, same run."""
    from finsta_model import distributed
    from finsta_model.train import train

    config = bench_config(args).replace(steps=args.steps, log_every=max(1, min(5, args.steps // 10)),
                                        checkpoint_every=args.steps)
    runs: dict[str, list] = {"in_process": [], **{f"ray_{n}": [] for n in args.ray_workers}}
    walls: dict[str, list] = {f"ray_{n}": [] for n in args.ray_workers}
    losses: dict[str, list] = {k: [] for k in runs}    # mean logged total loss of each run
    cpu_ms: dict[str, list] = {k: [] for k in runs}    # CPU time of all replicas' processes per graph
    gather_share: dict[str, list] = {f"ray_{n}": [] for n in args.ray_workers}   # all-gather's share of the loop

    def mean_loss(run: Path) -> float:
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return sum(x["total"] for x in lines) / len(lines)

    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        with distributed._ray(None):
            ray_start = time.perf_counter() - start
            for repeat in range(args.repeats):
                here = train(shards, Path(scratch) / f"here-{repeat}", config, device=args.device, progress=False)
                runs["in_process"].append(here["graphs_per_s"])
                cpu_ms["in_process"].append(1000 * here["cpu_seconds"] / (here["graphs_per_s"] * here["seconds"]))
                losses["in_process"].append(mean_loss(Path(scratch) / f"here-{repeat}"))
                for n in args.ray_workers:
                    summary = distributed.train_distributed(shards, Path(scratch) / f"ray{n}-{repeat}", config, n,
                                                            device=args.device, progress=False)
                    runs[f"ray_{n}"].append(summary["graphs_per_s"])
                    walls[f"ray_{n}"].append(summary["wall_seconds"])
                    cpu_ms[f"ray_{n}"].append(1000 * summary["cpu_seconds"]
                                              / (summary["graphs_per_s"] * summary["seconds"]))
                    losses[f"ray_{n}"].append(mean_loss(Path(scratch) / f"ray{n}-{repeat}"))
                    gather_share[f"ray_{n}"].append(summary["gather_seconds"] / max(summary["seconds"], 1e-9))
    reference = max(runs["in_process"])
    return {
        "metric": "train graphs/s: Ray Train data-parallel ("
                  + ("nccl, one GPU" if args.device == "cuda" else "gloo, CPU")
                  + " per worker) vs in-process, same global batch (same run)",
        "device": args.device,
        "train_graphs_per_s": {k: [round(x, 1) for x in v] for k, v in runs.items()},
        "over_in_process_best": {k: round(max(v) / reference, 2) for k, v in runs.items() if k != "in_process"},
        "wall_s_per_ray_run": walls, "ray_start_s": round(ray_start, 1),
        # on a shared machine the wall-clock rates above depend on the share of CPU each run got; CPU time per
        # graph does not: N workers on N free cores would reach N × cpu_ms(in-process) / cpu_ms(ray_N) × the
        # in-process rate if nothing waits (an upper bound: all-reduce waits are not CPU time)
        "cpu_ms_per_graph": {k: [round(x, 2) for x in v] for k, v in cpu_ms.items()},
        "free_core_speedup_bound": {k: round(int(k.split("_")[1]) * min(cpu_ms["in_process"]) / min(v), 2)
                                    for k, v in cpu_ms.items() if k != "in_process"},
        # wall time of the forward all-gathers of the global batch and encodings over the loop's time (their
        # backward, an all-to-all of the encodings' gradients, is not in it)
        "gather_share_of_loop": {k: [round(x, 3) for x in v] for k, v in gather_share.items()},
        # same seed, same global batch: the logged loss averaged over the run, relative to in-process (the
        # replicas' data order differs from one process's, so runs see other batches)
        "mean_loss_vs_in_process": {k: round(v[0] / losses["in_process"][0] - 1, 3) for k, v in losses.items()
                                    if k != "in_process"},
        "batch": args.batch, "dim": config.dim, "steps": args.steps, "repeats": args.repeats,
        "videos": len(open_dataset(shards)), "shards": len(open_dataset(shards).shard_names()),
        "threads_per_worker": config.threads, "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 1),
    }


def bench_config(args: argparse.Namespace) -> TrainConfig:
    """The recipe (``--config`` or the defaults) at the benchmark's batch size (and ``--dim`` if given)."""
    return load_config(args.config).replace(batch_size=args.batch, dim=args.dim)


def step_rate(model: FinstaModel, batches: list, steps: int) -> float:
    """Graphs/s of forward + backward + AdamW over ``steps`` steps (after one warm-up step)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=model.config.lr)
    done = 0
    start = None
    for i in range(steps + 1):
        batch = batches[i % len(batches)]
        if i == 1:  # step 0 warms up allocators
            start, done = time.perf_counter(), 0
        loss, _ = model.losses(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        done += batch.num_videos
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=Path)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dim", type=int, help="override the config's dim")
    parser.add_argument("--config", type=Path, help="a TrainConfig file (default: the defaults, the recipe)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--ray-workers", type=int, nargs="+", help="measure train --ray-workers N instead")
    parser.add_argument("--repeats", type=int, default=2, help="with --ray-workers: runs of each, alternating")
    parser.add_argument("--device", default="cpu", help="with --ray-workers: cpu | cuda (one GPU per worker)")
    parser.add_argument("--shard-size", type=int, default=32, help="videos per shard of the random dataset")
    parser.add_argument("--compact", type=int, default=0, help="then compact it to shards of this many videos")
    args = parser.parse_args()
    tmp = None
    shards = args.shards or next((p for p in (ROOT / "out" / "host" / "sgs-train", ROOT / "out" / "host" / "sgs-train-11")
                                  if (p / "manifest.json").is_file()), Path("/nonexistent"))
    if not (shards / "manifest.json").is_file():
        tmp = tempfile.TemporaryDirectory()
        shards = random_dataset(Path(tmp.name) / "ds", shard_size=args.shard_size, compact=args.compact)
    if args.ray_workers:
        print(json.dumps(ray_bench(shards, args)))
        if tmp is not None:
            tmp.cleanup()
        return
    config = bench_config(args)
    torch.set_num_threads(config.threads)
    torch.manual_seed(0)

    stream = ShardStream(shards, args.batch, seed=0)
    batches = [b for _, b in zip(range(args.steps + 1), make_loader(stream))]
    train_rate = step_rate(FinstaModel(config, stream.dims), batches, args.steps)
    host_rate = step_rate(FinstaModel(config.replace(use_sg=False), stream.dims), batches, args.steps)

    loader = {f"workers_{w}": round(loader_rate(shards, args.batch, w), 1) for w in args.workers}
    loader_rate(shards, args.batch, 0, 1 << 30)      # fills the in-process cache of encoded shards
    cached = loader_rate(shards, args.batch, 0, 1 << 30)
    records = records_path_rate(shards, args.batch)
    best = max(loader.values())
    read_s = {flag: min(read_all_shards_s(shards, flag) for _ in range(3)) for flag in (True, False)}
    print(json.dumps({
        "metric": "train graphs/s on CPU vs loader graphs/s (same run)",
        "train_graphs_per_s": round(train_rate, 1),
        "host_only_train_graphs_per_s": round(host_rate, 1),
        "loader_graphs_per_s": loader,
        "loader_over_train": round(best / train_rate, 2),
        "loader_over_train_by_workers": {k: round(v / train_rate, 2) for k, v in loader.items()},
        "target_loader_over_train": 5.0,
        "loader_cached_graphs_per_s": round(cached, 1),
        "cached_loader_over_train": round(cached / train_rate, 2),
        "records_path_graphs_per_s": round(records, 1),
        "records_path_over_train": round(records / train_rate, 2),
        "shard_read_s": {"verify": round(read_s[True], 4), "no_verify": round(read_s[False], 4)},
        "verify_cost_per_epoch_s": round(read_s[True] - read_s[False], 4),
        "shards": len(open_dataset(shards).shard_names()),
        "dataset": str(shards) if tmp is None else "random (test fixture generator)",
        "videos": len(open_dataset(shards)), "batch": args.batch, "dim": config.dim, "steps": args.steps,
        "cells_per_frame": int(batches[0].patch_feat.shape[2]), "caption_tokens_max": int(batches[0].tok_feat.shape[1]),
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 1),
    }))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
