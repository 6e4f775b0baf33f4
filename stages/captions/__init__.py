"""Caption → textual scene graph: parser backends, rules, FACTUAL notation, the stage.

Importing this package registers every backend (``spacy``, ``stanza``); their
heavy imports happen in ``setup()``.

Example::

    from stages.captions import CaptionParserConfig, build_caption_parser, build_tsg
    parser = build_caption_parser(CaptionParserConfig(name="spacy"))
    [doc] = parser.parse(["a man sits on a bench"])
    to_factual(build_tsg(doc, "c#0"))   # '( man , sit on , bench )'
"""
from stages.captions.base import CaptionParserConfig, build_caption_parser
from stages.captions.depparse import ParsedDoc, Token
from stages.captions import spacy_backend, stanza_backend  # noqa: F401  (registration)
from stages.captions.rules import build_tsg
from stages.captions.factual import parse_factual, to_factual
from stages.captions.stage import CaptionParseStage

__all__ = ["CaptionParserConfig", "build_caption_parser", "ParsedDoc", "Token", "build_tsg",
           "parse_factual", "to_factual", "CaptionParseStage"]
