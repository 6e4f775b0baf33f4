"""Global negatives for data-parallel training: every replica's batch and encodings, gathered.

With ``train --ray-workers N`` each replica encodes its own ``batch_size / N`` videos (the costly part:
host encoders, GTrm, R-GTrm). :class:`Gather` then gives every replica the whole step's batch and
encodings, so every contrastive term (InfoNCE, the host's score, OSC, PTC's other-video windows, the
fine-grained score, the distillations) ranks against the global batch, exactly as one process would.

* The batch's structure (indices, masks, windows; not its input features, which only the encoders read)
  travels as objects and is merged by :func:`merge_batches`: the one place where each replica's
  batch-local indices (videos, detections, tracks, captions, text nodes) are offset by the rows of the
  replicas before it.
* Encodings travel with gradient (``torch.distributed.nn.functional.all_gather``, open_clip's
  ``gather_with_grad``): its backward sums each replica's gradient of its own rows over the replicas, and
  DDP averages the parameters' gradients, so the applied gradient is the one-process gradient.

Each replica then computes the loss of the whole batch (open_clip's ``local_loss=False``): the loss side is
not split over the replicas, the encoders are. Gathers run on their own process group, so their
collectives never interleave with DDP's gradient all-reduce.

Example::

    gather = Gather()                        # after torch.distributed.init_process_group, on every rank
    whole = gather.batch(local_batch)        # the global batch's structure
    video = gather.rows(local_video)         # [sum of B_r, d], with gradient
"""
from __future__ import annotations

import time
import warnings
from dataclasses import fields, replace
from typing import Optional

import torch
import torch.distributed as dist

from finsta_model.graphs import GraphBatch

# what each index field of a GraphBatch points at (the axis whose rows are offset per replica); -1 stays -1
INDEX_OF = {"det_video": "video", "track_video": "video", "cap_video": "video", "det_track": "track",
            "link_track": "track", "det_prev": "det", "edge_src": "det", "edge_dst": "det",
            "cap_neg_of": "caption", "node_cap": "caption", "tedge_src": "node", "tedge_dst": "node",
            "link_node": "node", "pt_node": "node"}
# fields padded along their second dimension (frames or tokens) to the largest replica's
PADDED = ("frame_feat", "frame_mask", "patch_feat", "tok_feat", "tok_mask")
# input features only the encoders read: sent at zero width (their shapes still say B, T, C, L)
FEATURES = ("frame_feat", "patch_feat", "det_feat", "node_feat", "cap_feat", "tok_feat")


def _counts(batch: GraphBatch) -> dict[str, int]:
    return {"video": batch.num_videos, "det": int(batch.det_feat.shape[0]), "track": int(batch.track_video.shape[0]),
            "caption": int(batch.cap_feat.shape[0]), "node": int(batch.node_feat.shape[0])}


def pad_to(x: torch.Tensor, shape: tuple[int, ...], value: float = 0) -> torch.Tensor:
    """``x`` padded at the end of every dimension up to ``shape``."""
    if tuple(x.shape) == tuple(shape):
        return x
    out = x.new_full(tuple(shape), value)
    out[tuple(slice(0, n) for n in x.shape)] = x
    return out


