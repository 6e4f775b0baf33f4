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


def _config(manifest: Path, *overrides: str) -> BuildConfig:
    return apply_overrides(BuildConfig(), ["dataset.name=manifest", f"dataset.data_root={manifest}",
                                           "detect.name=poison_double", "run.executor=sequential", "run.quiet=true",
                                           *overrides])


@pytest.fixture(scope="module")
def budget_s(manifest, tmp_path_factory) -> float:
    """A stage budget the good samples meet at this machine's load now: measured on them (the stuck line left
    out), not a wall-clock constant that a loaded machine overruns (every stage's total over both samples,
    four times over, at least 2 s)."""
    good = tmp_path_factory.mktemp("calibrate") / "good.jsonl"
    good.write_text("".join(line + "\n" for line in manifest.read_text().splitlines() if '"stuck"' not in line))
    result = run_build(_config(good), good.parent / "out")
    assert result.failures_by_reason == {}
    return round(max(2.0, 4 * max(result.stage_seconds.values())), 1)


@pytest.mark.parametrize("hang", ["python", "native"])
def test_a_stage_past_its_budget_fails_as_timeout_and_the_run_goes_on(manifest, budget_s, tmp_path, monkeypatch,
                                                                      hang):
    """A Python-level hang gets StageTimeout raised inside it; a native one (a C sleep) has its thread abandoned."""
    monkeypatch.setenv("FINSTA_TEST_HANG", hang)
    started = time.monotonic()
    result = run_build(_config(manifest, f"run.stage_timeout_s={budget_s}"), tmp_path / "out")
    assert time.monotonic() - started < 1800   # the double sleeps 3600 s: only its budget can end it sooner
    ds = open_dataset(tmp_path / "out")
    assert len(ds) == 2 and result.failures_by_reason == {"timeout": 1}
    [failure] = ds.failures()
    assert (failure.key, failure.stage, failure.error_type) == ("stuck", "detect", "timeout")
    assert f"budget of {budget_s:g}s" in failure.message
