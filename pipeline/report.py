"""What build-sgs tells the user: ``OUT/stats.json``, the final summary, the dry-run plan."""
from __future__ import annotations

import json
import os
from collections import Counter

from rich.table import Table

from pipeline.build import BuildResult
from pipeline.plan import plan_pools
from schemas.store import open_dataset


def stats_dict(result: BuildResult) -> dict:
    """The dataset-wide counts plus this run's per-stage time, frames and bytes."""
    failures = open_dataset(result.out).failures()
    by_reason = Counter(f.error_type for f in failures)
    total_time = sum(result.stage_seconds.values()) or 1.0
    return {
        "committed": result.committed,
        "failed": len(failures),
        "failures_by_reason": dict(sorted(by_reason.items())),
        "failures_by_stage": dict(sorted(Counter(f.stage for f in failures).items())),
        "dataset": result.dataset_stats,
        "counts": dict(sorted(result.sample_counts.items())),   # what stages counted per sample (clipping, caps)
        "store": result.store_notes,                           # quarantined shards, rebuilt manifest, stale lock
        "run": {
            "samples_total": result.total,
            "samples_run": result.to_run,
            "skipped_committed": result.skipped_committed,
            "skipped_failed": result.skipped_failed,
            "failures_by_reason": dict(sorted(result.failures_by_reason.items())),
            "shards_written": result.shards_written,
            "wall_seconds": round(result.wall_seconds, 3),
            "first_result_seconds": None if result.first_result_seconds is None else round(
                result.first_result_seconds, 3),
            "videos_per_hour": round(result.to_run * 3600 / result.wall_seconds, 1) if result.wall_seconds else None,
        },
        "stages": {name: {"seconds": round(seconds, 3), "share": round(seconds / total_time, 4),
                          "frames": result.stage_frames.get(name, 0), "bytes": result.stage_bytes.get(name, 0)}
                   for name, seconds in result.stage_seconds.items()},
    }


def write_stats(result: BuildResult) -> dict:
    stats = stats_dict(result)
    path = result.out / "stats.json"
    tmp = path.with_name(f".stats.json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(stats, indent=1))
    os.replace(tmp, path)
    return stats


def summary_table(stats: dict) -> Table:
    table = Table(title="build-sgs summary")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    table.add_column("frames", justify="right")
    for name, row in stats["stages"].items():
        table.add_row(name, f"{row['seconds']:.1f}", f"{row['share']:.0%}", str(row["frames"]))
    run = stats["run"]
    table.caption = (f"committed {stats['committed']} · failed {stats['failed']} · this run: {run['samples_run']} "
                     f"processed, {run['skipped_committed']} already committed, {run['skipped_failed']} "
                     f"recorded failures skipped · {run['wall_seconds']:.1f}s")
    if stats["failures_by_reason"]:
        table.caption += " · failures: " + ", ".join(f"{k}={v}" for k, v in stats["failures_by_reason"].items())
    return table


def plan_text(cfg, result: BuildResult) -> str:
    lines = [f"dataset {cfg.dataset.name}: {result.total} samples; {result.skipped_committed} already committed, "
             f"{result.skipped_failed} recorded failures skipped, {result.to_run} to run"
             + (" (retrying recorded failures only)" if cfg.run.retry_failed else ""),
             f"output {result.out} in shards of {cfg.write.shard_size}; executor {cfg.run.executor}"
             + (f" at {cfg.run.ray_address}" if cfg.run.ray_address else "")
             + f"; detector {cfg.detect.name} (threshold {cfg.detect.score_threshold:g})"]
    for pool in plan_pools(cfg):
        workers = pool.workers or "one per GPU"
        frames = ", frames → next pool" if pool.images_leave else ""
        lines.append(f"  pool {pool.name}: {' → '.join(pool.stage_names)}  [cpus={pool.resources.cpus:g}, "
                     f"gpus={pool.resources.gpus:g}, workers={workers}, batch={pool.batch_size}{frames}]")
    quirks = {k: v for k, v in result.dataset_stats.items() if v}
    if quirks:
        lines.append("dataset counts: " + ", ".join(f"{k}={v}" for k, v in sorted(quirks.items())))
    lines.append("dry run: nothing written")
    return "\n".join(lines)
