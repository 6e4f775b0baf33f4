"""Templated captions: gold TSG spans and references, hard negatives, FACTUAL form."""
import numpy as np
from hypothesis import given, settings, strategies as st

from pipeline.synthetic.captions import (NEGATIVE_TYPES, Clause, caption_world, hard_negatives, render_sentence,
                                         tsg_from_dict, tsg_to_dict)
from stages.captions.factual import to_factual
from pipeline.synthetic.world import WorldConfig, WorldObject, sample_world


def world(seed, difficulty="medium"):
    cfg = WorldConfig(duration=6.0, difficulty=difficulty)
    rng = np.random.default_rng([seed, 0])
    return sample_world(cfg, rng, f"synth_{seed}_00000"), rng


def fixed_world():
    w, _ = world(0)
    w.objects = [WorldObject(0, "circle", "red", "small", 24.0), WorldObject(1, "square", "blue", "large", 48.0),
                 WorldObject(2, "triangle", "orange", "small", 24.0)]
    return w


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 5000), difficulty=st.sampled_from(["medium", "hard"]))
def test_gold_tsg_spans_refs_and_negatives_are_consistent(seed, difficulty):
    w, rng = world(seed, difficulty)
    captions = caption_world(w, rng)
    assert captions and [c.start for c in captions] == sorted(c.start for c in captions)
    for c in captions:
        assert 0 <= c.start < c.end <= w.config.duration + 1e-9
        assert c.text[0].isupper() and c.text.endswith(".")
        for node in c.tsg.nodes:
            assert c.text[node.span[0]:node.span[1]].lower() == node.label.lower()
        assert [n.id for n in c.tsg.nodes] == list(range(len(c.tsg.nodes)))
        objects = {n.id for n in c.tsg.objects()}
        assert set(c.refs) == objects
        for node_id, obj_id in c.refs.items():
            obj = w.objects[obj_id]
            assert c.tsg.nodes[node_id].label == obj.shape
            attrs = {c.tsg.nodes[e.dst].label for e in c.tsg.edges if e.src == node_id and e.kind == "obj_attr"}
            assert obj.color in attrs
        assert c.negatives, c.text                      # every caption has at least one hard negative
        assert len({n.type for n in c.negatives}) == len(c.negatives)
        for n in c.negatives:
            assert n.type in NEGATIVE_TYPES and n.text != c.text
            assert n.type != "reverse_order" or len(c.clauses) == 2


def test_templates_cover_voice_coordination_and_adverbs():
    w = fixed_world()
    text, tsg, refs = render_sentence(w, [Clause("move", (0, 1), direction="left", adverb="quickly", form=0)],
                                      None, "c", 0.0, 1.0, frozenset())
    assert text == "The red circle and the blue square move left quickly."
    kinds = [(n.kind, n.label, n.lemma) for n in tsg.nodes]
    assert kinds == [("attribute", "red", "red"), ("object", "circle", "circle"), ("attribute", "blue", "blue"),
                     ("object", "square", "square"), ("relation", "move", "move"),
                     ("pred_attribute", "left", "left"), ("pred_attribute", "quickly", "quickly")]
    assert sorted((e.src, e.dst, e.kind) for e in tsg.edges) == [
        (1, 0, "obj_attr"), (1, 4, "subj_pred"), (3, 2, "obj_attr"), (3, 4, "subj_pred"),
        (4, 5, "pred_adv"), (4, 6, "pred_adv")]
    assert refs == {1: 0, 3: 1}           # red(0) circle(1) blue(2) square(3)

    text, tsg, _ = render_sentence(w, [Clause("approach", (0,), object=1, adverb="slowly", form=3)],
                                   None, "c", 0.0, 1.0, frozenset({1}))
    assert text == "The large blue square is slowly approached by the red circle."
    assert to_factual(tsg) == ("( circle , approach , square ) , ( square , is , large ) , ( square , is , blue ) , "
                               "( circle , is , red )")
    assert [n.label for n in tsg.nodes if n.kind == "pred_attribute"] == ["slowly"]

    text, tsg, _ = render_sentence(w, [Clause("appear", (2,)), Clause("move_away", (0,), object=1, form=0)],
                                   "then", "c", 0.0, 1.0, frozenset())
    assert text == "An orange triangle appears, then the red circle moves away from the blue square."
    assert to_factual(tsg) == ("( circle , move away from , square ) , ( triangle , is , orange ) , "
                               "( circle , is , red ) , ( square , is , blue )")


def test_hard_negatives_swap_reverse_and_change():
    w = fixed_world()
    rng = np.random.default_rng(0)
    clauses = [Clause("spatial", (0,), object=1, predicate="left of", form=1),
               Clause("move", (2,), direction="up", adverb="slowly", form=0)]
    out = {t: render_sentence(w, c, conn, "n", 0, 1, frozenset())[0]
           for t, c, conn in hard_negatives(clauses, "before", rng)}
    assert out["swap_subject_object"] == "The blue square is left of the red circle before the orange triangle moves up slowly."
    assert out["reverse_order"] == "The orange triangle moves up slowly before the red circle is left of the blue square."
    assert out["change_relation"] in ("The red circle is right of the blue square before the orange triangle moves up slowly.",
                                      "The red circle is left of the blue square before the orange triangle moves down slowly.")
    assert out["change_adverb"].endswith(("moves up quickly.", "moves up rapidly.", "moves up fast."))
    # "near" is symmetric: swapping its arguments would not make a false caption
    assert [t for t, _, _ in hard_negatives([Clause("spatial", (0,), object=1, predicate="near")], None, rng)] \
        == ["change_relation"]


def test_tsg_dict_round_trip():
    w, rng = world(4)
    tsg = caption_world(w, rng)[0].tsg
    assert tsg_from_dict(tsg_to_dict(tsg)) == tsg
