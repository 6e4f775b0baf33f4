"""Build ``stages/captions/lexicon.json`` from FACTUAL-MR *training* annotations.

The rule-based caption parser reads three small word lists learned here, so
that conventions of FACTUAL's annotators come from data rather than guesses
(dev files are never read):

* ``verbs``: predicate verb lemmas with counts. spaCy's small model
  lemmatises some ``-ing`` forms of mis-tagged verbs wrongly ("riding" →
  "rid", "shining" → "shin"); the rules prefer the reading found here.
* ``modifiers``: for a word written right before a noun ("metal poles",
  "clock face", "tennis racket"), how the annotators wrote it: ``keep`` (part of
  the object's name), ``attr`` (``( poles , is , metal )``), ``have``
  (``( clock , have , face )``) or ``drop``; kept when seen at least
  ``--min-count`` times, as the majority class.
* ``of_heads``: "X of Y" is ``( Y , have , X )`` unless the annotators mostly
  wrote otherwise for X: ``"plate": "rev:on"`` → ``( food , on , plate )``.
* ``closed_compounds``: two-word names FACTUAL writes closed ("surf board" →
  "surfboard", "cell phone" → "cellphone").
* ``renames``: nouns FACTUAL writes as another object name ("guy" →
  "person"): a caption word absent from its graph while exactly one graph
  object is absent from the caption, in at least half (and ≥ 5) of its uses.
* ``prep_objects``: ``"in shirt" → "wear"``: where a preposition before an
  object noun is annotated as another predicate by the majority.
* ``plural_objects``: words ending in "s" that the annotators wrote as the head
  of an object at least ``--min-count`` times ("leaves", "lines", "waves"):
  such a word is a noun, never a mis-tagged verb ("the purple square
  vanishes": "vanishes" is not in the list, so it may be the verb).

Usage::

    python scripts/build_caption_lexicons.py ../shared/data/factual/factual_mr_train.csv
"""
from __future__ import annotations

import argparse
import csv
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

QUANTIFIER = re.compile(r"^\d*(gr|pr|pa|sl)$")
WORD = re.compile(r"[a-z][a-z'-]*|\d+")
PREPS = {"in", "with", "on", "at", "under", "near", "by", "behind", "above", "over", "inside"}
SPATIAL = {"of", "front", "top", "side", "middle", "between", "bottom", "edge", "back", "corner"} | PREPS
OUT = Path(__file__).resolve().parents[1] / "stages" / "captions" / "lexicon.json"


