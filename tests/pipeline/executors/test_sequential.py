"""The sequential executor: each stage's time budget, in-process (the named test doubles stand in for a hang)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import tests.pipeline.doubles  # noqa: F401  (registers the named test doubles)
from pipeline.build import run_build
from pipeline.config import BuildConfig, apply_overrides
from pipeline.synthetic.generate import generate
from schemas.store import open_dataset
from tests.pipeline.doubles import HANG_SIZE
from tests.stages.video_fixtures import make_video


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seq")
    world = generate(root / "synthetic", 2, seed=3, duration=2.0, fps=4, width=160, height=120, objects_max=2)
    stuck = make_video(root / "stuck.mp4", seconds=1.0, fps=4, size=HANG_SIZE)
    captions = json.loads((world / "captions.json").read_text())
    lines = [{"id": vid, "video": str(world / "videos" / f"{vid}.mp4"), "captions": entry["sentences"]}
             for vid, entry in sorted(captions.items())]
    lines.insert(1, {"id": "stuck", "video": str(stuck), "captions": ["a red circle"]})
    path = root / "m.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


@pytest.mark.parametrize("hang", ["python", "native"])
def test_a_stage_past_its_budget_fails_as_timeout_and_the_run_goes_on(manifest, tmp_path, monkeypatch, hang):
    """A Python-level hang gets StageTimeout raised inside it; a native one (a C sleep) has its thread abandoned."""
    monkeypatch.setenv("FINSTA_TEST_HANG", hang)
    cfg = apply_overrides(BuildConfig(), ["dataset.name=manifest", f"dataset.data_root={manifest}",
                                          "detect.name=poison_double", "run.executor=sequential",
                                          "run.stage_timeout_s=2", "run.quiet=true"])
    started = time.monotonic()
    result = run_build(cfg, tmp_path / "out")
    assert time.monotonic() - started < 120
    ds = open_dataset(tmp_path / "out")
    assert len(ds) == 2 and result.failures_by_reason == {"timeout": 1}
    [failure] = ds.failures()
    assert (failure.key, failure.stage, failure.error_type) == ("stuck", "detect", "timeout")
    assert "budget of 2s" in failure.message
