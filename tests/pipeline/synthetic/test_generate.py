"""The written folder: layout, ActivityNet captions, gold csv, reproducibility, the CLI."""
import csv
import hashlib
import json
from pathlib import Path

import pytest

import cli
from pipeline.synthetic import generate, video_id
from schemas.errors import UserError

SMALL = dict(duration=2.0, fps=4, width=160, height=120)


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("w") / "world", 2, seed=3, **SMALL)


def test_layout_and_contract(world_dir):
    ids = [video_id(3, 0), video_id(3, 1)]
    assert ids == ["synth_3_00000", "synth_3_00001"]
    for vid in ids:
        assert (world_dir / "videos" / f"{vid}.mp4").stat().st_size > 0
        truth = json.loads((world_dir / "truth" / f"{vid}.json").read_text())
        assert truth["video_id"] == vid and len(truth["frames"]) == 8
        assert {"objects", "events", "frames", "captions"} <= set(truth)
    caps = json.loads((world_dir / "captions.json").read_text())
    assert sorted(caps) == ids
    for entry in caps.values():
        n = len(entry["sentences"])
        assert entry["duration"] == 2.0 and len(entry["timestamps"]) == n and len(entry["negatives"]) == n
        for start, end in entry["timestamps"]:
            assert 0 <= start < end <= 2.0
        for per in entry["negatives"]:
            assert all(set(neg) == {"text", "type"} for neg in per)
    rows = list(csv.DictReader((world_dir / "gold_tsg.csv").open()))
    assert [r["caption"] for r in rows if r["image_id"] == ids[0]] == caps[ids[0]]["sentences"]
    assert all(r["scene_graph"].startswith("( ") for r in rows)
    meta = json.loads((world_dir / "world.json").read_text())
    assert meta["params"] == {"count": 2, "seed": 3, "difficulty": "medium", "objects_min": 2, "objects_max": 4,
                              **SMALL} and meta["video_ids"] == ids and "CC0" in meta["license"]
    assert "CC0" in (world_dir / "README.md").read_text()


def test_same_seed_gives_byte_identical_folders(world_dir, tmp_path):
    again = generate(tmp_path / "again", 2, seed=3, **SMALL)
    assert digest(again) == digest(world_dir)
    other = generate(tmp_path / "other", 1, seed=4, **SMALL)
    assert digest(other)["videos/synth_4_00000.mp4"] != digest(world_dir)["videos/synth_3_00000.mp4"]


def test_rerun_fills_in_and_other_params_are_refused(tmp_path):
    out = generate(tmp_path / "w", 1, seed=0, **SMALL)
    first = digest(out)
    generate(out, 2, seed=0, **SMALL)                      # extends: video 0 untouched
    assert digest(out)["videos/synth_0_00000.mp4"] == first["videos/synth_0_00000.mp4"]
    assert (out / "videos" / "synth_0_00001.mp4").exists()
    with pytest.raises(UserError, match="other parameters"):
        generate(out, 2, seed=1, **SMALL)
    generate(out, 1, seed=1, overwrite=True, **SMALL)
    assert json.loads((out / "world.json").read_text())["params"]["seed"] == 1


def test_non_world_folder_and_bad_values_are_user_errors(tmp_path):
    (tmp_path / "stuff.txt").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        generate(tmp_path, 1, seed=0, **SMALL)
    with pytest.raises(UserError):
        generate(tmp_path / "a", 0, seed=0)
    with pytest.raises(UserError, match="difficulty"):
        generate(tmp_path / "b", 1, seed=0, difficulty="extreme")


def test_the_dataset_loader_reads_it(world_dir):
    from pipeline.datasets import DatasetConfig, build_dataset
    tasks = list(build_dataset(DatasetConfig("synthetic", data_root=str(world_dir))).tasks())
    caps = json.loads((world_dir / "captions.json").read_text())
    assert [t.key for t in tasks] == sorted(caps)
    for task in tasks:
        entry = caps[task.key]
        real = [c for c in task.captions if c.negative_of is None]
        assert [c.text for c in real] == entry["sentences"]
        assert len(task.captions) - len(real) == sum(len(n) for n in entry["negatives"])


def test_cli_make_synthetic(tmp_path, capsys):
    args = ["make-synthetic", "--count", "1", "--seed", "2", "--out", str(tmp_path / "w"), "--duration", "2",
            "--fps", "4", "--width", "160", "--height", "120", "--difficulty", "easy"]
    assert cli.main(args) == 0
    assert (tmp_path / "w" / "videos" / "synth_2_00000.mp4").is_file()
    assert cli.main(["make-synthetic", "--count", "1", "--out", str(tmp_path / "x"), "--objects-max", "9"]) == 2
    assert "objects-max" in capsys.readouterr().err


def test_uncaptioned_videos_keep_their_videos_and_truth_but_no_captions(world_dir, tmp_path, capsys):
    import shutil
    from pipeline.datasets import DatasetConfig, build_dataset
    out = tmp_path / "world"
    shutil.copytree(world_dir, out)
    before = digest(out)
    generate(out, 3, seed=3, uncaptioned=2, **SMALL)      # one more video; the last two without captions
    after = digest(out)
    assert all(after[name] == before[name] for name in before if name.startswith(("videos/", "truth/")))
    caps = json.loads((out / "captions.json").read_text())
    assert [len(caps[video_id(3, i)]["sentences"]) for i in range(3)][1:] == [0, 0]
    assert caps[video_id(3, 0)] == json.loads((world_dir / "captions.json").read_text())[video_id(3, 0)]
    assert json.loads((out / "truth" / f"{video_id(3, 2)}.json").read_text())["captions"]   # the gold stays
    with open(out / "gold_tsg.csv") as handle:
        assert {row["image_id"] for row in csv.DictReader(handle)} == {video_id(3, 0)}
    assert json.loads((out / "world.json").read_text())["uncaptioned"] == [video_id(3, 1), video_id(3, 2)]
    tasks = list(build_dataset(DatasetConfig("synthetic", data_root=str(out))).tasks())
    assert [len(t.captions) for t in tasks][1:] == [0, 0] and tasks[0].captions
    assert cli.main(["make-synthetic", "--count", "3", "--seed", "3", "--out", str(out), "--uncaptioned", "4"]) == 2
    assert "--uncaptioned" in capsys.readouterr().err
