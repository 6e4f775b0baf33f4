"""eval warns when the evaluated videos are in the checkpoint's training shards."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from finsta_samples import DIMS, make_sample

from finsta_model.config import TrainConfig
from finsta_model.evaluate import evaluate, format_report
from finsta_model.train import train
from schemas.store import DatasetWriter

ROOT = Path(__file__).resolve().parents[2]
TINY = TrainConfig(dim=16, heads=2, gtrm_layers=1, rgtrm_layers=1, steps=2, batch_size=4, shuffle_buffer=6)


def test_eval_warns_on_videos_the_checkpoint_trained_on(small_dataset, tmp_path):
    run = tmp_path / "run"
    train(small_dataset, run, TINY, progress=False)
    held_out = DatasetWriter(tmp_path / "held", config={"held": 1}, feature_dims=DIMS)
    rng = random.Random(7)
    held_out.write_shard([make_sample(rng, f"held{i}") for i in range(6)], failures=[])
    assert evaluate(tmp_path / "held", run)["warnings"] == []

    report = evaluate(small_dataset, run)
    assert len(report["warnings"]) == 1 and "24 of the 24 evaluated videos (100 %)" in report["warnings"][0]
    assert format_report(report).startswith("warning: 24 of the 24")
    done = subprocess.run([sys.executable, "cli.py", "eval", "--shards", str(small_dataset), "--checkpoint", str(run),
                           "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("warning: 24 of the 24") and json.loads(done.stdout)["warnings"]
