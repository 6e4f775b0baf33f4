"""The spaCy caption parser, set up once for every rules test of this folder."""
import pytest

from stages.captions import ParseCaptionsConfig, build_caption_parser


@pytest.fixture(scope="session")
def parser():
    p = build_caption_parser(ParseCaptionsConfig(name="spacy"))
    p.setup()
    return p
