"""One caption → its TSG through the ``parser`` fixture (conftest.py)."""
from stages.captions import build_tsg
from schemas.records import TextSceneGraph


def graph(parser, text: str) -> TextSceneGraph:
    return build_tsg(parser.parse([text])[0], "c#0")
