"""Training steps/s on a GPU (or CPU), from random-but-valid scene graphs built in memory.

Needs only torch and numpy (no shard store), so it runs on a bare machine with
the repository copied. Batches are built once (encode_sample + collate), moved
to the device, then timed: forward + backward + AdamW, bf16 autocast on CUDA
and fp32 as the reference, in the same run. Prints one JSON object.

    python bench/bench_train_gpu.py [--device cuda] [--batch 64] [--dim 128] [--seconds 30]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finsta_model.config import TrainConfig  # noqa: E402
from finsta_model.graphs import collate, encode_sample  # noqa: E402
from finsta_model.model import FinstaModel  # noqa: E402


def make_batches(count: int, batch: int, dims: dict[str, int]) -> list:
    spec = importlib.util.spec_from_file_location("finsta_samples", ROOT / "tests" / "finsta_model" / "finsta_samples.py")
    samples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(samples)
    samples.DIMS.update(dims)
    samples.CELLS = 9          # a 3×3 grid, the embed_visual default
    rng = random.Random(0)
    out = []
    for b in range(count):
        encoded = [encode_sample(*samples.make_sample(rng, f"g{b}-{i}", n_frames=16, max_objects=5, n_captions=5),
                                 label_buckets=512) for i in range(batch)]
        out.append(collate(encoded, [[rng.choice(e.real_captions())] for e in encoded], True, dims))
    return out


def time_steps(model, batches, device, amp: bool, seconds: float) -> dict:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = [b.to(device) for b in batches]
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else (lambda: torch.autocast("cpu", enabled=False))

    def step(batch):
        with ctx():
            loss, _ = model.losses(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    for batch in batches[:3]:  # warm-up (allocator, kernels)
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    steps, graphs, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = batches[steps % len(batches)]
        loss = step(batch)
        steps += 1
        graphs += batch.num_videos
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"steps_per_s": round(steps / elapsed, 2), "graphs_per_s": round(graphs / elapsed, 1),
            "steps": steps, "final_loss": round(float(loss.detach()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(TrainConfig.threads)
    dims = {"frame": 1280, "detection": 32, "text_node": 384, "caption": 384, "caption_token": 384,
            "token_span": 3, "frame_patch": 1280}
    torch.manual_seed(0)
    batches = make_batches(args.batches, args.batch, dims)
    result = {"metric": "Finsta train steps/s (full model: host transformers + GTrm + R-GTrm + STGD + OSC + PTC "
                        "+ fine score + distillation into the host)",
              "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "batch": args.batch, "dim": args.dim,
              "nodes_per_batch": int(sum(b.det_feat.shape[0] for b in batches) / len(batches)),
              "host_video_tokens": int(batches[0].frame_feat.shape[1] * (1 + batches[0].patch_feat.shape[2])),
              "host_caption_tokens_max": int(batches[0].tok_feat.shape[1]),
              "edges_per_batch": int(sum(b.edge_src.shape[0] for b in batches) / len(batches))}
    model = FinstaModel(TrainConfig(dim=args.dim), dims).to(device)
    if device.type == "cuda":
        result["bf16_autocast"] = time_steps(model, batches, device, True, args.seconds)
    result["fp32"] = time_steps(FinstaModel(TrainConfig(dim=args.dim), dims).to(device), batches, device, False,
                                args.seconds)
    baseline = FinstaModel(TrainConfig(dim=args.dim, use_sg=False), dims).to(device)
    result["host_only_fp32"] = time_steps(baseline, batches, device, False, min(args.seconds, 10))
    if "bf16_autocast" in result:
        result["amp_speedup"] = round(result["bf16_autocast"]["steps_per_s"] / result["fp32"]["steps_per_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
