"""Host features only: batches for the SG-free host, read without any scene-graph column.

What the exported host reads from a shard (``schemas.records.HOST_FEATURES``):
the Zarr arrays ``frame``, ``frame_patch``, ``caption``, ``caption_token``,
``token_span``, and from ``samples.arrow`` only ``key``, the ``features``
offsets and each caption's ``negative_of`` / ``negative_type`` (which caption a
hard negative perturbs, for the hard-negative metrics). The DSG, the TSG
nodes/edges, the HSG links and windows, and the ``detection``/``text_node``
arrays are never opened (the Arrow file is memory-mapped: columns that are not
touched are not read; tested by emptying them).

Example::

    for batch in host_batches("out/test", batch_size=64):
        batch.frame_feat.shape, batch.tok_feat.shape     # [B, T, Df], [C, L, Dt]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from finsta_model.graphs import check_finite, copy_into, pad_patches, pad_tokens
from schemas.records import HOST_FEATURES
from schemas.store import Dataset, open_dataset


@dataclass
class HostSample:
    key: str
    frame: np.ndarray           # [T, Df]
    patch: np.ndarray           # [T, P, Dp]
    caption: np.ndarray         # [C, Dc]
    tokens: list[np.ndarray]    # per caption [L, Dt]
    negative_of: list[int]      # per caption: index of the caption it perturbs, -1 for a real one
    negative_type: list[str]


@dataclass
class HostBatch:
    keys: list[str]
    frame_feat: torch.Tensor    # [B, T, Df]
    frame_mask: torch.Tensor    # [B, T]
    patch_feat: torch.Tensor    # [B, T, P, Dp]
    cap_feat: torch.Tensor      # [C, Dc]
    tok_feat: torch.Tensor      # [C, L, Dt]
    tok_mask: torch.Tensor      # [C, L]
    cap_video: torch.Tensor     # [C] batch video
    cap_neg_of: torch.Tensor    # [C] batch caption or -1
    neg_types: list[str]

    def to(self, device) -> "HostBatch":
        return HostBatch(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()})


def host_samples(dataset: Dataset, shard: str) -> Iterator[HostSample]:
    """The samples of ``shard`` as host features (see the module docstring for what is read)."""
    table, _, arrays = dataset.shard_columns(shard, HOST_FEATURES)
    keys = table.column("key").to_pylist()
    refs = table.column("features").to_pylist()
    hsgs = table.column("hsgs").combine_chunks()
    captions = hsgs.flatten()                  # one struct per caption; only two of its fields are read
    negative_of = captions.field("negative_of").fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    negative_type = captions.field("negative_type").fill_null("").to_pylist()
    offsets = hsgs.offsets.to_numpy()
    for s, key in enumerate(keys):
        rows = check_finite(dataset.feature_rows(refs[s], arrays), key, shard)
        n_frames, n_caps = len(rows["frame"]), int(offsets[s + 1] - offsets[s])
        per_frame = len(rows["frame_patch"]) // n_frames if n_frames else 0
        cap = rows["token_span"][:, 0].astype(np.int64)
        bounds = np.searchsorted(cap, np.arange(n_caps + 1))
        yield HostSample(key=key, frame=rows["frame"],
                         patch=rows["frame_patch"][:n_frames * per_frame].reshape(n_frames, per_frame, -1),
                         caption=rows["caption"],
                         tokens=[rows["caption_token"][bounds[j]:bounds[j + 1]] for j in range(n_caps)],
                         negative_of=negative_of[offsets[s]:offsets[s + 1]].tolist(),
                         negative_type=negative_type[offsets[s]:offsets[s + 1]])


def host_collate(samples: list[HostSample], dims: dict[str, int]) -> HostBatch:
    """One batch: every caption of every video, hard negatives pointing at their batch caption."""
    t_max = max([len(s.frame) for s in samples] + [1])
    frame = np.zeros((len(samples), t_max, dims["frame"]), np.float32)
    mask = np.zeros((len(samples), t_max), bool)
    cap_video, neg_of, tokens, types, caption = [], [], [], [], []
    for v, s in enumerate(samples):
        copy_into(frame[v, :len(s.frame)], s.frame)
        mask[v, :len(s.frame)] = True
        base = len(cap_video)
        for j in range(len(s.caption)):
            cap_video.append(v)
            neg_of.append(base + s.negative_of[j] if s.negative_of[j] >= 0 else -1)
            tokens.append(s.tokens[j])
            types.append(s.negative_type[j])
        caption.append(np.asarray(s.caption, np.float32).reshape(-1, dims["caption"]))
    tok_feat, tok_mask = pad_tokens(tokens, dims["caption_token"])
    return HostBatch(
        keys=[s.key for s in samples], frame_feat=torch.from_numpy(frame), frame_mask=torch.from_numpy(mask),
        patch_feat=torch.from_numpy(pad_patches([s.patch for s in samples], t_max, dims["frame_patch"])),
        cap_feat=torch.from_numpy(np.concatenate(caption) if caption else np.zeros((0, dims["caption"]), np.float32)),
        tok_feat=torch.from_numpy(tok_feat), tok_mask=torch.from_numpy(tok_mask),
        cap_video=torch.tensor(cap_video, dtype=torch.int64), cap_neg_of=torch.tensor(neg_of, dtype=torch.int64),
        neg_types=types)


def host_batches(root: str | Path, batch_size: int) -> Iterator[HostBatch]:
    """Every video of the dataset at ``root`` in dataset order, ``batch_size`` videos a batch."""
    dataset = open_dataset(root)
    dims = dataset.feature_dims
    items: list[HostSample] = []
    for shard in dataset.shard_names():
        for sample in host_samples(dataset, shard):
            items.append(sample)
            if len(items) == batch_size:
                yield host_collate(items, dims)
                items = []
    if items:
        yield host_collate(items, dims)


def cells_per_frame(dataset: Dataset) -> int:
    """The ``frame_patch`` cells per frame of a dataset (0: none); ``UserError`` if its samples disagree
    (one dataset is made by one host with one grid)."""
    seen = set()
    for shard in dataset.shard_names():
        table, _, _ = dataset.shard_columns(shard, ())
        for refs in table.column("features").to_pylist():
            frames = refs["frame"]["count"]
            if frames:
                seen.add(refs["frame_patch"]["count"] // frames)
        if len(seen) > 1:
            from schemas.errors import UserError
            raise UserError(f"{dataset.root} mixes frame_patch grids ({sorted(seen)} cells a frame): "
                            f"its shards were made by different hosts")
    return seen.pop() if seen else 0
