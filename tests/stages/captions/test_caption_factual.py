from schemas.records import TextEdge, TextNode, TextSceneGraph
from stages.captions.factual import format_segments, parse_factual, to_factual, tsg_segments
from stages.captions.io import tsg_from_json, tsg_to_json


def test_parse_factual_reads_relations_attributes_and_lone_objects():
    g = "( pigs , is , beautiful ) , ( bags , on back of , pigs ) , ( Pigs , is , 2 ) , ( pole )"
    assert parse_factual(g) == [("pigs", "is", "beautiful"), ("bags", "on back of", "pigs"),
                                ("pigs", "is", "2"), ("pole",)]


def test_parse_factual_tolerates_spacing_duplicates_mr_four_parts_and_junk():
    assert parse_factual("(man,sit on,bench),( man , sit on , bench )") == [("man", "sit on", "bench")]
    assert parse_factual("( bike , rest , against , box )") == [("bike", "rest against", "box")]
    assert parse_factual("not a graph") == []
    assert parse_factual("") == []


def test_tsg_in_factual_notation_and_back():
    tsg = TextSceneGraph("c#0", "a red car runs quickly near two men", nodes=[
        TextNode(0, "object", "car", "car", (6, 9)),
        TextNode(1, "attribute", "red", "red", (2, 5)),
        TextNode(2, "relation", "runs near", "run near", (10, 14)),
        TextNode(3, "object", "men", "man", (31, 34), count=2),
        TextNode(4, "pred_attribute", "quickly", "quickly", (15, 22)),
        TextNode(5, "attribute", "two", "2", (27, 30)),
        TextNode(6, "object", "sky", "sky", (0, 0)),
    ], edges=[TextEdge(0, 1, "obj_attr"), TextEdge(0, 2, "subj_pred"), TextEdge(2, 3, "pred_obj"),
              TextEdge(2, 4, "pred_adv"), TextEdge(3, 5, "obj_attr")])
    text = to_factual(tsg)
    assert text == "( car , run near , men ) , ( car , is , red ) , ( men , is , 2 ) , ( sky )"
    assert parse_factual(text) == tsg_segments(tsg)
    assert format_segments(parse_factual(text)) == text
    assert tsg_from_json(tsg_to_json(tsg)) == tsg


def test_empty_graph_is_an_empty_string():
    assert to_factual(TextSceneGraph("c#0", "")) == ""


def test_object_less_participle_is_a_state_with_its_adverbs():
    tsg = TextSceneGraph("c#0", "pedestrians walking outside", nodes=[
        TextNode(0, "object", "pedestrians", "pedestrian", (0, 11)),
        TextNode(1, "relation", "walking", "walk", (12, 19)),
        TextNode(2, "pred_attribute", "outside", "outside", (20, 27)),
    ], edges=[TextEdge(0, 1, "subj_pred"), TextEdge(1, 2, "pred_adv")])
    assert to_factual(tsg) == "( pedestrians , is , walking ) , ( pedestrians , is , outside )"
    tsg.nodes[1] = TextNode(1, "relation", "runs", "run", (12, 16))
    assert to_factual(tsg) == "( pedestrians )"


def test_negated_facts_are_written_with_not_and_survive_json():
    """A FACTUAL reader that knows nothing of the flag still cannot take a denied fact for a true one."""
    tsg = TextSceneGraph("c#0", "the cat does not jump onto the counter and is not black", nodes=[
        TextNode(0, "object", "cat", "cat", (4, 7)),
        TextNode(1, "relation", "jump onto", "jump onto", (17, 26), negated=True),
        TextNode(2, "object", "counter", "counter", (31, 38)),
        TextNode(3, "attribute", "black", "black", (50, 55), negated=True),
    ], edges=[TextEdge(0, 1, "subj_pred"), TextEdge(1, 2, "pred_obj"), TextEdge(0, 3, "obj_attr")])
    assert to_factual(tsg) == "( cat , not jump onto , counter ) , ( cat , is , not black )"
    assert tsg_from_json(tsg_to_json(tsg)) == tsg
    assert '"negated": true' in tsg_to_json(tsg)


def test_a_negated_state_keeps_not_and_drops_its_adverbs():
    tsg = TextSceneGraph("c#0", "the woman is not holding anything quickly", nodes=[
        TextNode(0, "object", "woman", "woman", (4, 9)),
        TextNode(1, "relation", "holding", "hold", (17, 24), negated=True),
        TextNode(2, "pred_attribute", "quickly", "quickly", (34, 41)),
    ], edges=[TextEdge(0, 1, "subj_pred"), TextEdge(1, 2, "pred_adv")])
    assert to_factual(tsg) == "( woman , is , not holding )"
