"""MSR-VTT: short web clips with ~20 untimed captions each.

Two annotation forms are read, found in this order (or given as ``captions``)::

    DATA_ROOT/MSRVTT_data.json          # {"videos": [{"video_id", "split"?}], "sentences": [{"video_id", "caption"}]}
    DATA_ROOT/annotation/MSRVTT_data.json
    DATA_ROOT/MSRVTT_JSFUSION_test.csv  # key,vid_key,video_id,sentence (the 1k-A test split)
    DATA_ROOT/videos/all/video1234.mp4  # or DATA_ROOT/videos/video1234.mp4; or ``videos``

With ``MSRVTT_data.json``, ``split`` selects the videos whose ``"split"``
field matches (``train``, ``validate``/``val``, ``test``); ``all`` keeps
every video. The JSFusion CSV is a single split and ignores ``split``.
Videos come in the JSON's order (CSV: first appearance); keys are the ids
(``"video1234"``). Captions are untimed.

Example::

    ds = build_dataset(DatasetConfig("msrvtt", data_root="/data/msrvtt", split="test"))
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator, Optional

from pipeline.datasets.base import (DATASETS, Dataset, DatasetConfig, VideoIndex, load_mapping,
                                    normalise_captions)
from schemas.storage import location
from stages.base import VideoTask

_JSON_NAMES = ("MSRVTT_data.json", "annotation/MSRVTT_data.json")
_CSV_NAMES = ("MSRVTT_JSFUSION_test.csv", "annotation/MSRVTT_JSFUSION_test.csv")
_SPLIT_ALIASES = {"val": "validate", "valid": "validate", "validation": "validate"}


@DATASETS.register("msrvtt")
class MSRVTT(Dataset):
    name = "msrvtt"

    def __init__(self, cfg: DatasetConfig):
        super().__init__(cfg)
        root = self.checked_root()
        self.captions_file = location(cfg.captions) if cfg.captions else _first_file(root, _JSON_NAMES + _CSV_NAMES)
        if self.captions_file is None or not self.captions_file.is_file():
            raise self.layout_error(f"no annotation file in {cfg.captions or root}")
        if cfg.videos:
            self.videos_dir = location(cfg.videos)
        else:
            self.videos_dir = next((d for d in (root / "videos" / "all", root / "videos") if d.is_dir()),
                                   root / "videos")
        if not self.videos_dir.is_dir():
            raise self.layout_error(f"videos folder {self.videos_dir} not found")
        self.split = _SPLIT_ALIASES.get(cfg.split, cfg.split)
        self.videos = self._load(self.captions_file)
        self.index = VideoIndex(self.videos_dir, load_mapping(cfg.mapping))

    def describe_layout(self) -> str:
        return ("DATA_ROOT/MSRVTT_data.json (or DATA_ROOT/MSRVTT_JSFUSION_test.csv) and "
                "DATA_ROOT/videos/all/video<N>.mp4 (or --captions FILE --videos DIR)")

    def _load(self, file: Path) -> list[tuple[str, list[str]]]:
        """``[(video_id, [caption, ...])]`` in file order."""
        try:
            if file.suffix.lower() == ".csv":
                return self._load_csv(file)
            return self._load_json(file)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, csv.Error) as error:
            raise self.layout_error(f"{file} is malformed ({type(error).__name__}: {error})") from None

    def _load_json(self, file: Path) -> list[tuple[str, list[str]]]:
        data = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
            raise ValueError('expected an object with "videos" and "sentences" lists')
        by_video: dict[str, list[str]] = {}
        for sentence in data["sentences"]:
            by_video.setdefault(str(sentence["video_id"]), []).append(sentence["caption"])
        order = [str(v["video_id"]) for v in data.get("videos", [])
                 if self.split == "all" or v.get("split", self.split) == self.split]
        if not data.get("videos"):  # no video list: every captioned id, first appearance
            order = list(by_video)
        return [(vid, by_video.get(vid, [])) for vid in order]

    def _load_csv(self, file: Path) -> list[tuple[str, list[str]]]:
        with file.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"video_id", "sentence"} <= set(reader.fieldnames):
                raise ValueError("expected columns key,vid_key,video_id,sentence")
            by_video: dict[str, list[str]] = {}
            for row in reader:
                by_video.setdefault(row["video_id"], []).append(row["sentence"])
        return list(by_video.items())

    def _iter_tasks(self) -> Iterator[VideoTask]:
        seen: set[str] = set()
        for video_id, sentences in self.videos:
            if video_id in seen:
                yield self.failed_task(video_id, "duplicate_key",
                                       f"video id {video_id!r} listed twice in {self.captions_file.name}; "
                                       "the first entry was kept")
                continue
            seen.add(video_id)
            captions = normalise_captions([(s, None, None) for s in sentences], None, self._stats)
            path = self.index.path_for(video_id)
            yield self.make_task(video_id, video_id, path, captions, self.index.version_of(path))


def _first_file(root: Path, names: tuple[str, ...]) -> Optional[Path]:
    return next((root / n for n in names if (root / n).is_file()), None)
