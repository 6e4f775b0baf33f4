"""Score caption → TSG parsing against FACTUAL gold graphs (SPICE-style).

Per caption, both graphs become SPICE tuples: objects ``(o,)``, attributes
``(o, a)`` and relations ``(s, p, o)`` (every object of an attribute or a
relation is also an object tuple; duplicates count once). Two tuples match when
they have the same length and, element by element, word by word, their lemma
sets intersect: each word stands for itself plus its noun, verb and adjective
lemmas from the spaCy English lemmatiser ("lying" ~ "lay", "glasses" ~
"glass", "two" ~ "2"). That is FACTUAL's ``Evaluator(lemmatize=True)`` with
SPICE's stem matching but without its WordNet synonym sets, so it is slightly
stricter than the published SPICE. Matching is greedy, exact strings first,
as in FACTUAL's ``eval_spice``.

Figures (all ×100):

* ``spice_f1``: the mean over captions of the per-caption tuple F1 (how FACTUAL
  reports SPICE);
* ``set_match``: the share of captions whose FACTUAL *segments* match the
  gold's one to one (FACTUAL's set match, on lemmas);
* per type (``object``, ``attribute``, ``relation``, ``all``): micro precision,
  recall and F1 over all captions.

Example::

    summary = evaluate_file(Path("random_dev.csv"), ParseOptions(parser="spacy"),
                            diff=Path("diff.jsonl"))
    summary["spice_f1"], summary["set_match"]
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Optional

from schemas.errors import UserError
from stages.captions.factual import Segment, format_segments, parse_factual, tsg_segments
from stages.captions.rules import NUMBER_WORDS

TUPLE_TYPES = {1: "object", 2: "attribute", 3: "relation"}
Tuple = tuple[str, ...]


@dataclass
class ParseOptions:
    """How eval-tsg gets its candidate graphs: run a parser, or read ``pred``."""

    parser: str = "spacy"
    stanza_dir: str = ""
    pred: Optional[Path] = None


# ----------------------------------------------------------------- lemmas
class Lemmas:
    """Word → the set of forms it matches (itself, noun/verb/adj lemmas, digits)."""

    def __init__(self) -> None:
        from spacy.tokens import Doc

        from stages.captions.spacy_backend import load_spacy

        nlp = load_spacy()
        self._vocab = nlp.vocab
        self._lemmatizer = nlp.get_pipe("lemmatizer")
        self._doc = Doc
        self.word = lru_cache(maxsize=None)(self._word)

    def _word(self, word: str) -> frozenset[str]:
        forms = {word}
        if word in NUMBER_WORDS:
            forms.add(str(NUMBER_WORDS[word]))
        if word.isalpha():
            for pos in ("NOUN", "VERB", "ADJ"):
                token = self._doc(self._vocab, words=[word], pos=[pos])[0]
                forms.update(self._lemmatizer.rule_lemmatize(token))
        return frozenset(forms)

    def element(self, text: str) -> tuple[frozenset[str], ...]:
        return tuple(self.word(w) for w in text.split())


def _element_match(a: tuple[frozenset[str], ...], b: tuple[frozenset[str], ...]) -> bool:
    return len(a) == len(b) and all(x & y for x, y in zip(a, b))


def _greedy_matches(cand: list[Tuple], gold: list[Tuple], lemmas: Lemmas) -> list[tuple[int, int]]:
    """FACTUAL's matching: exact pass, then lemma pass; each gold tuple used once."""
    pairs: list[tuple[int, int]] = []
    used_c: set[int] = set()
    used_g: set[int] = set()
    for i, c in enumerate(cand):
        for j, g in enumerate(gold):
            if j not in used_g and c == g:
                pairs.append((i, j)), used_c.add(i), used_g.add(j)
                break
    gl = [tuple(lemmas.element(e) for e in g) for g in gold]
    for i, c in enumerate(cand):
        if i in used_c:
            continue
        cl = tuple(lemmas.element(e) for e in c)
        for j, g in enumerate(gl):
            if j not in used_g and len(cl) == len(g) and all(_element_match(x, y) for x, y in zip(cl, g)):
                pairs.append((i, j)), used_c.add(i), used_g.add(j)
                break
    return pairs


def spice_tuples(segments: Iterable[Segment]) -> list[Tuple]:
    """FACTUAL segments → SPICE tuples (objects, attributes, relations), each once."""
    out: list[Tuple] = []

    def add(t: Tuple) -> None:
        if t not in out:
            out.append(t)

    for seg in segments:
        if len(seg) == 1:
            add(seg)
        elif len(seg) == 3 and seg[1] == "is":
            add((seg[0], seg[2]))
            add((seg[0],))
        elif len(seg) == 3:
            add(seg)
            add((seg[0],))
            add((seg[2],))
    return out


