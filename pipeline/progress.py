"""What build-sgs shows while it runs: a live display on a terminal, plain status lines otherwise.

The driver (pipeline/build.py) calls, in this order::

    progress = Progress(quiet=False)            # quiet, or stderr not a terminal → plain lines
    progress.phase("checking stages")           # steps before the first sample, shown as they happen
    progress.start(total=16, stages=["decode", ...])
    progress.phase("starting Ray, workers and models")
    progress.advance(task, failed=False)        # once per sample that ran, finished or failed
    progress.shard_committed(16, 0, "shard-000000")
    progress.log("a line the user must read")   # kept on screen, above the display
    progress.finish()                           # idempotent; call it in a ``finally``

A phase lasts until the next ``phase()`` or the first processed sample (the
first ``advance`` with a task). On a terminal the display is three lines,
redrawn every second (elapsed and ETA tick between samples) and erased by
``finish()``, so only the final summary stays::

    start-up 14.6 s: checking stages 0.4 s · listing samples 0.1 s · starting Ray, workers and models 14.1 s
    ━━━━━━━━━━━━━────────────────  7/16 samples (44%) · 1 failed · 0:42 elapsed · ETA 0:29 · 0.31 samples/s · 7.4 frames/s
    time  detect 81% · decode 7% · embed_text 6% · 2 more · 1 shard committed (4 samples)

With ``quiet`` (or when stderr is not a terminal: a batch job's log) it
prints one ``[finsta] …`` line per phase (those before ``start()`` on its
line, so a run refused by preflight prints only its error), one per
committed shard, and a status line every ``status_interval`` seconds, so a
log shows progress between start and end::

    [finsta] running 16 samples through decode, detect, ... (checking stages 0.4 s, listing samples 0.1 s)
    [finsta] starting Ray, workers and models
    [finsta] first result after 14.6 s
    [finsta] 7/16 samples (44%), 1 failed, 0:42 elapsed, ETA 0:29, 0.31 samples/s, 7.4 frames/s
    [finsta] committed shard-000000: 16 samples, 0 failures (16/160 done)

Rates are measured from the first result on (start-up is not throughput);
the ETA counts down through the sample in flight and never promises less
than the samples after it need at the measured rate. ``clock`` and
``background=False`` let tests drive time themselves (call ``tick()``).
"""
from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from typing import Callable, Optional, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from stages.base import VideoTask

PREFIX = "[finsta]"
BAR_WIDTH = 40
FIGURES_WIDTH = 90   # room the figures after the bar usually need
REFRESH_SECONDS = 1.0


