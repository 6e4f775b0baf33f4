"""The one dependency-parse form every caption-parser backend produces.

Backends disagree on labels *and* on tree shape: spaCy's English pipelines use
ClearNLP-style labels (``dobj``, ``pobj``, ``prep``, ``nsubjpass``, ``agent``,
``acomp``, ``attr``…) where a preposition heads its noun and the copula heads
the clause; stanza uses Universal Dependencies, where content words head
(``obl``/``nmod`` with a ``case`` child, the predicate adjective heads its
copula). The rules in :mod:`stages.captions.rules` read one form only, the
ClearNLP one, so :func:`from_universal` rewrites a UD parse into it.

Contract::

    doc = ParsedDoc(text, tokens)        # tokens in text order, doc-wide indices
    tok = doc.tokens[i]
    tok.head == i                        # for a sentence root (label "root")
    doc.children(i)                      # child indices, in text order
    text[tok.start:tok.end] == tok.text  # character offsets into the caption
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

#: Internal labels (ClearNLP style, lower case). Anything else a backend emits
#: passes through unchanged; the rules ignore labels they do not know.
LABELS = frozenset({
    "root", "nsubj", "nsubjpass", "csubj", "csubjpass", "expl", "dobj", "dative", "attr",
    "acomp", "oprd", "prep", "pobj", "pcomp", "agent", "amod", "nummod", "quantmod",
    "compound", "prt", "det", "predet", "poss", "case", "conj", "cc", "preconj", "advmod",
    "npadvmod", "neg", "relcl", "acl", "xcomp", "ccomp", "advcl", "appos", "aux", "auxpass",
    "mark", "punct", "dep", "nmod", "parataxis", "intj", "meta",
})


@dataclass
class Token:
    """One word: ``head`` and ``i`` are indices into :attr:`ParsedDoc.tokens`.

    ``pos`` is the Universal POS tag (NOUN, VERB, ADJ…), ``tag`` the Penn
    Treebank tag (NNS, VBG…) or "" when the backend has none; ``sent`` numbers
    the sentence the word belongs to.
    """

    i: int
    text: str
    lemma: str
    pos: str
    tag: str
    head: int
    label: str
    start: int
    end: int
    sent: int = 0


@dataclass
class ParsedDoc:
    """A parsed caption: its text and its tokens (possibly none)."""

    text: str
    tokens: list[Token] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._children: list[list[int]] | None = None

    def children(self, i: int) -> list[int]:
        if self._children is None:
            kids: list[list[int]] = [[] for _ in self.tokens]
            for tok in self.tokens:
                if tok.head != tok.i:
                    kids[tok.head].append(tok.i)
            self._children = kids
        return self._children[i]

    def invalidate(self) -> None:
        self._children = None


# ----------------------------------------------------------- UD → internal
_UD_DIRECT = {
    "root": "root", "nsubj": "nsubj", "nsubj:pass": "nsubjpass", "csubj": "csubj",
    "csubj:pass": "csubjpass", "expl": "expl", "obj": "dobj", "iobj": "dative", "amod": "amod",
    "nummod": "nummod", "compound": "compound", "flat": "compound", "compound:prt": "prt",
    "det": "det", "det:predet": "predet", "det:poss": "poss", "nmod:poss": "poss", "conj": "conj",
    "cc": "cc", "cc:preconj": "preconj", "advmod": "advmod", "acl:relcl": "relcl", "acl": "acl",
    "xcomp": "xcomp", "ccomp": "ccomp", "advcl": "advcl", "advcl:relcl": "relcl", "appos": "appos",
    "aux": "aux", "aux:pass": "auxpass", "mark": "mark", "punct": "punct", "dep": "dep",
    "parataxis": "parataxis", "discourse": "intj", "vocative": "npadvmod",
    "obl:npmod": "npadvmod", "obl:tmod": "npadvmod", "nmod:npmod": "npadvmod",
    "nmod:tmod": "npadvmod", "obl:unmarked": "npadvmod", "nmod:unmarked": "npadvmod",
    "advmod:emph": "advmod", "fixed": "fixed", "goeswith": "compound", "orphan": "dep",
    "list": "conj", "reparandum": "dep", "clf": "det", "dislocated": "dep",
}
# Subject-side dependents that belong to the clause, not to a predicate
# nominal/adjective: they move to the copula when it becomes the head.
_CLAUSAL = {"nsubj", "nsubj:pass", "csubj", "csubj:pass", "aux", "aux:pass", "mark", "expl", "punct"}


def from_universal(text: str, words: list[Token]) -> ParsedDoc:
    """Rewrite a Universal Dependencies parse (labels in ``Token.label``) into the internal form.

    Three rewrites, in this order: (1) a copula becomes the clause head, the
    former head its ``acomp`` (adjective), ``attr`` (nominal) or, when it has a
    preposition, an oblique handled next; (2) a ``case`` preposition becomes the
    head of its noun: ``prep`` (``agent`` for a passive "by") under what the
    noun modified, the noun its ``pobj``; multi-word prepositions (``fixed``)
    stay glued to their first word; (3) labels are renamed via ``_UD_DIRECT``.
    """
    toks = [replace(w) for w in words]
    kids: dict[int, list[int]] = {t.i: [] for t in toks}
    for t in toks:
        if t.head != t.i:
            kids[t.head].append(t.i)

    def reattach(child: int, head: int) -> None:
        old = toks[child].head
        if old != child and child in kids[old]:
            kids[old].remove(child)
        toks[child].head = head
        if head != child:
            kids[head].append(child)

    # (1) copula
    for t in toks:
        if t.label != "cop":
            continue
        pred = toks[t.head]
        if pred.i == t.i:
            continue
        has_case = any(toks[k].label == "case" for k in kids[pred.i])
        t.label = pred.label
        if pred.head == pred.i:
            t.head = t.i
            kids[pred.i].remove(t.i)
        else:
            reattach(t.i, pred.head)
        for k in list(kids[pred.i]):
            if toks[k].label in _CLAUSAL:
                reattach(k, t.i)
        reattach(pred.i, t.i)
        if has_case:
            pred.label = "obl"
        elif pred.pos in ("ADJ", "ADV"):
            pred.label = "acomp"
        else:
            pred.label = "attr"

    # (2) prepositions head their nouns
    for t in toks:
        if t.label != "case":
            continue
        noun = toks[t.head]
        if noun.i == t.i or noun.label in ("poss", "nmod:poss"):
            continue  # possessive 's stays a marker
        governor = noun.head
        if governor == noun.i:
            continue  # a fragment "on the table": leave the noun as root
        passive_by = (t.lemma.lower() == "by" and noun.label in ("obl", "obl:agent")
                      and any(toks[k].label == "aux:pass" or toks[k].label == "auxpass"
                              for k in kids[governor]))
        label = "agent" if noun.label == "obl:agent" or passive_by else "prep"
        reattach(t.i, governor)
        t.label = label
        reattach(noun.i, t.i)
        noun.label = "pobj"
    for t in toks:
        if t.label in ("obl", "obl:agent", "nmod", "nmod:agent"):
            t.label = "npadvmod" if t.label.startswith("obl") else "nmod"

    # (3) rename
    for t in toks:
        if t.label in ("acomp", "attr", "prep", "agent", "pobj", "npadvmod", "nmod"):
            continue
        if t.label == "case":
            t.label = "case"  # possessive marker
        else:
            t.label = _UD_DIRECT.get(t.label, t.label.split(":")[0])
        if t.head == t.i:
            t.label = "root"
    return ParsedDoc(text, toks)
