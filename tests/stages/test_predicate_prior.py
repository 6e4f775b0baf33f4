"""The FREQ language prior: parsing FACTUAL(-MR) graphs, estimation, backoff, the geometry rule."""
import os
from pathlib import Path

import pytest

from stages.predicate_prior import (PRIOR_PATH, PredicatePrior, estimate_prior, evaluate_prior, normalise_label,
                                    normalise_predicate, parse_triplets, singular, supporting_geometry)

SHARED = Path(os.environ.get("FINSTA_SHARED", Path(__file__).resolve().parents[2] / ".." / "shared"))
FACTUAL = SHARED / "data" / "factual"


def test_parse_factual_mr_joins_verb_and_preposition_and_drops_quantifiers():
    graph = ("( bike , rest , against , box ) , ( bike , is , red ) , ( 2 , boys , ride , 2 , skateboards ) , "
             "( 8 , lamps , p:attach , to , clock ) , ( man , have , 2 , legs ) , ( woman , hold , umbrella )")
    assert parse_triplets(graph) == [("bike", "rest against", "box"), ("boy", "ride", "skateboard"),
                                     ("lamp", "attach to", "clock"), ("man", "have", "leg"),
                                     ("woman", "hold", "umbrella")]


def test_parse_factual_dev_format():
    assert parse_triplets("( bushes , grow on , lawn ) , ( lawn , is , green )") == [("bush", "grow on", "lawn")]
    assert parse_triplets("( pigs , is , 2 )") == []


@pytest.mark.parametrize("word,expected", [("trees", "tree"), ("benches", "bench"), ("boxes", "box"),
                                           ("ponies", "pony"), ("women", "woman"), ("glasses", "glasses"),
                                           ("bus", "bus"), ("grass", "grass"), ("shoes", "shoe"),
                                           ("leaves", "leaf"), ("ties", "tie")])
def test_singular(word, expected):
    assert singular(word) == expected


def test_normalisation():
    assert normalise_label(" Tree  Trunks ") == "tree trunk"
    assert normalise_predicate("p:attach  to") == "attach to"
    assert normalise_predicate("have 2") == "have"


def test_supporting_geometry_by_preposition_then_verb():
    assert supporting_geometry("sit on") == ("on", "above")
    assert supporting_geometry("stand next to") == ("near", "left of", "right of")
    assert supporting_geometry("on top of") == ("on", "above")          # longest ending wins over "of"
    assert supporting_geometry("ride") == ("on", "above")
    assert supporting_geometry("hold") == ("holding",)
    assert supporting_geometry("think about") == ()


TRAIN = ([("man", "ride", "horse")] * 6 + [("man", "on", "horse")] * 3 + [("man", "feed", "horse")]
         + [("cup", "on", "table")] * 5 + [("man", "hold", "cup")] * 4 + [("dog", "on", "grass")] * 2)


def test_estimate_prior_counts_pairs_and_marginals():
    table = estimate_prior(TRAIN, top_k=2, min_pair_count=3, min_label_count=2)
    assert table["pairs"]["man|horse"] == [["ride", 0.6], ["on", 0.3]]   # top-k of the full counts
    assert "dog|grass" not in table["pairs"]                              # under min_pair_count
    assert table["subject"]["man"][0] == ["ride", 0.4286]
    assert table["triplets"] == len(TRAIN)


def test_distribution_backs_off():
    prior = PredicatePrior.from_table(estimate_prior(TRAIN, min_pair_count=3, min_label_count=2))
    assert prior.distribution("men", "horses")[1] == "pair"
    assert prior.distribution("man", "table")[1] == "marginals"   # both known, never together
    assert prior.distribution("man", "zebra")[1] == "subject"
    assert prior.distribution("cat", "table")[1] == "object"
    assert prior.distribution("cat", "zebra")[1] == "global"
    assert prior.top("man", "table", 1)[0][0] == "on"


def test_caption_predicate_renames_geometry():
    prior = PredicatePrior.from_table(estimate_prior(TRAIN, min_pair_count=3, min_label_count=2))
    assert prior.caption_predicate("man", "horse", {"on": 0.8, "near": 0.9})[0] == "ride"
    assert prior.caption_predicate("man", "cup", {"holding": 0.7})[0] == "hold"
    assert prior.caption_predicate("cup", "table", {"on": 0.9}) == ("on", 0.9)
    # Geometry that supports none of the pair's predicates gives nothing.
    assert prior.caption_predicate("man", "horse", {"below": 0.9}) is None
    # Weak geometry stays under min_score.
    assert prior.caption_predicate("man", "horse", {"on": 0.2}) is None


def test_evaluate_prior_on_constructed_gold():
    prior = PredicatePrior.from_table(estimate_prior(TRAIN, min_pair_count=3, min_label_count=2))
    gold = [("man", "ride", "horse"), ("man", "on", "horse"), ("cup", "on", "table"), ("cat", "eat", "fish")]
    report = evaluate_prior(prior, gold)
    assert report["pair_n"] == 3 and report["pair_coverage"] == 0.75
    assert report["pair_top1"] == pytest.approx(2 / 3, abs=1e-4) and report["pair_top5"] == 1.0


def test_shipped_table_loads_and_knows_common_pairs():
    prior = PredicatePrior.load(PRIOR_PATH)
    assert PRIOR_PATH.stat().st_size < 500_000
    assert prior.top("man", "horse", 1)[0][0] == "ride"
    assert prior.top("cup", "table", 1)[0][0] == "on"
    assert prior.caption_predicate("person", "chair", {"on": 0.9})[0] in {"sit on", "sit in"}


@pytest.mark.skipif(not FACTUAL.exists(), reason="../shared FACTUAL data absent")
def test_shipped_table_on_factual_dev():
    import csv
    with (FACTUAL / "random_dev.csv").open(newline="") as handle:
        gold = [t for row in csv.DictReader(handle) for t in parse_triplets(row["scene_graph"])]
    report = evaluate_prior(PredicatePrior.load(), gold)
    assert report["pair_coverage"] > 0.5 and report["pair_top1"] > 0.45 and report["pair_top5"] > 0.75