def format_duration(seconds: float) -> str:
    """``42.4`` → ``0:42``, ``3725`` → ``1:02:05`` (what a person reads at a glance)."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _seconds(seconds: float) -> str:
    """``0.4 s`` under a minute (start-up phases are often short), ``1:02`` above."""
    return f"{seconds:.1f} s" if seconds < 60 else format_duration(seconds)


class Progress:
    """Live progress of one build (see the module docstring for the call order and what is shown).

    ``quiet``: plain lines even on a terminal. ``status_interval``: seconds between plain status
    lines. ``console``: where the live display goes (default: stderr). ``stream``: where plain
    lines go (default: stderr). ``clock``: seconds, monotonic. ``background``: a thread refreshes
    the display / prints due status lines every second; tests pass False and call ``tick()``.
    """

    def __init__(self, quiet: bool = False, status_interval: float = 30.0, console: Optional[Console] = None,
                 stream: Optional[TextIO] = None, clock: Callable[[], float] = time.monotonic,
                 background: bool = True):
        self.console = console or Console(stderr=True)
        self.quiet = quiet or not self.console.is_terminal
        self.status_interval = status_interval
        self.stream = stream
        self.clock = clock
        self.background = background
        self.created = clock()
        self.total = 0
        self.done = 0
        self.failed = 0
        self.processed = 0                      # done with a task (not failed before running)
        self.frames = 0
        self.stages: list[str] = []
        self.stage_seconds: Counter = Counter()
        self.shards = 0
        self.shard_samples = 0
        self.phases: list[tuple[str, float]] = []   # (text, started)
        self.phase_ended: Optional[float] = None    # when the last phase ended (first result)
        self.first_result: Optional[float] = None
        self.last_result: Optional[float] = None
        self.frames_at_first = 0
        self.last_status = self.created
        self.live: Optional[Live] = None
        self.finished = False
        self.started = False                        # start() was called
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ driver calls
    def phase(self, text: str) -> None:
        """A step before the first sample (``"starting Ray"``); ends at the next phase or first result."""
        with self._lock:
            self.phases.append((text, self.clock()))
            self.phase_ended = None
            if self.quiet and self.started:   # the steps before start() are told by start()'s line
                self._print(text)
            self._begin()

    def start(self, total: int, stages: list[str], failed_early: int = 0) -> None:
        """``total`` samples will pass (or fail) through ``stages``; shows the bar. ``failed_early``
        rows (missing files, bad entries) never run: said once, kept out of the bar and the rates."""
        with self._lock:
            self.total, self.stages, self.started = total, list(stages), True
            early = f"{failed_early} failed before running (missing files, bad entries)" if failed_early else ""
            if self.quiet:
                before = f" ({', '.join(f'{text} {_seconds(self.clock() - began)}' for text, began in self._spans())})" \
                    if self.phases else ""
                self._print(f"running {total} samples through {', '.join(stages)}{before}" + (f"; {early}" if early else ""))
            self._begin()
            if early and not self.quiet:
                self.log(early)

    def advance(self, task: Optional[VideoTask], failed: bool) -> None:
        """One sample finished (``failed`` or not); ``task`` None: it failed before running."""
        with self._lock:
            now = self.clock()
            self.done += 1
            self.failed += bool(failed)
            if task is None:
                return self._update()
            self.processed += 1
            self.frames += max(task.stage_frames.values(), default=0)
            self.stage_seconds.update(task.stage_seconds)
            if self.first_result is None:
                self.first_result, self.frames_at_first = now, self.frames
                if self.phases and self.phase_ended is None:
                    self.phase_ended = now
                if self.quiet:
                    self._print(f"first result after {now - self.created:.1f} s")
            self.last_result = now
            self._update()

    def shard_committed(self, n_samples: int, n_failures: int, name: str = "") -> None:
        """A shard holding ``n_samples`` samples and ``n_failures`` failure rows is on disk."""
        with self._lock:
            self.shards += 1
            self.shard_samples += n_samples
            if self.quiet:
                self._print(f"committed {name or f'shard {self.shards}'}: {_plural(n_samples, 'sample')}, "
                            f"{_plural(n_failures, 'failure')} ({self.done}/{self.total} done)")
            self._update()

    def log(self, text: str) -> None:
        """A line the user must read; on a terminal it stays above the display."""
        with self._lock:
            if self.live is not None:
                self.live.console.print(Text(text), soft_wrap=True)
            else:
                self._print(text)

    def finish(self, completed: bool = True) -> None:
        """Stop the display (a terminal keeps nothing of it) or print the last status line:
        ``finished …``, or with ``completed=False`` (an error, an interrupt) ``stopped at …`` when
        any sample was done, nothing otherwise (the error line is then the only line)."""
        with self._lock:
            if self.finished:
                return
            self.finished = True
            self._stop.set()
            if self.live is not None:
                self.live.stop()
                self.live = None
            elif self.quiet and self.started and (completed or self.done):
                self._print(f"{'finished' if completed else 'stopped at'} {self.status_line()}")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * REFRESH_SECONDS)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    # ------------------------------------------------------------------ time
    def tick(self) -> None:
        """Redraw the display, or print the status line when ``status_interval`` has passed."""
        with self._lock:
            if self.finished:
                return
            if self.live is not None:
                self.live.update(self.render(), refresh=True)
            elif self.quiet and self.clock() - self.last_status >= self.status_interval:
                self._print(self.status_line())

    def rate(self) -> Optional[float]:
        """Samples per second between the first and the latest result (None before two)."""
        if self.first_result is None or self.last_result is None or self.processed < 2:
            return None
        span = self.last_result - self.first_result
        return (self.processed - 1) / span if span > 0 else None

    def frame_rate(self) -> Optional[float]:
        if self.first_result is None or self.last_result is None:
            return None
        span = self.last_result - self.first_result
        return (self.frames - self.frames_at_first) / span if span > 0 else None

    def eta_seconds(self) -> Optional[float]:
        """Seconds left at the measured rate, counting down between results; 0 when done; None when
        unknown (before two results, or the last sample running longer than the others took)."""
        remaining = self.total - self.done
        if remaining <= 0:
            return 0.0
        rate = self.rate()
        if rate is None:
            return None
        per_sample = 1.0 / rate
        waited = self.clock() - self.last_result
        if remaining == 1 and waited >= per_sample:
            return None   # the last sample is taking longer than the others did: unknown, not 0:00
        return max(remaining * per_sample - waited, (remaining - 1) * per_sample)

    def elapsed(self) -> float:
        return self.clock() - self.created

    # ------------------------------------------------------------------ text
    def status_line(self) -> str:
        """``7/16 samples (44%), 1 failed, 0:42 elapsed, ETA 0:29, 0.31 samples/s, 7.4 frames/s``."""
        if self.first_result is None and self.phases:
            text, began = self.phases[-1]
            line = f"{text}: {format_duration(self.clock() - began)} so far"
            return line + (f", {format_duration(self.elapsed())} elapsed" if began - self.created >= 1 else "")
        return ", ".join(self._figures())

    def _figures(self, compact: bool = False) -> list[str]:
        """The bar's figures; ``compact`` (a narrow terminal) drops the word "samples" after the count
        and the elapsed time, so the rates still fit in 80 columns."""
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        rate, frame_rate, eta = self.rate(), self.frame_rate(), self.eta_seconds()
        figures = [f"{self.done}/{self.total}{'' if compact else ' samples'}{share}", f"{self.failed} failed"]
        figures += [] if compact else [f"{format_duration(self.elapsed())} elapsed"]
        if self.done < self.total:   # before the rates: a narrow terminal cuts those first
            figures.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA –")
        figures.append(f"{rate:.2f} samples/s" if rate is not None else "– samples/s")
        if frame_rate is not None:
            figures.append(f"{frame_rate:.1f} frames/s")
        return figures

    def _spans(self) -> list[tuple[str, float]]:
        """``(text, start)`` of each phase, the start shifted so that ``clock() - start`` is its length."""
        now = self.clock()
        spans = []
        for i, (text, began) in enumerate(self.phases):
            ended = self.phases[i + 1][1] if i + 1 < len(self.phases) else (self.phase_ended or now)
            spans.append((text, now - (ended - began)))
        return spans

    def phase_summary(self) -> str:
        """``start-up 14.6 s: checking stages 0.4 s · starting Ray 14.2 s`` (the current one still open)."""
        now = self.clock()
        parts = [f"{text} {_seconds(now - began)}" for text, began in self._spans()]
        return f"start-up {_seconds((self.phase_ended or now) - self.created)}: " + " · ".join(parts)

    def render(self) -> Group:
        """The live display at this moment (each line cut to the console width, never wrapped)."""
        width = max(20, self.console.size.width - 1)
        lines: list[Text] = []
        if self.phases:
            if self.first_result is None:
                for i, (text, began) in enumerate(self.phases):
                    current = i == len(self.phases) - 1
                    ended = self.clock() if current else self.phases[i + 1][1]
                    mark = "…" if current else "✓"
                    lines.append(Text(f"{mark} {text}  {_seconds(ended - began)}",
                                      style="bold" if current else "dim"))
            else:
                lines.append(Text(self.phase_summary(), style="dim"))
        if self.total and (self.first_result is not None or self.done or not self.phases):
            lines.append(self._bar_line(width))
            shards = self._shard_note()
            shares = self._stage_shares(width - len(shards) - 3)
            if shares or shards:
                lines.append(Text(" · ".join(filter(None, [shares, shards])), style="dim"))
        for line in lines:
            line.no_wrap, line.overflow = True, "ellipsis"
            line.truncate(width, overflow="ellipsis")
        return Group(*lines)

    def _bar_line(self, width: int) -> Text:
        figures = "  " + " · ".join(self._figures())
        bar_width = max(10, min(BAR_WIDTH, width - FIGURES_WIDTH))  # fixed per width: no jitter
        if bar_width + len(figures) > width:   # narrow: compact figures, and the bar gets what is left
            figures = "  " + " · ".join(self._figures(compact=True))
            bar_width = max(0, min(10, width - len(figures)))
        filled = round(bar_width * self.done / self.total) if self.total else 0
        line = Text("━" * filled, style="green")
        line.append("─" * (bar_width - filled), style="grey50")
        line.append(figures)
        return line

    def _stage_shares(self, width: int) -> str:
        """``time  detect 80% · decode 8% · …``: the stages by share, as many whole ones as fit ``width``."""
        total = sum(self.stage_seconds.values())
        if total <= 0:
            return ""
        order = sorted(self.stage_seconds.items(), key=lambda item: -item[1])
        parts = [f"{name} {seconds / total:.0%}" for name, seconds in order if seconds / total >= 0.005]
        while True:
            rest = len(order) - len(parts)
            text = "time  " + " · ".join(parts + ([f"{rest} more" if parts else ""] if rest else []))
            if len(text) <= width or not parts:
                return text
            parts.pop()

    def _shard_note(self) -> str:
        if not self.shards:
            return ""
        return f"{_plural(self.shards, 'shard')} committed ({self.shard_samples} samples)"

    # ------------------------------------------------------------------ plumbing
    def _begin(self) -> None:
        """Start the live display and the refresh thread on the first call."""
        if self.finished:
            return
        if not self.quiet and self.live is None:
            self.live = Live(self.render(), console=self.console, auto_refresh=False, transient=True,
                             redirect_stdout=True, redirect_stderr=True)
            self.live.start(refresh=True)
        if self.background and self._thread is None:
            self._thread = threading.Thread(target=self._refresh_loop, name="finsta-progress", daemon=True)
            self._thread.start()
        self._update()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS) and threading.main_thread().is_alive():
            self.tick()

    def _update(self) -> None:
        if self.live is not None:
            self.live.update(self.render(), refresh=True)

    def _print(self, text: str) -> None:
        self.last_status = self.clock()
        print(f"{PREFIX} {text}", file=self.stream or sys.stderr, flush=True)
