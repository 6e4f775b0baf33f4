"""Live progress for build-sgs (rich), or plain log lines with ``--quiet``.

The display shows, per stage, how many samples passed it and their mean
time, and overall done/total, committed, failed, rate and ETA.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Optional

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from stages.base import VideoTask


class Progress:
    def __init__(self, quiet: bool = False, console: Optional[Console] = None):
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self.live: Optional[Live] = None
        self.total = 0
        self.done = 0
        self.failed = 0
        self.stage_done: Counter = Counter()
        self.stage_seconds: Counter = Counter()
        self.stages: list[str] = []
        self.started = time.perf_counter()

    def start(self, total: int, stages: list[str]) -> None:
        self.total, self.stages, self.started = total, stages, time.perf_counter()
        if self.quiet or not self.console.is_terminal:
            self.quiet = True
            self.log(f"running {total} samples through {', '.join(stages)}")
            return
        self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def advance(self, task: Optional[VideoTask], failed: bool) -> None:
        self.done += 1
        self.failed += failed
        if task is not None:
            for name, seconds in task.stage_seconds.items():
                self.stage_done[name] += 1
                self.stage_seconds[name] += seconds
        if self.live is not None:
            self.live.update(self._render())
        elif self.done % 50 == 0 or self.done == self.total:
            self.log(self._line())

    def log(self, message: str) -> None:
        if self.live is not None:
            self.live.console.log(message)
        else:
            print(f"[finsta] {message}", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.stop()
            self.live = None

    def eta_seconds(self) -> Optional[float]:
        elapsed = time.perf_counter() - self.started
        if not self.done:
            return None
        return (self.total - self.done) * elapsed / self.done

    def _line(self) -> str:
        eta = self.eta_seconds()
        return (f"{self.done}/{self.total} samples, {self.failed} failed, "
                f"ETA {'?' if eta is None else f'{eta:.0f}s'}")

    def _render(self) -> Group:
        table = Table(title=None, expand=False)
        table.add_column("stage")
        table.add_column("passed", justify="right")
        table.add_column("mean s/sample", justify="right")
        for name in self.stages:
            count = self.stage_done[name]
            table.add_row(name, str(count), f"{self.stage_seconds[name] / count:.2f}" if count else "-")
        return Group(table, self._line())
