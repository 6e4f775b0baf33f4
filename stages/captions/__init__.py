"""Caption → textual scene graph: parser backends, rules, FACTUAL notation (the stage: stages/parse_captions.py).

Importing this package registers every backend (``spacy``, ``stanza``, ``learned``); their
heavy imports happen in ``setup()``.

Example::

    from stages.captions import ParseCaptionsConfig, build_caption_parser, build_tsg
    parser = build_caption_parser(ParseCaptionsConfig(name="spacy"))
    [doc] = parser.parse(["a man sits on a bench"])
    to_factual(build_tsg(doc, "c#0"))   # '( man , sit on , bench )'
"""
from stages.captions.base import ParseCaptionsConfig, build_caption_parser
from stages.captions.depparse import ParsedDoc, Token
from stages.captions import learned, spacy_backend, stanza_backend  # noqa: F401  (registration)
from stages.captions.rules import build_tsg
from stages.captions.factual import parse_factual, to_factual

__all__ = ["ParseCaptionsConfig", "build_caption_parser", "ParsedDoc", "Token", "build_tsg",
           "parse_factual", "to_factual"]
