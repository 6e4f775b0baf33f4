"""A language prior over predicates: Neural Motifs' FREQ baseline, plus geometry.

``P(predicate | subject label, object label)`` is estimated by counting the
relation triplets of Visual Genome region captions annotated by FACTUAL-MR
(``scripts/build_predicate_prior.py`` writes ``stages/data/predicate_prior.json``).
Geometry says where boxes are ("on", "near", "holding"); captions say what
people do ("man riding horse", "cup on table"). :meth:`PredicatePrior.caption_predicate`
joins the two with this rule:

1. Every caption predicate is *supported* by some geometric predicates: by the
   preposition it ends with (``PREPOSITION_GEOMETRY``: "sit on" → on/above,
   "stand next to" → near/left of/right of) or, when it has none, by its verb
   (``VERB_GEOMETRY``: "ride" → on/above, "hold"/"carry"/"wear" → holding).
2. Given the geometric scores ``G[g]`` of one ordered detection pair, a caption
   predicate's support is ``s(p) = max over g supporting p of G[g]``.
3. Among the prior's predicates with ``s(p) > 0``, the prior is renormalised
   (``P'(p) = P(p) / Σ P`` over them) and the winner is
   ``p* = argmax P(p) · s(p)``; its score is ``s(p*) · P'(p*)``.
4. ``p*`` is emitted when that score ≥ ``min_score`` and ``P(p*)`` ≥ ``min_prob``.

Unknown pairs back off (see :meth:`PredicatePrior.distribution`): subject and
object marginals combined as ``P(p|s)·P(p|o)/P(p)``, then one marginal, then
the global distribution. Detector labels are looked up by the table's word
(``LABEL_ALIASES``: COCO's "dining table" is Visual Genome's "table"). The
relate stage uses the prior only for label pairs the table holds
(:meth:`PredicatePrior.knows_pair`): the backoff guesses ("bottle in bottle")
read worse than geometry.

Example::

    >>> prior = PredicatePrior.load()
    >>> prior.top("man", "horse", 1)[0][0]
    'ride'
    >>> prior.caption_predicate("man", "horse", {"on": 0.8, "near": 0.9})[0]
    'ride'
"""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

PRIOR_PATH = Path(__file__).parent / "data" / "predicate_prior.json"
QUANTIFIERS = frozenset({"pr", "gr", "pa", "sl"})  # FACTUAL-MR's factual_mr_meta.json

# Caption-predicate ending → the geometric predicates that can show it. Longest ending wins.
PREPOSITION_GEOMETRY: dict[str, tuple[str, ...]] = {
    "on": ("on", "above"), "onto": ("on",), "upon": ("on",), "atop": ("on",),
    "on top of": ("on", "above"), "on back of": ("on",), "on side of": ("near", "on"),
    "above": ("above",), "over": ("above",),
    "under": ("below",), "below": ("below",), "beneath": ("below",), "underneath": ("below",),
    "from": ("below",), "behind": ("behind",), "in front of": ("in front of",),
    "next to": ("near", "left of", "right of"), "beside": ("near", "left of", "right of"),
    "by": ("near",), "near": ("near",), "alongside": ("near", "left of", "right of"),
    "at": ("near",), "against": ("near",), "with": ("holding", "near"), "around": ("near",),
    "at the left of": ("left of",), "on the left side of": ("left of",), "on left side of": ("left of",),
    "at the right of": ("right of",), "on the right side of": ("right of",), "on right side of": ("right of",),
}
# Verb-only caption predicates (no preposition) → supporting geometry.
VERB_GEOMETRY: dict[str, tuple[str, ...]] = {
    "ride": ("on", "above"), "hold": ("holding",), "carry": ("holding",), "wear": ("holding",),
    "have": ("holding",), "use": ("holding",), "eat": ("holding",), "drink": ("holding",),
    "swing": ("holding",), "throw": ("holding", "near"), "catch": ("holding", "near"),
    "play": ("holding", "near"), "hit": ("holding", "near"), "pull": ("holding", "near"),
    "push": ("holding", "near"), "cut": ("holding",), "touch": ("holding", "near"),
    "watch": ("near",), "face": ("near",), "cover": ("on", "in front of"), "surround": ("near",),
    "line": ("near",), "cross": ("on",), "drive": ("holding", "on"), "fly": ("holding", "above"),
    "support": ("below",), "overlook": ("above",), "walk": ("holding", "near"), "chase": ("near",),
}


def supporting_geometry(predicate: str) -> tuple[str, ...]:
    """The geometric predicates that can show a caption predicate (``()`` when none)."""
    words = predicate.split()
    for start in range(len(words)):  # longest preposition ending first
        ending = " ".join(words[start:])
        if ending in PREPOSITION_GEOMETRY:
            return PREPOSITION_GEOMETRY[ending]
    return VERB_GEOMETRY.get(words[0], ()) if words else ()


