"""A user's own videos and captions, listed in one file (``data_root`` is the file).

JSON Lines, one sample per line (``start``/``end`` optional, seconds;
``duration`` optional, used to clamp segments)::

    {"id": "kitchen-01", "video": "clips/kitchen-01.mp4",
     "captions": [{"text": "a man opens the fridge", "start": 0.0, "end": 4.5}]}

or CSV with a header, one caption per row, rows grouped by ``id`` (in order
of first appearance); the caption column is ``caption`` or, as in JSONL,
``text``::

    id,video,caption,start,end
    kitchen-01,clips/kitchen-01.mp4,a man opens the fridge,0.0,4.5

``video`` is absolute or relative to the manifest's folder. A line that cannot
be read becomes a failure row (``bad_record``, with its line number and the
parser's message) and the rest of the file goes on: any JSON or CSV error, a
line over 16 MiB (never held in memory), a CSV row with more fields than the
header. A CSV row is one line (a quoted field cannot span lines, so an
unterminated quote fails its own line and never swallows the rows after it).
A UTF-8 byte-order mark is ignored; invalid UTF-8 is replaced by U+FFFD and
counted (``invalid_utf8_replaced``). An id seen before becomes a
``duplicate_key`` failure row (the first one is kept). Lines are streamed, so
a manifest of millions of lines does not sit in memory.

Example::

    ds = build_dataset(DatasetConfig("manifest", data_root="/data/mine.jsonl"))
"""
from __future__ import annotations

import codecs
import csv
import json
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

from pipeline.datasets.base import BAD_RECORD, DATASETS, Dataset, DatasetConfig, as_time, normalise_captions
from schemas.storage import is_url, location
from stages.base import VideoTask

MAX_LINE_BYTES = 16 << 20   # a manifest line is one sample's captions: kilobytes, not megabytes
CAPTION_COLUMNS = ("caption", "text")   # a CSV's caption column: its own name, or JSONL's


@DATASETS.register("manifest")
class Manifest(Dataset):
    name = "manifest"

    def __init__(self, cfg: DatasetConfig):
        super().__init__(cfg)
        file = cfg.data_root or cfg.captions
        if not file:
            raise self.layout_error("no manifest given")
        self.file = location(file)
        if not self.file.is_file():
            raise self.layout_error(f"manifest {self.file} not found" +
                                    (" (it is a folder)" if self.file.is_dir() else ""))
        if self.file.suffix.lower() not in (".jsonl", ".csv", ".json"):
            raise self.layout_error(f"manifest {self.file} is neither .jsonl nor .csv")
        self.base = location(cfg.videos) if cfg.videos else self.file.parent
        if self.file.suffix.lower() == ".csv":
            with self.file.open("rb") as fh:
                first = next((text for _, text, _, _ in read_lines(fh) if text and text.strip()), "")
            try:
                header = _csv_row(first)
            except csv.Error:
                header = []
            names = {h.strip() for h in header}
            if not ({"id", "video"} <= names and names & set(CAPTION_COLUMNS)):
                raise self.layout_error(f"{self.file} lacks the header id,video,caption[,start,end] "
                                        "(or text instead of caption)")

    def describe_layout(self) -> str:
        return ('--data-root FILE.jsonl with one {"id": ..., "video": path (absolute or relative to the file), '
                '"captions": [{"text": ..., "start": s, "end": s}]} per line, or FILE.csv with columns '
                "id,video,caption[,start,end] (caption or text)")

    def _iter_tasks(self) -> Iterator[VideoTask]:
        rows = self._csv_samples() if self.file.suffix.lower() == ".csv" else self._jsonl_samples()
        seen: set[str] = set()
        for line, key, sample, error in rows:
            where = f"{self.file.name} line {line}"
            if error is not None:
                yield self.failed_task(key, BAD_RECORD, f"{where}: {error}")
            elif key in seen:
                yield self.failed_task(key, "duplicate_key",
                                       f"{where}: id {key!r} seen before; the first one was kept")
            else:
                seen.add(key)
                video, raw, duration = sample
                captions = normalise_captions(raw, duration, self._stats)
                yield self.make_task(key, key, self._resolve(video), captions)

    def _resolve(self, video: str) -> str:
        if is_url(video):
            return video
        path = Path(video).expanduser()
        return str(path if path.is_absolute() else self.base / path)

    def _lines(self) -> Iterator[tuple[int, Optional[str], Optional[str]]]:
        """``(line number, text, error)`` for each non-empty line; see :func:`read_lines`."""
        with self.file.open("rb") as fh:
            for number, text, error, replaced in read_lines(fh):
                self._stats["invalid_utf8_replaced"] += replaced
                if error is not None or (text is not None and text.strip()):
                    yield number, text, error

    # Each reader yields (line number, key, (video, [(text, start, end)], duration) | None, error | None).
    def _jsonl_samples(self) -> Iterator[tuple]:
        for number, text, error in self._lines():
            key = f"{self.file.name}:{number}"
            if error is None:
                try:
                    obj = json.loads(text)
                    if not isinstance(obj, dict):
                        raise ValueError(f"expected an object, got {type(obj).__name__}")
                    if isinstance(obj.get("id"), (str, int)) and str(obj["id"]).strip():
                        key = str(obj["id"])
                    yield number, key, _read_object(obj), None
                    continue
                except Exception as parse_error:  # any parser error (RecursionError on deep nesting too)
                    error = _message(parse_error)
            yield number, key, None, error

    def _csv_samples(self) -> Iterator[tuple]:
        groups: dict[str, list] = {}   # id → [first line, video, raw, error, conflict lines]
        lines = self._lines()
        header = next(lines, (0, "", None))[1] or ""
        names = [h.strip() for h in _csv_row(header)]
        bad: list[tuple] = []
        for number, text, error in lines:
            key = f"{self.file.name}:{number}"
            try:
                if error is not None:
                    raise ValueError(error)
                row = _csv_fields(text, names)
            except (ValueError, csv.Error) as row_error:
                bad.append((number, key, None, _message(row_error)))
                continue
            key = (row.get("id") or "").strip() or key
            group = groups.setdefault(key, [number, (row.get("video") or "").strip(), [], None, []])
            if group[3] is not None:
                continue
            try:
                if not group[1]:
                    raise ValueError("empty 'video'")
                if (row.get("video") or "").strip() != group[1]:
                    group[4].append(number)
                    continue
                group[2].append((_caption(row), as_time(row.get("start")), as_time(row.get("end"))))
            except ValueError as value_error:
                group[3] = f"line {number}: {value_error}"
        for key, (line, video, raw, error, conflicts) in groups.items():
            yield line, key, None if error else (video, raw, None), error
            for number in conflicts:  # same id, another video: a duplicate sample
                yield number, key, (video, [], None), None
        yield from bad


