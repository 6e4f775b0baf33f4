"""UD parses (stanza Documents built from CoNLL-U, no models) → internal form → TSG."""
import pytest

from stages.captions.depparse import from_universal
from stages.captions.factual import to_factual
from stages.captions.rules import build_tsg
from stages.captions.stanza_backend import StanzaCaptionParser, from_stanza
from stages.captions.base import ParseCaptionsConfig
from schemas.errors import UserError

conll = pytest.importorskip("stanza.utils.conll")


def ud_doc(text, rows):
    """rows: (form, lemma, upos, xpos, head, deprel); 1-based heads as in CoNLL-U."""
    lines = [f"# text = {text}"]
    for i, (form, lemma, upos, xpos, head, rel) in enumerate(rows, 1):
        lines.append(f"{i}\t{form}\t{lemma}\t{upos}\t{xpos}\t_\t{head}\t{rel}\t_\t_")
    return conll.CoNLL.conll2doc(input_str="\n".join(lines) + "\n\n", reconstruct_text=True)


CAR_IS_RED = ("The car is red", [
    ("The", "the", "DET", "DT", 2, "det"), ("car", "car", "NOUN", "NN", 4, "nsubj"),
    ("is", "be", "AUX", "VBZ", 4, "cop"), ("red", "red", "ADJ", "JJ", 0, "root")])
MAN_SITS = ("A man sits on a bench", [
    ("A", "a", "DET", "DT", 2, "det"), ("man", "man", "NOUN", "NN", 3, "nsubj"),
    ("sits", "sit", "VERB", "VBZ", 0, "root"), ("on", "on", "ADP", "IN", 6, "case"),
    ("a", "a", "DET", "DT", 6, "det"), ("bench", "bench", "NOUN", "NN", 3, "obl")])
CAT_ON_MAT = ("The cat is on the mat", [
    ("The", "the", "DET", "DT", 2, "det"), ("cat", "cat", "NOUN", "NN", 6, "nsubj"),
    ("is", "be", "AUX", "VBZ", 6, "cop"), ("on", "on", "ADP", "IN", 6, "case"),
    ("the", "the", "DET", "DT", 6, "det"), ("mat", "mat", "NOUN", "NN", 0, "root")])
DOGS_RUN = ("Two dogs run quickly in the park", [
    ("Two", "two", "NUM", "CD", 2, "nummod"), ("dogs", "dog", "NOUN", "NNS", 3, "nsubj"),
    ("run", "run", "VERB", "VBP", 0, "root"), ("quickly", "quickly", "ADV", "RB", 3, "advmod"),
    ("in", "in", "ADP", "IN", 7, "case"), ("the", "the", "DET", "DT", 7, "det"),
    ("park", "park", "NOUN", "NN", 3, "obl")])
BEAR = ("A bear surrounded by grass", [
    ("A", "a", "DET", "DT", 2, "det"), ("bear", "bear", "NOUN", "NN", 0, "root"),
    ("surrounded", "surround", "VERB", "VBN", 2, "acl"), ("by", "by", "ADP", "IN", 5, "case"),
    ("grass", "grass", "NOUN", "NN", 3, "obl:agent")])
COUPLE = ("A man and a woman sit on a bench", [
    ("A", "a", "DET", "DT", 2, "det"), ("man", "man", "NOUN", "NN", 6, "nsubj"),
    ("and", "and", "CCONJ", "CC", 5, "cc"), ("a", "a", "DET", "DT", 5, "det"),
    ("woman", "woman", "NOUN", "NN", 2, "conj"), ("sit", "sit", "VERB", "VBP", 0, "root"),
    ("on", "on", "ADP", "IN", 9, "case"), ("a", "a", "DET", "DT", 9, "det"),
    ("bench", "bench", "NOUN", "NN", 6, "obl")])
DOG_FRONT = ("a dog in front of a red car", [
    ("a", "a", "DET", "DT", 2, "det"), ("dog", "dog", "NOUN", "NN", 0, "root"),
    ("in", "in", "ADP", "IN", 8, "case"), ("front", "front", "NOUN", "NN", 3, "fixed"),
    ("of", "of", "ADP", "IN", 3, "fixed"), ("a", "a", "DET", "DT", 8, "det"),
    ("red", "red", "ADJ", "JJ", 8, "amod"), ("car", "car", "NOUN", "NN", 2, "nmod")])
MAN_WEARING = ("a man wearing a hat", [
    ("a", "a", "DET", "DT", 2, "det"), ("man", "man", "NOUN", "NN", 0, "root"),
    ("wearing", "wear", "VERB", "VBG", 2, "acl"), ("a", "a", "DET", "DT", 5, "det"),
    ("hat", "hat", "NOUN", "NN", 3, "obj")])


