"""Negation through the spaCy backend: a denied fact is flagged, never asserted; negative quantifiers name nothing."""
import pytest

from stages.captions import to_factual
from tests.stages.captions.spacy_graphs import graph


def facts(tsg) -> set[tuple[str, str, str, bool]]:
    """(subject, predicate lemma, object or "", negated) of every relation; ("x", "is", attribute, negated)."""
    out = set()
    subj = {}
    obj = {}
    for e in tsg.edges:
        if e.kind == "subj_pred":
            subj.setdefault(e.dst, []).append(e.src)
        elif e.kind == "pred_obj":
            obj.setdefault(e.src, []).append(e.dst)
        elif e.kind == "obj_attr":
            out.add((tsg.nodes[e.src].lemma, "is", tsg.nodes[e.dst].lemma, tsg.nodes[e.dst].negated))
    for r in tsg.predicates():
        for s in subj.get(r.id, []):
            for o in obj.get(r.id, [None]):
                out.add((tsg.nodes[s].lemma, r.lemma, tsg.nodes[o].lemma if o is not None else "", r.negated))
    return out


@pytest.mark.parametrize("caption, expected", [
    ("The cat does not jump onto the kitchen counter.", "( cat , not jump onto , kitchen counter )"),
    ("The dog did not catch the frisbee.", "( dog , not catch , frisbee )"),
    ("The man never opens the door.", "( man , not open , door )"),
    ("The car is not red.", "( car , is , not red )"),
    ("the cat is not on the mat", "( cat , not on , mat )"),
    ("The woman isn't holding anything.", "( woman , is , not holding )"),
    ("The boy is holding nothing.", "( boy , is , not holding )"),
])
def test_a_denied_fact_is_written_with_not(parser, caption, expected):
    assert to_factual(graph(parser, caption)) == expected


def test_negated_relation_keeps_its_positive_words_and_the_flag(parser):
    tsg = graph(parser, "The cat does not jump onto the kitchen counter.")
    [rel] = tsg.predicates()
    assert (rel.lemma, rel.negated) == ("jump onto", True)
    assert not any(n.negated for n in tsg.objects())
    assert facts(graph(parser, "The cat jumps onto the kitchen counter.")) == {
        ("cat", "jump onto", "kitchen counter", False)}


def test_a_negative_quantifier_is_never_an_object(parser):
    for text in ("Nobody is riding the bicycle in the park.", "No one is sitting on the bench.",
                 "The woman isn't holding anything.", "The boy is holding nothing.",
                 "There are no people on the beach.", "The man talks to no one in particular."):
        labels = {n.label for n in graph(parser, text).objects()}
        assert not labels & {"nobody", "one", "no one", "anything", "nothing", "people"}, (text, labels)
    # nobody rides it: no relation is asserted, the bicycle is still there
    tsg = graph(parser, "Nobody is riding the bicycle in the park.")
    assert not any(not r.negated for r in tsg.predicates())
    assert {n.label for n in tsg.objects()} == {"bicycle", "park"}
    # "anything" names something when nothing denies it; "a no parking sign" is a sign
    assert "sign" in to_factual(graph(parser, "a no parking sign on a pole"))


def test_negation_in_a_relative_clause_and_its_scope(parser):
    got = facts(graph(parser, "A person, who is not smiling, waves at the camera."))
    assert got == {("person", "smile", "", True), ("person", "wave at", "camera", False)}
    assert "( person , is , not smiling )" in to_factual(graph(parser, "A person, who is not smiling, waves at the camera."))
    got = facts(graph(parser, "The dog does not bark or run."))
    assert got == {("dog", "bark", "", True), ("dog", "run", "", True)}
    got = facts(graph(parser, "The dog is not trying to catch the ball."))
    assert ("dog", "catch", "ball", True) in got and not any(f[3] is False for f in got if f[1] != "is")
    got = facts(graph(parser, "The dog does not bark and the cat runs."))
    assert ("dog", "bark", "", True) in got and ("cat", "run", "", False) in got
