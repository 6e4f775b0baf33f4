"""Small random-but-valid datasets for finsta_model tests, written through the real store."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finsta_samples import DIMS, make_sample  # noqa: E402

from schemas.store import DatasetWriter  # noqa: E402


def write_dataset(root: Path, n_videos: int, per_shard: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    writer = DatasetWriter(root, config={"test": seed}, feature_dims=DIMS)
    samples = [make_sample(rng, f"vid{i:04d}") for i in range(n_videos)]
    for start in range(0, n_videos, per_shard):
        writer.write_shard(samples[start:start + per_shard], failures=[])
    return root


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """24 videos in 4 shards."""
    return write_dataset(tmp_path_factory.mktemp("finsta_ds") / "ds", n_videos=24, per_shard=6)
