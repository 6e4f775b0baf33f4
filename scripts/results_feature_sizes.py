"""Bytes per sample of every stored feature array, and what a full ActivityNet Captions build would take.

    .venv/bin/python scripts/results_feature_sizes.py DATASET [DATASET ...] [--activitynet val_2.json]

For each dataset: per Zarr array, its rows, on-disk bytes (zstd-compressed chunks, what ``du`` counts) and
bytes per row and per sample; plus ``samples.arrow``. With ``--activitynet`` it extrapolates a full
ActivityNet Captions build (19,994 videos; Krishna et al. 2017) from that annotation file's videos
(duration → frames at ``--fps``, sentences → MiniLM tokens, counted with the real tokenizer) and the
on-disk bytes per row measured in the first dataset, for each ``--grids`` value; rows that the annotations
cannot give (detections per frame, hard negatives per caption, nodes per caption) come from the first
dataset (say which one: the lite detector on real clips, or the synthetic world). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.records import FEATURE_ARRAYS  # noqa: E402
from schemas.store import SHARDS, open_dataset  # noqa: E402

ACTIVITYNET_VIDEOS = 19_994


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(root: Path) -> dict:
    dataset = open_dataset(root)
    rows = {name: 0 for name in FEATURE_ARRAYS}
    disk = {name: 0 for name in FEATURE_ARRAYS}
    arrow = captions = 0
    for shard in dataset.shard_names():
        folder = root / SHARDS / shard
        arrow += (folder / "samples.arrow").stat().st_size
        table, _, _ = dataset.shard_columns(shard, ())
        captions += sum(len(h) for h in table.column("hsgs").to_pylist())
        for refs in table.column("features").to_pylist():
            for name in FEATURE_ARRAYS:
                rows[name] += refs[name]["count"]
        for name in FEATURE_ARRAYS:
            disk[name] += folder_bytes(folder / "features.zarr" / name)
    n = len(dataset)
    grid = (dataset.manifest.get("host") or {}).get("embed_visual", {}).get("grid")
    return {"dataset": str(root), "samples": n, "captions": captions, "grid": grid,
            "feature_dims": dataset.feature_dims,
            "arrays": {name: {"rows": rows[name], "disk_bytes": disk[name],
                              "bytes_per_row": round(disk[name] / rows[name], 1) if rows[name] else None,
                              "bytes_per_sample": round(disk[name] / n) if n else None} for name in FEATURE_ARRAYS},
            "samples_arrow_bytes_per_sample": round(arrow / n) if n else None,
            "total_bytes_per_sample": round((sum(disk.values()) + arrow) / n) if n else None}


def activitynet(annotations: Path, measured: dict, fps: float, grids: list[int]) -> dict:
    from transformers import AutoTokenizer

    from stages.embed_text import EmbedTextConfig
    from stages.hosts.minilm import minilm_model_dir

    data = json.loads(annotations.read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_model_dir(EmbedTextConfig())))
    sentences = [s.strip() for v in data.values() for s in v["sentences"]]
    tokens = sum(min(len(t), EmbedTextConfig().max_tokens) for t in tokenizer(sentences)["input_ids"])
    seconds = sum(v["duration"] for v in data.values())
    videos = len(data)
    a = measured["arrays"]
    per = {name: a[name]["bytes_per_row"] or 0.0 for name in FEATURE_ARRAYS}
    frames = measured["arrays"]["frame"]["rows"]
    real = measured["captions"] - 0  # every stored caption, hard negatives included
    share = {  # rows per unit the annotations give, from the measured dataset
        "captions_per_sentence": measured["captions"] / max(1, _real_captions(Path(measured["dataset"]))),
        "detections_per_frame": a["detection"]["rows"] / max(1, frames),
        "nodes_per_caption": a["text_node"]["rows"] / max(1, real)}
    scale = ACTIVITYNET_VIDEOS / videos
    n_frames = seconds * fps * scale
    n_captions = len(sentences) * share["captions_per_sentence"] * scale
    n_tokens = tokens * share["captions_per_sentence"] * scale
    base = {"frame": n_frames * per["frame"], "detection": n_frames * share["detections_per_frame"] * per["detection"],
            "text_node": n_captions * share["nodes_per_caption"] * per["text_node"],
            "caption": n_captions * per["caption"], "caption_token": n_tokens * per["caption_token"],
            "token_span": n_tokens * per["token_span"]}
    cell_bytes = per["frame_patch"]
    out = {"annotations": str(annotations), "videos_in_file": videos, "hours_in_file": round(seconds / 3600, 1),
           "sentences_in_file": len(sentences), "mean_tokens_per_sentence": round(tokens / len(sentences), 1),
           "fps": fps, "extrapolated_videos": ACTIVITYNET_VIDEOS, "rows_from_measured_dataset": share,
           "gb_without_cells": round(sum(base.values()) / 1e9, 1),
           "gb_by_array": {k: round(v / 1e9, 2) for k, v in base.items()}}
    out["gb_frame_patch_by_grid"] = {str(g): round(n_frames * g * g * cell_bytes / 1e9, 1) for g in grids}
    out["gb_total_by_grid"] = {str(g): round((sum(base.values()) + n_frames * g * g * cell_bytes) / 1e9, 1)
                               for g in grids}
    return out


def _real_captions(root: Path) -> int:
    dataset = open_dataset(root)
    count = 0
    for shard in dataset.shard_names():
        table, _, _ = dataset.shard_columns(shard, ())
        for hsgs in table.column("hsgs").to_pylist():
            count += sum(h["negative_of"] is None for h in hsgs)
    return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("datasets", type=Path, nargs="+")
    parser.add_argument("--activitynet", type=Path)
    parser.add_argument("--fps", type=float, default=1.0, help="decode.fps of the extrapolated build (default 1)")
    parser.add_argument("--grids", type=int, nargs="+", default=[0, 2, 3])
    args = parser.parse_args()
    measured = [measure(root) for root in args.datasets]
    result = {"measured": measured}
    if args.activitynet:
        result["activitynet"] = activitynet(args.activitynet, measured[0], args.fps, args.grids)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
