"""Streaming batches of scene graphs from a shard store.

:class:`ShardStream` is a ``torch.utils.data.IterableDataset`` that reads one
shard at a time (never the whole dataset), decodes it column-wise into
encoded samples (:func:`~finsta_model.columnar.encode_shard`, equal to
``encode_sample`` per record), keeps a bounded shuffle buffer of them and
yields collated :class:`~finsta_model.graphs.GraphBatch` objects. It is
deterministic for a given ``(seed, epoch)``:

* the shard order is a seeded permutation per epoch;
* shards are split across loader workers (``order[w::W]``), each worker
  shuffling inside its own buffer with its own seeded RNG, which also picks
  the caption each video is trained with;
* in data-parallel training (``world > 1`` replicas, ``finsta_model.distributed``)
  replica ``rank``'s loader worker ``w`` is global worker ``g = rank * W + w`` and
  reads ``order[g::world * W]``: no replica reads another's shards, and with
  ``world = 1`` this is the split above (same seeds, same batches);
* ``skip[w]`` batches of logical worker ``w`` are formed but not collated or
  yielded, and ``worker_offset`` rotates which DataLoader process plays which
  logical worker, so a resumed run sees exactly the batches an uninterrupted
  run would have seen next (the DataLoader visits workers round-robin).

Example::

    stream = ShardStream("out/synth", batch_size=32, seed=0, epoch=0)
    loader = make_loader(stream, num_workers=1)
    for batch in loader:
        batch.origin      # (logical worker, batch index in that worker)
"""
from __future__ import annotations

import random
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from finsta_model.columnar import encode_shard
from finsta_model.graphs import EncodedSample, GraphBatch, collate
from schemas.storage import location, resolved
from schemas.store import open_dataset


class ShardStream(IterableDataset):
    """Batches of encoded samples streamed shard by shard.

    ``mode="train"``: shuffled, one real caption per video (seeded pick),
    videos without a real caption skipped, batches of at least two videos.
    With ``uncaptioned`` they are kept instead: each batch holds ``batch_size``
    captioned videos and, as ``batch.video_only``, the uncaptioned ones the
    shuffle put between them (their own batch without captions).
    ``mode="eval"``: dataset order, every caption, every video.
    """

    def __init__(self, root: str | Path, batch_size: int, seed: int = 0, epoch: int = 0, mode: str = "train",
                 buffer_size: int = 256, hard_negatives: bool = True, label_buckets: int = 512,
                 num_logical_workers: int = 1, skip: Optional[list[int]] = None, worker_offset: int = 0,
                 cache_bytes: int = 0, rank: int = 0, world: int = 1, uncaptioned: bool = False):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', not {mode!r}")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a group of {world}")
        self.root = location(root)   # a Path, or a UrlPath for an s3:// dataset
        dataset = open_dataset(self.root)
        self.dims = dict(dataset.manifest["feature_dims"])
        self.shards = dataset.shard_names()
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = epoch
        self.mode = mode
        self.buffer_size = max(buffer_size, batch_size)
        self.hard_negatives = hard_negatives
        self.label_buckets = label_buckets
        self.num_logical_workers = max(1, num_logical_workers)
        self.skip = list(skip) if skip else [0] * self.num_logical_workers
        self.worker_offset = worker_offset
        self.cache_bytes = cache_bytes
        self.rank = rank
        self.world = world
        self.uncaptioned = uncaptioned

    def shard_order(self) -> list[str]:
        order = list(self.shards)
        if self.mode == "train":
            random.Random(f"{self.seed}/{self.epoch}/shards").shuffle(order)
        return order

    def _logical_worker(self) -> int:
        info = get_worker_info()
        physical, count = (0, 1) if info is None else (info.id, info.num_workers)
        if count != self.num_logical_workers:
            raise RuntimeError(f"ShardStream built for {self.num_logical_workers} workers, DataLoader has {count}")
        return (physical + self.worker_offset) % count

    def _samples(self, shards: list[str]) -> Iterator[EncodedSample]:
        dataset = None  # opened per worker: no shared file handles across processes
        for name in shards:
            cache_key = (resolved(self.root), name, self.label_buckets)
            encoded_shard = _CACHE.get(cache_key)
            if encoded_shard is None:
                dataset = dataset or open_dataset(self.root)
                encoded_shard = list(encode_shard(dataset, name, self.label_buckets))
                _CACHE.put(cache_key, encoded_shard, self.cache_bytes)
            for encoded in encoded_shard:
                if self.mode == "eval" or self.uncaptioned or encoded.real_captions():
                    yield encoded

    def rank_shards(self, worker: int = 0) -> list[str]:
        """The shards this replica's loader worker ``worker`` reads in this epoch."""
        group = self.world * self.num_logical_workers
        return self.shard_order()[self.rank * self.num_logical_workers + worker::group]

    def __iter__(self) -> Iterator[GraphBatch]:
        worker = self._logical_worker()
        shards = self.rank_shards(worker)
        if self.mode == "eval":
            yield from self._eval_batches(shards, worker)
            return
        global_worker = self.rank * self.num_logical_workers + worker
        rng = random.Random(f"{self.seed}/{self.epoch}/{global_worker}/buffer")
        buffer: list[EncodedSample] = []
        pending: list[EncodedSample] = []
        video_only: list[EncodedSample] = []     # uncaptioned videos (self.uncaptioned) riding with the batch
        index = 0

        def emit(items: list[EncodedSample], extra: list[EncodedSample]) -> Optional[GraphBatch]:
            nonlocal index
            picks = [[rng.choice(s.real_captions())] for s in items]  # drawn even when skipped: same RNG path
            index += 1
            if index <= self.skip[worker]:
                return None
            batch = collate(items, picks, self.hard_negatives, self.dims)
            if extra:
                batch.video_only = collate(extra, [[] for _ in extra], False, self.dims)
            batch.origin = (worker, index - 1)
            return batch

        def take(sample: EncodedSample) -> Iterator[GraphBatch]:
            (pending if sample.real_captions() else video_only).append(sample)
            if len(pending) == self.batch_size:
                batch = emit(pending[:], video_only[:])
                pending.clear()
                video_only.clear()
                if batch is not None:
                    yield batch

        for sample in self._samples(shards):
            if len(buffer) < self.buffer_size:
                buffer.append(sample)
                continue
            slot = rng.randrange(len(buffer))
            buffer[slot], sample = sample, buffer[slot]
            yield from take(sample)
        rng.shuffle(buffer)
        for sample in buffer:
            yield from take(sample)
        if len(pending) >= 2:
            batch = emit(pending, video_only)
            if batch is not None:
                yield batch

    def _eval_batches(self, shards: list[str], worker: int) -> Iterator[GraphBatch]:
        items: list[EncodedSample] = []
        index = 0
        for sample in self._samples(shards):
            items.append(sample)
            if len(items) == self.batch_size:
                batch = collate(items, [s.real_captions() for s in items], self.hard_negatives, self.dims)
                batch.origin = (worker, index)
                index += 1
                items = []
                yield batch
        if items:
            batch = collate(items, [s.real_captions() for s in items], self.hard_negatives, self.dims)
            batch.origin = (worker, index)
            yield batch


