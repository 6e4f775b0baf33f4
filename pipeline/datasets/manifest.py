"""A user's own videos and captions, listed in one file (``data_root`` is the file).

JSON Lines, one sample per line (``start``/``end`` optional, seconds;
``duration`` optional, used to clamp segments)::

    {"id": "kitchen-01", "video": "clips/kitchen-01.mp4",
     "captions": [{"text": "a man opens the fridge", "start": 0.0, "end": 4.5}]}

or CSV with a header, one caption per row, rows grouped by ``id`` (in order
of first appearance)::

    id,video,caption,start,end
    kitchen-01,clips/kitchen-01.mp4,a man opens the fridge,0.0,4.5

``video`` is absolute or relative to the manifest's folder. A line that cannot
be read becomes a failure row (``malformed_line``, with its line number) and
the rest of the file goes on; an id seen before becomes a ``duplicate_key``
failure row (the first one is kept). JSON Lines are streamed, so a manifest of
millions of lines does not sit in memory.

Example::

    ds = build_dataset(DatasetConfig("manifest", data_root="/data/mine.jsonl"))
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator, Optional

from pipeline.datasets.base import DATASETS, Dataset, DatasetConfig, as_time, normalise_captions
from stages.base import VideoTask


@DATASETS.register("manifest")
class Manifest(Dataset):
    name = "manifest"

    def __init__(self, cfg: DatasetConfig):
        super().__init__(cfg)
        file = cfg.data_root or cfg.captions
        if not file:
            raise self.layout_error("no manifest given")
        self.file = Path(file)
        if not self.file.is_file():
            raise self.layout_error(f"manifest {self.file} not found" +
                                    (" (it is a folder)" if self.file.is_dir() else ""))
        if self.file.suffix.lower() not in (".jsonl", ".csv", ".json"):
            raise self.layout_error(f"manifest {self.file} is neither .jsonl nor .csv")
        self.base = Path(cfg.videos) if cfg.videos else self.file.parent
        if self.file.suffix.lower() == ".csv":
            with self.file.open(newline="", encoding="utf-8", errors="replace") as fh:
                header = next(csv.reader(fh), [])
            if not {"id", "video", "caption"} <= {h.strip() for h in header}:
                raise self.layout_error(f"{self.file} lacks the header id,video,caption[,start,end]")

    def describe_layout(self) -> str:
        return ('--data-root FILE.jsonl with one {"id": ..., "video": path (absolute or relative to the file), '
                '"captions": [{"text": ..., "start": s, "end": s}]} per line, or FILE.csv with columns '
                "id,video,caption[,start,end]")

    def _iter_tasks(self) -> Iterator[VideoTask]:
        rows = self._csv_samples() if self.file.suffix.lower() == ".csv" else self._jsonl_samples()
        seen: set[str] = set()
        for line, key, sample, error in rows:
            where = f"{self.file.name} line {line}"
            if error is not None:
                yield self.failed_task(key, "malformed_line", f"{where}: {error}")
            elif key in seen:
                yield self.failed_task(key, "duplicate_key",
                                       f"{where}: id {key!r} seen before; the first one was kept")
            else:
                seen.add(key)
                video, raw, duration = sample
                captions = normalise_captions(raw, duration, self._stats)
                yield self.make_task(key, key, self._resolve(video), captions)

    def _resolve(self, video: str) -> str:
        path = Path(video).expanduser()
        return str(path if path.is_absolute() else self.base / path)

    # Each reader yields (line number, key, (video, [(text, start, end)], duration) | None, error | None).
    def _jsonl_samples(self) -> Iterator[tuple]:
        with self.file.open(encoding="utf-8", errors="replace") as fh:
            for number, text in enumerate(fh, 1):
                if not text.strip():
                    continue
                key = f"{self.file.name}:{number}"
                try:
                    obj = json.loads(text)
                    if not isinstance(obj, dict):
                        raise ValueError(f"expected an object, got {type(obj).__name__}")
                    if isinstance(obj.get("id"), (str, int)) and str(obj["id"]).strip():
                        key = str(obj["id"])
                    yield number, key, _read_object(obj), None
                except (ValueError, TypeError, KeyError) as error:
                    yield number, key, None, f"{type(error).__name__}: {error}"

    def _csv_samples(self) -> Iterator[tuple]:
        groups: dict[str, list] = {}   # id → [first line, video, raw, error, conflict lines]
        with self.file.open(newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.DictReader(fh)
            reader.fieldnames = [h.strip() for h in reader.fieldnames or []]
            for row in reader:
                number = reader.line_num
                key = (row.get("id") or "").strip() or f"{self.file.name}:{number}"
                group = groups.setdefault(key, [number, (row.get("video") or "").strip(), [], None, []])
                if group[3] is not None:
                    continue
                try:
                    if not group[1]:
                        raise ValueError("empty 'video'")
                    if (row.get("video") or "").strip() != group[1]:
                        group[4].append(number)
                        continue
                    group[2].append((row.get("caption"), as_time(row.get("start")), as_time(row.get("end"))))
                except ValueError as error:
                    group[3] = f"line {number}: {error}"
        for key, (line, video, raw, error, conflicts) in groups.items():
            yield line, key, None if error else (video, raw, None), error
            for number in conflicts:  # same id, another video: a duplicate sample
                yield number, key, (video, [], None), None


def _read_object(obj: dict) -> tuple[str, list, Optional[float]]:
    video = obj.get("video")
    if not isinstance(video, str) or not video.strip():
        raise ValueError("'video' missing or not a path")
    captions = obj.get("captions", [])
    if not isinstance(captions, list):
        raise ValueError("'captions' is not a list")
    raw = []
    for caption in captions:
        if isinstance(caption, str):
            raw.append((caption, None, None))
        elif isinstance(caption, dict) and isinstance(caption.get("text", ""), str):
            raw.append((caption.get("text", ""), as_time(caption.get("start")), as_time(caption.get("end"))))
        else:
            raise ValueError(f"caption {caption!r} is neither text nor {{\"text\", \"start\", \"end\"}}")
    return video.strip(), raw, as_time(obj.get("duration"))
