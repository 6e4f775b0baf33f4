"""Linear probe of a dataset's host cells: do they carry the colour and shape of the object on them?

For every detection with ``color`` and ``shape`` attributes (the synthetic world's ``color`` detector gives
both), the ``frame_patch`` cell under its box centre is one row; a logistic regression trained on the rows of
``TRAIN`` is scored on those of ``TEST`` (another world). Prints JSON: per attribute the classes, train and
held-out accuracy, and the majority-class rate. docs/results.md uses it to compare cell sources
(``embed_visual.grid``, ``embed_visual.cell_block``)::

    python scripts/probe_cells.py out/host/sgs-train-11 out/host/sgs-val
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from schemas.store import open_dataset  # noqa: E402

ATTRIBUTES = ("color", "shape")


def cell_rows(shards: str) -> tuple[np.ndarray, dict[str, list[str]]]:
    """The cell under each attributed detection's box centre, and its attribute values."""
    rows, labels = [], {name: [] for name in ATTRIBUTES}
    for sample, features in open_dataset(shards).iter_samples():
        dsg, cells = sample.dsg, np.asarray(features.frame_patch, np.float32)
        if not len(dsg.frames) or not len(cells):
            continue
        per_frame = len(cells) // len(dsg.frames)
        grid = int(round(per_frame ** 0.5))
        values: dict[int, dict[str, str]] = {}
        for a in dsg.attributes:
            if a.target_kind == "detection":
                values.setdefault(a.target, {})[a.name] = a.value
        for i, det in enumerate(dsg.detections):
            if not set(ATTRIBUTES) <= values.get(i, {}).keys():
                continue
            cx, cy = (det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2
            cell = min(int(cy * grid), grid - 1) * grid + min(int(cx * grid), grid - 1)
            rows.append(cells[det.frame * per_frame + cell])
            for name in ATTRIBUTES:
                labels[name].append(values[i][name])
    if not rows:
        raise SystemExit(f"{shards}: no detection with {' and '.join(ATTRIBUTES)} attributes and cells")
    return np.stack(rows), labels


def probe(train_x, train_y, test_x, test_y, weight_decay: float, steps: int = 300) -> dict:
    classes = sorted(set(train_y))
    index = {c: i for i, c in enumerate(classes)}
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = torch.tensor((train_x - mean) / std), torch.tensor((test_x - mean) / std)
    ya = torch.tensor([index[c] for c in train_y])
    yb = torch.tensor([index.get(c, -1) for c in test_y])
    torch.manual_seed(0)
    linear = torch.nn.Linear(a.shape[1], len(classes))
    optimizer = torch.optim.Adam(linear.parameters(), 1e-3, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(linear(a), ya).backward()
        optimizer.step()
    with torch.no_grad():
        train_acc = (linear(a).argmax(1) == ya).float().mean().item()
        test_acc = (linear(b).argmax(1) == yb).float().mean().item()
    majority = max(float(np.mean(np.asarray(test_y) == c)) for c in classes)
    return {"classes": len(classes), "train_acc": round(train_acc, 3), "test_acc": round(test_acc, 3),
            "majority": round(majority, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("train")
    parser.add_argument("test")
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    (train_x, train_y), (test_x, test_y) = cell_rows(args.train), cell_rows(args.test)
    report = {"train": args.train, "test": args.test, "cell_width": int(train_x.shape[1]),
              "rows": [len(train_x), len(test_x)]}
    for name in ATTRIBUTES:
        report[name] = probe(train_x, train_y[name], test_x, test_y[name], args.weight_decay)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
