"""Markdown tables of docs/results.md from the eval JSONs that scripts/reproduce_results.sh wrote.

    .venv/bin/python scripts/results_table.py out/host   # reads out/host/runs/<variant>-seed<S>/eval[-host]-<split>.json

The headline columns are the **exported host** (``eval-host-<split>.json``: the SG-free model evaluated from
host features only); "Finsta score" is the teacher inside the run (``eval-<split>.json``, top level: fused
embeddings + fine-grained SG score), shown for reference. For the baseline both are the same host.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

VARIANTS = ("baseline", "full", "no-osc", "no-ptc", "no-stgd")
HOST = (("host hard-neg t2v R@1", ("hard_negatives", "t2v", "R@1")),
        ("host hard-neg t2v R@5", ("hard_negatives", "t2v", "R@5")),
        ("host pair acc.", ("hard_negatives", "pair_accuracy")),
        ("host t2v R@1", ("t2v", "R@1")), ("host t2v MdR", ("t2v", "MdR")),
        ("host v2t R@1", ("v2t", "R@1")))
TEACHER = (("Finsta score hard-neg t2v R@1", ("hard_negatives", "t2v", "R@1")),)


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


def reports(work: Path, variant: str, split: str, kind: str = "host") -> list[dict]:
    name = f"eval-host-{split}.json" if kind == "host" else f"eval-{split}.json"
    return [json.loads(p.read_text()) for p in sorted(work.glob(f"runs/{variant}-seed*/{name}")) if p.stat().st_size]


def table(work: Path, split: str) -> str:
    columns = [name for name, _ in HOST + TEACHER]
    lines = [f"| variant ({split}) | seeds | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for variant in VARIANTS:
        hosts, runs = reports(work, variant, split), reports(work, variant, split, "run")
        if not hosts and not runs:
            continue
        cells = [fmt([dig(r, path) for r in hosts]) for _, path in HOST]
        cells += [fmt([dig(r, path) for r in runs]) for _, path in TEACHER]
        lines.append(f"| {variant} | {len(hosts)} | " + " | ".join(cells) + " |")
    headline = HOST[0][1]
    base = [dig(r, headline) for r in reports(work, "baseline", split)]
    if base:
        lines.append("")
        for variant in VARIANTS[1:]:
            values = [dig(r, headline) for r in reports(work, variant, split)]
            if values:
                lines.append(f"* {variant} − baseline, {HOST[0][0]}: "
                             f"{statistics.mean(values) - statistics.mean(base):+.1f} points "
                             f"(seeds: {', '.join(f'{v:.1f}' for v in values)} vs {', '.join(f'{v:.1f}' for v in base)})")
    return "\n".join(lines)


def by_type(work: Path, split: str) -> str:
    """The exported host's pair accuracy per perturbation type, mean over seeds."""
    types = sorted({t for v in VARIANTS for r in reports(work, v, split) for t in r["hard_negatives"]["by_type"]})
    lines = [f"| host, variant ({split}) | " + " | ".join(types) + " |", "|---|" + "---|" * len(types)]
    for variant in VARIANTS:
        found = reports(work, variant, split)
        if not found:
            continue
        cells = [f"{statistics.mean(r['hard_negatives']['by_type'][t] for r in found):.1f}"
                 if all(t in r["hard_negatives"]["by_type"] for r in found) else "–" for t in types]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "out/host")
    for split in ("test", "val"):
        print(table(work, split))
        print()
        print(by_type(work, split))
        print()


if __name__ == "__main__":
    main()
