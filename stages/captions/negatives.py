"""Hard negatives for any caption, made from its TSG the way the synthetic world makes them.

A hard negative is the caption with one fact changed, so that it no longer
describes the video while nearly every word stays: the kinds the synthetic
world writes (``pipeline/synthetic/captions.py``), here by editing the
caption's own text at the character spans its parsed TSG gives:

* ``swap_subject_object``: the subject and object phrases of a verb relation
  trade places ("a young lady grips a black bag" → "a black bag grips a young
  lady"). Only between two nouns with different lemmas and the same number, never a
  pronoun, never a symmetric relation ("talks with", "next to", "hugs").
* ``change_relation``: the relation becomes another predicate the FREQ prior
  (:mod:`stages.predicate_prior`) knows for the same subject and object, one
  whose geometry cannot show the original ("rides a horse" → "pets a horse";
  "holds" → "carries" is refused: both are ``holding``), inflected like the
  original verb.
* ``change_attribute``: an attribute becomes another of its closed family
  (colour, size, age, number, state: "black" → "white", "two" → "four"). The
  FREQ prior holds predicates only, so attributes come from these families.
* ``reverse_order``: two events trade their order ("X before Y" → "X after
  Y"; "X, then Y" → "Y, then X").

Every edit is refused when it is unsafe (a span that is not the label's text,
a past-tense verb the inflector does not know, clauses without their own
subject), so a caption may get none. How often a person would still judge a
negative true was measured on 50 ActivityNet val_2 captions (docs/tsg.md).

Example::

    make_negatives("A man is riding a horse.", tsg, prior, limit=2)
    # [('A horse is riding a man.', 'swap_subject_object'), ('A man is petting a horse.', 'change_relation')]
"""
from __future__ import annotations

import re
from typing import Optional

from schemas.records import TextNode, TextSceneGraph
from stages.predicate_prior import PREPOSITION_GEOMETRY, PredicatePrior, supporting_geometry

NEGATIVE_KINDS = ("swap_subject_object", "change_relation", "change_attribute", "reverse_order")

PRONOUNS = frozenset("i me you he him she her it they them we us his hers its their theirs our this that these those "
                     "someone somebody everyone everybody one another other others who which".split())
# A relation whose subject and object can trade places and stay true.
SYMMETRIC_WORDS = frozenset("with and next beside besides near by along alongside against across opposite among "
                            "between together meet talk speak chat hug kiss fight wrestle box spar dance marry "
                            "shake greet argue compete race face touch play join".split())
# Verbs that say how a scene is shown or that an action begins: their "subject" is no agent.
NOT_ACTIONS = frozenset("see show seem look appear be get begin start continue keep try take".split())
# Predicates too vague to contradict anything ("has", "is in").
GENERIC = frozenset("be is are have has with of in on at to for from by near as like".split())
PREPOSITIONS = frozenset(word for key in PREPOSITION_GEOMETRY for word in key.split()) | GENERIC | frozenset(
    "into onto through toward towards around over under up down off out inside outside".split())

COLOURS = ("black", "white", "red", "blue", "green", "yellow", "brown", "gray", "grey", "orange", "pink", "purple")
# Within a family, each word's replacement: a value a person cannot read as the same.
ATTRIBUTE_SWAPS = {
    **{c: r for c, r in zip(COLOURS, ("white", "black", "green", "yellow", "red", "blue", "white", "black", "black",
                                      "blue", "green", "yellow"))},
    "big": "small", "large": "small", "huge": "tiny", "giant": "tiny", "tall": "short",
    "small": "large", "little": "big", "tiny": "huge",
    "young": "old", "old": "young", "elderly": "young", "older": "younger", "younger": "older",
    "wet": "dry", "dry": "wet", "empty": "full", "full": "empty", "open": "closed", "closed": "open",
    "one": "three", "two": "four", "three": "five", "four": "two", "five": "two", "six": "three",
    "several": "two", "many": "two", "few": "many",
}
COUNT_WORDS = frozenset({"one", "two", "three", "four", "five", "six", "several", "many", "few"})

# What may stand between a subject and its verb, and between the verb and its object, for a swap.
AUXILIARIES = re.compile(r"\s*((is|are|was|were|has|have|had|being|been|also|still|then|now|\w+ly)\s+)*", re.IGNORECASE)
DETERMINERS = re.compile(r"\s*((the|a|an|his|her|their|its|some|another|one|two|three|four|five)\s+)?", re.IGNORECASE)
# "X, then Y" / "X and then Y" / "X then Y": the connective kept between the two events.
THEN = re.compile(r"(,\s*and then|,\s*then|\s+and then|\s+then)\s+", re.IGNORECASE)
BEFORE_AFTER = {"before": "after", "after": "before"}
IRREGULAR = {"have": ("has", "having"), "do": ("does", "doing"), "go": ("goes", "going"), "lie": ("lies", "lying"),
             "be": ("is", "being")}


