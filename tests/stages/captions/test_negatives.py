"""Hard negatives from a caption's TSG: each kind, and each edit refused because it could stay true."""
import pytest

from stages.captions.negatives import (change_attribute, change_relation, make_negatives, reverse_order,
                                       swap_subject_object)
from stages.parse_captions import parse_texts
from stages.predicate_prior import PredicatePrior


@pytest.fixture(scope="module")
def prior():
    return PredicatePrior.load()


@pytest.fixture
def tsg(parser):
    return lambda text: parse_texts(parser, [text])[0]


def test_swap_subject_object_moves_whole_phrases_and_fixes_articles(tsg):
    text = "A young lady is gripping a black and silver punching bag between her legs."
    assert swap_subject_object(text, tsg(text)) == \
        "A black and silver punching bag is gripping a young lady between her legs."
    assert swap_subject_object("A man is riding an old horse.", tsg("A man is riding an old horse.")) == \
        "An old horse is riding a man."


@pytest.mark.parametrize("text", [
    "He is riding a horse.",                      # a pronoun: no phrase to move
    "A man is talking with a woman.",             # symmetric: still true swapped
    "A man hugs a woman.",
    "Two men are lifting a bar.",                 # plural and singular: the swap would not agree
    "A man is seen on a horse.",                  # "is seen": no agent
    "The man holding the rope and then the dog.",
])
def test_swap_is_refused_where_it_could_stay_true_or_break(text, tsg):
    assert swap_subject_object(text, tsg(text)) is None


def test_change_relation_takes_a_prior_predicate_of_other_geometry_inflected_like_the_original(tsg, prior):
    text = "A person is standing in front of a sink."
    assert change_relation(text, tsg(text), prior) == "A person is sitting on a sink."
    assert change_relation("A person stands in front of a sink.", tsg("A person stands in front of a sink."),
                           prior) == "A person sits on a sink."
    # riding and sitting on a horse can both be true (both "on"); "pets" has no geometry to compare
    assert change_relation("A man is riding a horse.", tsg("A man is riding a horse."), prior) is None
    assert change_relation("A person stood in front of a sink.", tsg("A person stood in front of a sink."),
                           prior) is None   # past tense: not inflected by guesswork


def test_change_attribute_stays_in_its_family(tsg):
    assert change_attribute("Two men are standing on a mat.", tsg("Two men are standing on a mat.")) == \
        "Four men are standing on a mat."
    assert change_attribute("A man in a green shirt waves.", tsg("A man in a green shirt waves.")) == \
        "A man in a red shirt waves."
    assert change_attribute("A man with a guitar sings.", tsg("A man with a guitar sings.")) is None


def test_reverse_order_swaps_connectives_or_clauses_with_their_own_subject():
    assert reverse_order("He fills a glass with ice before pouring liquor in.") == \
        "He fills a glass with ice after pouring liquor in."
    assert reverse_order("Then she kneels down on the mat and then she sits on her feet.") == \
        "She sits on her feet and then she kneels down on the mat."
    assert reverse_order("A boy runs after a ball.") is None          # "after" as chasing, not time
    assert reverse_order("The man picks up the bar then lifts it.") is None   # no subject of its own


def test_make_negatives_gives_distinct_kinds_up_to_the_limit(tsg, prior):
    text = "A young woman is standing in front of a sink before leaving."
    out = make_negatives(text, tsg(text), prior, limit=3)
    assert len(out) == 3 and len({kind for _, kind in out}) == 3 and all(neg != text for neg, _ in out)
    assert make_negatives(text, tsg(text), prior, limit=0) == []
    assert make_negatives(text, tsg(text), prior, limit=1, offset=2)[0] == (
        "An old woman is standing in front of a sink before leaving.", "change_attribute")
