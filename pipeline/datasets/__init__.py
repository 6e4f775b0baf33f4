"""Datasets: files on disk → :class:`stages.base.VideoTask` work items.

Importing this package registers every dataset in :data:`DATASETS`::

    from pipeline.datasets import DatasetConfig, build_dataset
    ds = build_dataset(DatasetConfig(name="manifest", data_root="mine.jsonl"))
"""
from pipeline.datasets.base import DATASETS, Dataset, DatasetConfig, build_dataset
from pipeline.datasets import activitynet, manifest, msrvtt, sample, synthetic  # noqa: F401  (register)

__all__ = ["DATASETS", "Dataset", "DatasetConfig", "build_dataset"]