# ------------------------------------------------------------------ entry point
def make_negatives(text: str, tsg: TextSceneGraph, prior: Optional[PredicatePrior], limit: int,
                   offset: int = 0) -> list[tuple[str, str]]:
    """Up to ``limit`` ``(negative text, kind)`` pairs of different kinds for ``text`` (parsed as
    ``tsg``). ``offset`` rotates which kinds come first, so a video's captions use them all."""
    if limit <= 0 or not text.strip():
        return []
    makers = {"swap_subject_object": lambda: swap_subject_object(text, tsg),
              "change_relation": lambda: change_relation(text, tsg, prior) if prior is not None else None,
              "change_attribute": lambda: change_attribute(text, tsg),
              "reverse_order": lambda: reverse_order(text)}
    kinds = NEGATIVE_KINDS[offset % len(NEGATIVE_KINDS):] + NEGATIVE_KINDS[:offset % len(NEGATIVE_KINDS)]
    out: list[tuple[str, str]] = []
    for kind in kinds:
        negative = makers[kind]()
        if negative and _normal(negative) != _normal(text) and all(_normal(negative) != _normal(t) for t, _ in out):
            out.append((negative, kind))
        if len(out) >= limit:
            break
    return out


# ------------------------------------------------------------------ the four kinds
def swap_subject_object(text: str, tsg: TextSceneGraph) -> Optional[str]:
    """The first verb relation's subject and object phrases, swapped."""
    for relation, subject, obj in _triples(tsg):
        words = relation.lemma.split()
        if not words or words[0] in PREPOSITIONS or SYMMETRIC_WORDS & set(words):
            continue
        if subject.lemma == obj.lemma or _plural(subject) != _plural(obj) or words[0] in NOT_ACTIONS:
            continue
        a, b = _phrase(text, tsg, subject), _phrase(text, tsg, obj)
        if a is None or b is None or not (a[1] <= relation.span[0] and relation.span[1] <= b[0]):
            continue
        if not (AUXILIARIES.fullmatch(text[a[1]:relation.span[0]]) and DETERMINERS.fullmatch(text[relation.span[1]:b[0]])):
            continue   # "subject [is] verb [the] object" only: anything else is another clause's
        first, second = text[b[0]:b[1]], text[a[0]:a[1]]
        if a[0] == 0:   # the object now opens the sentence, the subject moves inside it
            first, second = first[:1].upper() + first[1:], second[:1].lower() + second[1:]
        return _replace(text, [(a[0], a[1], first), (b[0], b[1], second)])
    return None


def change_relation(text: str, tsg: TextSceneGraph, prior: PredicatePrior) -> Optional[str]:
    """The first relation the prior can replace, replaced by a predicate of other geometry."""
    for relation, subject, obj in _triples(tsg):
        if text[relation.span[0]:relation.span[1]] != relation.label:
            continue   # a split phrasal verb ("pull the rope down"): its words are not one span
        form = _verb_form(relation.label.split()[0], relation.lemma.split()[0])
        if form is None or relation.lemma.split()[0] in PREPOSITIONS:
            continue
        own = set(supporting_geometry(relation.lemma))
        distribution, level = prior.distribution(subject.lemma, obj.lemma)
        if level not in ("pair", "marginals"):
            continue   # a backoff to one label or to all: "sits on" for everything
        for candidate, _p in sorted(distribution.items(), key=lambda item: -item[1]):
            words = candidate.split()
            if (words[0] in PREPOSITIONS or words[0] == relation.lemma.split()[0] or len(words) > 3
                    or SYMMETRIC_WORDS & set(words)):
                continue
            theirs = set(supporting_geometry(candidate))
            if not own or not theirs or own & theirs:
                continue   # geometry unknown or shared: the two could both be true
            new = " ".join([_inflect(words[0], form)] + words[1:])
            return _replace(text, [(relation.span[0], relation.span[1], new)])
    return None


def change_attribute(text: str, tsg: TextSceneGraph) -> Optional[str]:
    """The first attribute of a closed family, replaced by another of it."""
    for node in tsg.nodes:
        if node.kind != "attribute":
            continue
        surface = text[node.span[0]:node.span[1]]
        new = ATTRIBUTE_SWAPS.get(surface.lower())
        if new is None or (surface.lower() in COUNT_WORDS and surface.lower() == "one"):
            continue
        if surface[:1].isupper():
            new = new.capitalize()
        return _replace(text, [(node.span[0], node.span[1], new)])
    return None