@pytest.mark.parametrize("sentence, expected", [
    (CAR_IS_RED, "( car , is , red )"),
    (MAN_SITS, "( man , sit on , bench )"),
    (CAT_ON_MAT, "( cat , on , mat )"),
    (DOGS_RUN, "( dogs , run in , park ) , ( dogs , is , 2 )"),
    (BEAR, "( grass , surround , bear )"),
    (COUPLE, "( man , sit on , bench ) , ( woman , sit on , bench )"),
    (DOG_FRONT, "( dog , in front of , car ) , ( car , is , red )"),
    (MAN_WEARING, "( man , wear , hat )"),
])
def test_ud_parse_gives_the_same_graph_as_the_rules_promise(sentence, expected):
    text, rows = sentence
    doc = from_stanza(ud_doc(text, rows))
    assert doc.text == text
    assert to_factual(build_tsg(doc, "c#0")) == expected


def test_copula_and_case_are_rewritten_into_the_clearnlp_shape():
    doc = from_stanza(ud_doc(*CAT_ON_MAT))
    by_text = {t.text: t for t in doc.tokens}
    assert by_text["is"].label == "root" and by_text["is"].head == by_text["is"].i
    assert by_text["cat"].label == "nsubj" and by_text["cat"].head == by_text["is"].i
    assert by_text["on"].label == "prep" and by_text["on"].head == by_text["is"].i
    assert by_text["mat"].label == "pobj" and by_text["mat"].head == by_text["on"].i
    red = {t.text: t for t in from_stanza(ud_doc(*CAR_IS_RED)).tokens}["red"]
    assert red.label == "acomp"


def test_passive_agent_and_offsets():
    doc = from_stanza(ud_doc(*BEAR))
    by_text = {t.text: t for t in doc.tokens}
    assert by_text["by"].label == "agent" and by_text["grass"].label == "pobj"
    for tok in doc.tokens:
        assert doc.text[tok.start:tok.end] == tok.text


def test_adverb_becomes_a_predicate_attribute():
    tsg = build_tsg(from_stanza(ud_doc(*DOGS_RUN)), "c#0")
    adverbs = [n for n in tsg.nodes if n.kind == "pred_attribute"]
    assert [a.label for a in adverbs] == ["quickly"]
    edge = next(e for e in tsg.edges if e.kind == "pred_adv")
    assert tsg.nodes[edge.src].kind == "relation" and tsg.nodes[edge.dst].label == "quickly"
    assert tsg.objects()[0].count == 2


def test_from_universal_leaves_an_empty_parse_empty():
    assert from_universal("", []).tokens == []


def test_missing_stanza_models_is_a_user_error_with_the_download_step(tmp_path):
    pytest.importorskip("stanza")
    parser = StanzaCaptionParser(ParseCaptionsConfig(name="stanza", stanza_dir=str(tmp_path)))
    with pytest.raises(UserError, match=r"stanza\.download\('en'\)"):
        parser.setup()


class FakeStanzaPipeline:
    """Test double for a loaded stanza Pipeline (its models cannot be downloaded here):
    answers bulk_process with CoNLL-U-built Documents for the texts it knows."""

    def __init__(self, parses):
        self.parses = parses
        self.seen = []

    def bulk_process(self, docs):
        self.seen.extend(d.text for d in docs)
        return [ud_doc(d.text, self.parses[d.text]) for d in docs]


def test_stanza_parser_batches_prepares_and_restores_offsets():
    parses = {"the dog runs quickly": [
        ("the", "the", "DET", "DT", 2, "det"), ("dog", "dog", "NOUN", "NN", 3, "nsubj"),
        ("runs", "run", "VERB", "VBZ", 0, "root"), ("quickly", "quickly", "ADV", "RB", 3, "advmod")],
        **{CAR_IS_RED[0]: CAR_IS_RED[1]}}
    parser = StanzaCaptionParser(ParseCaptionsConfig(name="stanza"))
    parser.nlp = FakeStanzaPipeline(parses)
    texts = ["dog  runs quickly", "", CAR_IS_RED[0]]
    docs = parser.parse(texts)
    assert parser.nlp.seen == ["the dog runs quickly", CAR_IS_RED[0]]  # one batch, empty caption skipped
    assert [d.text for d in docs] == texts and docs[1].tokens == []
    assert [t.text for t in docs[0].tokens] == ["dog", "runs", "quickly"]
    for t in docs[0].tokens:
        assert texts[0][t.start:t.end] == t.text
    tsg = build_tsg(docs[0], "c#0")
    assert [n.label for n in tsg.nodes if n.kind == "pred_attribute"] == ["quickly"]
    assert to_factual(build_tsg(docs[2], "c#2")) == "( car , is , red )"
