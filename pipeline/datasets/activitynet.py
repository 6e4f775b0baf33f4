"""ActivityNet Captions: timed dense captions for YouTube-derived videos.

Layout (overridable with ``captions``/``videos``)::

    DATA_ROOT/captions/<split>.json   # train.json | val_1.json | val_2.json
    DATA_ROOT/videos/v_<id>.mp4       # or <id>.mp4; .mkv/.webm too; or a mapping file

The JSON is the official release's ``{"v_<id>": {"duration": s, "timestamps":
[[start, end], ...], "sentences": [...]}}``. Each video becomes one task keyed
by its id (``"v_QOlSCBRmfWY"``). Real quirks are fixed and counted (see
:func:`pipeline.datasets.base.normalise_captions`); an entry that cannot be
read (sentences and timestamps of different lengths, a non-numeric time) or a
repeated id becomes a failure row.

Example::

    ds = build_dataset(DatasetConfig("activitynet", data_root="/data/anet", split="val_2"))
    next(ds.tasks()).captions[0]   # CaptionInput(text='Two men ...', start=0.0, end=4.14)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional

from pipeline.datasets.base import (BAD_RECORD, DATASETS, Dataset, DatasetConfig, VideoIndex, as_time,
                                    load_mapping, normalise_captions)
from schemas.storage import location
from stages.base import VideoTask


class _Object(dict):
    """A JSON object that remembers its key order including repeated keys."""

    pairs: list


def _keep_pairs(pairs: list) -> _Object:
    obj = _Object(pairs)
    obj.pairs = pairs
    return obj


@DATASETS.register("activitynet")
class ActivityNetCaptions(Dataset):
    name = "activitynet"

    def __init__(self, cfg: DatasetConfig):
        super().__init__(cfg)
        root = self.checked_root()
        self.captions_file = location(cfg.captions) if cfg.captions else root / "captions" / f"{cfg.split}.json"
        self.videos_dir = location(cfg.videos) if cfg.videos else root / "videos"
        if not self.captions_file.is_file():
            raise self.layout_error(f"captions file {self.captions_file} not found")
        if not self.videos_dir.is_dir():
            raise self.layout_error(f"videos folder {self.videos_dir} not found")
        self.entries = self._load(self.captions_file)
        self.index = VideoIndex(self.videos_dir, load_mapping(cfg.mapping), strip_prefix="v_")

    def describe_layout(self) -> str:
        split = self.cfg.split
        return (f"DATA_ROOT/captions/{split}.json (ActivityNet Captions: "
                '{"v_<id>": {"duration", "timestamps", "sentences"}}) and DATA_ROOT/videos/v_<id>.mp4 '
                "(or --captions FILE --videos DIR [--mapping FILE])")

    def _load(self, file: Path) -> list:
        try:
            data = json.loads(file.read_text(encoding="utf-8"), object_pairs_hook=_keep_pairs)
        except (ValueError, UnicodeDecodeError) as error:
            raise self.layout_error(f"{file} is not valid JSON ({error})") from None
        if not isinstance(data, _Object):
            raise self.layout_error(f"{file} holds a {type(data).__name__}, not an object of videos")
        return data.pairs

    def _iter_tasks(self) -> Iterator[VideoTask]:
        seen: set[str] = set()
        for video_id, entry in self.entries:
            if video_id in seen:
                yield self.failed_task(video_id, "duplicate_key",
                                       f"video id {video_id!r} appears again in {self.captions_file.name}; "
                                       "the first entry was kept")
                continue
            seen.add(video_id)
            video_path = self.index.path_for(video_id)
            try:
                raw, duration = _read_entry(entry)
            except (ValueError, TypeError) as error:
                yield self.failed_task(video_id, BAD_RECORD,
                                       f"{self.captions_file.name} entry {video_id!r}: {error}",
                                       str(video_path))
                continue
            captions = normalise_captions(raw, duration, self._stats)
            yield self.make_task(video_id, video_id, video_path, captions, self.index.version_of(video_path))


def _read_entry(entry: object) -> tuple[list, Optional[float]]:
    """``(text, start, end)`` triples and the duration of one video entry; raises on junk."""
    if not isinstance(entry, dict):
        raise ValueError(f"expected an object, got {type(entry).__name__}")
    sentences = entry.get("sentences")
    if not isinstance(sentences, list):
        raise ValueError("'sentences' missing or not a list")
    duration = as_time(entry.get("duration"))
    stamps = entry.get("timestamps")
    if stamps is None:
        return [(s, None, None) for s in sentences], duration
    if not isinstance(stamps, list) or len(stamps) != len(sentences):
        raise ValueError(f"{len(sentences)} sentences but "
                         f"{len(stamps) if isinstance(stamps, list) else 'no'} timestamps")
    raw = []
    for sentence, stamp in zip(sentences, stamps):
        if not isinstance(stamp, (list, tuple)) or len(stamp) != 2:
            raise ValueError(f"timestamp {stamp!r} is not [start, end]")
        if sentence is not None and not isinstance(sentence, str):
            raise ValueError(f"sentence {sentence!r} is not text")
        raw.append((sentence, as_time(stamp[0]), as_time(stamp[1])))
    return raw, duration
