"""Data-parallel training on Ray Train: ``python cli.py train --ray-workers N``.

:func:`train_distributed` runs :func:`finsta_model.train.run_loop` on ``N`` Ray Train
workers (``TorchTrainer``; DDP over gloo on CPU, NCCL on CUDA with one GPU per
worker). What each replica does:

* streams only its own shards (``ShardStream(rank, world)``: shard order seeded by
  ``(seed, epoch)``, replica ``r`` reads every ``N``-th of them, shuffling seeded by
  ``(seed, epoch, rank, loader worker)``) in batches of ``batch_size / N``, so the
  global batch, learning-rate schedule and steps are those of a one-process run;
  an epoch ends for every replica when the first one runs out of batches;
* averages gradients with the others (DDP); rank 0 writes ``metrics.jsonl`` (losses
  averaged over the replicas, graphs/s of all of them) and the checkpoints, in the
  single-process layout plus each rank's data position and RNG states
  (:mod:`finsta_model.checkpoint`).

``RUN/checkpoints/latest`` is the one record of progress: a replica always starts from
it when it exists, so ``--resume`` (with the same ``N``) and Ray Train's own restart
after a worker failure (``FailureConfig(max_failures)``) both continue from the last
checkpoint. Each failure is printed as one line; when the restarts are used up,
:class:`TrainingFailed` says which worker failed and how to continue. Ray's own
storage (run state, no checkpoints) is ``RUN/ray-train/``.

Ray starts as for ``build-sgs`` (:mod:`schemas.ray_runtime`): without ``address``
the run starts its own local Ray instance (``address="local"``: never another
process's cluster) and stops it at the end; with one it joins that cluster, whose nodes must see ``--shards`` and ``--out`` at the same paths (a shared
filesystem) and have this repository at the same path (it travels as PYTHONPATH).

Example::

    summary = train_distributed("out/synth", Path("runs/a"), TrainConfig(steps=300), workers=2)
    summary["steps"], summary["graphs_per_s"], summary["ray_workers"]
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch import nn

from finsta_model.checkpoint import LATEST
from finsta_model.config import TrainConfig
from finsta_model.train import (METRICS, Replicas, TrainingInterrupted, TrainLog, has_checkpoint, last_checkpoint_note,
                                 prepare_run, read_metrics, run_loop)
from schemas.errors import UserError
from schemas.ray_runtime import ray_session
from schemas.stop import StopRun, StopSignals
from schemas.storage import resolved
from schemas.store import open_dataset

RAY_STORAGE = "ray-train"
FAILURES = "failures.jsonl"
STOP = "stop.json"            # RUN/ray-train/stop.json: the driver got a signal; the replicas stop at their next step
# after a signal the driver waits this long for the replicas to checkpoint the step in progress and Ray Train to end
STOP_GRACE_S = 60.0
RAY_START_TIMEOUT_S = 120.0   # bounds Ray's start (under the run's stop handler: in the main thread)


class TrainingFailed(Exception):
    """A worker failed more often than ``max_failures`` allows; the message is one line saying which
    worker, why, and how to continue (``--resume`` from the last checkpoint)."""


class RayReplicas(Replicas):
    """:class:`~finsta_model.train.Replicas` inside a Ray Train worker: DDP through ``prepare_model``."""

    def wrap(self, module: nn.Module) -> nn.Module:
        import ray.train.torch
        return ray.train.torch.prepare_model(module, move_to_device=False,
                                             parallel_strategy_kwargs={"find_unused_parameters": True})


def _replica_main(params: dict[str, Any]) -> dict[str, Any]:
    """The function every Ray Train worker runs (again, from the last checkpoint, after a restart).

    A :class:`UserError` is returned, not raised: it is the same on every rank and a restart would
    only repeat it."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    if params["device"] == "cuda":
        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    drill = params.get("crash_drill")
    after_step = None
    if drill and drill["rank"] == rank:
        marker = Path(drill["marker"])

        def after_step(step: int) -> None:   # a real process death, or a hold while its node is taken away; once
            if step == drill["step"] and not marker.exists():
                marker.write_text(json.dumps({"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}))
                if "hold" not in drill:
                    os._exit(17)
                waited = time.monotonic()
                while Path(drill["hold"]).exists() and time.monotonic() - waited < 600:
                    time.sleep(0.05)
    stop_file = Path(params["run_dir"]) / RAY_STORAGE / STOP
    try:
        return run_loop(params["shards"], params["run_dir"], TrainConfig.from_dict(params["config"]), params["dims"],
                        RayReplicas(rank, world, device), max_new_steps=params["max_new_steps"],
                        after_step=after_step, stop=lambda: requested_stop(stop_file))
    except UserError as error:
        return {"user_error": str(error)}
    except TrainingInterrupted as stopped:   # every rank stops at the same step; a restart would undo the stop
        return {"interrupted": {"signum": stopped.signum, "step": stopped.step,
                                "checkpoint": str(stopped.checkpoint) if stopped.checkpoint else None}}


def requested_stop(path: Path) -> Optional[int]:
    """The signal the driver wrote to ``path`` (:class:`_Follow`), or None."""
    try:
        return int(json.loads(path.read_text())["signum"])
    except (OSError, ValueError, KeyError, TypeError):   # none yet (or being written: the next step reads it)
        return None


def _failure_callback(run_dir: Path):
    """A Ray Train callback (runs in Ray Train's controller) that appends each worker failure to
    ``RUN/ray-train/failures.jsonl``, which the driver prints as one line each."""
    from ray.train.v2.api.callback import UserCallback

    class RecordFailures(UserCallback):
        def after_exception(self, run_context, worker_exceptions):
            rank, error = root_cause(worker_exceptions)
            path = run_dir / RAY_STORAGE / FAILURES
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as handle:
                handle.write(json.dumps({"rank": rank, "error": describe_failure(error), "time": time.time()}) + "\n")

    return RecordFailures()


# what the survivors of a dead peer report: a consequence, not the cause
_PEER_LOST = ("Connection closed by peer", "remote worker crashing", "Connection reset by peer", "NCCL communicator")


def root_cause(worker_exceptions: dict[int, BaseException]) -> tuple[int, BaseException]:
    """The failure that explains the others: a dead process first, then an error that is not a
    collective losing its peer, lowest rank first."""
    def order(item: tuple[int, BaseException]) -> tuple[int, int]:
        text = str(item[1])
        died = "worker process has died" in text or "health check failed" in text.lower()
        return (0 if died else 2 if any(mark in text for mark in _PEER_LOST) else 1, item[0])
    return min(worker_exceptions.items(), key=order)


def describe_failure(error: BaseException) -> str:
    """One line for a worker's failure: a dead process or the exception's type and first line."""
    text = str(error)
    if "worker process has died" in text or "health check failed" in text.lower():
        kind = re.search(r"Worker exit type: (\w+)", text)
        return f"its process died ({kind.group(1) if kind else 'exit'}: killed, out of memory or crashed)"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first}"[:240]


def _last_checkpoint(run_dir: Path) -> str:
    latest = run_dir / "checkpoints" / LATEST
    return latest.read_text().strip() if latest.is_file() else "none yet"


def _checkpoint_step(run_dir: Path) -> int:
    """The step of the run's latest checkpoint (0: none)."""
    return int(_last_checkpoint(run_dir).split("-")[1]) if has_checkpoint(run_dir) else 0


# ------------------------------------------------------------------ checks before Ray
def check_layout(shards: str | Path, config: TrainConfig, workers: int, device: str) -> None:
    """What ``N`` replicas need from the config and the data (one line each when it does not hold)."""
    if workers < 1:
        raise UserError(f"--ray-workers must be ≥ 1 (got {workers})")
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, not {device!r}")
    if config.batch_size % workers:
        raise UserError(f"batch_size {config.batch_size} is not divisible by --ray-workers {workers}: the global "
                        f"batch is split evenly over the workers; pick a batch_size that is a multiple of {workers}")
    if config.batch_size // workers < 2:
        raise UserError(f"batch_size {config.batch_size} over {workers} workers leaves "
                        f"{config.batch_size // workers} video(s) per worker; contrastive losses need ≥ 2")
    readers = workers * max(1, config.num_workers)
    count = len(open_dataset(shards).shard_names())
    if count < readers:
        raise UserError(f"{shards} has {count} shard(s); {workers} Ray workers × {max(1, config.num_workers)} loader "
                        f"worker(s) need at least {readers} (each reads its own shards): use fewer workers or "
                        f"build the dataset with smaller shards (--set write.shard_size=...)")


@contextlib.contextmanager
def _ray(address: Optional[str], stop: Optional[StopSignals] = None) -> Iterator[None]:
    """Join ``address``, or start (and at the end stop) this run's own local Ray instance: the start-up
    ``build-sgs`` uses too (:mod:`schemas.ray_runtime`: address check, environment, reaper, one line for
    any failure; under ``stop`` a signal while Ray starts ends the process at once with one line)."""
    try:
        import ray.train.torch  # noqa: F401
    except ImportError:
        raise UserError("--ray-workers needs Ray (ray.train ships with it): pip install -r requirements.in") from None
    with ray_session(address, timeout_s=RAY_START_TIMEOUT_S, needs="--ray-workers", stop=stop):
        yield


def _check_resources(workers: int, device: str, address: Optional[str]) -> None:
    import ray

    resources = ray.cluster_resources()
    kind = "GPU" if device == "cuda" else "CPU"
    have = int(resources.get(kind, 0))
    if have < workers:
        where = f"the Ray cluster at {address}" if address else "this machine's local Ray"
        raise UserError(f"--ray-workers {workers} needs {workers} {kind}s (one per worker), {where} has {have}; "
                        f"use --ray-workers {max(1, have)} or a larger cluster")


# ------------------------------------------------------------------ console
class _Follow(threading.Thread):
    """Shows a run's progress from the driver: new ``metrics.jsonl`` lines (written by rank 0) go to the
    :class:`TrainLog`, new failure records become one line each; once ``stop`` has a signal, it writes
    ``RUN/ray-train/stop.json`` for the replicas (:func:`requested_stop`)."""

    def __init__(self, run_dir: Path, log: Optional[TrainLog], start_step: int, stop: StopSignals,
                 interval: float = 0.5):
        super().__init__(daemon=True, name="finsta-train-follow")
        self.run_dir, self.log, self.seen, self.interval, self.stop_signals = run_dir, log, start_step, interval, stop
        self.failures_seen = 0
        self.asked_to_stop = False
        self.stopped = threading.Event()

    def poll(self) -> None:
        if self.stop_signals.signum is not None and not self.asked_to_stop:
            path = self.run_dir / RAY_STORAGE / STOP
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{STOP}.tmp")
            tmp.write_text(json.dumps({"signum": self.stop_signals.signum}))
            os.replace(tmp, path)    # a replica reads all of it or nothing
            self.asked_to_stop = True
        if self.log is not None:
            for line in read_metrics(self.run_dir / METRICS):
                if line["step"] > self.seen:
                    self.seen = line["step"]
                    self.log.record(line)
        path = self.run_dir / RAY_STORAGE / FAILURES
        if path.is_file():
            records = [json.loads(x) for x in path.read_text().splitlines() if x.strip().endswith("}")]
            for record in records[self.failures_seen:]:
                print(f"train: Ray worker rank {record['rank']} failed: {record['error']}; last checkpoint "
                      f"{_last_checkpoint(self.run_dir)}", file=self.log.stream if self.log else sys.stderr, flush=True)
            self.failures_seen = len(records)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)
        self.poll()


# ------------------------------------------------------------------ entry point
def train_distributed(shards: str | Path, run_dir: str | Path, config: TrainConfig, workers: int, *,
                      resume: bool = False, device: str = "cpu", address: Optional[str] = None,
                      max_failures: int = 2, progress: bool = True, max_new_steps: Optional[int] = None,
                      overwrite: bool = False, crash_drill: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Train (or resume) a run on ``workers`` Ray Train workers; returns the summary of
    :func:`~finsta_model.train.train` plus ``ray_workers`` and ``restarts``.

    ``max_failures``: how many times Ray Train restarts the workers after a failure (each restart
    continues from the last checkpoint); then :class:`TrainingFailed`. SIGINT/SIGTERM (in the main
    thread: :class:`schemas.stop.StopSignals`, as in-process and ``build-sgs``): while Ray starts, the
    process ends at once with one line; while it trains, every replica checkpoints the step in progress and
    :class:`~finsta_model.train.TrainingInterrupted` is raised. ``crash_drill``
    (tests): ``{"rank": r, "step": k, "marker": path}`` makes rank ``r``'s process exit after step
    ``k``, once (the marker file records that it happened, with the process id and Ray node id); with
    ``"hold": path`` it waits while that file exists instead (a test takes its node away meanwhile)."""
    run_dir = Path(run_dir).resolve()
    check_layout(shards, config, workers, device)
    dims = prepare_run(shards, run_dir, config, resume, world=workers, overwrite=overwrite)
    for name in (FAILURES, STOP):
        (run_dir / RAY_STORAGE / name).unlink(missing_ok=True)
    params = {"shards": resolved(shards), "run_dir": str(run_dir), "config": config.as_dict(),
              "dims": dims, "device": device, "max_new_steps": max_new_steps, "crash_drill": crash_drill}
    with StopSignals(grace_s=STOP_GRACE_S) as stop:
        stop.hard_exit_note = lambda: last_checkpoint_note(run_dir)
        try:
            with _ray(address, stop):
                summary, seconds = _fit(params, workers, address, max_failures, progress, stop)
        except StopRun as stopped:    # a signal before Ray started, or as it did
            step = _checkpoint_step(run_dir)
            latest = run_dir / "checkpoints" / _last_checkpoint(run_dir) if step else None
            raise TrainingInterrupted(stopped.signum, step, latest, run_dir) from None
    if "user_error" in summary:
        raise UserError(summary["user_error"])
    if "interrupted" in summary:
        what = summary["interrupted"]
        raise TrainingInterrupted(what["signum"], what["step"], what["checkpoint"] and Path(what["checkpoint"]),
                                  run_dir)
    failures = run_dir / RAY_STORAGE / FAILURES
    restarts = len(failures.read_text().splitlines()) if failures.is_file() else 0
    return {**summary, "ray_workers": workers, "restarts": restarts, "wall_seconds": round(seconds, 1)}


def _fit(params: dict[str, Any], workers: int, address: Optional[str], max_failures: int, progress: bool,
         stop: StopSignals) -> tuple[dict[str, Any], float]:
    """Run the replicas on the started Ray (rank 0's return value, and the seconds ``fit`` took)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    run_dir, device, config = Path(params["run_dir"]), params["device"], TrainConfig.from_dict(params["config"])
    _check_resources(workers, device, address)
    cuda = device == "cuda"
    trainer = TorchTrainer(
        _replica_main, train_loop_config=params,
        torch_config=TorchConfig(backend="nccl" if cuda else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=cuda,
                                     resources_per_worker={"CPU": 1, "GPU": 1} if cuda else {"CPU": 1}),
        run_config=RunConfig(name=f"fit-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                             storage_path=str(run_dir / RAY_STORAGE),
                             failure_config=FailureConfig(max_failures=max_failures),
                             callbacks=[_failure_callback(run_dir)]))
    start_step = _checkpoint_step(run_dir)
    log = TrainLog(config.steps, start_step, anchor_on_first=True) if progress else None
    follow = _Follow(run_dir, log, start_step, stop)
    follow.start()
    started = time.perf_counter()
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as error:  # handed to the main thread
            outcome["error"] = error

    # fit runs off the main thread: there, Ray Train would replace the SIGINT handler with its own (an abort
    # that checkpoints nothing); here the main thread keeps StopSignals' handlers and waits
    runner = threading.Thread(target=fit, name="finsta-train-fit", daemon=True)
    runner.start()
    try:
        while runner.is_alive():
            runner.join(0.5)
    finally:
        follow.stop()
        if follow.log is not None:
            follow.log.close()
    if "error" in outcome:
        error = outcome["error"]
        raise (_failed(error, run_dir) if isinstance(error, Exception) else error) from None
    return outcome["result"].return_value or {}, time.perf_counter() - started


def _failed(error: Exception, run_dir: Path) -> Exception:
    """The one-line :class:`TrainingFailed` for Ray Train's error (a non-Ray error passes through)."""
    from ray.train import TrainingFailedError

    if not isinstance(error, TrainingFailedError):
        return error
    per_rank = getattr(error, "worker_failures", None) or {}
    if per_rank:
        rank, cause = root_cause(per_rank)
        what = f"Ray worker rank {rank} failed: {describe_failure(cause)}"
        where = re.findall(r'File "([^"]+)", line (\d+)', str(error))
        if where and "process died" not in what:
            what += f" (at {Path(where[-1][0]).name}:{where[-1][1]})"
    else:
        what = f"Ray Train failed: {describe_failure(getattr(error, 'controller_failure', error))}"
    return TrainingFailed(f"{what}; last checkpoint {_last_checkpoint(run_dir)} in {run_dir}: rerun the same "
                          f"command with --resume to continue from it")
