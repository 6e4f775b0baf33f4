"""MSR-VTT: MSRVTT_data.json with splits, the JSFusion CSV, layout errors."""
import json

import pytest

from pipeline.datasets import DatasetConfig, build_dataset
from schemas.errors import UserError

DATA = {
    "videos": [{"video_id": "video0", "split": "train"}, {"video_id": "video1", "split": "test"},
               {"video_id": "video2", "split": "validate"}],
    "sentences": [{"video_id": "video0", "caption": "a man is cooking", "sen_id": 0},
                  {"video_id": "video1", "caption": " a girl sings ", "sen_id": 1},
                  {"video_id": "video0", "caption": "someone fries eggs", "sen_id": 2},
                  {"video_id": "video2", "caption": "", "sen_id": 3}],
}


def make_root(tmp_path, nested=True):
    videos = tmp_path / "videos" / ("all" if nested else "")
    videos.mkdir(parents=True)
    (videos / "video0.mp4").write_bytes(b"x")
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps(DATA))
    return tmp_path


@pytest.mark.parametrize("split, keys", [("train", ["video0"]), ("test", ["video1"]), ("val", ["video2"]),
                                         ("all", ["video0", "video1", "video2"])])
def test_json_splits(tmp_path, split, keys):
    ds = build_dataset(DatasetConfig("msrvtt", data_root=str(make_root(tmp_path)), split=split))
    assert [t.key for t in ds.tasks()] == keys


def test_json_captions_untimed_and_normalised(tmp_path):
    ds = build_dataset(DatasetConfig("msrvtt", data_root=str(make_root(tmp_path, nested=False)), split="all"))
    v0, v1, v2 = ds.tasks()
    assert v0.video_path == str(tmp_path / "videos" / "video0.mp4")
    assert [(c.text, c.start) for c in v0.captions] == [("a man is cooking", None), ("someone fries eggs", None)]
    assert v1.captions[0].text == "a girl sings" and v2.captions == []
    stats = ds.stats()
    assert stats["captions_whitespace_stripped"] == 1 and stats["captions_empty_dropped"] == 1
    assert stats["videos_missing"] == 2 and stats["captions"] == 3


def test_jsfusion_csv(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\nret0,msr9770,video9770,a person is connecting something\n"
        "ret1,msr7606,video7606,a little girl does gymnastics\n")
    ds = build_dataset(DatasetConfig("msrvtt", data_root=str(tmp_path)))
    assert [(t.key, [c.text for c in t.captions]) for t in ds.tasks()] == [
        ("video9770", ["a person is connecting something"]), ("video7606", ["a little girl does gymnastics"])]


def test_layout_errors(tmp_path):
    with pytest.raises(UserError, match=r"msrvtt: no annotation file .*expected DATA_ROOT/MSRVTT_data.json"):
        build_dataset(DatasetConfig("msrvtt", data_root=str(tmp_path)))
    (tmp_path / "MSRVTT_data.json").write_text('{"videos": []}')
    with pytest.raises(UserError, match="videos folder .* not found"):
        build_dataset(DatasetConfig("msrvtt", data_root=str(tmp_path)))
    (tmp_path / "videos").mkdir()
    with pytest.raises(UserError, match="MSRVTT_data.json is malformed"):
        build_dataset(DatasetConfig("msrvtt", data_root=str(tmp_path)))


# ------------------------------------------------------------------ over HTTP (a real server on 127.0.0.1)


def test_a_data_root_over_https_reads_captions_and_names_videos_by_id(http_server):
    base, folder = http_server
    make_root(folder)   # HTTP cannot list: videos/all is assumed and videos are <id>.mp4
    ds = build_dataset(DatasetConfig("msrvtt", data_root=f"{base}/", split="all"))
    assert [(t.key, t.video_path) for t in ds.tasks()] == [
        (f"video{n}", f"{base}/videos/all/video{n}.mp4") for n in range(3)]
    with pytest.raises(UserError, match=f"no annotation file in {base}/nothing"):
        build_dataset(DatasetConfig("msrvtt", data_root=f"{base}/nothing"))
