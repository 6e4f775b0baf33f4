"""One replica of tests/finsta_model/test_gather.py's two-process run (gloo on CPU, no Ray): its loss parts
and gradients with global negatives, saved for the test to compare with one process.

    python gather_replica.py RANK WORLD INIT_FILE DATASET OUT
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from finsta_model.columnar import encode_shard  # noqa: E402
from finsta_model.config import TrainConfig  # noqa: E402
from finsta_model.graphs import GraphBatch, collate  # noqa: E402
from finsta_model.model import FinstaModel  # noqa: E402
from schemas.store import open_dataset  # noqa: E402

# every loss term on (fine-grained score, STGD, OSC, PTC, all distillations, the host's object slots with
# representation distillation and box supervision, the video-side score with its directed slot pairs, and
# representation distillation on videos without captions); no dropout: the same computation in both runs
CONFIG = TrainConfig(dim=16, heads=2, gtrm_layers=1, rgtrm_layers=2, host_layers=1, dropout=0.0, label_buckets=64,
                     host_slots=3, rep_distill_weight=0.5, video_side_weight=0.5, uncaptioned=True,
                     slot_box_weight=0.5, slot_unit_weight=0.5)
VIDEOS = 8
UNCAPTIONED = 3     # the dataset's videos after the first VIDEOS ride along as videos without captions


def samples_and_dims(dataset: Path):
    data = open_dataset(dataset)
    samples = [s for shard in data.shard_names() for s in encode_shard(data, shard, CONFIG.label_buckets)
               if s.real_captions()]
    return samples[:VIDEOS + UNCAPTIONED], dict(data.manifest["feature_dims"])


def batch_of(samples, dims, uncaptioned=()) -> GraphBatch:
    """The batch of ``samples`` (all their real captions), with ``uncaptioned`` as its videos without captions."""
    batch = collate(samples, [s.real_captions() for s in samples], True, dims)
    if uncaptioned:
        batch.video_only = collate(list(uncaptioned), [[] for _ in uncaptioned], False, dims)
    return batch


def model(dims) -> FinstaModel:
    torch.manual_seed(0)
    return FinstaModel(CONFIG, dims)


def main(rank: int, world: int, init: str, dataset: str, out: str) -> None:
    import torch.distributed as dist

    from finsta_model.gather import Gather
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    samples, dims = samples_and_dims(Path(dataset))
    samples, uncaptioned = samples[:VIDEOS], samples[VIDEOS:]
    per = len(samples) // world
    net = model(dims)
    # rank 0 has every video without captions, the others none (they hand the gathers zero videos)
    mine = batch_of(samples[rank * per:(rank + 1) * per], dims, uncaptioned if rank == 0 else ())
    loss, parts = net.losses(mine, Gather())
    loss.backward()
    torch.save({"parts": {k: float(v) for k, v in parts.items()},
                "grads": {n: p.grad for n, p in net.named_parameters() if p.grad is not None}}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:6])
