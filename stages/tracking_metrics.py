"""CLEAR-MOT tracking metrics (Bernardin & Stiefelhagen 2008), as py-motmetrics computes them.

Input is one list per frame of ``(track_id, (x1, y1, x2, y2))`` for ground
truth and for the tracker's output, in any box units (both the same). Per frame:

1. a ground-truth object keeps the hypothesis it was last matched to if that
   hypothesis is present again with ``IoU ≥ iou_threshold``;
2. the remaining objects and hypotheses are matched by Hungarian assignment
   maximising IoU, pairs under the threshold excluded;
3. a match whose hypothesis differs from the one this object was last
   matched to (in any earlier frame) is an **ID switch**;
4. unmatched objects are misses (FN), unmatched hypotheses false positives (FP).

``MOTA = 1 − (FN + FP + IDSW) / GT``; ``MOTP`` = mean IoU of the matches;
``precision = TP / (TP + FP)``; ``recall = TP / GT``;
``id_switches_per_100 = 100 · IDSW / GT`` where GT counts ground-truth boxes
(track-frames).

Example::

    gt   = [[(1, (0, 0, 10, 10))], [(1, (1, 0, 11, 10))]]
    pred = [[(7, (0, 0, 10, 10))], [(8, (1, 0, 11, 10))]]
    mot_metrics(gt, pred)["id_switches"]   # 1
"""
from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from stages.geometry import iou_matrix

BoxLike = Sequence[float]
FrameBoxes = Sequence[tuple[Hashable, BoxLike]]




def mot_metrics(gt: Sequence[FrameBoxes], pred: Sequence[FrameBoxes],
                iou_threshold: float = 0.5) -> dict:
    """CLEAR-MOT counts and rates over aligned per-frame lists (see the module docstring).

    Returns ``num_frames, num_gt, num_pred, matches, misses, false_positives,
    id_switches, id_switches_per_100, mota, motp, precision, recall``.
    """
    if len(gt) != len(pred):
        raise ValueError(f"gt has {len(gt)} frames but pred has {len(pred)}")
    last_match: dict[Hashable, Hashable] = {}   # gt id → hypothesis id it was last matched to
    num_gt = num_pred = matches = switches = 0
    iou_sum = 0.0
    for gt_frame, pred_frame in zip(gt, pred):
        gt_ids = [g for g, _ in gt_frame]
        pred_ids = [p for p, _ in pred_frame]
        num_gt += len(gt_ids)
        num_pred += len(pred_ids)
        if not gt_ids or not pred_ids:
            continue
        overlap = iou_matrix(np.asarray([b for _, b in gt_frame], np.float64).reshape(-1, 4),
                       np.asarray([b for _, b in pred_frame], np.float64).reshape(-1, 4))
        pairs: list[tuple[int, int]] = []
        pred_pos = {p: j for j, p in enumerate(pred_ids)}
        for i, g in enumerate(gt_ids):  # 1. keep established correspondences
            j = pred_pos.get(last_match[g]) if g in last_match else None
            if j is not None and overlap[i, j] >= iou_threshold and j not in {b for _, b in pairs}:
                pairs.append((i, j))
        used_gt = {i for i, _ in pairs}
        used_pred = {j for _, j in pairs}
        free_gt = [i for i in range(len(gt_ids)) if i not in used_gt]
        free_pred = [j for j in range(len(pred_ids)) if j not in used_pred]
        if free_gt and free_pred:  # 2. Hungarian on what is left
            sub = overlap[np.ix_(free_gt, free_pred)]
            rows, cols = linear_sum_assignment(-np.where(sub >= iou_threshold, sub, -1.0))
            pairs += [(free_gt[r], free_pred[c]) for r, c in zip(rows, cols)
                      if sub[r, c] >= iou_threshold]
        for i, j in pairs:
            g, p = gt_ids[i], pred_ids[j]
            if g in last_match and last_match[g] != p:  # 3. identity changed
                switches += 1
            last_match[g] = p
            iou_sum += float(overlap[i, j])
        matches += len(pairs)
    misses = num_gt - matches
    false_positives = num_pred - matches
    return {
        "num_frames": len(gt),
        "num_gt": num_gt,
        "num_pred": num_pred,
        "matches": matches,
        "misses": misses,
        "false_positives": false_positives,
        "id_switches": switches,
        "id_switches_per_100": 100.0 * switches / num_gt if num_gt else 0.0,
        "mota": 1.0 - (misses + false_positives + switches) / num_gt if num_gt else float("nan"),
        "motp": iou_sum / matches if matches else float("nan"),
        "precision": matches / num_pred if num_pred else float("nan"),
        "recall": matches / num_gt if num_gt else float("nan"),
    }