# ------------------------------------------------------------- normalisation
_IRREGULAR = {"men": "man", "women": "woman", "children": "child", "feet": "foot", "teeth": "tooth",
              "mice": "mouse", "geese": "goose", "leaves": "leaf", "shelves": "shelf", "halves": "half",
              "knives": "knife", "wolves": "wolf", "loaves": "loaf", "calves": "calf", "wives": "wife",
              "scarves": "scarf", "buses": "bus", "tomatoes": "tomato", "potatoes": "potato",
              "cookies": "cookie", "skis": "ski"}
# Plural-only or s-final singular nouns stay as they are.
_KEEP = frozenset({"people", "glasses", "pants", "jeans", "shorts", "clothes", "sunglasses", "scissors",
                   "goggles", "trousers", "tongs"})
_KEEP_ENDINGS = ("ss", "us", "is", "ous")


def singular(word: str) -> str:
    """A rule-based singular of an English noun (enough for scene-graph labels).

    >>> [singular(w) for w in ("trees", "bushes", "ponies", "men", "glasses", "bus", "shoes")]
    ['tree', 'bush', 'pony', 'man', 'glasses', 'bus', 'shoe']
    """
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word in _KEEP or len(word) <= 3 or word.endswith(_KEEP_ENDINGS):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


def normalise_label(text: str) -> str:
    """Lower-case, single spaces, last word singular ("Tree Trunks" → "tree trunk")."""
    words = re.sub(r"\s+", " ", text.strip().lower()).split(" ")
    if not words or not words[-1]:
        return ""
    words[-1] = singular(words[-1])
    return " ".join(words)


# Detector vocabularies (COCO) → the Visual Genome word the table counts ("dining table" → "table").
LABEL_ALIASES = {"dining table": "table", "cell phone": "phone", "handbag": "bag", "skis": "ski",
                 "sports ball": "ball", "baseball glove": "glove", "wine glass": "glass", "potted plant": "plant",
                 "hair drier": "hair dryer", "tv": "television"}


def lookup_label(text: str) -> str:
    """:func:`normalise_label`, then the table's word for a detector label (:data:`LABEL_ALIASES`)."""
    label = normalise_label(text)
    return LABEL_ALIASES.get(label, label)


def normalise_predicate(text: str) -> str:
    """Lower-case, no passive marker ``p:``, no numbers ("p:attach to" → "attach to")."""
    words = [w for w in re.sub(r"\s+", " ", text.strip().lower()).split(" ") if w and not w.isdigit()]
    return " ".join(w[2:] if w.startswith("p:") else w for w in words)


def _is_quantifier(token: str) -> bool:
    return token.isdigit() or token in QUANTIFIERS


def parse_triplets(graph: str) -> list[tuple[str, str, str]]:
    """``(subject, predicate, object)`` relation triplets of a FACTUAL(-MR) graph string.

    Attribute tuples ``( x , is , attr )`` are skipped. FACTUAL-MR writes verb
    and preposition apart (``( bike , rest , against , box )``) and may put a
    quantifier before either noun (``( 2 , boys , ride , 2 , skateboards )``).

    >>> parse_triplets("( bike , rest , against , box ) , ( bike , is , red )")
    [('bike', 'rest against', 'box')]
    """
    out = []
    for body in re.findall(r"\(([^()]*)\)", graph):
        parts = [p.strip() for p in body.split(",") if p.strip()]
        if len(parts) > 3 and _is_quantifier(parts[0]):
            parts = parts[1:]
        if len(parts) > 3 and _is_quantifier(parts[-2]):
            parts = parts[:-2] + parts[-1:]
        if len(parts) < 3 or parts[1] == "is":
            continue
        subject, obj = normalise_label(parts[0]), normalise_label(parts[-1])
        predicate = normalise_predicate(" ".join(parts[1:-1]))
        if subject and obj and predicate:
            out.append((subject, predicate, obj))
    return out


# ------------------------------------------------------------- estimation
def estimate_prior(triplets: Iterable[tuple[str, str, str]], top_k: int = 5, min_pair_count: int = 3,
                   marginal_top_k: int = 10, min_label_count: int = 5) -> dict:
    """Count triplets into the JSON table :class:`PredicatePrior` reads.

    Pairs seen ``≥ min_pair_count`` times keep their ``top_k`` predicates;
    labels seen ``≥ min_label_count`` times (as subject / as object) keep
    ``marginal_top_k``; probabilities are over the full counts (so a kept
    list sums to ≤ 1).
    """
    pair, by_subject, by_object, overall = defaultdict(Counter), defaultdict(Counter), defaultdict(Counter), Counter()
    for subject, predicate, obj in triplets:
        pair[(subject, obj)][predicate] += 1
        by_subject[subject][predicate] += 1
        by_object[obj][predicate] += 1
        overall[predicate] += 1

    def top(counter: Counter, k: int) -> list[list]:
        total = sum(counter.values())
        return [[p, round(c / total, 4)] for p, c in counter.most_common(k)]

    return {
        "version": 1,
        "source": "FACTUAL-MR train (Visual Genome region captions), relation triplets",
        "triplets": sum(overall.values()),
        "top_k": top_k, "min_pair_count": min_pair_count,
        "pairs": {f"{s}|{o}": top(c, top_k) for (s, o), c in sorted(pair.items())
                  if sum(c.values()) >= min_pair_count},
        "subject": {s: top(c, marginal_top_k) for s, c in sorted(by_subject.items())
                    if sum(c.values()) >= min_label_count},
        "object": {o: top(c, marginal_top_k) for o, c in sorted(by_object.items())
                   if sum(c.values()) >= min_label_count},
        "global": top(overall, marginal_top_k * 2),
    }


