"""Training from shards: ``train(shards, run_dir, config)``.

CPU by default; ``device="cuda"`` trains with bf16 autocast. Every
``config.log_every`` steps a line goes to ``RUN_DIR/metrics.jsonl``; every
``config.checkpoint_every`` steps (and at the end) a checkpoint is written with
the model, optimiser, scheduler, RNG states and the data position. With
``resume=True`` the latest checkpoint is restored and the run continues on
exactly the batches, dropout masks and learning rates an uninterrupted run
would have used (metrics lines after the checkpoint are dropped first, so the
file reads as one run).

Example::

    summary = train("out/synth", Path("runs/a"), TrainConfig(steps=300))
    summary["steps"], summary["graphs_per_s"]
"""
from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from finsta_model.checkpoint import LATEST, load_checkpoint, save_checkpoint
from finsta_model.config import TrainConfig
from finsta_model.data import ShardStream, make_loader
from finsta_model.host_data import cells_per_frame
from finsta_model.model import FinstaModel
from schemas.errors import UserError
from schemas.store import open_dataset

METRICS = "metrics.jsonl"
# changing these between a run and its resume would change what the run computes
_RESUME_FIXED = ("dim", "heads", "gtrm_layers", "rgtrm_layers", "dropout", "label_buckets", "use_sg", "use_osc",
                 "use_ptc", "use_stgd", "temperature", "osc_weight", "ptc_weight", "distill_weight",
                 "train_hard_negatives", "ptc_shifts", "fine_grained_weight", "batch_size", "lr", "weight_decay",
                 "warmup_steps", "grad_clip", "seed", "shuffle_buffer", "num_workers", "host_layers",
                 "host_fine_weight", "score_distill_weight", "align_distill_weight", "node_distill_weight",
                 "distill_temperature")


