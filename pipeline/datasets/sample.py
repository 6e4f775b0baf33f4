"""The embedded default dataset: runs with nothing on disk but this repository.

It yields, in this order:

1. ``intel-bottles``: ``pipeline/sample_data/bottles.mp4``, 9 s of a real
   clip (a hand lifts a water bottle off a table and puts it back) with
   hand-written timed captions from ``pipeline/sample_data/captions.json``.
   Sample video from the Intel IoT devkit sample-videos collection, licensed
   CC BY 4.0 (see ``pipeline/sample_data/README.md`` and ``LICENSE``).
2. A few synthetic clips (:data:`SAMPLE_WORLD`), generated deterministically by
   ``pipeline.synthetic.generate`` into the cache folder on first use, with
   their hard negatives (see :mod:`pipeline.datasets.synthetic`).

``data_root`` and the other paths are ignored.

Example::

    ds = build_dataset(DatasetConfig("sample"))
    [t.key for t in ds.tasks()]   # ['intel-bottles', 'synth_0_00000', ...]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from pipeline.datasets.activitynet import _read_entry
from pipeline.datasets.base import DATASETS, Dataset, DatasetConfig, normalise_captions
from pipeline.datasets.synthetic import SyntheticWorld, generated_world
from stages.base import VideoTask

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
SAMPLE_WORLD = {"num_videos": 4, "seed": 0, "duration": 4.0}


@DATASETS.register("sample")
class SampleDataset(Dataset):
    name = "sample"

    def __init__(self, cfg: DatasetConfig):
        super().__init__(cfg)
        self.captions_file = SAMPLE_DATA / "captions.json"
        if not self.captions_file.is_file():
            raise self.layout_error(f"{self.captions_file} is missing from this installation")
        self.entries = json.loads(self.captions_file.read_text(encoding="utf-8"))
        world = generated_world(SAMPLE_WORLD, name="sample-synthetic")
        self.world = SyntheticWorld(DatasetConfig("synthetic", data_root=str(world)))

    def describe_layout(self) -> str:
        return "nothing: pipeline/sample_data/ ships with finsta, synthetic clips are generated into the cache"

    def _iter_tasks(self) -> Iterator[VideoTask]:
        for key, entry in self.entries.items():
            raw, duration = _read_entry(entry)
            captions = normalise_captions(raw, duration, self._stats)
            yield self.make_task(key, key, SAMPLE_DATA / entry["video"], captions)
        self.world._stats = self._stats  # one set of counters for the whole sample
        for task in self.world._iter_tasks():
            task.source = self.name
            yield task
