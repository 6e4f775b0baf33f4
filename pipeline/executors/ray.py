"""The Ray executor: each planned pool is a set of Ray actors, driven by a small streaming scheduler here.

Why not Ray Data: a sample must have a time budget per stage, a worker that
dies or hangs must cost only its own sample (retried ``run.max_sample_retries``
times, then a ``worker_lost`` / ``timeout`` failure row naming the stage), and
a stop must be clean at any moment. So the driver talks to its actors itself:

* Each actor (:class:`_PoolWorker`) builds its pool's stages once and calls
  every ``setup()`` once. A stage that cannot start does not kill it: the
  actor reports the error and the driver raises it as one :class:`UserError`
  line, before any sample is marked failed.
* A batch is sent to an actor as one call per stage (``run_stage``), queued
  back to back so the actor never waits for the driver; the actor keeps the
  batch between calls; a pool whose samples take milliseconds gets several
  batches per call (:meth:`RayExecutor._bundle`: each call costs the driver
  ~0.5 ms of CPU), which the actor still runs batch by batch. Each call's
  completion is observed with ``ray.wait`` (at most a second apart, so
  heartbeats, signals and deadlines are seen; every finished call's value in
  one ``ray.get``), so the driver always knows which stage a batch is in: a
  call past its stage's budget (``Pool.time_budgets`` × a batch's samples; a
  call carrying several batches: plus the others' expected time, so a hang
  is stopped on its sample's own budget) gets the actor killed
  (``ray.kill``) and restarted, and its pool's calls carry one batch until
  its pace is quick again; an actor that died (OOM killer, segfault,
  node lost) shows as an error on that call. The batch's samples are then
  retried alone (a batch of several is split, uncharged, to find the culprit);
  the other batches queued on that actor are requeued without charge.
* Between pools, a batch's tasks stay in Ray's object store (the last call of
  a pool returns them as a second, driver-owned object; the last pool's, with
  its status as one object); frames cross a pool
  boundary only when a later pool reads them (``Pool.images_leave``).
* Finished tasks come back in completion order; input order is kept within
  a worker. A GPU pool's actors request ``resources.gpus`` each and there are
  as many as the alive nodes' GPUs hold, counted per node (or ``run.gpu_workers``).
* Only a started actor takes batches: a replacement that dies while starting
  held nothing and is replaced again. Every ``NODES_CHECK_S`` the driver checks
  the head (its GCS port; lost: one line) and Ray's node table: a lost node's
  actors are handled as dead workers at once, a node that joins lets a GPU
  pool grow. CPU pools with ``run.workers=0`` are balanced every ``BALANCE_S``
  on measured busy shares (:func:`choose_move`): the bottleneck grows onto a
  free CPU, or an idle actor of a pool half as busy is stopped to free one.
  CPU requests are scaled so that every actor fits the nodes (:func:`fit_scale`).
  ``report()`` is stats.json's ``cluster`` (nodes lost/joined, each pool's
  actors, busy share, actors grown/retired); ``notes`` are the lines the build
  prints about nodes. Each actor of the first pool (the one that reads the
  inputs) checks, before its models load, that a few local inputs (first,
  middle, last) are readable on its node: a path only the driver's machine has
  is one line.

Example::

    executor = RayExecutor(plan_pools(cfg), cfg, stop)
    try:
        for task in executor.run(tasks):
            ...                          # None: a heartbeat
    finally:
        executor.close()
"""
from __future__ import annotations

import contextlib
import itertools
import math
import os
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from pipeline.executors import TIMEOUT, WORKER_LOST, failed_copy, run_stage, setup_stages
from pipeline.plan import Pool
from schemas.errors import UserError
from schemas.ray_runtime import RaySession, start_ray
from schemas.storage import is_url
from stages.base import VideoTask, internal_error
from stages.registry import PLUGINS_VARIABLE

_UNREAD = object()   # a finished call's value not got yet (see RayExecutor._values)
DEPTH = 2            # batches queued per actor: one running, one waiting, so an actor never idles on the driver
TICK_S = 1.0         # the longest the driver waits without looking at signals, deadlines and the clock
NODES_CHECK_S = 1.0  # how often the driver reads Ray's node table (a node lost, a node joined)
HEAD_CHECK_S = 2.0   # how long the head's GCS port may take to accept a connection
MAX_START_DEATHS = 3  # replacements of one pool in a row that may die while starting before the run stops
SLACK_S = 5.0        # added to every deadline: the driver's own latency, argument transfer
BALANCE_S = 5.0      # how often CPU pools sized by the cluster (run.workers=0) may grow, or move an actor
GROW_SHARE = 0.7     # a pool at least this busy (the last BALANCE_S window) is the bottleneck worth an actor
CALL_S = 0.05        # a call should last at least this long: a pool whose samples are quicker gets several batches
MAX_BUNDLE = 16      # per call (each actor call costs the driver ~0.5 ms of CPU whatever it carries)
OVERRUN = 4.0        # a bundled call's other batches may take this many times the pool's pace (see _deadline)


