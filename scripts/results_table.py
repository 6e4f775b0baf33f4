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


def reports(work: Path, variant: str, split: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(work.glob(f"runs/{variant}-seed*/eval-{split}.json"))
            if p.stat().st_size]


def table(work: Path, split: str) -> str:
    lines = [f"| variant ({split}) | seeds | " + " | ".join(name for name, _ in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for variant in VARIANTS:
        found = reports(work, variant, split)
        cells = [fmt([dig(r, path) for r in found]) for _, path in COLUMNS]
        lines.append(f"| {variant} | {len(found)} | " + " | ".join(cells) + " |")
    headline = COLUMNS[0][1]
    base = [dig(r, headline) for r in reports(work, "baseline", split)]
    if base:
        lines.append("")
        for variant in VARIANTS[1:]:
            values = [dig(r, headline) for r in reports(work, variant, split)]
            if values:
                lines.append(f"* {variant} − baseline, {COLUMNS[0][0]}: "
                             f"{statistics.mean(values) - statistics.mean(base):+.1f} points")
    return "\n".join(lines)


def by_type(work: Path, split: str) -> str:
    """Pair accuracy per perturbation type, mean over seeds."""
    types = sorted({t for v in VARIANTS for r in reports(work, v, split) for t in r["hard_negatives"]["by_type"]})
    lines = [f"| variant ({split}) | " + " | ".join(types) + " |", "|---|" + "---|" * len(types)]
    for variant in VARIANTS:
        found = reports(work, variant, split)
        cells = [f"{statistics.mean(r['hard_negatives']['by_type'][t] for r in found):.1f}"
                 if found and all(t in r["hard_negatives"]["by_type"] for r in found) else "–" for t in types]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "out/results")
    for split in ("test", "val"):
        print(table(work, split))
        print()
        print(by_type(work, split))
        print()


if __name__ == "__main__":
    main()
