"""stanza backend: ``tokenize,pos,lemma,depparse`` (Universal Dependencies), batched.

stanza and its English models are imported/loaded lazily in ``setup()``. The
models are downloaded separately (this is the step a user runs once)::

    python -c "import stanza; stanza.download('en')"      # → ~/stanza_resources
    python cli.py parse-captions caps.txt --parser stanza --stanza-dir DIR

:func:`from_stanza` turns a stanza ``Document`` (one per caption) into the
internal form via :func:`stages.captions.depparse.from_universal`; it needs no
models, so it is tested on Documents built from CoNLL-U text.
"""
from __future__ import annotations

from typing import Any

from schemas.errors import UserError
from stages.captions.base import ParseCaptionsConfig, prepare, restore
from stages.captions.depparse import ParsedDoc, Token, from_universal
from stages.registry import CAPTION_PARSERS

PROCESSORS = "tokenize,pos,lemma,depparse"
INSTALL_HINT = ('download them once with: python -c "import stanza; stanza.download(\'en\')" '
                "(or point --stanza-dir at a folder that holds them)")


def from_stanza(doc: Any, text: str | None = None) -> ParsedDoc:
    """A stanza ``Document`` in the internal form; words get doc-wide indices.

    Multi-word tokens ("don't" → do, n't) share their token's character span.
    ``text`` defaults to ``doc.text``.
    """
    text = doc.text if text is None else text
    words: list[Token] = []
    for s, sent in enumerate(doc.sentences):
        base = len(words)
        for word in sent.words:
            start = word.start_char if word.start_char is not None else word.parent.start_char
            end = word.end_char if word.end_char is not None else word.parent.end_char
            head = base + word.head - 1 if word.head else base + word.id - 1
            words.append(Token(base + word.id - 1, word.text, word.lemma or word.text.lower(),
                               word.upos or "X", word.xpos or "", head, word.deprel or "dep",
                               start if start is not None else 0, end if end is not None else 0, s))
    return from_universal(text or "", words)


@CAPTION_PARSERS.register("stanza")
class StanzaCaptionParser:
    def __init__(self, cfg: ParseCaptionsConfig):
        self.cfg = cfg
        self.nlp: Any = None

    @classmethod
    def preflight(cls, cfg: ParseCaptionsConfig) -> None:
        """stanza importable and its English models on disk (checked before any worker starts)."""
        import importlib.util
        from pathlib import Path

        if importlib.util.find_spec("stanza") is None:
            raise UserError("the stanza parser needs the stanza package: pip install stanza")
        where = Path(cfg.stanza_dir or Path.home() / "stanza_resources").expanduser()
        if not (where / "en").is_dir():
            raise UserError(f"stanza English models not found in {where}: {INSTALL_HINT}")

    def setup(self) -> None:
        if self.nlp is not None:
            return
        try:
            import stanza
        except ImportError as error:
            raise UserError("the stanza parser needs the stanza package: pip install stanza") from error
        kwargs = {"dir": self.cfg.stanza_dir} if self.cfg.stanza_dir else {}
        try:
            self.nlp = stanza.Pipeline("en", processors=PROCESSORS, download_method=None,
                                       use_gpu=self.cfg.use_gpu, logging_level="WARN",
                                       tokenize_batch_size=self.cfg.batch_size,
                                       depparse_batch_size=self.cfg.batch_size * 20, **kwargs)
        except (FileNotFoundError, OSError, ValueError) as error:
            where = self.cfg.stanza_dir or "~/stanza_resources"
            raise UserError(f"stanza English models not found in {where}: {INSTALL_HINT}") from error

    def parse(self, texts: list[str]) -> list[ParsedDoc]:
        import stanza

        if self.nlp is None:
            raise RuntimeError("StanzaParser.parse before setup()")
        prepared = [prepare(t, self.cfg.max_chars, self.cfg.add_article) for t in texts]
        live = [i for i, p in enumerate(prepared) if p.text]
        out = [ParsedDoc(t) for t in texts]
        if live:
            docs = self.nlp.bulk_process([stanza.Document([], text=prepared[i].text) for i in live])
            for i, doc in zip(live, docs):
                out[i] = restore(from_stanza(doc, prepared[i].text), texts[i], prepared[i])
        return out