def read_lines(fh: BinaryIO, max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, Optional[str], Optional[str], int]]:
    """``(line number, text, error, invalid UTF-8 sequences replaced)`` for each line of a binary file.

    A UTF-8 byte-order mark at the start is dropped; ``\\r\\n`` ends a line like ``\\n``; invalid
    UTF-8 is replaced by U+FFFD (and counted); a line longer than ``max_bytes`` is skipped without
    being held in memory, its text None and ``error`` saying why.
    """
    number = 0
    while True:
        raw = fh.readline(max_bytes + 1)
        if not raw:
            return
        number += 1
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = fh.readline(1 << 20)
            yield number, None, f"line longer than {max_bytes} bytes", 0
            continue
        raw = raw.rstrip(b"\r\n")
        try:
            text, replaced = raw.decode("utf-8"), 0
        except UnicodeDecodeError:
            text = raw.decode("utf-8", "replace")
            replaced = text.count("\ufffd") - raw.count("\ufffd".encode())
        yield number, text, None, replaced


def _csv_row(text: str) -> list[str]:
    """One CSV line as fields (strict: an unterminated quote is an error, never the rows that follow)."""
    return next(csv.reader([text], strict=True), [])


def _csv_fields(text: str, names: list[str]) -> dict[str, str]:
    values = _csv_row(text)
    if len(values) > len(names):
        raise ValueError(f"{len(values)} fields, the header has {len(names)} (an unquoted comma?)")
    row = dict(zip(names, values))
    missing = [name for name in ("id", "video") if name not in row]
    missing += [] if any(name in row for name in CAPTION_COLUMNS) else ["caption"]
    if missing:
        raise ValueError(f"{len(values)} fields, no {', '.join(missing)}")
    return row


def _caption(row: dict[str, str]) -> Optional[str]:
    return next((row[name] for name in CAPTION_COLUMNS if name in row), None)


def _message(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 300 else text[:297] + "..."


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
