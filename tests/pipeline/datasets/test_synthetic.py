"""The synthetic world reader (negatives after real captions, a default world generated once)."""
import json
from pathlib import Path

import pytest

from pipeline.datasets import DatasetConfig, build_dataset
from pipeline.datasets import synthetic
from schemas.errors import UserError

CAPTIONS = {
    "synth_0_00000": {
        "duration": 4.0, "timestamps": [[0.0, 2.0], [1.5, 4.0]],
        "sentences": ["", "the red circle moves left quickly"],
        "negatives": [[{"text": "dropped with its empty caption", "type": "change_relation"}],
                      [{"text": "the red circle moves right quickly", "type": "change_relation"},
                       {"text": "the red circle moves left slowly", "type": "change_adverb"}]]},
    "synth_0_00001": {"duration": 4.0, "timestamps": [[0.0, 4.0]], "sentences": ["a blue square appears"]},
    "synth_0_00002": {"duration": 4.0, "timestamps": [[0.0, 4.0]], "sentences": ["x"], "negatives": [[]] * 2},
}


def make_world(root: Path) -> Path:
    (root / "videos").mkdir(parents=True)
    (root / "captions.json").write_text(json.dumps(CAPTIONS))
    (root / "videos" / "synth_0_00000.mp4").write_bytes(b"x")
    return root


def test_negatives_follow_real_captions_with_their_source_index(tmp_path):
    ds = build_dataset(DatasetConfig("synthetic", data_root=str(make_world(tmp_path))))
    first, second, bad = ds.tasks()
    assert first.key == "synth_0_00000" and first.source == "synthetic"
    assert first.video_path == str(tmp_path / "videos" / "synth_0_00000.mp4")
    assert [(c.text, c.start, c.end, c.negative_of, c.negative_type) for c in first.captions] == [
        ("the red circle moves left quickly", 1.5, 4.0, None, None),
        ("the red circle moves right quickly", 1.5, 4.0, 0, "change_relation"),
        ("the red circle moves left slowly", 1.5, 4.0, 0, "change_adverb")]
    assert [c.negative_of for c in second.captions] == [None]
    assert bad.failure.error_type == "bad_record" and "one list per sentence" in bad.failure.message
    stats = ds.stats()
    assert (stats["captions"], stats["negatives"], stats["negatives_dropped"]) == (2, 2, 1)
    assert stats["captions_empty_dropped"] == 1 and stats["videos_missing"] == 1


def test_bad_world_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"synthetic: .*captions.json not found; expected a folder made by"):
        build_dataset(DatasetConfig("synthetic", data_root=str(tmp_path)))


def _generator_available() -> bool:
    try:
        from pipeline.synthetic import generate  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _generator_available(), reason="pipeline.synthetic.generate not written yet")
def test_without_data_root_a_default_world_is_generated_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINSTA_CACHE", str(tmp_path))
    monkeypatch.setitem(synthetic.DEFAULT_WORLD, "num_videos", 2)
    ds = build_dataset(DatasetConfig("synthetic"))
    keys = [t.key for t in ds.tasks()]
    assert keys == ["synth_0_00000", "synth_0_00001"]
    (world,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert world.name.startswith("synthetic-default-") and (world / "videos" / "synth_0_00000.mp4").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no staging folder left
    stamp = (world / "captions.json").stat().st_mtime_ns
    assert [t.key for t in build_dataset(DatasetConfig("synthetic")).tasks()] == keys
    assert (world / "captions.json").stat().st_mtime_ns == stamp           # reused, not regenerated