def clean_segments(graph: str) -> list[tuple[str, ...]]:
    """FACTUAL-MR graph → FACTUAL segments (quantifiers, ``p:``/``v:`` and ``:1`` removed)."""
    spaced = re.sub(r"\s+", " ", graph.replace("(", " ( ").replace(")", " ) ").replace(",", " , ")).strip()
    out = []
    for raw in spaced.split(") , ("):
        parts = [p.strip() for p in raw.strip().strip("()").split(",")]
        parts = [re.sub(r":\d+$", "", re.sub(r"^(p|v|pv):", "", p)).strip().lower() for p in parts]
        parts = [p for p in parts if p and not QUANTIFIER.match(p)]
        if not (len(parts) == 3 and parts[1] == "is"):
            parts = [p for p in parts if not p.isdigit()]  # MR counts: "( 2 , ears , is , black )"
        if len(parts) > 3:
            parts = [parts[0], " ".join(parts[1:-1]), parts[-1]]
        if parts:
            out.append(tuple(parts))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train", type=Path, help="factual_mr_train.csv")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--min-count", type=int, default=3)
    args = ap.parse_args()

    verbs: Counter = Counter()
    modifiers: dict[str, Counter] = defaultdict(Counter)
    preps: dict[tuple[str, str], Counter] = defaultdict(Counter)
    of_heads: dict[str, Counter] = defaultdict(Counter)
    closed: Counter = Counter()
    word_seen: Counter = Counter()
    renamed: dict[str, Counter] = defaultdict(Counter)
    object_heads: Counter = Counter()
    with args.train.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            words = WORD.findall(row["caption"].lower())
            segs = clean_segments(row["scene_graph"])
            objects = {s[0] for s in segs} | {s[2] for s in segs if len(s) == 3 and s[1] != "is"}
            object_heads.update(o.split()[-1] for o in objects if o.split() and o.split()[-1].endswith("s"))
            attrs = {(s[0], s[2]) for s in segs if len(s) == 3 and s[1] == "is"}
            has = {(s[0], s[2]) for s in segs if len(s) == 3 and s[1] == "have"}
            relations = [s for s in segs if len(s) == 3 and s[1] != "is"]
            for s in relations:
                first = s[1].split()[0]
                if first not in PREPS and first.isalpha():
                    verbs[first] += 1
            for m, h in zip(words, words[1:]):
                if m + h in objects and m.isalpha() and h.isalpha():
                    closed[f"{m} {h}"] += 1
            graph_words = {w for seg in segs for e in seg for w in e.split()}
            new_objects = [o for o in objects if " " not in o and o not in words]
            for w in set(words):
                word_seen[w] += 1
                if w not in graph_words and len(new_objects) == 1:
                    renamed[w][new_objects[0]] += 1
            mentioned = {w for s in segs for e in s for w in e.split()}
            for m, h in zip(words, words[1:]):
                if m in ("a", "an", "the") or m.isdigit():
                    continue
                if f"{m} {h}" in objects:
                    modifiers[m]["keep"] += 1
                elif h not in objects:
                    continue
                elif (h, m) in attrs:
                    modifiers[m]["attr"] += 1
                elif (m, h) in has:
                    modifiers[m]["have"] += 1
                elif m not in mentioned:
                    modifiers[m]["drop"] += 1
            for i, w in enumerate(words[1:-1], 1):
                if w != "of" or words[i - 1] not in objects:
                    continue
                x = words[i - 1]
                y = next((v for v in words[i + 1:i + 4] if v in objects), None)
                if y is None:
                    continue
                rel = [r for r in relations if {r[0], r[2]} == {x, y}]
                if not rel:
                    continue
                s_, pred, _ = rel[0]
                if any(ch.isdigit() for ch in pred):
                    continue
                of_heads[x][("rev:" if s_ == y else "fwd:") + pred] += 1
            for s, pred, o in relations:
                if s not in words or o not in words:
                    continue
                i, j = words.index(s), words.index(o)
                between = words[i + 1:j]
                if (between and between[0] in PREPS and len(between) <= 3
                        and not any(w in SPATIAL for w in between[1:]) and pred.replace(" ", "").isalpha()):
                    preps[(between[0], o)][pred] += 1

    def majority(counter: Counter) -> str:
        return counter.most_common(1)[0][0]

    lexicon = {
        "source": args.train.name,
        "verbs": {v: c for v, c in verbs.most_common() if c >= 2},
        "modifiers": {m: majority(c) for m, c in sorted(modifiers.items())
                      if sum(c.values()) >= args.min_count},
        "of_heads": {x: majority(c) for x, c in sorted(of_heads.items())
                     if sum(c.values()) >= args.min_count and majority(c) != "rev:have"},
        "closed_compounds": sorted(c for c, n in closed.items() if n >= 2),
        "renames": {w: c.most_common(1)[0][0] for w, c in sorted(renamed.items())
                    if c.most_common(1)[0][1] >= 5 and c.most_common(1)[0][1] >= 0.5 * word_seen[w]},
        "plural_objects": sorted(w for w, n in object_heads.items() if n >= args.min_count and w.isalpha()),
        "prep_objects": {f"{p} {o}": majority(c) for (p, o), c in sorted(preps.items())
                         if sum(c.values()) >= args.min_count and majority(c) != p
                         and c[majority(c)] > sum(c.values()) / 2},
    }
    args.out.write_text(json.dumps(lexicon, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    print(json.dumps({k: len(v) for k, v in lexicon.items() if not isinstance(v, str)}))


if __name__ == "__main__":
    main()
