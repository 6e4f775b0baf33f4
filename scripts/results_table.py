"""Markdown tables of the §6 experiment from the eval JSONs that scripts/reproduce_results.sh wrote.

    .venv/bin/python scripts/results_table.py out/results     # reads out/results/runs/<variant>-seed<S>/eval-<split>.json
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

VARIANTS = ("baseline", "full", "no-osc", "no-ptc", "no-stgd")
COLUMNS = (("hard-neg t2v R@1", ("hard_negatives", "t2v", "R@1")),
           ("hard-neg t2v R@5", ("hard_negatives", "t2v", "R@5")),
           ("pair acc.", ("hard_negatives", "pair_accuracy")),
           ("t2v R@1", ("t2v", "R@1")), ("t2v MdR", ("t2v", "MdR")),
           ("v2t R@1", ("v2t", "R@1")),
           ("no-SG student hard-neg t2v R@1", ("no_sg", "hard_negatives", "t2v", "R@1")))


def dig(report: dict, path: tuple[str, ...]) -> float:
    for key in path:
        report = report[key]
    return float(report)


def fmt(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def table(work: Path, split: str) -> str:
    lines = [f"| variant ({split}) | seeds | " + " | ".join(name for name, _ in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for variant in VARIANTS:
        reports = [json.loads(p.read_text()) for p in sorted(work.glob(f"runs/{variant}-seed*/eval-{split}.json"))
                   if p.stat().st_size]
        cells = [fmt([dig(r, path) for r in reports]) for _, path in COLUMNS]
        lines.append(f"| {variant} | {len(reports)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "out/results")
    for split in ("test", "val"):
        print(table(work, split))
        print()


if __name__ == "__main__":
    main()
