"""stages/host_inputs.py: the embedders an exported host names are rebuilt exactly from its host.json.
(The whole chain, a real clip to scores, runs as docs/model.md's snippet in tests/test_docs.py.)"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from schemas.errors import UserError
from schemas.options import identity
from stages.embed_text import EmbedTextConfig
from stages.embed_visual import EmbedVisualConfig
from stages.host_inputs import FileEmbedder, config_from, visual_config
from stages.hosts.clip import ClipOptions


@pytest.mark.parametrize("config", [
    EmbedVisualConfig(grid=5, cell_block=5, image_size=160),
    EmbedVisualConfig(name="clip", clip=ClipOptions(model="/models/clip-b32")),
    EmbedTextConfig(max_tokens=12, relation_context=True),
])
def test_a_config_is_rebuilt_from_its_stored_identity(config):
    rebuilt = config_from(type(config), identity(config))
    assert identity(rebuilt) == identity(config) and rebuilt == config


def test_a_host_recorded_before_the_precision_option_embeds_in_f32():
    stored = identity(EmbedVisualConfig(grid=2))
    assert stored["precision"] == "bf16" and visual_config(stored) == EmbedVisualConfig(grid=2)
    del stored["precision"]
    assert visual_config(stored) == EmbedVisualConfig(grid=2, precision="f32")


def test_a_host_that_names_no_embedders_is_one_line():
    with pytest.raises(UserError, match="names no embedders") as error:
        FileEmbedder(SimpleNamespace(info={"host": None}))
    assert "\n" not in str(error.value)
