"""eval warns when the evaluated videos are in the checkpoint's training shards."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from finsta_samples import DIMS, make_sample

from finsta_model.config import TrainConfig
from finsta_model.evaluate import evaluate, format_report
from finsta_model.train import train
from schemas.errors import UserError
from schemas.store import DatasetWriter
from tests.test_cli import in_process

TINY = TrainConfig(dim=16, heads=2, gtrm_layers=1, rgtrm_layers=1, steps=2, batch_size=4, shuffle_buffer=6)


def test_eval_warns_on_videos_the_checkpoint_trained_on(small_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    train(small_dataset, run, TINY, progress=False)
    held_out = DatasetWriter(tmp_path / "held", config={"held": 1}, feature_dims=DIMS)
    rng = random.Random(7)
    held_out.write_shard([make_sample(rng, f"held{i}") for i in range(6)], failures=[])
    assert evaluate(tmp_path / "held", run)["warnings"] == []

    report = evaluate(small_dataset, run)
    assert len(report["warnings"]) == 1 and "24 of the 24 evaluated videos (100 %)" in report["warnings"][0]
    assert format_report(report).startswith("warning: 24 of the 24")
    code, out, err = in_process(capsys, "eval", "--shards", str(small_dataset), "--checkpoint", str(run), "--json")
    assert code == 0, err
    assert err.startswith("warning: 24 of the 24") and json.loads(out)["warnings"]


# ------------------------------------------------------------------ ranks: ties and NaN count against the model
def _metrics(sim):
    from finsta_model.evaluate import score_metrics
    sim = np.asarray(sim, np.float32)
    neg_of = np.array([-1, -1, -1, 0])            # caption 3 is a hard negative of caption 0
    return score_metrics(sim, np.array([0, 1, 2, 0]), neg_of, ["", "", "", "swap"])


def test_nan_scores_rank_last_not_first():
    report = _metrics(float("nan") * np.ones((4, 3)))
    for block in (report, report["hard_negatives"]):
        for direction in ("t2v", "v2t"):
            assert block[direction]["R@1"] == 0.0, (direction, block[direction])
    assert report["hard_negatives"]["pair_accuracy"] == 0.0


def test_exact_ties_count_against_the_model():
    report = _metrics(np.zeros((4, 3)))            # every score equal: no caption finds its video first
    assert report["t2v"]["R@1"] == 0.0 and report["t2v"]["MnR"] == 3.0
    assert report["v2t"]["R@1"] == 0.0 and report["hard_negatives"]["t2v"]["MnR"] == 4.0
    good = np.eye(4, 3)                            # the own video strictly best: rank 1 everywhere
    good[3, 0] = 0.5
    clean = _metrics(good)
    assert clean["t2v"]["R@1"] == 100.0 and clean["v2t"]["R@1"] == 100.0
    assert clean["hard_negatives"]["t2v"]["R@1"] == 100.0 and clean["hard_negatives"]["pair_accuracy"] == 100.0


def test_a_dataset_without_hard_negatives_says_so_instead_of_zeros_and_nan():
    metrics = {"R@1": 50.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.5, "MnR": 1.5}
    empty = {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "MdR": float("nan"), "MnR": float("nan")}
    report = {"checkpoint": "run", "step": 2, "videos": 2, "captions": 2, "hard_negative_captions": 0,
              "uses_sg": False, "t2v": metrics, "v2t": metrics,
              "hard_negatives": {"t2v": empty, "v2t": empty, "pair_accuracy": float("nan"), "by_type": {}}}
    text = format_report(report)
    assert "no hard negatives" in text and "nan" not in text and "hard-neg t2v" not in text
    report["hard_negative_captions"] = 1
    report["hard_negatives"] = {"t2v": metrics, "v2t": metrics, "pair_accuracy": 100.0,
                                "by_type": {"change_attribute": 100.0}}
    assert "hard-neg pair accuracy" in format_report(report) and "no hard negatives" not in format_report(report)


def test_nan_features_in_shards_are_refused_by_train_and_eval_in_one_line(small_dataset, tmp_path):
    rng = random.Random(5)
    writer = DatasetWriter(tmp_path / "nan", config={"test": 5}, feature_dims=DIMS)
    samples = [make_sample(rng, f"v{i}") for i in range(6)]
    samples[3][1].frame[0, 0] = float("nan")          # what an older build could store
    writer.write_shard(samples, failures=[])
    run = tmp_path / "run"
    train(small_dataset, run, TrainConfig(dim=16, heads=2, gtrm_layers=1, rgtrm_layers=1, steps=1, batch_size=4,
                                          shuffle_buffer=6, warmup_steps=1), progress=False)
    for attempt in (lambda: evaluate(tmp_path / "nan", run),
                    lambda: train(tmp_path / "nan", tmp_path / "run2", TrainConfig(steps=2, batch_size=6), progress=False)):
        with pytest.raises(UserError, match="sample 'v3': its frame features hold NaN") as error:
            attempt()
        assert "\n" not in str(error.value)