# ------------------------------------------------------------- the prior
@dataclass
class PredicatePrior:
    """The shipped FREQ table; see the module docstring for the combination rule."""

    pairs: dict[tuple[str, str], dict[str, float]]
    subject: dict[str, dict[str, float]]
    object: dict[str, dict[str, float]]
    overall: dict[str, float]

    @classmethod
    def from_table(cls, table: dict) -> "PredicatePrior":
        return cls({tuple(k.split("|", 1)): dict(v) for k, v in table["pairs"].items()},
                   {k: dict(v) for k, v in table["subject"].items()},
                   {k: dict(v) for k, v in table["object"].items()},
                   dict(table["global"]))

    @classmethod
    def load(cls, path: Path | str = PRIOR_PATH) -> "PredicatePrior":
        return cls.from_table(json.loads(Path(path).read_text()))

    def knows_pair(self, subject: str, obj: str) -> bool:
        return (lookup_label(subject), lookup_label(obj)) in self.pairs

    def distribution(self, subject: str, obj: str) -> tuple[dict[str, float], str]:
        """``P(predicate | subject, object)`` (possibly partial) and which level answered.

        Levels: ``"pair"``, ``"marginals"`` (both labels known, not together),
        ``"subject"``, ``"object"``, ``"global"``.
        """
        s, o = lookup_label(subject), lookup_label(obj)
        if (s, o) in self.pairs:
            return self.pairs[(s, o)], "pair"
        ps, po = self.subject.get(s), self.object.get(o)
        if ps and po:
            floor = min(self.overall.values())
            joint = {p: ps[p] * po[p] / self.overall.get(p, floor) for p in ps.keys() & po.keys()}
            if joint:
                total = sum(joint.values())
                return {p: v / total for p, v in joint.items()}, "marginals"
        if ps:
            return ps, "subject"
        if po:
            return po, "object"
        return self.overall, "global"

    def top(self, subject: str, obj: str, k: int = 5) -> list[tuple[str, float]]:
        dist, _ = self.distribution(subject, obj)
        return sorted(dist.items(), key=lambda item: (-item[1], item[0]))[:k]

    def caption_predicate(self, subject: str, obj: str, geometry: dict[str, float],
                          min_score: float = 0.2, min_prob: float = 0.05) -> Optional[tuple[str, float]]:
        """The caption predicate for one ordered pair given its geometric scores, or None."""
        dist, _ = self.distribution(subject, obj)
        support = {p: max((geometry.get(g, 0.0) for g in supporting_geometry(p)), default=0.0) for p in dist}
        allowed = {p: dist[p] for p, s in support.items() if s > 0}
        if not allowed:
            return None
        best = max(allowed, key=lambda p: (allowed[p] * support[p], p))
        score = support[best] * allowed[best] / sum(allowed.values())
        if score < min_score or dist[best] < min_prob:
            return None
        return best, score


def evaluate_prior(prior: PredicatePrior, triplets: Iterable[tuple[str, str, str]]) -> dict:
    """Top-1/top-5 accuracy of the prior's ranking against gold triplets.

    ``pair_*`` counts only triplets whose (subject, object) pair the table
    holds ("labels it knows"); ``labels_*`` also uses the backoff for triplets
    whose subject and object are each known as labels.
    """
    triplets = list(triplets)
    pair_hits, label_hits = Counter(), Counter()
    for subject, predicate, obj in triplets:
        dist, level = prior.distribution(subject, obj)
        if level not in ("pair", "marginals"):
            continue
        ranked = [p for p, _ in sorted(dist.items(), key=lambda item: (-item[1], item[0]))]
        for bucket in ((pair_hits, label_hits) if level == "pair" else (label_hits,)):
            bucket["n"] += 1
            bucket["top1"] += ranked[:1] == [predicate]
            bucket["top5"] += predicate in ranked[:5]
    total = len(triplets)

    def rates(hits: Counter, prefix: str) -> dict:
        n = hits["n"]
        return {f"{prefix}_coverage": round(n / total, 4) if total else 0.0, f"{prefix}_n": n,
                f"{prefix}_top1": round(hits["top1"] / n, 4) if n else 0.0,
                f"{prefix}_top5": round(hits["top5"] / n, 4) if n else 0.0}

    return {"triplets": total, **rates(pair_hits, "pair"), **rates(label_hits, "labels")}
