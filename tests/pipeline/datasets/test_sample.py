"""The embedded sample: real clips, small, attributed, captioned within their duration; the listing needs
nothing on disk but this repository."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pipeline.datasets import DatasetConfig, build_dataset
from pipeline.datasets.sample import SAMPLE_DATA

ENTRIES = json.loads((SAMPLE_DATA / "captions.json").read_text())


def test_the_licence_and_attribution_ship_with_the_clips():
    readme = (SAMPLE_DATA / "README.md").read_text()
    assert "Sample video from the Intel IoT devkit sample-videos collection, licensed CC BY 4.0." in readme
    assert (SAMPLE_DATA / "LICENSE").read_text().startswith("Attribution 4.0 International")
    assert all(f"`{entry['video']}`" in readme for entry in ENTRIES.values())   # each clip is described
    assert sum((SAMPLE_DATA / entry["video"]).stat().st_size for entry in ENTRIES.values()) <= 1_000_000


@pytest.mark.parametrize("key", sorted(ENTRIES))
def test_each_clip_is_captioned_within_its_duration(key):
    entry = ENTRIES[key]
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                            str(SAMPLE_DATA / entry["video"])], capture_output=True, text=True, timeout=30,
                           check=True)
    duration = float(probe.stdout)
    assert abs(entry["duration"] - duration) < 0.1
    assert len(entry["sentences"]) == len(entry["timestamps"])
    assert all(0 <= s < e <= duration + 1e-6 for s, e in entry["timestamps"])


def test_the_sample_lists_its_real_clips_in_order():
    ds = build_dataset(DatasetConfig("sample"))
    tasks = list(ds.tasks())
    assert [t.key for t in tasks] == ["intel-bottles", "intel-person"]
    assert all(t.source == "sample" and Path(t.video_path).is_file() and t.failure is None for t in tasks)
    assert len(tasks[0].captions) == 5 and tasks[0].captions[1].start == 0.9
    assert ds.stats()["videos_missing"] == 0 and ds.stats()["captions"] == 9