def reverse_order(text: str) -> Optional[str]:
    """Two events in the other order: "before" ↔ "after", or the clauses around "then" swapped
    when the second has a subject of its own."""
    for word, other in BEFORE_AFTER.items():
        # as a connective only: "before going", "after he falls", never "runs after a ball"
        match = re.search(rf"\b{word}\s+(\w+ing|he|she|they|we|it|that|this|which)\b", text, re.IGNORECASE)
        if match and match.start() > 0:
            match = re.match(rf"{word}", text[match.start():], re.IGNORECASE) and re.compile(word, re.I).search(text, match.start())
            new = other.capitalize() if match.group(0)[0].isupper() else other
            return text[:match.start()] + new + text[match.end():]
    match = THEN.search(text)
    if match is None or match.start() == 0:
        return None
    left, right = text[:match.start()].strip(), text[match.end():].strip()
    left = re.sub(r"^(then|first|next|finally|afterwards|now),?\s+", "", left, flags=re.IGNORECASE)
    end = right[-1] if right and right[-1] in ".!" else ""
    right = right.rstrip(".!").strip()
    first = right.split(" ", 1)[0].lower() if right else ""
    if not left or not right or not (first in PRONOUNS or first in ("the", "a", "an")):
        return None   # "X then lifts it": the second event has no subject of its own
    connective = match.group(1).strip()
    joined = f"{right[0].upper()}{right[1:]}{',' if connective.startswith(',') else ''} " \
             f"{connective.lstrip(',').strip()} {_lower_first(left)}{end}"
    return joined


# ------------------------------------------------------------------ helpers
def _triples(tsg: TextSceneGraph) -> list[tuple[TextNode, TextNode, TextNode]]:
    """``(relation, subject, object)`` for each relation with both, in the caption's order."""
    subjects = {e.dst: e.src for e in tsg.edges if e.kind == "subj_pred"}
    objects = {e.src: e.dst for e in tsg.edges if e.kind == "pred_obj"}
    out = []
    for node in sorted(tsg.nodes, key=lambda n: n.span[0]):
        if node.kind == "relation" and node.id in subjects and node.id in objects:
            subject, obj = tsg.nodes[subjects[node.id]], tsg.nodes[objects[node.id]]
            if subject.kind == obj.kind == "object" and not node.negated:
                out.append((node, subject, obj))
    return out


def _phrase(text: str, tsg: TextSceneGraph, node: TextNode) -> Optional[tuple[int, int]]:
    """The noun phrase of an object node without its determiner: its attributes that come just before it
    and the noun ("black and silver punching bag"); None for a pronoun."""
    noun = text[node.span[0]:node.span[1]]
    if not noun or noun.lower() in PRONOUNS:
        return None
    start = node.span[0]
    attributes = sorted((tsg.nodes[e.dst].span for e in tsg.edges if e.kind == "obj_attr" and e.src == node.id),
                        reverse=True)
    for a_start, a_end in attributes:
        gap = text[a_end:start]
        if a_end <= start and re.fullmatch(r"[\s,]*(and\s+)?[\w\s-]{0,20}", gap) and len(gap) <= 25:
            start = a_start
    return start, node.span[1]


def _replace(text: str, edits: list[tuple[int, int, str]]) -> str:
    """``text`` with each ``(start, end, new)`` applied, "a"/"an" before each edit fixed."""
    for start, end, new in sorted(edits, reverse=True):
        before = text[:start]
        article = re.search(r"\b(a|an|A|An)\s+$", before)
        if article:
            word = "an" if new[:1].lower() in "aeiou" else "a"
            word = word.capitalize() if article.group(1)[0].isupper() else word
            before = before[:article.start(1)] + word + before[article.end(1):]
        text = before + new + text[end:]
    return text


def _plural(node: TextNode) -> bool:
    return node.count > 1 or node.label.lower() != node.lemma.lower()


def _verb_form(surface: str, lemma: str) -> Optional[str]:
    surface, lemma = surface.lower(), lemma.lower()
    if surface == lemma:
        return "base"
    if surface.endswith("ing"):
        return "ing"
    if surface.endswith("s") and surface in (lemma + "s", lemma + "es", lemma[:-1] + "ies", IRREGULAR.get(lemma, ("",))[0]):
        return "s"
    return None   # past tense and irregular forms: not inflected by guesswork


def _inflect(verb: str, form: str) -> str:
    if form == "base":
        return verb
    if verb in IRREGULAR:
        return IRREGULAR[verb][0 if form == "s" else 1]
    if form == "s":
        if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
            return verb + "es"
        return verb[:-1] + "ies" if re.search(r"[^aeiou]y$", verb) else verb + "s"
    if verb.endswith("ie"):
        return verb[:-2] + "ying"
    if verb.endswith("e") and not verb.endswith(("ee", "ye", "oe")):
        return verb[:-1] + "ing"
    if re.search(r"[^aeiou][aeiou][^aeiouwxy]$", verb) and len(re.findall(r"[aeiou]+", verb)) == 1:
        return verb + verb[-1] + "ing"   # sit → sitting, swim → swimming
    return verb + "ing"


def _normal(text: str) -> str:
    return re.sub(r"\W+", " ", text).strip().lower()


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    if first.lower() in ("a", "an", "the", "he", "she", "they", "it", "we") or first.lower() in PRONOUNS:
        return text[0].lower() + text[1:]
    return text