class _ShardCache:
    """Encoded shards kept between epochs, least recently used first out, up to a byte budget.

    Off by default (``cache_bytes=0``): the stream then holds one shard at a time. Worth turning on
    when the encoded dataset fits in memory: reading and decoding shards is most of the loader's time.
    The cache lives in the process that iterates: it helps in-process loading (worker processes
    end with each epoch).
    """

    def __init__(self):
        self.items: OrderedDict[tuple, tuple[list[EncodedSample], int]] = OrderedDict()

    def get(self, key: tuple) -> Optional[list[EncodedSample]]:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key][0]
        return None

    def put(self, key: tuple, value: list[EncodedSample], budget: int) -> None:
        if budget <= 0:
            return
        size = sum(_nbytes(s) for s in value)
        self.items[key] = (value, size)
        while self.items and sum(n for _, n in self.items.values()) > budget:
            self.items.popitem(last=False)


def _nbytes(sample: EncodedSample) -> int:
    arrays = [v for v in vars(sample).values() if hasattr(v, "nbytes")]
    arrays += [a for c in sample.captions for a in (c.feat, c.node_feat, c.tokens) if a is not None]
    return sum(a.nbytes for a in arrays) + 512 * (1 + len(sample.captions))


_CACHE = _ShardCache()


def _identity(batch: GraphBatch) -> GraphBatch:
    return batch


def make_loader(stream: ShardStream, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over ``stream``: ``num_workers`` processes (0 = in-process), one per logical worker."""
    if max(1, num_workers) != stream.num_logical_workers:
        raise ValueError(f"stream split for {stream.num_logical_workers} workers, loader asked for {num_workers}")
    # A private generator: creating a loader iterator draws a seed from it, and drawing from the global
    # torch RNG instead would shift the dropout masks of a resumed run.
    return DataLoader(stream, batch_size=None, num_workers=num_workers, collate_fn=_identity,
                      pin_memory=pin_memory, prefetch_factor=4 if num_workers else None,
                      generator=torch.Generator().manual_seed(stream.seed),
                      worker_init_fn=_ignore_sigint if num_workers else None)


def _ignore_sigint(worker_id: int) -> None:
    """Ctrl-C reaches every process of the terminal's group: a loader worker leaves it to ``train``,
    which checkpoints the step in progress and then stops the workers itself."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
