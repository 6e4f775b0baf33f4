"""Caption → TSG rules through the spaCy backend (the default, installed here)."""
import pytest

from stages.captions import build_tsg, to_factual
from stages.captions.depparse import ParsedDoc, Token
from tests.stages.captions.spacy_graphs import graph


def segments(parser, text):
    return set(to_factual(graph(parser, text)).split(" , ( "))


@pytest.mark.parametrize("caption, expected", [
    # objects, compounds, counts, attributes
    ("white stove in a kitchen", "( stove , in , kitchen ) , ( stove , is , white )"),
    ("a large tree trunk", "( tree trunk , is , large )"),
    ("five boats tied to a dock", "( boats , tie to , dock ) , ( boats , is , 5 )"),
    ("thick tree with dark green leaves",
     "( tree , with , leaves ) , ( tree , is , thick ) , ( leaves , is , dark green )"),
    # copula
    ("the car is red", "( car , is , red )"),
    ("the cat is on the mat", "( cat , on , mat )"),
    ("the cat is next to a wall", "( cat , next to , wall )"),
    # subject–verb–object, prepositions, phrasal verbs
    ("the man is wearing black glasses .", "( man , wear , glasses ) , ( glasses , is , black )"),
    ("a dog coming out of the water", "( dog , come out of , water )"),
    ("grey lights on top of pole", "( lights , on top of , pole ) , ( lights , is , grey )"),
    ("the frisbee is in front of the dog", "( frisbee , in front of , dog )"),
    # passives: agent becomes the subject; placement verbs keep "by"
    ("bear surrounded by grass", "( grass , surround , bear )"),
    ("cars are parked by the building .", "( cars , park by , building )"),
    # relative clause, coordination
    ("metal poles that make a fence", "( poles , make , fence ) , ( poles , is , metal )"),
    ("a man and a woman sit on a bench", "( man , sit on , bench ) , ( woman , sit on , bench )"),
    ("a plate containing a lemon and a banana .", "( plate , contain , lemon ) , ( plate , contain , banana )"),
    # quantities, "of", possessives, existentials
    ("group of people walking on the grass", "( people , walk on , grass ) , ( people , is , group of )"),
    ("the seat of the toilet", "( toilet , have , seat )"),
    ("girl 's jacket is purple", "( girl , have , jacket ) , ( jacket , is , purple )"),
    ("there are a bunch of kites in the sky", "( kites , in , sky )"),
    # covering passives, "on top", stranded prepositions, closed compounds, states
    ("the bench is covered with snow", "( snow , cover , bench )"),
    ("toy truck with plant on top", "( plant , on top of , truck ) , ( truck , is , toy )"),
    ("blue table the plates are on", "( plates , on , table ) , ( table , is , blue )"),
    ("a man wearing a black wet suit", "( man , wear , wetsuit ) , ( wetsuit , is , black )"),
    ("several pedestrians walking outside .", "( pedestrians , is , walking ) , ( pedestrians , is , outside )"),
    # reciprocals: two instances of one object
    ("two giraffes standing together", "( giraffe , stand next to , giraffe )"),
    ("two elephants playing with each other", "( elephant , play with , elephant )"),
    # pronouns
    ("a toiled bowl with flowers in it", "( bowl , with , flowers ) , ( flowers , in , bowl ) , ( bowl , is , toiled )"),
    ("he is skiing down the mountain .", "( man , ski down , mountain )"),
])
def test_caption_gives_expected_factual_graph(parser, caption, expected):
    assert set(to_factual(graph(parser, caption)).split(" , ( ")) == set(expected.split(" , ( "))


def test_adverb_of_a_verb_is_a_predicate_attribute(parser):
    tsg = graph(parser, "a man runs quickly")
    [adv] = [n for n in tsg.nodes if n.kind == "pred_attribute"]
    assert (adv.label, adv.lemma) == ("quickly", "quickly")
    [edge] = [e for e in tsg.edges if e.kind == "pred_adv"]
    rel = tsg.nodes[edge.src]
    assert rel.kind == "relation" and rel.lemma == "run" and edge.dst == adv.id
    [subj] = [e for e in tsg.edges if e.kind == "subj_pred"]
    assert tsg.nodes[subj.src].label == "man" and subj.dst == rel.id


def test_plural_count_and_spans(parser):
    text = "two dogs sit on a red bench"
    tsg = graph(parser, text)
    dogs = next(n for n in tsg.objects() if n.label == "dogs")
    assert dogs.count == 2 and dogs.lemma == "dog"
    for node in tsg.nodes:
        start, end = node.span
        assert 0 <= start <= end <= len(text)
        assert node.kind != "object" or text[start:end].lower() == node.label
    assert [n.id for n in tsg.nodes] == list(range(len(tsg.nodes)))


def test_coordinated_subjects_share_one_relation_node(parser):
    tsg = graph(parser, "a man and a woman sit on a bench")
    [rel] = tsg.predicates()
    subjects = sorted(tsg.nodes[e.src].label for e in tsg.edges if e.kind == "subj_pred" and e.dst == rel.id)
    assert subjects == ["man", "woman"] and rel.lemma == "sit on"


def test_rules_on_a_hand_built_parse():
    """The rules read only the internal form: no model needed."""
    text = "a red ball under the table"
    words = [("a", "a", "DET", "DT", 2, "det"), ("red", "red", "ADJ", "JJ", 2, "amod"),
             ("ball", "ball", "NOUN", "NN", 2, "root"), ("under", "under", "ADP", "IN", 2, "prep"),
             ("the", "the", "DET", "DT", 5, "det"), ("table", "table", "NOUN", "NN", 3, "pobj")]
    tokens, at = [], 0
    for i, (w, lemma, pos, tag, head, label) in enumerate(words):
        start = text.index(w, at)
        tokens.append(Token(i, w, lemma, pos, tag, head, label, start, start + len(w)))
        at = start + len(w)
    tsg = build_tsg(ParsedDoc(text, tokens), "x#1", start=1.5, end=3.0)
    assert to_factual(tsg) == "( ball , under , table ) , ( ball , is , red )"
    assert (tsg.caption_id, tsg.start, tsg.end) == ("x#1", 1.5, 3.0)
