"""The in-process executor: every pool's stages in this process, one task at a time.

The stages run on one worker thread so that the driver's thread stays free:
it hands back heartbeats, sees signals, and enforces each stage's time budget.
A stage past its budget gets :class:`StageTimeout` raised inside it (between
Python bytecodes); if it has not returned ``GRACE_S`` later (stuck in native
code), its thread is abandoned, the sample fails as ``timeout`` and a fresh
thread with freshly set-up stages takes the next one. Nothing here can kill a
hung native call or survive a sample that kills the process: that is what the
Ray executor's separate worker processes are for. No retries.

Example::

    executor = SequentialExecutor(plan_pools(cfg), cfg, stop)
    for task in executor.run(tasks):
        ...   # finished (or failed) tasks, in input order; None = heartbeat
"""
from __future__ import annotations

import ctypes
import queue
import threading
import time
from typing import Any, Iterator, Optional

from pipeline.executors import TIMEOUT, failed_copy, run_stage, setup_stages
from pipeline.plan import Pool
from stages.base import Stage, VideoTask

GRACE_S = 5.0
HEARTBEAT_S = 1.0


class StageTimeout(BaseException):
    """Raised inside a stage that ran past its budget; a BaseException so ``run_guarded`` lets it through."""


class _Worker(threading.Thread):
    """Runs tasks through every pool; publishes which stage it is in and since when."""

    def __init__(self, built: list[tuple[Pool, list[Stage]]], todo: "queue.Queue", done: "queue.Queue"):
        super().__init__(name="finsta-sequential-worker", daemon=True)
        self.built, self.todo, self.done = built, todo, done
        self.current: Optional[tuple[VideoTask, str, float, float]] = None   # task, stage, started, budget
        self.abandoned = False

    def run(self) -> None:
        while not self.abandoned:
            task = self.todo.get()
            if task is None:
                return
            batch = [task]
            try:
                for pool, stages in self.built:
                    for stage, budget in zip(stages, pool.time_budgets):
                        self.current = (task, stage.name, time.monotonic(), budget)
                        try:
                            batch = run_stage(stage, batch, pool.drop_images_after)
                        except StageTimeout:
                            task.images = None
                            if task.failure is None:
                                task.fail(stage.name, _timeout_error(stage.name, budget))
            finally:
                self.current = None
            if not self.abandoned:
                self.done.put(batch[0])


def _timeout_error(stage: str, budget: float):
    from schemas.errors import SampleError
    return SampleError(TIMEOUT, f"{stage} ran longer than its budget of {budget:g}s on this sample "
                       "(run.stage_timeout_s)")


class SequentialExecutor:
    """See the module docstring and :mod:`pipeline.executors` for the contract."""

    def __init__(self, pools: list[Pool], cfg: Any, stop: Any):
        self.pools, self.cfg, self.stop = pools, cfg, stop
        self.in_flight = 0
        self.notes: list[str] = []   # nothing to tell: one process, no cluster
        self.worker: Optional[_Worker] = None
        self.done: queue.Queue = queue.Queue()
        self._raised: Optional[tuple] = None

    def _start_worker(self) -> _Worker:
        built = []
        with self.stop.interruptible():
            for pool in self.pools:
                stages = pool.build()
                setup_stages(stages)
                built.append((pool, stages))
        worker = _Worker(built, queue.Queue(), self.done)
        worker.start()
        return worker

    def run(self, tasks: list[VideoTask]) -> Iterator[Optional[VideoTask]]:
        pending = list(reversed(tasks))
        self.worker = self._start_worker()
        while pending or self.in_flight:
            if self.stop.signum is not None:
                return
            if pending and not self.in_flight:
                self.worker.todo.put(pending.pop())
                self.in_flight = 1
            try:
                task = self.done.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                task = self._enforce_budget()
                if task is None:
                    yield None
                    continue
            if self.stop.signum is not None and task.failure is not None:
                return   # a failure after a signal may be the signal's doing (ffmpeg got it too): not kept
            self.in_flight = 0
            yield task

    def _enforce_budget(self) -> Optional[VideoTask]:
        """Raise StageTimeout in an overdue stage; abandon its thread when that does not end it."""
        current = self.worker.current
        if current is None:
            return None
        task, stage, started, budget = current
        overdue = time.monotonic() - started - budget
        if overdue > GRACE_S:
            self.worker.abandoned = True      # whatever it finishes is dropped
            self.worker = self._start_worker()
            return failed_copy(task, stage, TIMEOUT, f"{stage} ran longer than its budget of {budget:g}s on this "
                               "sample and did not stop (run.stage_timeout_s)")
        if overdue > 0 and self._raised is not current and self.worker.current is current:
            self._raised = current
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.worker.ident),
                                                       ctypes.py_object(StageTimeout))
        return None

    def report(self) -> dict:
        return {}

    def close(self) -> None:
        if self.worker is not None:
            worker, self.worker = self.worker, None
            idle = worker.current is None
            worker.abandoned = True
            worker.todo.put(None)
            if idle:   # let it end before the interpreter does (native thread-locals, e.g. torch's)
                worker.join(timeout=5.0)
