"""The build-sgs and inspect commands behind cli.py: options → config → run → report."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

from pipeline.config import (BuildConfig, apply_overrides, finalize, load_config, print_warnings, set_key,
                             show_config)
from schemas.errors import UserError
from schemas.storage import is_url, location
from schemas.store import open_dataset


# Command-line flags and the config key each one sets (a flag left out sets nothing).
FLAG_KEYS: dict[str, str] = {
    "dataset": "dataset.name", "data_root": "dataset.data_root", "split": "dataset.split",
    "captions": "dataset.captions", "videos": "dataset.videos", "mapping": "dataset.mapping",
    "limit": "dataset.limit", "detector": "detect.name", "ray_address": "run.ray_address",
    "executor": "run.executor", "workers": "run.workers", "num_cpus": "run.num_cpus",
    "retry_failed": "run.retry_failed", "overwrite": "run.overwrite", "dry_run": "run.dry_run",
    "strict": "run.strict", "quiet": "run.quiet", "check_data": "run.check_data",
}


def make_config(options: dict[str, Any]) -> tuple[Any, Path, list[str]]:
    """CLI options → (config, out folder, warnings): defaults, then ``--config``, then ``--set``,
    then the flags the user actually passed (None / False = not passed); validated once at the end."""
    warnings: list[str] = []
    cfg = load_config(options["config"], warnings=warnings) if options.get("config") else BuildConfig()
    cfg = apply_overrides(cfg, list(options.get("overrides") or []), warnings)
    for flag, key in FLAG_KEYS.items():
        value = options.get(flag)
        if value is not None and value is not False:
            set_key(cfg, key, str(value) if isinstance(value, Path) else value)
    cfg, more = finalize(cfg)
    if options.get("out") and is_url(str(options["out"])) and not str(options["out"]).startswith(("s3://", "gs://")):
        raise UserError(f"--out {options['out']}: finsta writes datasets to a local folder, s3://bucket/prefix or "
                        "gs://bucket/prefix; build into one of those, then copy it")
    out = location(options["out"]) if options.get("out") else Path("out") / cfg.dataset.name
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    return cfg, out, warnings + more


def build_command(options: dict[str, Any]) -> int:
    from rich.console import Console

    from pipeline.build import run_build
    from pipeline.progress import Progress
    from pipeline.report import plan_text, stage_time_line, summary_lines, summary_table, write_stats

    cfg, out, warnings = make_config(options)
    print_warnings(warnings)
    if options.get("show_config"):
        print(show_config(cfg))
        return 0
    from pipeline.stop import Interrupted
    progress = Progress(quiet=cfg.run.quiet, status_interval=cfg.run.status_interval)
    try:
        result = run_build(cfg, out, progress)
    except Interrupted as stopped:
        progress.finish(completed=False)
        print(stopped.line(), file=sys.stderr, flush=True)
        return stopped.exit_code
    except BaseException:
        progress.finish(completed=False)   # an error or interrupt must not leave the display (or a hidden cursor)
        raise
    if cfg.run.dry_run:
        print(plan_text(cfg, result))
        return 0
    stats = write_stats(result)
    if stats["stages"]:
        if progress.quiet:
            print(stage_time_line(stats))
        else:
            Console(stderr=False).print(summary_table(stats))
    print("\n".join(summary_lines(stats, out)))
    return 1 if result.all_failed or (cfg.run.strict and result.failures_by_reason) else 0


def inspect_command(out: Path, list_keys: bool, as_json: bool, failures: bool, key: Optional[str],
                    png: Optional[Path], full: bool = False) -> None:
    """``inspect OUT``: the dataset's counts; ``--list`` its keys; ``--failures`` its failure rows;
    ``--key K`` one sample's graphs (a summary, ``--all`` everything), ``--png`` drawn too."""
    from pipeline.report import failure_lines, failures_by_reason

    dataset = open_dataset(out)
    if png is not None and key is None:
        raise UserError("--png needs --key KEY (see `inspect OUT --list` for keys)")
    if list_keys:
        keys = dataset.keys()
        print(json.dumps(keys) if as_json else "\n".join(keys) if keys else f"no committed samples in {out}")
        return
    if failures:
        rows = dataset.failures()
        print(json.dumps([f.__dict__ for f in rows], indent=1) if as_json else "\n".join(failure_lines(rows, out)))
        return
    if key is not None:
        from pipeline.tools.describe import describe
        if key not in dataset.keys():
            raise UserError(f"no committed sample {key!r} in {out}; list them with `inspect {out} --list`")
        sample, features = dataset.get(key)
        print(describe(sample, full=full))
        if png is not None:
            from pipeline.tools.render import frames_note, render_png
            print(f"drew {render_png(sample, png)}: {frames_note(sample)}")
        return
    manifest = dataset.manifest
    rows = dataset.failures()
    summary = {"path": str(out), "schema_version": manifest["schema_version"], "shards": len(manifest["shards"]),
               "committed": len(dataset), "failed": len(rows), "failures_by_reason": failures_by_reason(rows),
               "feature_dims": manifest["feature_dims"], "config_hash": manifest["config_hash"]}
    print(json.dumps(summary, indent=1) if as_json else "\n".join(f"{k}: {v}" for k, v in summary.items()),
          file=sys.stdout)
