"""Training from shards: ``train(shards, run_dir, config)``.

CPU by default; ``device="cuda"`` trains with bf16 autocast. Every
``config.log_every`` steps a line goes to ``RUN_DIR/metrics.jsonl`` and to the
console (:class:`TrainLog`: a progress bar on a terminal, a plain loss line
otherwise); every ``config.checkpoint_every`` steps (and at the end) a
checkpoint is written with the model, optimiser, scheduler, RNG states and the
data position. With ``resume=True`` the latest checkpoint is restored and the
run continues on exactly the batches, dropout masks and learning rates an
uninterrupted run would have used (metrics lines after the checkpoint are
dropped first, so the file reads as one run).

The step loop, :func:`run_loop`, runs in one process here and on every replica
of a data-parallel run (:mod:`finsta_model.distributed`, ``train --ray-workers N``):
:class:`Replicas` says which rank it is and provides the few collectives it needs
(world size 1: none, and the loop is exactly the single-process one).

Example::

    summary = train("out/synth", Path("runs/a"), TrainConfig(steps=300))
    summary["steps"], summary["graphs_per_s"]
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, TextIO

import numpy as np
import torch
from torch import nn

from finsta_model.checkpoint import LATEST, check_finite_loss, load_checkpoint, rank_state, save_checkpoint
from finsta_model.config import TrainConfig
from finsta_model.data import ShardStream, make_loader
from finsta_model.gather import Gather
from finsta_model.host_data import cells_per_frame
from finsta_model.model import FinstaModel
from schemas.errors import UserError
from schemas.options import diff
from schemas.stop import EXIT_CODES, StopSignals
from schemas.storage import location, resolved
from schemas.store import open_dataset

METRICS = "metrics.jsonl"
# What a run folder holds: ``--overwrite`` removes these and nothing else.
RUN_FILES = ("config.json", METRICS, "checkpoints")
# the one result-changing field a resume may change: a larger ``steps`` extends the run (its cosine schedule
# is then that of the longer run from the checkpoint on)
RESUME_MAY_CHANGE = ("steps",)


def resume_changes(run: TrainConfig, new: TrainConfig) -> list[str]:
    """The fields whose change between a run's config and its resume's would change what the run computes:
    every field not declared ``runtime`` (finsta_model/config.py), ``steps`` aside."""
    return [key for key, _, _ in diff(run.identity(), new.identity()) if key not in RESUME_MAY_CHANGE]


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


# ------------------------------------------------------------------ replicas
class Replicas:
    """This process's place in a data-parallel group, and the collectives :func:`run_loop` needs.

    ``Replicas()`` is a single process (every collective is the identity, no
    ``torch.distributed``). With ``world > 1`` the default process group must be
    initialised (Ray Train's ``TorchTrainer`` does it) and every rank must make the
    same calls in the same order.

    Example::

        replicas = Replicas(rank=dist.get_rank(), world=dist.get_world_size(), device=device)
        replicas.all_true(batch is not None)   # False on every rank as soon as one rank has no batch
    """

    def __init__(self, rank: int = 0, world: int = 1, device: torch.device = torch.device("cpu")):
        self.rank, self.world, self.device = rank, world, device

    def global_batch(self) -> Optional[Gather]:
        """The collectives that give every replica the whole step's batch (global negatives); None when
        alone. A collective call: every rank makes it, once."""
        return Gather() if self.world > 1 else None

    def wrap(self, module: nn.Module) -> nn.Module:
        """The module whose backward averages gradients over the replicas (DDP); itself when alone."""
        if self.world == 1:
            return module
        return nn.parallel.DistributedDataParallel(
            module, device_ids=[self.device] if self.device.type == "cuda" else None,
            find_unused_parameters=True)   # a batch without predicates or links leaves some heads unused

    def all_true(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        value = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
        return bool(value.item())

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over the replicas (every rank passes the same keys)."""
        if self.world == 1:
            return values
        keys = sorted(values)
        tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return {k: float(v) / self.world for k, v in zip(keys, tensor.tolist())}

    def first_signal(self, signum: Optional[int]) -> Optional[int]:
        """A stop asked of any replica, on every replica (the same step ends the run everywhere); None if none."""
        if self.world == 1:
            return signum
        value = torch.tensor([signum or 0], dtype=torch.int64, device=self.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return int(value.item()) or None

    def total(self, count: int) -> int:
        if self.world == 1:
            return count
        tensor = torch.tensor([count], dtype=torch.int64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return int(tensor.item())

    def gather(self, item: Any) -> list[Any]:
        """Every rank's ``item`` in rank order (our own processes' states: trusted)."""
        if self.world == 1:
            return [item]
        items: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(items, item)
        return items


def replica_seed(seed: int, rank: int) -> int:
    """The RNG seed of replica ``rank`` after model initialisation (dropout masks differ per replica;
    rank 0 keeps ``seed``'s stream, so a one-replica run is the single-process run)."""
    return seed if rank == 0 else zlib.crc32(f"{seed}/replica/{rank}".encode())


class _Losses(nn.Module):
    """``model.losses`` as a forward pass, so DistributedDataParallel sees the step."""

    def __init__(self, model: FinstaModel, gather: Optional[Gather] = None):
        super().__init__()
        self.model, self.gather = model, gather

    def forward(self, batch):
        return self.model.losses(batch, self.gather)


def _lockstep(batches: Iterable, replicas: Replicas) -> Iterator:
    """The loader's batches while every replica still has one: an epoch ends for all replicas when the
    first runs out (so every rank makes the same number of steps; the others' tails are dropped)."""
    for batch in batches:
        if not replicas.all_true(True):
            return
        yield batch
    replicas.all_true(False)


# ------------------------------------------------------------------ console
def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class TrainLog:
    """What ``train`` prints while it runs, from the metrics lines (the same dicts as ``metrics.jsonl``).

    On a terminal (``stream.isatty()``): a rich progress bar (steps, loss, graphs/s, ETA), updated every
    step. Otherwise one plain line per metrics line, e.g.
    ``train step 40/300 · total 3.2140 · nce 2.1012 osc 0.9311 ptc 1.0822 distill 0.4120 · lr 9.80e-04 ·
    61.2 graphs/s · ETA 1m25s``. The ETA is the remaining steps at the rate measured since ``start``
    (``clock`` is injectable for tests); ``anchor_on_first=True`` measures from the first line instead
    (a Ray run, whose start-up is not training).

    Example::

        log = TrainLog(total=300, start=0)
        log.record({"step": 10, "lr": 1e-3, "total": 3.2, "graphs_per_s": 60.0})
        log.close()
    """

    PARTS = ("nce", "osc", "ptc", "distill")

    def __init__(self, total: int, start: int, stream: Optional[TextIO] = None,
                 clock: Callable[[], float] = time.monotonic, terminal: Optional[bool] = None,
                 anchor_on_first: bool = False):
        self.total, self.start = total, start
        self.stream = stream or sys.stderr
        self.clock = clock
        self.started = clock()
        self.anchored = not anchor_on_first
        self.last = ""        # the rate of the latest metrics line, shown after the loss
        self.bar = None
        if terminal if terminal is not None else self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
            self.bar = Progress(TextColumn("train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                console=Console(file=self.stream, force_terminal=True), transient=False)
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=start, info="")

    def eta(self, step: int) -> float:
        done, elapsed = step - self.start, self.clock() - self.started
        return (self.total - step) * elapsed / done if done > 0 else float("inf")

    def format(self, line: dict[str, Any]) -> str:
        parts = " ".join(f"{k} {line[k]:.4f}" for k in self.PARTS if k in line)
        return (f"train step {line['step']}/{self.total} · total {line.get('total', line.get('nce', 0.0)):.4f} · "
                f"{parts} · lr {line['lr']:.2e} · {line['graphs_per_s']:.1f} graphs/s · "
                f"ETA {_duration(self.eta(line['step']))}")

    def step(self, step: int, loss: Optional[float] = None) -> None:
        """The bar at ``step``, with that step's loss (the metrics lines average over ``log_every``)."""
        if self.bar is not None:
            if loss is not None:
                self.loss = loss
            info = " · ".join(filter(None, [f"loss {self.loss:.3f}" if self.loss is not None else "", self.last]))
            self.bar.update(self.task, completed=step, info=info, refresh=True)

    loss: Optional[float] = None

    def record(self, line: dict[str, Any]) -> None:
        if not self.anchored:
            self.start, self.started, self.anchored = line["step"], self.clock(), True
        if self.bar is not None:
            self.last = f"{line['graphs_per_s']:.1f} graphs/s"
            self.step(line["step"], line.get("total", line.get("nce")))
        else:
            print(self.format(line), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# ------------------------------------------------------------------ metrics file
def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The metrics lines of a run; a torn line (a crash mid-write) or any unreadable one is skipped."""
    lines = []
    if path.exists():
        for text in path.read_text(errors="replace").splitlines():
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if isinstance(line, dict) and isinstance(line.get("step"), int):
                lines.append(line)
    return lines


def _trim_metrics(path: Path, step: int) -> None:
    """Keep the lines up to ``step`` (the checkpoint a run continues from), atomically."""
    if path.exists():
        keep = [line for line in read_metrics(path) if line["step"] <= step]
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(json.dumps(line) + "\n" for line in keep))
        os.replace(tmp, path)


# ------------------------------------------------------------------ driver side
def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / "checkpoints" / LATEST).is_file()


def check_run_folder(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Without ``resume`` a run starts in an empty (or new) folder; ``overwrite`` first removes a run's own
    files (:data:`RUN_FILES`), never anything else. Refuses in one line."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other: continue the run, or start it over")
    if resume or not run_dir.is_dir():
        return
    entries = sorted(p.name for p in run_dir.iterdir())
    if not entries:
        return
    others = [name for name in entries if name not in RUN_FILES]
    if not overwrite:
        what = "a run" if has_checkpoint(run_dir) else f"files ({', '.join(entries[:3])}{', ...' if len(entries) > 3 else ''})"
        raise UserError(f"{run_dir} already holds {what}; pass --resume to continue it, --overwrite to start over, "
                        "or choose another --out")
    if others:
        raise UserError(f"--overwrite: {run_dir} holds files that are not a run's ({', '.join(others[:3])}); "
                        "choose another --out")
    for name in entries:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def prepare_run(shards: str | Path, run_dir: str | Path, config: TrainConfig, resume: bool,
                world: int = 1, overwrite: bool = False) -> dict[str, int]:
    """The checks and files before any step (in the driver): returns the shards' feature dims.

    Refuses (one line): a non-empty run folder without ``resume`` (``overwrite`` starts it over),
    ``resume`` without a checkpoint, a resume whose config, feature dims or number of replicas differ
    from the run's."""
    config.validate()
    run_dir = Path(run_dir)
    if not location(shards).exists():
        raise UserError(f"--shards {shards} does not exist; build it with `python cli.py build-sgs --out {shards}`")
    manifest = open_dataset(shards).manifest
    dims, host = dict(manifest["feature_dims"]), manifest.get("host")
    check_run_folder(run_dir, resume, overwrite)
    found = has_checkpoint(run_dir)
    if resume and not found:
        raise UserError(f"--resume: {run_dir} holds no checkpoint to resume from")
    if resume:
        ckpt = load_checkpoint(run_dir)
        changed = resume_changes(ckpt.config, config)
        if changed:
            raise UserError(f"--resume with a different config ({', '.join(changed)}); resume with the run's "
                            f"own settings (see {ckpt.path / 'state.json'}) or start a new --out")
        if ckpt.dims != dims:
            raise UserError(f"--resume on shards with other feature dims ({dims} vs {ckpt.dims})")
        if ckpt.state.get("host") != host:
            raise UserError(f"--resume on shards made by another host ({ckpt.state.get('host')} vs {host}); "
                            f"a run trains on one host's features")
        if ckpt.world_size != world:
            how = "without --ray-workers" if ckpt.world_size == 1 else f"with --ray-workers {ckpt.world_size}"
            raise UserError(f"--resume: {run_dir} was trained by {ckpt.world_size} replica(s); resume it {how} "
                            f"(the data split and RNG states are per replica)")
    elif config.init_host:
        init_host_weights(config, dims, host)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.as_dict(), indent=1))
    return dims


def train(shards: str | Path, run_dir: str | Path, config: TrainConfig, *, resume: bool = False,
          device: str = "cpu", progress: bool = True, max_new_steps: Optional[int] = None,
          overwrite: bool = False) -> dict[str, Any]:
    """Train (or resume) a run in this process; returns a summary dict. ``max_new_steps`` stops early
    (tests, crash drills); ``progress=False`` prints nothing. SIGINT/SIGTERM end the step in progress,
    write its checkpoint and raise :class:`TrainingInterrupted` (:class:`schemas.stop.StopSignals`, as
    ``build-sgs``: a second signal, or none of that within its grace period, ends the process at once with
    one line). ``config``
    is the whole run's definition (:func:`finsta_model.config.run_config` builds it as ``python cli.py
    train`` does); on Ray workers: :func:`finsta_model.distributed.train_distributed`."""
    dims = prepare_run(shards, run_dir, config, resume, overwrite=overwrite)
    replicas = Replicas(device=resolve_device(device))
    with StopSignals() as stop:   # build-sgs's signal handling (schemas/stop.py)
        stop.hard_exit_note = lambda: last_checkpoint_note(Path(run_dir))
        return run_loop(shards, run_dir, config, dims, replicas, max_new_steps=max_new_steps,
                        log=(lambda total, start: TrainLog(total, start)) if progress else None,
                        stop=lambda: stop.signum)


class TrainingInterrupted(Exception):
    """A signal stopped ``train`` after the step in progress; ``checkpoint`` holds that step (None: stopped
    before the first step, e.g. while Ray started). :meth:`line` says how to go on; ``exit_code`` is 130
    (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, signum: int, step: int, checkpoint: Optional[Path], run_dir: Path):
        super().__init__(f"interrupted at step {step}")
        self.signum, self.step, self.checkpoint, self.run_dir = signum, step, checkpoint, run_dir
        self.exit_code = EXIT_CODES.get(signum, 128 + signum)

    def line(self, shards: str | Path) -> str:
        name = signal.Signals(self.signum).name
        if self.checkpoint is None:
            return f"interrupted ({name}) before the first step; rerun the same command to start"
        return (f"interrupted ({name}): step {self.step} saved in {self.checkpoint}; resume with "
                f"python cli.py train --shards {shards} --out {self.run_dir} --resume")


def last_checkpoint_note(run_dir: Path) -> str:
    """What the line of a process ended mid-stop adds (schemas.stop's ``hard_exit_note``): where to go on from."""
    latest = run_dir / "checkpoints" / LATEST
    if not latest.is_file():
        return "no checkpoint yet"
    return f"last checkpoint {latest.read_text().strip()} in {run_dir}: rerun the same command with --resume"


# ------------------------------------------------------------------ the loop (every replica)
def _restore(ckpt, rank: int, model: nn.Module, optimizer, scheduler) -> tuple[int, int, list[int], int]:
    """Load weights, optimiser, scheduler and replica ``rank``'s RNG states; its (step, epoch, consumed,
    in_epoch)."""
    model.load_state_dict(ckpt.model)
    optimizer.load_state_dict(ckpt.optimizer_state())
    scheduler.load_state_dict(ckpt.state["scheduler"])
    ckpt.restore_rng(rank)
    pos = ckpt.position(rank)
    return ckpt.step, pos["epoch"], list(pos["consumed"]), pos["in_epoch"]


def _metrics_line(step: int, epoch: int, lr: float, parts: dict[str, torch.Tensor], videos: int, seconds: float,
                  replicas: Replicas) -> dict[str, Any]:
    """One ``metrics.jsonl`` line: the loss parts averaged over the replicas, all replicas' graphs/s."""
    values = replicas.mean({k: float(v) for k, v in parts.items()})
    return {"step": step, "epoch": epoch, "lr": lr, **{k: round(v, 6) for k, v in values.items()},
            "graphs_per_s": round(videos / max(seconds, 1e-9), 2)}


def init_host_weights(config: TrainConfig, dims: dict[str, int], host: Optional[dict]) -> dict[str, torch.Tensor]:
    """The host weights of the exported host ``config.init_host`` (post-training an existing host), after
    checking it fits this run. Refuses (one line) a host made from other backbones' features (``host``: the
    shards' identity), of other feature dims or of other sizes than this config's."""
    from finsta_model.export import load_host
    from finsta_model.model import build_host

    path = config.init_host
    exported = load_host(path)
    if exported.info.get("host") != host:
        raise UserError(f"--init-host {path} was trained on another host's features ({exported.info.get('host')} "
                        f"vs these shards' {host})")
    wanted = {k: int(dims.get(k, 0)) for k in exported.dims}
    if exported.dims != wanted:
        raise UserError(f"--init-host {path} reads feature dims {exported.dims}, these shards have {wanted}")
    sizes = build_host(config, dims).arguments()
    if exported.model.arguments() != sizes:
        raise UserError(f"--init-host {path} is a host of other sizes ({exported.model.arguments()}) than this "
                        f"config's ({sizes}); train with its sizes")
    return exported.model.state_dict()


def run_loop(shards: str | Path, run_dir: str | Path, config: TrainConfig, dims: dict[str, int],
             replicas: Replicas, max_new_steps: Optional[int] = None,
             log: Optional[Callable[[int, int], TrainLog]] = None,
             after_step: Optional[Callable[[int], None]] = None,
             stop: Optional[Callable[[], Optional[int]]] = None) -> dict[str, Any]:
    """The training steps of one replica, from ``run_dir``'s latest checkpoint when there is one.

    Each replica streams its own shards (``ShardStream(rank, world)``) in batches of
    ``batch_size / world``, so a step's global batch is ``batch_size`` whatever the world size. Rank 0
    writes ``metrics.jsonl`` (values averaged over the replicas) and the checkpoints (every rank's data
    position and RNG states gathered into them). ``log(total, start)`` makes the console log (rank 0);
    ``after_step(step)`` is called after each step's checkpoint, on every rank. ``stop()`` (given on every
    rank or on none) names a signal to stop on, read after each step: when any rank names one, every rank
    checkpoints that step, then raises :class:`TrainingInterrupted`.
    """
    run_dir, dev, rank = Path(run_dir), replicas.device, replicas.rank
    if dev.type == "cpu" and config.threads > 0:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    ckpt = load_checkpoint(run_dir) if has_checkpoint(run_dir) else None
    model = FinstaModel(config, dims).to(dev)
    if rank:
        seed_everything(replica_seed(config.seed, rank))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config))
    workers = max(1, config.num_workers)
    step, epoch, consumed, in_epoch = 0, 0, [0] * workers, 0
    dataset = open_dataset(shards)    # which host made the features travels with every checkpoint (export, eval)
    if ckpt is not None:
        step, epoch, consumed, in_epoch = _restore(ckpt, rank, model, optimizer, scheduler)
    elif config.init_host:
        model.host.load_state_dict(init_host_weights(config, dims, dataset.manifest.get("host")))
    gather = replicas.global_batch()
    losses = replicas.wrap(_Losses(model, gather))
    local_batch = config.batch_size // replicas.world
    extra = {"train_shards": resolved(shards), "host": dataset.manifest.get("host"),
             "cells_per_frame": cells_per_frame(dataset)}

    stop_at = config.steps if max_new_steps is None else min(config.steps, step + max_new_steps)
    metrics = console = None
    if rank == 0:
        _trim_metrics(run_dir / METRICS, step)
        metrics = open(run_dir / METRICS, "a")
        console = log(config.steps, step) if log is not None else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    model.train()
    videos = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    window_start, window_videos = started, 0
    last_path = None

    def position() -> dict[str, Any]:
        return {"epoch": epoch, "consumed": list(consumed), "in_epoch": in_epoch}

    try:
        while step < stop_at:
            stream = ShardStream(shards, local_batch, seed=config.seed, epoch=epoch, mode="train",
                                 buffer_size=config.shuffle_buffer, hard_negatives=config.train_hard_negatives,
                                 label_buckets=config.label_buckets, num_logical_workers=workers,
                                 skip=consumed, worker_offset=in_epoch % workers,
                                 cache_bytes=config.cache_mb << 20, rank=rank, world=replicas.world,
                                 uncaptioned=config.uncaptioned)
            produced = 0
            for batch in _lockstep(make_loader(stream, config.num_workers, pin_memory=dev.type == "cuda"),
                                   replicas):
                produced += 1
                worker, index = batch.origin
                consumed[worker] = index + 1
                in_epoch += 1
                batch = batch.to(dev)
                with autocast:
                    loss, parts = losses(batch)
                check_finite_loss(loss, step + 1, run_dir)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                videos += batch.num_videos
                window_videos += batch.num_videos
                if console is not None:
                    console.step(step, float(loss.detach()))
                signum = replicas.first_signal(stop()) if stop is not None else None
                if step % config.log_every == 0 or step == stop_at:
                    now = time.perf_counter()
                    line = _metrics_line(step, epoch, scheduler.get_last_lr()[0], parts, replicas.total(window_videos),
                                         now - window_start, replicas)
                    window_start, window_videos = now, 0
                    if metrics is not None:
                        metrics.write(json.dumps(line) + "\n")
                        metrics.flush()
                    if console is not None:
                        console.record(line)
                if step % config.checkpoint_every == 0 or step == stop_at or signum is not None:
                    states = replicas.gather(rank_state(position()))
                    if rank == 0:
                        last_path = save_checkpoint(run_dir, step, model, optimizer, scheduler, position(), config,
                                                    dims, extra=extra, ranks=states[1:])
                if signum is not None:
                    raise TrainingInterrupted(signum, step, last_path, run_dir)
                if after_step is not None:
                    after_step(step)
                if step >= stop_at:
                    break
            else:
                if produced == 0 and in_epoch == 0:
                    who = "" if replicas.world == 1 else f" for each of {replicas.world} replicas"
                    raise UserError(f"{shards} yields no training batch{who}: it needs at least 2 videos with a "
                                    f"real caption" + (" in every replica's shards" if who else ""))
                epoch, consumed, in_epoch = epoch + 1, [0] * workers, 0
    finally:
        if metrics is not None:
            metrics.close()
        if console is not None:
            console.close()
    elapsed = time.perf_counter() - started
    videos = replicas.total(videos)
    # CPU time of every replica's process (all its threads): what the steps cost, whatever share of the
    # machine they got
    cpu = replicas.mean({"cpu": time.process_time() - cpu_started})["cpu"] * replicas.world
    return {"run_dir": str(run_dir), "steps": step, "epoch": epoch,
            "checkpoint": str(last_path) if last_path else None,
            "graphs_per_s": round(videos / max(elapsed, 1e-9), 2), "seconds": round(elapsed, 1),
            "cpu_seconds": round(cpu, 2),
            # wall time of the forward all-gathers (global negatives), mean over the replicas
            "gather_seconds": round(replicas.mean({"g": gather.seconds if gather else 0.0})["g"], 2)}

