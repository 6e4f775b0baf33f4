"""Train the ``learned`` caption parser's heads on FACTUAL-MR *training* captions (dev files are never read).

Usage (``nice``: the development machine is shared)::

    nice -n 10 python scripts/train_caption_parser.py ../shared/data/factual/factual_mr_train.csv \\
        [--limit 10000] [--epochs 8] [--out stages/captions/learned_parser.safetensors]

Steps: MiniLM word states of every caption (frozen; the slow part on CPU, cached
in ``--cache`` as .npy so a rerun skips it), targets from aligning each gold
segment to the caption's words (:func:`stages.captions.learned.align`), then
Adam on the BiLSTM + tag + biaffine edge heads (cross-entropy on tags; on edges
over all word pairs of a caption, "none" down-weighted). Prints one JSON line
per epoch (loss, tag accuracy on a 5 % held-out slice of the training file)
and writes the weights of the best epoch on that slice as float16
safetensors (under 1 MB), after every epoch that improves it.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from build_caption_lexicons import clean_segments  # noqa: E402
from stages.captions.learned import EDGES, TAGS, WEIGHTS, WordEncoder, align, build_model, pad  # noqa: E402


def features(captions: list[str], cache: Path, batch: int) -> list[np.ndarray]:
    if cache.with_suffix(".npz").is_file():
        data = np.load(cache.with_suffix(".npz"))
        flat, lengths = data["flat"], data["lengths"]
        if len(lengths) == len(captions):
            bounds = np.concatenate([[0], np.cumsum(lengths)])
            return [flat[bounds[i]:bounds[i + 1]].astype(np.float32) for i in range(len(captions))]
    encoder = WordEncoder()
    out: list[np.ndarray] = []
    started = time.time()
    for first in range(0, len(captions), batch):
        out += encoder.encode(captions[first:first + batch])
        if first // batch % 20 == 0:
            print(json.dumps({"encoded": len(out), "seconds": round(time.time() - started, 1)}), flush=True)
    np.savez(cache.with_suffix(".npz"), flat=np.concatenate(out).astype(np.float16),
             lengths=np.array([len(f) for f in out]))
    return out


def targets(items: list[tuple[list[int], list[tuple[int, int, int]]]], n: int):
    import torch

    tags = torch.full((len(items), n), -100, dtype=torch.long)
    edges = torch.full((len(items), n, n), -100, dtype=torch.long)
    for b, (t, e) in enumerate(items):
        m = min(len(t), n)
        tags[b, :m] = torch.tensor(t[:m])
        edges[b, :m, :m] = 0
        for i, j, label in e:
            if i < m and j < m:
                edges[b, i, j] = label
    return tags, edges


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train", type=Path)
    ap.add_argument("--limit", type=int, default=0, help="first N captions only (0 = all)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/finsta_caption_features"))
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    args = ap.parse_args()

    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    with args.train.open(newline="", encoding="utf-8") as handle:
        rows = [(r["caption"], r["scene_graph"]) for r in csv.DictReader(handle)]
    if args.limit:
        rows = rows[:args.limit]
    captions = [c for c, _ in rows]
    feats = features(captions, args.cache.with_name(f"{args.cache.name}_{len(rows)}"), 128)
    items = [align(c, clean_segments(g)) for c, g in rows]
    order = list(range(len(rows)))
    random.Random(args.seed).shuffle(order)
    held = set(order[:len(order) // 20])
    train_ids = [i for i in order if i not in held]
    model = build_model()
    optim = torch.optim.Adam(model.parameters(), lr=args.lr)
    edge_weight = torch.ones(len(EDGES))
    edge_weight[0] = 0.1   # most word pairs are not related
    best = -1.0
    for epoch in range(args.epochs):
        model.train()
        random.Random(args.seed + epoch).shuffle(train_ids)
        total, started = 0.0, time.time()
        for first in range(0, len(train_ids), args.batch):
            ids = train_ids[first:first + args.batch]
            x, mask = pad([feats[i] for i in ids])
            tags, edges = targets([items[i] for i in ids], x.shape[1])
            tag_logits, edge_logits = model(x, mask)
            loss = torch.nn.functional.cross_entropy(tag_logits.reshape(-1, len(TAGS)), tags.reshape(-1),
                                                     ignore_index=-100)
            loss = loss + torch.nn.functional.cross_entropy(edge_logits.reshape(-1, len(EDGES)), edges.reshape(-1),
                                                            weight=edge_weight, ignore_index=-100)
            optim.zero_grad()
            loss.backward()
            optim.step()
            total += float(loss.detach()) * len(ids)
        model.eval()
        with torch.no_grad():
            ids = sorted(held)
            x, mask = pad([feats[i] for i in ids])
            tags, _ = targets([items[i] for i in ids], x.shape[1])
            pred = model(x, mask)[0].argmax(-1)
            ok = tags >= 0
            accuracy = float((pred[ok] == tags[ok]).float().mean())
        print(json.dumps({"epoch": epoch + 1, "loss": round(total / len(train_ids), 4),
                          "held_out_tag_accuracy": round(accuracy, 4), "seconds": round(time.time() - started, 1)}),
              flush=True)
        if accuracy >= best:  # keep the epoch that tags the held-out slice best
            best = accuracy
            save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(args.out))
    print(json.dumps({"weights": str(args.out), "bytes": args.out.stat().st_size, "captions": len(rows)}))


if __name__ == "__main__":
    main()
