"""Build ``stages/data/predicate_prior.json`` from FACTUAL-MR and score it on the FACTUAL dev sets.

    .venv/bin/python scripts/build_predicate_prior.py                 # build + evaluate
    .venv/bin/python scripts/build_predicate_prior.py --evaluate-only # score the shipped table

Prints one JSON object: the table's size and, per dev set, coverage and
top-1/top-5 accuracy (see :func:`stages.predicate_prior.evaluate_prior`).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages.predicate_prior import (PRIOR_PATH, PredicatePrior, estimate_prior, evaluate_prior,  # noqa: E402
                                    parse_triplets)

SHARED = Path(os.environ.get("FINSTA_SHARED", ROOT / ".." / "shared"))
FACTUAL = SHARED / "data" / "factual"


def read_triplets(path: Path) -> list[tuple[str, str, str]]:
    with path.open(newline="") as handle:
        return [t for row in csv.DictReader(handle) for t in parse_triplets(row["scene_graph"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=FACTUAL / "factual_mr_train.csv")
    parser.add_argument("--dev", type=Path, nargs="*", default=[FACTUAL / "random_dev.csv", FACTUAL / "length_dev.csv"])
    parser.add_argument("--out", type=Path, default=PRIOR_PATH)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--min-pair-count", type=int, default=3)
    parser.add_argument("--evaluate-only", action="store_true")
    args = parser.parse_args()
    report: dict = {}
    if not args.evaluate_only:
        if not args.train.exists():
            sys.exit(f"training triplets not found: {args.train} (set FINSTA_SHARED)")
        table = estimate_prior(read_triplets(args.train), top_k=args.top_k, min_pair_count=args.min_pair_count)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(table, separators=(",", ":"), sort_keys=True) + "\n")
        report["table"] = {"path": str(args.out), "bytes": args.out.stat().st_size, "pairs": len(table["pairs"]),
                           "triplets": table["triplets"]}
    prior = PredicatePrior.load(args.out)
    for dev in args.dev:
        if dev.exists():
            report[dev.stem] = evaluate_prior(prior, read_triplets(dev))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
