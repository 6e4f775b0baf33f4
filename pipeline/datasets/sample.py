"""The embedded default dataset: runs with nothing on disk but this repository.

Real clips from ``pipeline/sample_data/``, each with hand-written timed captions from
``pipeline/sample_data/captions.json`` (what each clip shows: ``pipeline/sample_data/README.md``), in
this order:

1. ``intel-bottles``: ``bottles.mp4``, 9 s: a hand lifts a water bottle off a table and puts it back;
2. ``intel-person``: ``person.mp4``, 13 s: a man walks up to a small table, stands at it, walks away.

Both are cut from the Intel IoT devkit sample-videos collection, licensed CC BY 4.0 (see
``pipeline/sample_data/README.md`` and ``LICENSE``). The default ``ssd`` detector finds the bottles and
the person; hard negatives come from the captions (``parse_captions.hard_negatives``).
``data_root`` and the other paths are ignored.

Example::

    ds = build_dataset(DatasetConfig("sample"))
    [t.key for t in ds.tasks()]   # ['intel-bottles', 'intel-person']
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from pipeline.datasets.activitynet import _read_entry
from pipeline.datasets.base import DATASETS, Dataset, DatasetConfig, normalise_captions
from stages.base import VideoTask

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"


@DATASETS.register("sample")
class SampleDataset(Dataset):
    name = "sample"

    def __init__(self, cfg: DatasetConfig):
        super().__init__(cfg)
        self.captions_file = SAMPLE_DATA / "captions.json"
        if not self.captions_file.is_file():
            raise self.layout_error(f"{self.captions_file} is missing from this installation")
        self.entries = json.loads(self.captions_file.read_text(encoding="utf-8"))

    def describe_layout(self) -> str:
        return "nothing: pipeline/sample_data/ ships with finsta"

    def _iter_tasks(self) -> Iterator[VideoTask]:
        for key, entry in self.entries.items():
            raw, duration = _read_entry(entry)
            captions = normalise_captions(raw, duration, self._stats)
            yield self.make_task(key, key, SAMPLE_DATA / entry["video"], captions)