class _PoolWorker:
    """One pool's stages in one Ray actor; holds the batches in flight between stage calls."""

    def __init__(self, pool: Pool, inputs: list[str]):
        self.pool = pool
        self.stages = pool.build()
        self.held: dict[int, list[VideoTask]] = {}
        self.error = _unreadable_here(inputs)
        if self.error:   # before any model loads
            return
        try:
            setup_stages(self.stages)
        except UserError as error:
            self.error = str(error)
        except Exception as error:  # a bug in a stage's setup: one line too, with its file:line
            self.error = f"a stage of pool {pool.name} failed to start: {internal_error(error).message}"

    def ready(self) -> tuple[str, str]:
        """("" when every stage is set up, else the one-line error; the Ray node this actor runs on)."""
        import ray

        return self.error, ray.get_runtime_context().get_node_id()

    def run_stage(self, batch_id: int, index: int, *parts: list[VideoTask]) -> Any:
        """Stage ``index`` on batch ``batch_id`` (``parts`` given with index 0: the batch's tasks, in parts),
        in chunks of the pool's batch size (a call may carry several: see ``RayExecutor._bundle``).

        Returns "" (or the error line), and for the pool's last stage ``(status, tasks)``.
        """
        last = index == len(self.stages) - 1
        if index == 0:
            self.held[batch_id] = [task for part in parts for task in part]
        status = self.error
        if not status:
            tasks, size = self.held[batch_id], max(1, self.pool.batch_size)
            try:
                self.held[batch_id] = [done for first in range(0, len(tasks), size) for done in
                                       run_stage(self.stages[index], tasks[first:first + size],
                                                 self.pool.drop_images_after)]
            except UserError as error:
                status = str(error)
        if status:
            self.held.pop(batch_id, None)
            return (status, None) if last else status
        return ("", self.held.pop(batch_id)) if last else ""


@dataclass(eq=False)
class _Part:
    """Tasks on their way to a pool: the originals (for retries and failure rows) and where they are now."""

    origin: list[VideoTask]
    payload: Any                  # the tasks themselves (entering pool 0) or an ObjectRef to them
    solo: bool = False            # split from a batch that lost its worker: runs alone


@dataclass(eq=False)
class _Batch:
    """What one actor call takes: one batch of the pool, or several when the pool's samples are quick."""

    id: int
    pool: int
    parts: list[_Part]
    busy_s: float = 0.0           # its actor's time on it so far (the pool's pace, for _bundle)

    @property
    def origin(self) -> list[VideoTask]:
        return [task for part in self.parts for task in part.origin]


@dataclass(eq=False)
class _Call:
    batch: _Batch
    stage: int
    ref: Any                      # its status; the last pool's last call: (status, tasks), one object
    tasks_ref: Any = None         # an earlier pool's last call: where its tasks are (they stay in Ray's store)
    final: bool = False           # the last pool's last call