# ----------------------------------------------------------------- scoring
def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def score_captions(cands: list[list[Segment]], golds: list[list[Segment]], lemmas: Lemmas,
                   captions: Optional[list[str]] = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Summary dict and one diff row per caption (see the module doc for the figures)."""
    if len(cands) != len(golds):
        raise UserError(f"{len(cands)} predicted graphs for {len(golds)} gold graphs")
    counts = {t: {"match": 0, "pred": 0, "gold": 0} for t in (*TUPLE_TYPES.values(), "all")}
    f1_sum = 0.0
    set_matches = 0
    rows = []
    for k, (cand_segs, gold_segs) in enumerate(zip(cands, golds)):
        ct, gt = spice_tuples(cand_segs), spice_tuples(gold_segs)
        pairs = _greedy_matches(ct, gt, lemmas)
        matched_c = {i for i, _ in pairs}
        matched_g = {j for _, j in pairs}
        for i, t in enumerate(ct):
            kind = TUPLE_TYPES[len(t)]
            for name in (kind, "all"):
                counts[name]["pred"] += 1
                counts[name]["match"] += i in matched_c
        for t in gt:
            for name in (TUPLE_TYPES[len(t)], "all"):
                counts[name]["gold"] += 1
        p = len(pairs) / len(ct) if ct else 0.0
        r = len(pairs) / len(gt) if gt else 0.0
        f1 = _f1(p, r)
        f1_sum += f1
        seg_pairs = _greedy_matches(list(cand_segs), list(gold_segs), lemmas)
        exact = len(seg_pairs) == len(cand_segs) == len(gold_segs)
        set_matches += exact
        rows.append({
            "index": k, "caption": captions[k] if captions else "",
            "gold": format_segments(gold_segs), "pred": format_segments(cand_segs),
            "missing": [" , ".join(t) for j, t in enumerate(gt) if j not in matched_g],
            "extra": [" , ".join(t) for i, t in enumerate(ct) if i not in matched_c],
            "f1": round(100 * f1, 2), "set_match": exact,
        })
    n = max(1, len(golds))
    summary: dict[str, Any] = {"captions": len(golds), "set_match": round(100 * set_matches / n, 2),
                               "spice_f1": round(100 * f1_sum / n, 2)}
    for name, c in counts.items():
        p = c["match"] / c["pred"] if c["pred"] else 0.0
        r = c["match"] / c["gold"] if c["gold"] else 0.0
        summary[name] = {"precision": round(100 * p, 2), "recall": round(100 * r, 2),
                         "f1": round(100 * _f1(p, r), 2), "pred": c["pred"], "gold": c["gold"]}
    return summary, rows


# ----------------------------------------------------------------- files
def read_gold(path: Path) -> tuple[list[str], list[list[Segment]]]:
    """A FACTUAL csv (``caption`` and ``scene_graph`` columns) → captions, gold segments."""
    if not path.is_file():
        raise UserError(f"gold file not found: {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"caption", "scene_graph"} <= set(reader.fieldnames):
            raise UserError(f"{path}: expected a FACTUAL csv with columns caption,scene_graph")
        rows = list(reader)
    return [r["caption"] or "" for r in rows], [parse_factual(r["scene_graph"] or "") for r in rows]


def read_predictions(path: Path) -> list[list[Segment]]:
    """Precomputed graphs, one per gold row, in order: a FACTUAL-style csv
    (``scene_graph`` column), or lines of FACTUAL notation or TSG JSON (as
    ``parse-captions`` writes them)."""
    from stages.captions.io import tsg_from_json

    if not path.is_file():
        raise UserError(f"prediction file not found: {path}")
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "scene_graph" not in reader.fieldnames:
                raise UserError(f"{path}: expected a csv with a scene_graph column")
            return [parse_factual(r["scene_graph"] or "") for r in reader]
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("{"):
            try:
                out.append(tsg_segments(tsg_from_json(line)))
            except (ValueError, KeyError, TypeError) as error:
                raise UserError(f"{path}:{number}: not a TSG JSON line ({error})") from error
        else:
            out.append(parse_factual(line))
    return out


def evaluate_file(gold: Path, options: ParseOptions, diff: Optional[Path] = None) -> dict[str, Any]:
    """Parse (or read) candidates for ``gold``'s captions, score them, optionally write the diff.

    The diff file holds one JSON object per caption: caption, gold and
    predicted graphs in FACTUAL notation, the unmatched gold (``missing``) and
    predicted (``extra``) tuples, its F1 and whether its set matched.
    """
    captions, golds = read_gold(gold)
    if options.pred is not None:
        cands = read_predictions(options.pred)
        source = str(options.pred)
    else:
        from pipeline.tools.parse_captions import parse_to_tsgs

        cands = [tsg_segments(t) for t in parse_to_tsgs(captions, options.parser, options.stanza_dir)]
        source = options.parser
    summary, rows = score_captions(cands, golds, Lemmas(), captions)
    summary = {"gold": str(gold), "candidates": source, **summary}
    if diff is not None:
        diff.parent.mkdir(parents=True, exist_ok=True)
        with diff.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a small text table."""
    lines = [f"gold {summary['gold']}  candidates {summary['candidates']}  captions {summary['captions']}",
             f"set match {summary['set_match']:.2f}   SPICE F1 {summary['spice_f1']:.2f}",
             f"{'type':<10} {'P':>7} {'R':>7} {'F1':>7} {'pred':>7} {'gold':>7}"]
    for name in (*TUPLE_TYPES.values(), "all"):
        s = summary[name]
        lines.append(f"{name:<10} {s['precision']:>7.2f} {s['recall']:>7.2f} {s['f1']:>7.2f} "
                     f"{s['pred']:>7} {s['gold']:>7}")
    return "\n".join(lines)
