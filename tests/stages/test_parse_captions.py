"""ParseCaptionsStage: batching, ids and times, bad input, failures."""
import pytest

from schemas.errors import UserError
from stages.base import CaptionInput, VideoTask
from stages.captions import ParseCaptionsConfig, build_caption_parser
from stages.parse_captions import ParseCaptionsStage
from stages.captions.depparse import ParsedDoc


@pytest.fixture(scope="module")
def stage():
    s = ParseCaptionsStage(ParseCaptionsConfig(name="spacy", hard_negatives=0))   # negatives: test_negatives
    s.setup()
    return s


def task(key, *texts):
    return VideoTask(key, "test", key, f"{key}.mp4",
                     captions=[CaptionInput(t, start=float(i), end=float(i) + 1.5) for i, t in enumerate(texts)])


def check_valid(tsg):
    assert [n.id for n in tsg.nodes] == list(range(len(tsg.nodes)))
    for n in tsg.nodes:
        assert n.kind in ("object", "attribute", "relation", "pred_attribute")
        assert 0 <= n.span[0] <= n.span[1] <= len(tsg.text)
    for e in tsg.edges:
        assert 0 <= e.src < len(tsg.nodes) and 0 <= e.dst < len(tsg.nodes)
        kinds = (tsg.nodes[e.src].kind, tsg.nodes[e.dst].kind)
        assert kinds == {"obj_attr": ("object", "attribute"), "subj_pred": ("object", "relation"),
                         "pred_obj": ("relation", "object"),
                         "pred_adv": ("relation", "pred_attribute")}[e.kind]


def test_fills_one_tsg_per_caption_with_ids_and_times(stage):
    [a, b] = stage.process_batch([task("v1", "a dog runs on the grass", "a cat sleeps"), task("v2", "a red car")])
    assert [t.caption_id for t in a.tsgs] == ["v1#0", "v1#1"]
    assert [(t.start, t.end) for t in a.tsgs] == [(0.0, 1.5), (1.0, 2.5)]
    assert b.tsgs[0].caption_id == "v2#0" and b.tsgs[0].text == "a red car"
    assert a.failure is None and "parse_captions" in a.stage_seconds


def test_one_parser_call_for_the_whole_batch(stage):
    calls = []
    real = stage.parser.parse

    def spy(texts):
        calls.append(len(texts))
        return real(texts)

    stage.parser.parse = spy
    try:
        stage.process_batch([task("a", "one dog", "two dogs"), task("b", "three cats")])
    finally:
        stage.parser.parse = real
    assert calls == [3]


BAD = {
    "empty": "",
    "whitespace": " \t  \n ",
    "long": "a man rides a red bike on the road . " * 300,
    "german": "Ein Hund läuft schnell durch den großen Park.",
    "chinese": "一只狗在公园里跑",
    "emoji": "🐶🐶 🚲 😀",
    "html": "<p>a <b>cat</b> on a <i>mat</i></p><script>x()</script>",
    "punctuation": "!!! ... ,,, ??? --- ;;",
    "control": "a dog\x00\x07 on\u200b a mat",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_gives_a_valid_graph_never_a_crash(stage, name):
    [t] = stage.process_batch([task("bad", BAD[name])])
    assert t.failure is None
    [tsg] = t.tsgs
    assert tsg.text == BAD[name]
    check_valid(tsg)


def test_empty_and_punctuation_give_empty_graphs_and_html_tags_are_not_objects(stage):
    [t] = stage.process_batch([task("x", BAD["empty"], BAD["whitespace"], BAD["punctuation"], BAD["html"])])
    assert [len(g.nodes) for g in t.tsgs[:3]] == [0, 0, 0]
    labels = {n.label for n in t.tsgs[3].objects()}
    assert {"cat", "mat"} <= labels and not any("<" in l or ">" in l for l in labels)


def test_a_broken_parser_fails_the_batch_as_failure_records():
    class BrokenParser:  # test double: a backend whose model crashes
        def setup(self):
            pass

        def parse(self, texts):
            raise RuntimeError("model exploded")

    s = ParseCaptionsStage()
    s.parser = BrokenParser()
    [a, b] = s.process_batch([task("a", "a dog"), task("b", "a cat")])
    assert a.failure.stage == "parse_captions" and a.failure.error_type == "caption_parse"
    assert "model exploded" in b.failure.message and a.tsgs == []


def test_a_parser_returning_too_few_docs_fails_the_task_not_the_process():
    class ShortParser:  # test double: returns nothing for the second caption
        def setup(self):
            pass

        def parse(self, texts):
            return [ParsedDoc(t) for t in texts[:1]]

    s = ParseCaptionsStage()
    s.parser = ShortParser()
    [a] = s.process_batch([task("a", "a dog", "a cat")])
    assert a.failure is None or a.failure.stage == "parse_captions"


def test_tasks_that_already_failed_are_skipped(stage):
    t = task("f", "a dog")
    t.fail("decode", RuntimeError("no video"))
    [out] = stage.process_batch([t])
    assert out.tsgs == [] and out.failure.stage == "decode"


def test_unknown_backend_is_a_user_error():
    with pytest.raises(UserError, match="unknown caption parser"):
        build_caption_parser(ParseCaptionsConfig(name="nope"))


def test_real_captions_get_hard_negatives_after_them_like_the_synthetic_ones():
    stage = ParseCaptionsStage(ParseCaptionsConfig(name="spacy", hard_negatives=2))
    stage.setup()
    [done] = stage.process_batch([task("v1", "A young woman is riding a brown horse.", "Two men are talking.")])
    real = [c for c in done.captions if c.negative_of is None]
    negatives = [c for c in done.captions if c.negative_of is not None]
    assert [c.text for c in real] == ["A young woman is riding a brown horse.", "Two men are talking."]
    assert done.captions[:2] == real and len(negatives) == done.counts["hard_negatives_made"] >= 2
    assert {c.negative_type for c in negatives} <= {"swap_subject_object", "change_relation", "change_attribute"}
    for c in negatives:
        assert (c.start, c.end) == (real[c.negative_of].start, real[c.negative_of].end)
    assert [t.caption_id for t in done.tsgs] == [f"v1#{i}" for i in range(len(done.captions))]
    assert [t.text for t in done.tsgs] == [c.text for c in done.captions]
    for tsg in done.tsgs:
        check_valid(tsg)
    # a sample bringing its own negatives (the synthetic world) keeps them and gets no more
    own = task("v2", "a red circle moves left")
    own.captions.append(CaptionInput("a red circle moves right", 0.0, 1.5, negative_of=0, negative_type="change_relation"))
    [kept] = stage.process_batch([own])
    assert len(kept.captions) == len(kept.tsgs) == 2 and "hard_negatives_made" not in kept.counts