@dataclass(eq=False)
class _Slot:
    """One actor as the driver sees it."""

    pool: int
    handle: Any
    ready_ref: Any
    created: float
    calls: deque = field(default_factory=deque)
    head_started: float = 0.0
    node: str = ""                # the Ray node it runs on, once ready
    ready_at: float = 0.0         # since when it takes batches (its pool's busy share counts from here)
    call: Any = None              # handle.run_stage, and with two return objects (made once: per-call cost)
    split_call: Any = None

    def __post_init__(self) -> None:
        self.call = self.handle.run_stage
        self.split_call = self.handle.run_stage.options(num_returns=2)

    def batches(self) -> list[_Batch]:
        return list({id(c.batch): c.batch for c in self.calls}.values())

    def batch_count(self, stages: int) -> int:
        """len(batches()) without building it: every batch queues all its stages' calls at once and only
        the head batch has finished some."""
        return -(-len(self.calls) // stages)


class RayExecutor:
    """See the module docstring and :mod:`pipeline.executors` for the contract."""

    def __init__(self, pools: list[Pool], cfg: Any, stop: Any):
        self.pools, self.cfg, self.stop = pools, cfg, stop
        self.slots: list[_Slot] = []
        self.pending: list[deque] = [deque() for _ in pools]
        self.attempts: Counter = Counter()
        self.in_flight = 0
        self.session: Optional[RaySession] = None
        self._ids = itertools.count()
        self._actor_class = None
        self._options: list[dict] = []
        self._inputs: list[str] = []              # local input paths the first pool's actors check they can read
        self.running = False                      # past start-up: a worker's death is charged, not fatal
        self.start_deaths: Counter = Counter()    # per pool: replacements in a row that died while starting
        self.notes: list[str] = []                # lines for the user (nodes lost/joined); pipeline.build drains it
        self.nodes: dict[str, str] = {}           # alive Ray node id -> its address
        self.nodes_lost: list[str] = []
        self.nodes_joined: list[str] = []
        self._nodes_checked = 0.0
        self.head_lost = False
        self.busy_s: Counter = Counter()          # per pool: seconds its actors spent on calls
        self.actor_s: Counter = Counter()         # per pool: seconds its actors were ready (retired ones)
        self.grown: Counter = Counter()           # per pool: actors added by _balance
        self.retired: Counter = Counter()         # per pool: actors _balance stopped to free their CPUs
        self._balanced = 0.0
        self._window: tuple[Counter, Counter] = (Counter(), Counter())
        self.pace: dict[int, float] = {}          # per pool: seconds per sample, recent calls weighted most

    # ------------------------------------------------------------ start
    def _start(self, tasks: list[VideoTask]) -> None:
        import ray

        # the start-up build-sgs and train share (schemas/ray_runtime.py): address check, environment, the
        # reaper armed before ray.init, one line for any failure, a signal meanwhile stops at once
        self.session = start_ray(self.cfg.run.ray_address, timeout_s=self.cfg.run.ray_start_timeout_s,
                                 num_cpus=self.cfg.run.num_cpus, forward=(PLUGINS_VARIABLE,), stop=self.stop,
                                 needs="run.executor=ray")
        cluster = ray.cluster_resources()
        gpus = cluster.get("GPU", 0.0)
        self._check_nodes(first=True)
        local = [task.video_path for task in tasks if not is_url(task.video_path)]
        # a few inputs each actor of the first pool (the one that reads them) checks on its node
        self._inputs = sorted({local[0], local[len(local) // 2], local[-1]}) if local else []
        for pool in self.pools:
            if pool.on_gpu and gpus < pool.resources.gpus:
                raise UserError(f"pool {pool.name} asks for {pool.resources.gpus:g} GPU per worker (a stage's "
                                f"device is cuda) but the Ray cluster has {gpus:g} GPU(s); use device=cpu or a "
                                "cluster with GPUs")
        # Every actor of every pool is alive at once; shrink CPU requests that would not fit the
        # cluster's nodes rather than wait forever for them.
        actors = [(pool.resources.cpus, pool.resources.gpus) for index, pool in enumerate(self.pools)
                  for _ in range(self._target(index))]
        nodes = [(node.get("Resources", {}).get("CPU", 0.0), node.get("Resources", {}).get("GPU", 0.0))
                 for node in ray.nodes() if node.get("Alive")]
        scale = fit_scale(actors, nodes)
        self._actor_class = ray.remote(_PoolWorker)
        self._options = [dict(num_cpus=pool.resources.cpus * scale, num_gpus=pool.resources.gpus or 0,
                              max_restarts=0, max_task_retries=0) for pool in self.pools]
        # GPU pools first: their actors claim the GPU nodes' CPUs before CPU actors could take them
        for index in sorted(range(len(self.pools)), key=lambda index: not self.pools[index].on_gpu):
            for _ in range(self._target(index)):
                self.slots.append(self._new_slot(index))
        self._wait_ready()
        self.running = True

    def _new_slot(self, pool: int) -> _Slot:
        handle = self._actor_class.options(**self._options[pool]).remote(self.pools[pool],
                                                                          self._inputs if pool == 0 else [])
        return _Slot(pool, handle, handle.ready.remote(), time.monotonic())

    def _wait_ready(self) -> None:
        """Every actor set up (models loaded), or the first setup error as one line."""
        import ray

        while any(slot.ready_ref is not None for slot in self.slots):
            refs = [slot.ready_ref for slot in self.slots if slot.ready_ref is not None]
            # Polled, not interruptible: an exception raised inside Ray's native wait comes out as a
            # SystemError; a signal is seen here within TICK_S instead.
            ray.wait(refs, num_returns=len(refs), timeout=TICK_S)
            self.stop.check()
            self._collect_ready()

    def _collect_ready(self) -> None:
        import ray

        refs = [slot.ready_ref for slot in self.slots if slot.ready_ref is not None]
        done = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) if refs else set()
        now = time.monotonic()
        for slot in self.slots:
            if slot.ready_ref is None:
                continue
            if slot.ready_ref in done:
                try:
                    error, slot.node = ray.get(slot.ready_ref)
                except ray.exceptions.RayError as failure:
                    error = f"a worker of pool {self.pools[slot.pool].name} died while starting: " + \
                            _one_line(failure)
                    if self.running:   # a replacement (OOM killer, its node lost): replaced like any worker
                        self._restart(slot, error)
                        continue
                if error:
                    raise UserError(error)
                slot.ready_ref, slot.head_started, slot.ready_at = None, now, now
                self.start_deaths[slot.pool] = 0
            elif self.running and self._serving(slot.pool):
                continue   # waits for room (a node lost, or to join): the pool goes on with its other actors
            elif now - slot.created > self.cfg.run.worker_start_timeout_s:
                raise UserError(f"a worker of pool {self.pools[slot.pool].name} did not start within "
                                f"{self.cfg.run.worker_start_timeout_s:g}s (not enough free CPUs/GPUs/memory in the "
                                "Ray cluster, or a stage's setup hangs); raise run.worker_start_timeout_s or free "
                                "resources")

    # ------------------------------------------------------------ run
    def run(self, tasks: list[VideoTask]) -> Iterator[Optional[VideoTask]]:
        self._start(tasks)
        todo = deque(tasks)
        while todo or self.in_flight:
            if self.stop.signum is not None:
                return
            self._feed(todo)
            self._dispatch()
            out = self._step()
            if self.stop.signum is not None:   # a failure now may be the signal's doing (ffmpeg got it too)
                kept = [task for task in out if task.failure is None]
                self.in_flight += len(out) - len(kept)
                out = kept
            yield from out
            if not out:
                yield None

    def _feed(self, todo: deque) -> None:
        """Move tasks from the input to pool 0 while pool 0 has room (bounded memory)."""
        room = self._capacity(0) - sum(len(part.origin) for part in self.pending[0])
        while todo and room > 0:
            task = todo.popleft()
            self.pending[0].append(_Part([task], [task]))
            self.in_flight += 1
            room -= 1

    def _capacity(self, pool: int) -> int:
        return max(1, self._serving(pool)) * DEPTH * self._call_size(pool)

    def _call_size(self, pool: int) -> int:
        """Samples one call of ``pool`` takes: its batch size, times :meth:`_bundle` when its samples are quick,
        but then never more than the next pool's calls take (a call's tasks reach the next pool as one part:
        a slow pool behind a quick one still gets one batch a call)."""
        size, bundle = max(1, self.pools[pool].batch_size), self._bundle(pool)
        if bundle > 1 and pool + 1 < len(self.pools):
            return max(size, min(size * bundle, self._call_size(pool + 1)))
        return size * bundle

    def _bundle(self, pool: int) -> int:
        """Batches per call for ``pool``: 1, or for a pool whose samples take a few milliseconds (trivial stages,
        samples failing early) as many as fill :data:`CALL_S`, at most :data:`MAX_BUNDLE`: the driver's cost is
        per call, and tiny calls would make it the pipeline's bottleneck. The actor still runs each batch
        alone; a call is late after one batch's budget plus the others' expected time (:meth:`_deadline`)."""
        pace = self.pace.get(pool)
        if not pace:
            return 1
        return max(1, min(MAX_BUNDLE, int(CALL_S / (pace * max(1, self.pools[pool].batch_size)))))

    def _serving(self, pool: int) -> int:
        """The pool's started actors."""
        return sum(1 for s in self.slots if s.pool == pool and s.ready_ref is None)

    def _dispatch(self) -> None:
        for slot in self.slots:
            # Only to a started actor: one still starting may wait for room for as long as the cluster has none.
            stages = len(self.pools[slot.pool].stage_names)
            while slot.ready_ref is None and slot.batch_count(stages) < DEPTH and self.pending[slot.pool]:
                nxt = slot.pool + 1
                if nxt < len(self.pools) and sum(len(p.origin) for p in self.pending[nxt]) >= self._capacity(nxt):
                    break   # the next pool is full: hold this one's output where it is
                self._submit(slot, self._take(slot.pool))

    def _take(self, pool: int) -> _Batch:
        """The next call's batch for ``pool``: parts up to :meth:`_call_size` (a solo part runs alone)."""
        queue, size, parts = self.pending[pool], self._call_size(pool), []
        while queue and (not parts or (not queue[0].solo and sum(len(p.origin) for p in parts) < size)):
            parts.append(queue.popleft())
            if parts[-1].solo:
                break
        return _Batch(next(self._ids), pool, parts)

    def _submit(self, slot: _Slot, batch: _Batch) -> None:
        stages = len(self.pools[slot.pool].stage_names)
        final = slot.pool == len(self.pools) - 1
        if not slot.calls and slot.ready_ref is None:
            slot.head_started = time.monotonic()
        for index in range(stages):
            args = [p.payload for p in batch.parts] if index == 0 else []
            if index == stages - 1 and not final:   # status to the driver, tasks kept in Ray's store
                status, tasks = slot.split_call.remote(batch.id, index, *args)
                slot.calls.append(_Call(batch, index, status, tasks))
            else:
                slot.calls.append(_Call(batch, index, slot.call.remote(batch.id, index, *args),
                                        final=final and index == stages - 1))

    def _step(self) -> list[VideoTask]:
        """Wait (at most a tick) for the head call of any actor; act on what finished or ran out of time."""
        import ray

        watched = {slot.ready_ref if slot.ready_ref is not None else slot.calls[0].ref: slot
                   for slot in self.slots if slot.ready_ref is not None or slot.calls}
        if not watched:
            time.sleep(0.05)   # nothing in flight this instant (work is moving between pools)
            return []
        # what is done already, in one look; else wait for the first to finish (one round trip per step when busy)
        refs = list(watched)
        ready = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)[0]
        if not ready:
            ready = ray.wait(refs, num_returns=1, timeout=self._wait_s(), fetch_local=False)[0]
        finished = [watched[ref] for ref in ready if watched[ref].ready_ref is None]
        out: list[VideoTask] = []
        for slot, value in zip(finished, self._values([slot.calls[0].ref for slot in finished])):
            if slot in self.slots:   # not replaced meanwhile (a lost node's actors are)
                out += self._finished(slot, value)
        if any(slot.ready_ref is not None for slot in self.slots):
            self._collect_ready()   # a replacement worker: ready, or past worker_start_timeout_s
        out += self._enforce_deadlines()
        if time.monotonic() - self._nodes_checked >= NODES_CHECK_S:
            out += self._check_nodes()
        if time.monotonic() - self._balanced >= BALANCE_S:
            self._balance()
        return out

    def _wait_s(self) -> float:
        now, soonest = time.monotonic(), TICK_S
        for slot in self.slots:
            if slot.calls and slot.ready_ref is None:
                soonest = min(soonest, self._deadline(slot) - now)
        return max(0.01, soonest)

    def _deadline(self, slot: _Slot) -> float:
        """When the head call is late: one batch's budget (``Pool.time_budgets`` × its samples), plus, for a
        call carrying several batches, the others' expected time (:data:`OVERRUN` × the pool's pace, at most
        their budgets): a sample that hangs in a bundle is stopped on its own budget, not on the bundle's sum."""
        call = slot.calls[0]
        pool = self.pools[slot.pool]
        budget, samples = pool.time_budgets[call.stage], len(call.batch.origin)
        one = min(samples, max(1, pool.batch_size))
        others = (samples - one) * min(budget, OVERRUN * self.pace.get(slot.pool, budget))
        return slot.head_started + budget * one + others + SLACK_S

    @staticmethod
    def _values(refs: list) -> list:
        """The finished calls' results in one ``ray.get``; where that raises (a worker died), each is got
        alone by :meth:`_finished` (``_UNREAD``)."""
        import ray

        if not refs:
            return []
        try:
            return ray.get(refs)
        except ray.exceptions.RayError:
            return [_UNREAD] * len(refs)

    def _finished(self, slot: _Slot, value: Any = None) -> list[VideoTask]:
        """``slot``'s head call finished with ``value`` (its status; the last pool's last call: (status,
        tasks)); ``_UNREAD``: got here, where a dead worker's error is handled."""
        import ray

        call = slot.calls[0]
        if value is _UNREAD:
            try:
                value = ray.get(call.ref)
            except ray.exceptions.RayError as error:
                return self._lost(slot, WORKER_LOST,
                                  _lost_message(self.pools[slot.pool].stage_names[call.stage], error))
        status, tasks = value if call.final else (value, None)
        if status:
            raise UserError(status)
        slot.calls.popleft()
        now = time.monotonic()
        self.busy_s[slot.pool] += now - slot.head_started
        call.batch.busy_s += now - slot.head_started
        slot.head_started = now
        if call.tasks_ref is not None or call.final:   # the pool is done with it: its pace, slow calls weighing most
            pace, seen = call.batch.busy_s / len(call.batch.origin), self.pace.get(slot.pool)
            self.pace[slot.pool] = pace if seen is None or pace > seen else 0.8 * seen + 0.2 * pace
        if call.tasks_ref is not None:   # to the next pool, through Ray's store
            self.pending[call.batch.pool + 1].append(_Part(call.batch.origin, call.tasks_ref))
            return []
        if not call.final:
            return []
        self.in_flight -= len(tasks)
        return tasks

    def _enforce_deadlines(self) -> list[VideoTask]:
        out = []
        now = time.monotonic()
        for slot in list(self.slots):
            if slot.calls and slot.ready_ref is None and now > self._deadline(slot):
                call = slot.calls[0]
                # the pool is slower than its pace said: its next calls carry one batch until it is quick again
                late = (call.batch.busy_s + now - slot.head_started) / len(call.batch.origin)
                self.pace[slot.pool] = max(self.pace.get(slot.pool, 0.0), late)
                stage = self.pools[slot.pool].stage_names[call.stage]
                budget = self.pools[slot.pool].time_budgets[call.stage]
                out += self._lost(slot, TIMEOUT, f"{stage} ran longer than its budget of {budget:g}s per sample "
                                  "(run.stage_timeout_s); its worker was stopped")
        return out

    # ------------------------------------------------------------ losing a worker
    def _lost(self, slot: _Slot, reason: str, message: str) -> list[VideoTask]:
        """The head call's worker died or hung: replace it, charge the head batch, requeue the others."""
        batches = slot.batches()
        stage = slot.calls[0].stage if slot.calls else 0
        slot.calls.clear()
        self._replace(slot)
        if self.stop.signum is not None or not batches:   # workers die with the stop (a signal to the process
            return []                                       # group): no charge
        head, *others = batches
        for batch in reversed(others):
            self.pending[batch.pool].extendleft(reversed(batch.parts))
        return self._charge(head, stage, reason, message)

    def _replace(self, slot: _Slot) -> None:
        """Stop ``slot``'s actor and start another in its place (it takes batches once started)."""
        import ray

        with contextlib.suppress(Exception):
            ray.kill(slot.handle, no_restart=True)
        if slot.ready_at:
            self.actor_s[slot.pool] += time.monotonic() - slot.ready_at
        self.slots[self.slots.index(slot)] = self._new_slot(slot.pool)

    def _restart(self, slot: _Slot, error: str) -> None:
        """A replacement died while starting: it held no batch (see _dispatch), so start another,
        unless the pool's replacements keep dying (a stage that cannot start on this cluster)."""
        self.start_deaths[slot.pool] += 1
        if self.start_deaths[slot.pool] > MAX_START_DEATHS:
            raise UserError(f"{error} ({MAX_START_DEATHS + 1} replacement workers in a row died while starting)")
        self._replace(slot)

    # ------------------------------------------------------------ the cluster: nodes lost and joined
    def _target(self, pool: int) -> int:
        """Actors for ``pool``: ``workers``, or for a GPU pool with ``workers == 0`` what each alive node's
        GPUs hold (a node with 3 GPUs and one with 1: four one-GPU actors, never one on a node without)."""
        import ray

        spec = self.pools[pool]
        if spec.workers or not spec.on_gpu:
            return spec.actors(0.0)
        per_node = [node.get("Resources", {}).get("GPU", 0.0) for node in ray.nodes() if node.get("Alive")]
        return max(1, sum(math.floor(gpus / spec.resources.gpus + 1e-9) for gpus in per_node))

    def _check_nodes(self, first: bool = False) -> list[VideoTask]:
        """Ray's view of the nodes: a node gone or dead is lost (its actors' samples go to the other
        nodes at once, whatever their calls still say); a node that joined may let a GPU pool grow."""
        import ray

        self._nodes_checked = time.monotonic()
        self._check_head()
        alive = {node["NodeID"]: node.get("NodeManagerAddress", "?") for node in ray.nodes() if node.get("Alive")}
        out: list[VideoTask] = []
        if not first:
            for node, address in self.nodes.items():
                if node not in alive:
                    self.nodes_lost.append(node)
                    self.notes.append(f"Ray node {node[:12]} ({address}) was lost; its samples are retried on the "
                                      "other nodes")
                    for slot in [s for s in self.slots if s.node == node]:
                        out += self._lost(slot, WORKER_LOST, f"the worker's Ray node {node[:12]} ({address}) "
                                          "was lost while it held this sample")
            joined = [node for node in alive if node not in self.nodes]
            for node in joined:
                self.nodes_joined.append(node)
                self.notes.append(f"Ray node {node[:12]} ({alive[node]}) joined")
            if joined:
                for index in range(len(self.pools)):
                    for _ in range(self._target(index) - sum(1 for s in self.slots if s.pool == index)):
                        self.slots.append(self._new_slot(index))
        self.nodes = alive
        return out

    def _check_head(self) -> None:
        """The head node (Ray's GCS) still answers, else one line now: without it Ray's own calls block
        for a minute and then end this process from one of Ray's threads."""
        import ray

        address = ray.get_runtime_context().gcs_address
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=HEAD_CHECK_S):
                return
        except OSError as error:
            self.head_lost = True
            raise UserError(f"lost the Ray head node at {address} ({error.strerror or error}); every finished "
                            "sample is committed: restart the cluster and rerun the same command to continue") from None

    # ------------------------------------------------------------ pools sized by the cluster's CPUs
    def _usage(self) -> tuple[Counter, Counter]:
        """Per pool: seconds its actors spent on calls (running calls so far included), and seconds they
        were started."""
        now = time.monotonic()
        busy, alive = Counter(self.busy_s), Counter(self.actor_s)
        for slot in self.slots:
            if slot.ready_at:
                alive[slot.pool] += now - slot.ready_at
                if slot.calls:
                    busy[slot.pool] += now - slot.head_started
        return busy, alive

    def _balance(self) -> None:
        """CPU pools with ``run.workers = 0``: one change per :data:`BALANCE_S`, from the busy shares the
        last window measured (see :func:`choose_move`): an actor more for the bottleneck on a free CPU (a
        node that joined included), or an idle actor of a pool that is less than half as busy stopped to
        free its CPU for the bottleneck."""
        import ray

        self._balanced = time.monotonic()
        busy, alive = self._usage()
        (last_busy, last_alive), self._window = self._window, (busy, alive)
        elastic = [i for i, pool in enumerate(self.pools) if not pool.on_gpu and not pool.workers]
        shares = {i: (busy[i] - last_busy[i]) / (alive[i] - last_alive[i])
                  for i in elastic if alive[i] - last_alive[i] > 0}
        if not shares:
            return
        # CPUs of actors still starting are not free yet, whatever Ray's count says
        starting = sum(self._options[s.pool]["num_cpus"] for s in self.slots if s.ready_ref is not None)
        free = ray.available_resources().get("CPU", 0.0) - starting
        move = choose_move(shares, {i: sum(1 for s in self.slots if s.pool == i) for i in shares}, free,
                           {i: self._options[i]["num_cpus"] for i in shares})
        if move is None:
            return
        kind, pool = move
        if kind == "grow":
            self.slots.append(self._new_slot(pool))
            self.grown[pool] += 1
            return
        idle = [s for s in self.slots if s.pool == pool and s.ready_ref is None and not s.calls]
        if idle:    # only an actor without batches: nothing is requeued, nothing charged
            with contextlib.suppress(Exception):
                ray.kill(idle[-1].handle, no_restart=True)
            self.actor_s[pool] += time.monotonic() - idle[-1].ready_at
            self.slots.remove(idle[-1])
            self.retired[pool] += 1

    def report(self) -> dict:
        """What stats.json says about the cluster: nodes lost and joined, each pool's actors and busy share
        (the share of its actors' time spent on calls: the busiest pool is the pipeline's bottleneck)."""
        busy, alive = self._usage()
        pools = {}
        for index, pool in enumerate(self.pools):
            pools[pool.name] = {"actors": sum(1 for s in self.slots if s.pool == index),
                                "busy_share": round(min(1.0, busy[index] / alive[index]), 4) if alive[index] else None,
                                "grown": self.grown[index], "retired": self.retired[index]}
        return {"nodes": len(self.nodes), "nodes_lost": len(self.nodes_lost), "nodes_joined": len(self.nodes_joined),
                "pools": pools}

    def _charge(self, batch: _Batch, stage: int, reason: str, message: str) -> list[VideoTask]:
        """Retry the batch's samples from the first pool, alone; fail those out of retries."""
        stage_name = self.pools[batch.pool].stage_names[stage]
        origin = batch.origin
        if len(origin) > 1:     # find the culprit: each sample alone, uncharged
            self.pending[0].extendleft(reversed([_Part([t], [t], solo=True) for t in origin]))
            return []
        [task] = origin
        self.attempts[task.key] += 1
        attempts = self.attempts[task.key]
        if attempts > self.cfg.run.max_sample_retries:
            self.in_flight -= 1
            return [failed_copy(task, stage_name, reason, f"{message} ({attempts} attempt"
                                f"{'s' if attempts > 1 else ''})")]
        self.pending[0].appendleft(_Part([task], [task], solo=True))
        return []

    # ------------------------------------------------------------ stop
    def close(self) -> None:
        """Stop every actor; shut Ray down when this run started it (bounded: never waits on a worker)."""
        try:
            import ray
        except ImportError:
            return
        if not ray.is_initialized() or self.head_lost:   # without the head, Ray's calls block: leave it all
            return
        for slot in self.slots:
            with contextlib.suppress(Exception):
                ray.kill(slot.handle, no_restart=True)
        self.slots = []
        if self.session is not None:
            self.session.close()


def _lost_message(stage: str, error: BaseException) -> str:
    text = _one_line(error)
    hint = " (out of memory?)" if "memory" in text.lower() or "oom" in text.lower() or "SIGKILL" in text else ""
    return f"the worker died while running {stage} on this sample{hint}: {text[:300]}"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _unreadable_here(paths: list[str]) -> str:
    """"" when this process can read every one of ``paths`` as a file, else the one line that names the
    first it cannot and this Ray node: the driver listed it (a missing local input fails at listing), so the
    node lacks the driver's file system."""
    import ray

    missing = [path for path in paths if not (os.path.isfile(path) and os.access(path, os.R_OK))]
    if not missing:
        return ""
    return (f"input {missing[0]} cannot be read on Ray node {ray.get_runtime_context().get_node_id()[:12]} "
            f"({ray.util.get_node_ip_address()}), only where the driver runs: put the inputs on a file system every "
            "node mounts at the same path, or give URLs (s3://, gs://, https://)")


def fit_scale(actors: list[tuple[float, float]], nodes: list[tuple[float, float]]) -> float:
    """The CPU scale (1, 1/2, 1/3, ... 1/64) at which every actor ``(cpus, gpus)`` fits the nodes ``(cpus,
    gpus)`` at once, packed first-fit with GPU actors first (counted per node: two half-free nodes do not
    hold one whole actor); the smallest when none does (a GPU shortage is reported before this)."""
    for k in range(1, 65):
        free = [list(node) for node in nodes]
        for cpus, gpus in sorted(actors, key=lambda actor: (-actor[1], -actor[0])):
            node = next((n for n in free if n[0] + 1e-9 >= cpus / k and n[1] + 1e-9 >= gpus), None)
            if node is None:
                break
            node[0] -= cpus / k
            node[1] -= gpus
        else:
            return 1.0 / k
    return 1.0 / 64


def choose_move(shares: dict[int, float], actors: dict[int, int], free_cpus: float,
                cpus: dict[int, float]) -> Optional[tuple[str, int]]:
    """The one change to the CPU pools sized by the cluster, from each pool's busy share: ``("grow", p)``
    when the busiest pool ``p`` is at least :data:`GROW_SHARE` busy and its actor's ``cpus`` are free;
    else ``("retire", q)``, the least busy pool with more than one actor, if it is less than half as busy
    (its CPU goes to ``p`` at the next step); else None (no bottleneck, or nothing to move)."""
    busiest = max(shares, key=lambda pool: shares[pool])
    if shares[busiest] < GROW_SHARE:
        return None
    if free_cpus + 1e-9 >= cpus[busiest]:
        return "grow", busiest
    spare = [pool for pool in shares if pool != busiest and actors[pool] > 1 and shares[pool] < shares[busiest] / 2]
    return ("retire", min(spare, key=lambda pool: shares[pool])) if spare else None