def merge_batches(batches: list[GraphBatch]) -> GraphBatch:
    """Replicas' batches as one: rows concatenated in rank order, frames and tokens padded to the
    longest, every batch-local index offset by the rows of the batches before it (what :func:`collate`
    of all their samples would give)."""
    t = max(b.num_frames for b in batches)
    tokens = max(int(b.tok_feat.shape[1]) for b in batches)
    offset = dict.fromkeys(_counts(batches[0]), 0)
    # video_only (uncaptioned videos) is merged apart (Gather.batch_or_none: some replicas may have none)
    parts: dict[str, list] = {f.name: [] for f in fields(GraphBatch) if f.name not in ("origin", "video_only")}
    for b in batches:
        for name, items in parts.items():
            value = getattr(b, name)
            if name in INDEX_OF:
                value = torch.where(value >= 0, value + offset[INDEX_OF[name]], value)
            elif name in PADDED:
                value = pad_to(value, (value.shape[0], t if name.startswith(("frame", "patch")) else tokens,
                                       *value.shape[2:]))
            elif name == "det_slot":
                value = (b.det_video + offset["video"]) * t + b.det_frame
            elif name == "pt_token":
                width = int(b.tok_feat.shape[1])
                value = (value // width + offset["caption"]) * tokens + value % width
            items.append(value)
        for axis, count in _counts(b).items():
            offset[axis] += count
    merged = {name: (sum(items, []) if isinstance(items[0], list) else torch.cat(items))
              for name, items in parts.items()}
    return GraphBatch(**merged, origin=batches[0].origin)


def structure(batch: GraphBatch) -> GraphBatch:
    """``batch`` without its input features (zero-width views that keep their shapes), on the CPU."""
    return replace(batch.to("cpu"), video_only=None,
                   **{name: getattr(batch, name)[..., :0].cpu() for name in FEATURES})


class Gather:
    """Collectives over the replicas of a data-parallel run, on a process group of their own (every
    rank makes the same calls in the same order; ``torch.distributed`` must be initialised)."""

    def __init__(self, group: Optional[dist.ProcessGroup] = None):
        self.group = group if group is not None else dist.new_group(backend=dist.get_backend())
        self.world, self.rank = dist.get_world_size(self.group), dist.get_rank(self.group)
        self.seconds = 0.0    # wall time in the forward gathers (bench/bench_train.py reports its share)

    def batch(self, batch: GraphBatch) -> GraphBatch:
        """The global batch's structure (see :func:`structure`), on ``batch``'s device."""
        started = time.perf_counter()
        device = batch.frame_mask.device
        items: list = [None] * self.world
        dist.all_gather_object(items, structure(batch), group=self.group)   # our own processes: trusted
        merged = merge_batches(items).to(device)
        self.seconds += time.perf_counter() - started
        return merged

    def batch_or_none(self, batch: Optional[GraphBatch], device: torch.device) -> Optional[GraphBatch]:
        """:meth:`batch` of the replicas that have one (a batch of a kind some replicas lack, e.g.
        ``video_only``), on ``device``; None on every rank when none has one."""
        started = time.perf_counter()
        items: list = [None] * self.world
        dist.all_gather_object(items, None if batch is None else structure(batch), group=self.group)
        present = [item for item in items if item is not None]
        merged = merge_batches(present).to(device) if present else None
        self.seconds += time.perf_counter() - started
        return merged

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """``x [n_r, ...]`` of every replica concatenated in rank order (the other dimensions zero-padded
        to the largest replica's), with gradient when ``x`` has one."""
        started = time.perf_counter()
        shape = torch.tensor(x.shape, dtype=torch.int64, device=x.device)
        shapes = [torch.empty_like(shape) for _ in range(self.world)]
        dist.all_gather(shapes, shape, group=self.group)
        shapes = [tuple(s.tolist()) for s in shapes]
        largest = tuple(max(s[i] for s in shapes) for i in range(x.dim()))
        padded = pad_to(x, largest)
        if x.requires_grad:
            from torch.distributed.nn.functional import all_gather
            with warnings.catch_warnings():   # "deprecated" in favour of a private API; still the public one
                warnings.simplefilter("ignore", FutureWarning)
                pieces = list(all_gather(padded, group=self.group))
        else:
            wire = padded.to(torch.uint8) if x.dtype == torch.bool else padded
            pieces = [torch.empty_like(wire) for _ in range(self.world)]
            dist.all_gather(pieces, wire.contiguous(), group=self.group)
            pieces = [p.to(x.dtype) for p in pieces]
        out = torch.cat([p[:s[0]] for p, s in zip(pieces, shapes)])
        self.seconds += time.perf_counter() - started
        return out