def resolve_device(name: str) -> torch.device:
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, not {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA device (torch.cuda.is_available() is False)")
    return torch.device(name)


def lr_factor(config: TrainConfig):
    """Linear warm-up, then cosine decay to 10 % of the peak at ``config.steps``."""
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _Progress:
    """A rich progress bar on a terminal; silent otherwise."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
            self.bar = Progress(TextColumn("train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False)
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=start, info="")

    def update(self, step: int, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _trim_metrics(path: Path, step: int) -> None:
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in keep))


def train(shards: str | Path, run_dir: str | Path, config: TrainConfig, resume: bool = False,
          device: str = "cpu", progress: bool = True, max_new_steps: Optional[int] = None) -> dict[str, Any]:
    """Train (or resume) a run; returns a summary dict. ``max_new_steps`` stops early (tests, crash drills)."""
    config.validate()
    run_dir = Path(run_dir)
    dataset = open_dataset(shards)
    dims, host = dict(dataset.manifest["feature_dims"]), dataset.manifest.get("host")
    cells = cells_per_frame(dataset)
    dev = resolve_device(device)
    has_checkpoint = (run_dir / "checkpoints" / LATEST).is_file()
    if has_checkpoint and not resume:
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out")
    if resume and not has_checkpoint:
        raise UserError(f"--resume: {run_dir} holds no checkpoint to resume from")
    run_dir.mkdir(parents=True, exist_ok=True)

    if dev.type == "cpu" and config.threads > 0:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    ckpt = load_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        changed = [k for k in _RESUME_FIXED if getattr(ckpt.config, k) != getattr(config, k)]
        if changed:
            raise UserError(f"--resume with a different config ({', '.join(changed)}); resume with the run's "
                            f"own settings (see {ckpt.path / 'state.json'}) or start a new --out")
        if ckpt.dims != dims:
            raise UserError(f"--resume on shards with other feature dims ({dims} vs {ckpt.dims})")
        if ckpt.state.get("host") != host:
            raise UserError(f"--resume on shards made by another host ({ckpt.state.get('host')} vs {host}); "
                            f"a run trains on one host's features")
    model = FinstaModel(config, dims).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config))
    workers = max(1, config.num_workers)
    step, epoch, consumed, in_epoch = 0, 0, [0] * workers, 0
    if ckpt is not None:
        model.load_state_dict(ckpt.model)
        optimizer.load_state_dict(ckpt.optimizer_state())
        scheduler.load_state_dict(ckpt.state["scheduler"])
        ckpt.restore_rng()
        step = ckpt.step
        pos = ckpt.state["position"]
        epoch, consumed, in_epoch = pos["epoch"], list(pos["consumed"]), pos["in_epoch"]
        _trim_metrics(run_dir / METRICS, step)
    (run_dir / "config.json").write_text(json.dumps(config.as_dict(), indent=1))

    stop_at = config.steps if max_new_steps is None else min(config.steps, step + max_new_steps)
    bar = _Progress(config.steps, step, progress)
    metrics = open(run_dir / METRICS, "a")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    model.train()
    videos = 0
    started = time.perf_counter()
    window_start, window_videos = started, 0
    last_path = None

    def position() -> dict[str, Any]:
        return {"epoch": epoch, "consumed": list(consumed), "in_epoch": in_epoch}

    try:
        while step < stop_at:
            stream = ShardStream(shards, config.batch_size, seed=config.seed, epoch=epoch, mode="train",
                                 buffer_size=config.shuffle_buffer, hard_negatives=config.train_hard_negatives,
                                 label_buckets=config.label_buckets, num_logical_workers=workers,
                                 skip=consumed, worker_offset=in_epoch % workers,
                                 cache_bytes=config.cache_mb << 20)
            produced = 0
            for batch in make_loader(stream, config.num_workers, pin_memory=dev.type == "cuda"):
                produced += 1
                worker, index = batch.origin
                consumed[worker] = index + 1
                in_epoch += 1
                batch = batch.to(dev)
                with autocast:
                    loss, parts = model.losses(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                videos += batch.num_videos
                window_videos += batch.num_videos
                if step % config.log_every == 0 or step == stop_at:
                    now = time.perf_counter()
                    line = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                            **{k: round(float(v), 6) for k, v in parts.items()},
                            "graphs_per_s": round(window_videos / max(now - window_start, 1e-9), 2)}
                    metrics.write(json.dumps(line) + "\n")
                    metrics.flush()
                    window_start, window_videos = now, 0
                    bar.update(step, f"loss {float(parts['nce']):.3f}")
                if step % config.checkpoint_every == 0 or step == stop_at:
                    last_path = save_checkpoint(run_dir, step, model, optimizer, scheduler, position(), config,
                                                dims, extra={"host": host, "cells_per_frame": cells})
                if step >= stop_at:
                    break
            else:
                if produced == 0 and in_epoch == 0:
                    raise UserError(f"{shards} yields no training batch: it needs at least 2 videos with a "
                                    f"real caption")
                epoch, consumed, in_epoch = epoch + 1, [0] * workers, 0
    finally:
        metrics.close()
        bar.close()
    elapsed = time.perf_counter() - started
    return {"run_dir": str(run_dir), "steps": step, "epoch": epoch,
            "checkpoint": str(last_path) if last_path else None,
            "graphs_per_s": round(videos / max(elapsed, 1e-9), 2), "seconds": round(elapsed, 1)}


def train_command(shards: Path, out: Path, config_file: Optional[Path] = None, steps: Optional[int] = None,
                  resume: bool = False, seed: Optional[int] = None, device: str = "cpu", no_osc: bool = False,
                  no_ptc: bool = False, no_stgd: bool = False, no_sg: bool = False,
                  checkpoint_every: Optional[int] = None, num_workers: Optional[int] = None) -> dict[str, Any]:
    """What ``python cli.py train`` does: build the config (file → flags), then :func:`train`.

    With ``resume`` and no ``config_file`` the run's own ``config.json`` is the base, so
    ``train --out RUN --resume [--steps N]`` continues (or extends) a run with its settings.
    """
    from finsta_model.config import load_config
    if not Path(shards).exists():
        raise UserError(f"--shards {shards} does not exist; build it with `python cli.py build-sgs --out {shards}`")
    stored = Path(out) / "config.json"
    if config_file is None and resume and stored.is_file():
        config = TrainConfig.from_dict(json.loads(stored.read_text()))
    else:
        config = load_config(config_file)
    switches = {"use_osc": False if no_osc else None, "use_ptc": False if no_ptc else None,
                "use_stgd": False if no_stgd else None, "use_sg": False if no_sg else None}
    config = config.replace(steps=steps, seed=seed, checkpoint_every=checkpoint_every, num_workers=num_workers,
                            **switches)
    config.validate()
    return train(shards, out, config, resume=resume, device=device)
