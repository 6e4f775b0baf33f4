"""The synthetic world: rendered shape videos with exact truth and hard negatives.

Layout of a world folder (written by ``python cli.py make-synthetic``)::

    DIR/videos/<id>.mp4
    DIR/captions.json   # {id: {"duration", "timestamps", "sentences",
                        #       "negatives": [[{"text", "type"}, ...] per sentence]}}
    DIR/truth/<id>.json
    DIR/world.json

Each video's real captions come first; the hard negatives of sentence ``i``
follow, as ``CaptionInput(negative_of=<index of sentence i among the
captions>, negative_type=...)`` with sentence ``i``'s time span. Without
``data_root`` a small default world is generated once into the cache folder
(``$FINSTA_CACHE`` or ``~/.cache/finsta``), named by a hash of its parameters.

Example::

    ds = build_dataset(DatasetConfig("synthetic", data_root="out/world"))
    [c.negative_type for c in next(ds.tasks()).captions]  # [None, None, 'swap_subject_object', ...]
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterator, Optional

from pipeline.datasets.activitynet import _read_entry
from pipeline.datasets.base import (BAD_RECORD, DATASETS, Dataset, DatasetConfig, VideoIndex, count_overlapping,
                                    normalise_captions, normalise_text)
from schemas.cache import cache_dir
from schemas.errors import UserError
from stages.base import CaptionInput, VideoTask

# The world generated when no data root is given (small: seconds to make).
DEFAULT_WORLD = {"num_videos": 8, "seed": 0, "duration": 4.0}


def generated_world(params: dict, name: str = "synthetic-default") -> Path:
    """The folder of a world made by ``pipeline.synthetic.generate(**params)``, made once.

    Generation writes to a temporary folder that is renamed into place, so
    concurrent first uses never see half a world. Delete the folder to make it again.
    """
    try:
        from pipeline.synthetic import generate
        from pipeline.synthetic.generate import FORMAT_VERSION
    except ImportError as error:
        raise UserError(f"cannot generate the synthetic world ({error}); "
                        "pass --data-root DIR made by 'python cli.py make-synthetic'") from None
    # The generator's format version is part of the name: a new format never reuses an old world.
    key = json.dumps({**params, "format_version": FORMAT_VERSION}, sort_keys=True)
    folder = cache_dir() / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (folder / "captions.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        generate(out=staging, **params)
        try:
            os.replace(staging, folder)
        except OSError:  # another process finished first: use its copy
            if not (folder / "captions.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


@DATASETS.register("synthetic")
class SyntheticWorld(Dataset):
    name = "synthetic"

    def __init__(self, cfg: DatasetConfig):
        super().__init__(cfg)
        self.root = Path(cfg.data_root) if cfg.data_root else generated_world(DEFAULT_WORLD)
        self.captions_file = Path(cfg.captions) if cfg.captions else self.root / "captions.json"
        self.videos_dir = Path(cfg.videos) if cfg.videos else self.root / "videos"
        if not self.root.is_dir():
            raise self.layout_error(f"world folder {self.root} not found")
        if not self.captions_file.is_file():
            raise self.layout_error(f"{self.captions_file} not found")
        if not self.videos_dir.is_dir():
            raise self.layout_error(f"videos folder {self.videos_dir} not found")
        try:
            self.entries = json.loads(self.captions_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise self.layout_error(f"{self.captions_file} is not valid JSON ({error})") from None
        if not isinstance(self.entries, dict):
            raise self.layout_error(f"{self.captions_file} is not an object of videos")
        self.index = VideoIndex(self.videos_dir)

    def describe_layout(self) -> str:
        return ("a folder made by 'python cli.py make-synthetic': DIR/captions.json and DIR/videos/<id>.mp4 "
                "(or no --data-root for the default world)")

    def _iter_tasks(self) -> Iterator[VideoTask]:
        for video_id, entry in self.entries.items():
            path = self.index.path_for(video_id)
            try:
                raw, duration = _read_entry(entry)
                negatives = _read_negatives(entry, len(raw))
            except (ValueError, TypeError) as error:
                yield self.failed_task(video_id, BAD_RECORD,
                                       f"{self.captions_file.name} entry {video_id!r}: {error}", str(path))
                continue
            captions = with_negatives(raw, negatives, duration, self._stats)
            yield self.make_task(video_id, video_id, path, captions, self.index.version_of(path))


def _read_negatives(entry: dict, count: int) -> list[list[tuple[str, str]]]:
    negatives = entry.get("negatives") or [[] for _ in range(count)]
    if not isinstance(negatives, list) or len(negatives) != count:
        raise ValueError(f"'negatives' must hold one list per sentence ({count})")
    out = []
    for per_sentence in negatives:
        if not isinstance(per_sentence, list) or not all(
                isinstance(n, dict) and isinstance(n.get("text"), str) for n in per_sentence):
            raise ValueError('each negative must be {"text": ..., "type": ...}')
        out.append([(n["text"], str(n.get("type") or "unknown")) for n in per_sentence])
    return out


def with_negatives(raw: list, negatives: list[list[tuple[str, str]]], duration: Optional[float],
                   stats: Counter) -> list[CaptionInput]:
    """Real captions (normalised as usual), then each kept caption's negatives.

    A negative takes its caption's (normalised) span; the negatives of a caption
    dropped as empty are dropped with it and counted in ``negatives_dropped``.
    """
    real: list[CaptionInput] = []
    owner: list[Optional[int]] = []  # raw sentence i → index in `real`, or None if dropped
    for triple in raw:
        kept = normalise_captions([triple], duration, stats)
        owner.append(len(real) if kept else None)
        real.extend(kept)
    # normalise_captions saw one caption at a time (no overlaps): count them per video here.
    stats["segments_overlapping"] += count_overlapping(real)
    out = list(real)
    for i, per_sentence in enumerate(negatives):
        for text, kind in per_sentence:
            clean = normalise_text(text)
            if owner[i] is None or not clean:
                stats["negatives_dropped"] += 1
                continue
            base = real[owner[i]]
            out.append(CaptionInput(clean, base.start, base.end, negative_of=owner[i], negative_type=kind))
    return out
