"""Stopping a command on SIGINT / SIGTERM, in every phase, within a bounded time: ``build-sgs`` and
``train`` (in one process or on Ray workers) alike.

:class:`StopSignals` owns both signals for the duration of a run (a build, a training run):

* While the driver waits on something it can leave at once (listing the
  dataset, workers loading models) it runs inside
  :meth:`StopSignals.interruptible`: a signal raises :class:`StopRun` there
  and then, nothing being finished yet. Starting or joining Ray blocks in
  native code for seconds: it runs inside :meth:`StopSignals.starting`,
  where the watcher ends the process at once with one line.
* While work runs, a signal only sets :attr:`StopSignals.signum`; the
  run sees it at its next safe point and ends there: a build's loop within a
  second (executors wake up at least once a second), commits every finished
  sample and raises ``pipeline.stop.Interrupted``; training checkpoints the
  step in progress and raises ``finsta_model.train.TrainingInterrupted``.
* Whatever the driver is doing, a watcher thread (woken through Python's
  signal wake-up fd, which the C-level handler writes even while the main
  thread is stuck in native code) ends the process ``grace_s`` seconds after
  the first signal, or at once on a second one, with one line on stderr.
  :meth:`StopSignals.deadline` uses the same thread to bound a call that may
  block in native code (``ray.init`` on an unreachable address).

Example::

    with StopSignals() as stop:
        with stop.interruptible():
            slow_setup()                 # a signal here raises StopRun
        for item in work():
            if stop.signum:              # a signal here only sets signum
                break
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import threading
import time
from typing import Callable, Iterator, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopRun(BaseException):
    """Raised in an interruptible phase. A BaseException, like KeyboardInterrupt, so that
    libraries' ``except Exception`` (Ray's connect retry loop has one) cannot swallow it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """SIGINT/SIGTERM handling for one run (see the module docstring); a context manager.

    Outside the main thread (a run started from a worker thread) it installs
    nothing and ``signum`` stays None. ``hard_exit_note`` (a callable) adds to
    the line printed when the watcher ends the process, e.g. what is committed.
    """

    def __init__(self, grace_s: float = 30.0):
        self.grace_s = grace_s
        self.signum: Optional[int] = None
        self.hard_exit_note: Callable[[], str] = lambda: ""
        self._depth = 0
        self._saved: dict[int, object] = {}
        self._saved_fd: Optional[int] = None
        self._pipe: Optional[tuple[socket.socket, socket.socket]] = None
        self._watcher: Optional[threading.Thread] = None
        self._deadlines: dict[int, tuple[float, str, int]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._active = False
        self._starting: Optional[str] = None
        self._exiting = threading.Lock()

    # -- lifetime
    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        self._active = True
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._pipe = (reader, writer)
        self._saved_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        for signum in SIGNALS:
            self._saved[signum] = signal.signal(signum, self._handle)
        self._watcher = threading.Thread(target=self._watch, name="finsta-stop-watcher", daemon=True)
        self._watcher.start()
        return self

    def __exit__(self, *exc) -> None:
        if not self._active:
            return
        self._closed = True
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._saved_fd if self._saved_fd is not None else -1)
        self._pipe[1].close()   # wakes the watcher, which then ends
        self._active = False

    def reinstall(self) -> None:
        """Take the signals back after a library replaced the handlers (``ray.init`` sets its own SIGTERM)."""
        if self._active:
            for signum in SIGNALS:
                signal.signal(signum, self._handle)

    # -- phases
    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A phase that a signal may end at once (raises :class:`StopRun`)."""
        self.check()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        self.check()

    @contextlib.contextmanager
    def starting(self, line: str) -> Iterator[None]:
        """A start-up that a signal ends at once: the watcher prints ``SIGNAME line`` (and the
        :attr:`hard_exit_note`) and ends the process
        (``ray.init`` blocks in native code for seconds, where neither a handler nor an exception reaches
        it; nothing has run yet, and the reaper armed before it ends Ray's processes)."""
        self.check()
        self._starting = line
        try:
            yield
        except BaseException as error:
            # a library's own handler (ray.init installs one for SIGTERM: sys.exit(signum)) got the signal
            # first and raised: end the process here as the watcher would, before anything shuts down politely
            if self.signum is None and isinstance(error, SystemExit) and error.code in SIGNALS:
                self.signum = error.code
            if self.signum is not None:
                self._hard_exit(f"{signal.Signals(self.signum).name} {line}", EXIT_CODES.get(self.signum, 1))
            raise
        finally:
            self._starting = None
        self.check()

    def check(self) -> None:
        """Raise :class:`StopRun` when a signal has arrived."""
        if self.signum is not None:
            raise StopRun(self.signum)

    @contextlib.contextmanager
    def deadline(self, seconds: float, message: str, exit_code: int = 2) -> Iterator[None]:
        """End the process with ``error: message`` if the block has not left within ``seconds``
        (for calls that can block in native code, out of reach of signals and exceptions)."""
        if not self._active:
            yield
            return
        token = id(object())
        with self._lock:
            self._deadlines[token] = (time.monotonic() + seconds, message, exit_code)
        try:
            yield
        finally:
            with self._lock:
                self._deadlines.pop(token, None)

    # -- signal side
    def _handle(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
        if self._depth > 0:
            raise StopRun(signum)

    def _watch(self) -> None:
        try:
            self._watch_loop(self._pipe[0])
        finally:
            self._pipe[0].close()

    def _watch_loop(self, reader: socket.socket) -> None:
        first_at: Optional[float] = None
        seen = 0
        while not self._closed:
            timeout = 0.5
            try:
                ready, _, _ = select.select([reader], [], [], timeout)
            except (OSError, ValueError):
                return
            if ready:
                try:
                    data = reader.recv(64)
                except BlockingIOError:
                    data = b""
                except OSError:
                    return
                if not data and self._closed:
                    return
                for byte in data:
                    if byte in SIGNALS:
                        seen += 1
                        if self.signum is None:
                            self.signum = byte
                        first_at = first_at or time.monotonic()
                        if self._starting is not None:
                            self._hard_exit(f"{signal.Signals(self.signum).name} {self._starting}",
                                            EXIT_CODES.get(self.signum, 1))
                if seen >= 2:
                    self._hard_exit(f"second {signal.Signals(self.signum).name}: stopping now",
                                    EXIT_CODES.get(self.signum, 1))
            if first_at is not None and time.monotonic() - first_at > self.grace_s:
                self._hard_exit(f"still stopping {self.grace_s:g}s after {signal.Signals(self.signum).name}; "
                                "stopping now", EXIT_CODES.get(self.signum, 1))
            with self._lock:
                overdue = [entry for entry in self._deadlines.values() if time.monotonic() > entry[0]]
            if overdue:
                _, message, code = overdue[0]
                self._hard_exit(message, code, prefix="error: ")

    def _hard_exit(self, message: str, code: int, prefix: str = "") -> None:
        if self._closed:
            return
        if not self._exiting.acquire(blocking=False):   # the other thread is ending the process: one line
            while True:
                time.sleep(1)
        try:
            note = self.hard_exit_note()
        except Exception:  # the note is best effort; the exit is not
            note = ""
        line = f"{prefix}{message}{'; ' + note if note else ''}\n"
        os.write(2, line.encode(errors="replace"))   # not sys.stderr: its lock may be held by the stuck thread
        os._exit(code)
