"""Issue 31 pilot table: per variant, mean ± sample sd over seeds (and each seed) of the validation figures.

Usage: python scripts/pilots/table.py RUNS [SPLIT]   (the RUNS folder of scripts/pilots/run_rep_distill.sh;
SPLIT: the eval files' split, ``val`` (default) or ``test``: eval-host-SPLIT.json and eval-SPLIT.json)
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

COLUMNS = (  # (label, file, path into the eval report)
    ("exported host, hard-neg t2v R@1", "eval-host-SPLIT.json", ("hard_negatives", "t2v", "R@1")),
    ("exported host, t2v R@1", "eval-host-SPLIT.json", ("t2v", "R@1")),
    ("exported host, pair acc.", "eval-host-SPLIT.json", ("hard_negatives", "pair_accuracy")),
    # the exported video-side model (export --video-sg-free; equal to the run's own video_side figures)
    ("video-side SG-free, hard-neg t2v R@1", "eval-host-SPLIT.json", ("video_side", "hard_negatives", "t2v", "R@1")),
    ("video-side SG-free, t2v R@1", "eval-host-SPLIT.json", ("video_side", "t2v", "R@1")),
    ("video-side SG-free, pair acc.", "eval-host-SPLIT.json", ("video_side", "hard_negatives", "pair_accuracy")),
    ("teacher, hard-neg t2v R@1", "eval-SPLIT.json", ("hard_negatives", "t2v", "R@1")),
    ("teacher, t2v R@1", "eval-SPLIT.json", ("t2v", "R@1")),
)


def value(run: Path, name: str, path: tuple[str, ...]):
    """The figure at ``path`` of ``run/name`` (None where absent; a --no-sg run has no teacher)."""
    try:
        report = json.loads((run / name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):     # missing, or still being written
        return None
    if not report.get("uses_sg", True) and name.startswith("eval-") and not name.startswith("eval-host"):
        return None          # a --no-sg run has no teacher
    for key in path:
        if not isinstance(report, dict) or key not in report:
            return None
        report = report[key]
    return float(report)


def cell(values: list[float]) -> str:
    if not values:
        return ""
    each = ", ".join(f"{v:.1f}" for v in values)
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} ({each})"


def main(runs: Path, split: str = "val") -> None:
    variants = sorted({p.name.rsplit("-seed", 1)[0] for p in runs.glob("*-seed*") if p.is_dir()})
    print("| variant | seeds | " + " | ".join(label for label, _, _ in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for variant in variants:
        seeds = sorted(p for p in runs.glob(f"{variant}-seed*") if p.is_dir() and (p / f"eval-host-{split}.json").is_file())
        cells = []
        for _, name, path in COLUMNS:
            name = name.replace("SPLIT", split)
            found = [v for v in (value(run, name, path) for run in seeds) if v is not None]
            cells.append(cell(found))
        print(f"| {variant} | {len(seeds)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:3])
