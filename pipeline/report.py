"""What build-sgs tells the user: ``OUT/stats.json``, the final summary, the dry-run plan."""
from __future__ import annotations

import json
import os
from collections import Counter

from rich.table import Table

from pipeline.build import BuildResult
from pipeline.plan import plan_pools
from schemas.records import FailureRecord
from schemas.storage import is_url, location
from schemas.store import open_dataset


def failures_by_reason(failures: list[FailureRecord]) -> dict[str, int]:
    """``{reason: count}`` of a dataset's failure rows: what stats.json, the final line and
    ``inspect`` all show (one source: ``open_dataset(out).failures()``)."""
    return dict(sorted(Counter(f.error_type for f in failures).items()))


def failure_lines(failures: list[FailureRecord], out) -> list[str]:
    """``inspect OUT --failures``: a count line, a header, one aligned row per failure (message last)."""
    if not failures:
        return [f"no failures in {out}"]
    reasons = ", ".join(f"{reason} {n}" for reason, n in failures_by_reason(failures).items())
    rows = [("key", "stage", "reason", "message")] + [(f.key, f.stage, f.error_type, f.message) for f in failures]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{len(failures)} failure{'' if len(failures) == 1 else 's'} in {out} ({reasons})"]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    return lines


def stats_dict(result: BuildResult) -> dict:
    """The dataset-wide counts plus this run's per-stage time, frames and bytes."""
    failures = open_dataset(result.out).failures()
    total_time = sum(result.stage_seconds.values()) or 1.0
    return {
        "committed": result.committed,
        "failed": len(failures),
        "failures_by_reason": failures_by_reason(failures),
        "failures_by_stage": dict(sorted(Counter(f.stage for f in failures).items())),
        "dataset": result.dataset_stats,
        "counts": dict(sorted(result.sample_counts.items())),   # what stages counted per sample (clipping, caps)
        "store": result.store_notes,                           # quarantined shards, rebuilt manifest, stale lock
        "cluster": result.cluster,                             # Ray: nodes lost/joined, each pool's busy share
        "run": {
            "samples_total": result.total,
            "samples_run": result.to_run,
            "skipped_committed": result.skipped_committed,
            "skipped_failed": result.skipped_failed,
            "changed": result.changed,
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
    if is_url(path):   # s3://: one PUT replaces the object whole
        path.write_bytes(json.dumps(stats, indent=1).encode())
        return stats
    tmp = path.with_name(f".stats.json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(stats, indent=1))
    os.replace(tmp, path)
    return stats


def summary_table(stats: dict) -> Table:
    """This run's time, share and frames per stage (``stats["stages"]``); the figures below it
    are :func:`summary_lines`, so every number on screen is one of stats.json."""
    table = Table(title="build-sgs: time per stage (this run)", title_justify="left")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    table.add_column("frames", justify="right")
    for name, row in stats["stages"].items():
        table.add_row(name, f"{row['seconds']:.1f}", f"{row['share']:.0%}", str(row["frames"]))
    return table


def _reasons(by_reason: dict) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in by_reason.items())


def summary_lines(stats: dict, out) -> list[str]:
    """The final lines, every figure read from ``stats`` (what stats.json holds), e.g.::

        this run: 5 samples, 1 failed (internal_error 1), 27.3 s (14.6 s to the first result)
        wrote out/sample: 4 committed, 1 failed (internal_error 1); counts in out/sample/stats.json
        list the failures: python cli.py inspect out/sample --failures
    """
    run = stats["run"]
    handled = run["samples_total"] - run["skipped_committed"] - run["skipped_failed"]
    skipped = [f"{run['skipped_committed']} committed before"] if run["skipped_committed"] else []
    skipped += [f"{run['skipped_failed']} recorded failures"] if run["skipped_failed"] else []
    if handled:
        run_failed = sum(run["failures_by_reason"].values())
        reasons = f" ({_reasons(run['failures_by_reason'])})" if run_failed else ""
        startup = "" if run["first_result_seconds"] is None else \
            f" ({run['first_result_seconds']:.1f} s to the first result)"
        changed = f" ({run['changed']} changed since their last run)" if run.get("changed") else ""
        first = f"this run: {handled} samples{changed}, {run_failed} failed{reasons}, {run['wall_seconds']:.1f} s{startup}"
        first += f"; skipped {' and '.join(skipped)}" if skipped else ""
    else:
        first = "this run: nothing to do" + (f" (skipped {' and '.join(skipped)})" if skipped else "")
    reasons = f" ({_reasons(stats['failures_by_reason'])})" if stats["failed"] else ""
    lines = [first, f"wrote {out}: {stats['committed']} committed, {stats['failed']} failed{reasons}; "
                    f"counts in {location(out) / 'stats.json'}"]
    if stats["failed"]:
        lines.append(f"list the failures: python cli.py inspect {out} --failures")
    return lines


def stage_time_line(stats: dict) -> str:
    """``time per stage: detect 10.7 s (81%) · decode 1.0 s (7%) · …`` (the table as one log line)."""
    rows = sorted(stats["stages"].items(), key=lambda item: -item[1]["seconds"])
    return "time per stage: " + " · ".join(f"{name} {row['seconds']:.1f} s ({row['share']:.0%})" for name, row in rows)


def plan_text(cfg, result: BuildResult) -> str:
    lines = [f"dataset {cfg.dataset.name}: {result.total} samples; {result.skipped_committed} already committed, "
             f"{result.skipped_failed} recorded failures skipped, {result.to_run} to run, {result.missing} missing"
             + (f", {result.changed} changed since (redone)" if result.changed else "")
             + (f", {result.failed_early - result.missing} other failure rows (bad entries, keys)"
                if result.failed_early > result.missing else "")
             + (" (retrying recorded failures only)" if cfg.run.retry_failed else ""),
             f"output {result.out} in shards of {cfg.write.shard_size}; executor {cfg.run.executor}"
             + (f" at {cfg.run.ray_address}" if cfg.run.ray_address else "")
             + f"; detector {cfg.detect.name} (threshold {cfg.detect.score_threshold:g})"]
    for pool in plan_pools(cfg):
        workers = pool.workers or ("one per GPU" if pool.on_gpu else "balanced on the free CPUs")
        frames = ", frames → next pool" if pool.images_leave else ""
        lines.append(f"  pool {pool.name}: {' → '.join(pool.stage_names)}  [cpus={pool.resources.cpus:g}, "
                     f"gpus={pool.resources.gpus:g}, workers={workers}, batch={pool.batch_size}{frames}]")
    quirks = {k: v for k, v in result.dataset_stats.items() if v}
    if quirks:
        lines.append("dataset counts: " + ", ".join(f"{k}={v}" for k, v in sorted(quirks.items())))
    lines.append("dry run: nothing written")
    return "\n".join(lines)
