"""build-sgs's progress display, driven by a fake clock: what a person sees on a terminal, and in a log."""
from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from pipeline.progress import Progress, format_duration
from stages.base import VideoTask

STAGES = ["decode", "detect", "track", "relate", "embed_visual", "parse_captions", "merge_hsg", "embed_text"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Screen:
    """The few terminal controls rich's live display uses (text, CR, LF, cursor up, erase line),
    applied to a grid of rows: what a terminal would show after all the writes."""

    CONTROL = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")

    def __init__(self, data: str):
        rows, row, col = [[]], 0, 0
        pos = 0
        while pos < len(data):
            match = self.CONTROL.match(data, pos)
            if match:
                arg, code = match.groups()
                if code == "A":
                    row = max(0, row - int(arg or 1))
                elif code == "K":
                    rows[row] = []
                    col = 0 if arg == "2" else col
                pos = match.end()
                continue
            char = data[pos]
            pos += 1
            if char == "\n":
                row, col = row + 1, 0
                while len(rows) <= row:
                    rows.append([])
            elif char == "\r":
                col = 0
            else:
                line = rows[row]
                line.extend(" " * (col - len(line)))
                line[col:col + 1] = [char]
                col += 1
        self.lines = ["".join(r).rstrip() for r in rows]
        while self.lines and not self.lines[-1]:
            self.lines.pop()


def task(detect_seconds: float = 2.0, frames: int = 24) -> VideoTask:
    done = VideoTask(key="k", source="test", video_id="k", video_path="k.mp4")
    done.stage_seconds = {"decode": 0.2, "detect": detect_seconds, "embed_visual": 0.1, "embed_text": 0.2}
    done.stage_frames = {"decode": frames, "detect": frames}
    return done


def terminal(width: int = 120) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=width, force_terminal=True, color_system="standard"), buffer


def shown(progress: Progress, width: int = 120) -> list[str]:
    """The live display's lines at this moment, as plain text."""
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(progress.render())
    return console.file.getvalue().splitlines()


def test_phases_before_the_first_sample_are_shown_as_they_happen_and_tick():
    clock = FakeClock()
    console, _ = terminal()
    progress = Progress(console=console, clock=clock, background=False)
    progress.phase("checking stages")
    clock.advance(0.4)
    progress.start(16, STAGES)
    progress.phase("starting Ray, workers and models")
    clock.advance(12)
    assert shown(progress) == ["✓ checking stages  0.4 s", "… starting Ray, workers and models  12.0 s"]
    clock.advance(1)     # no event: the next refresh shows the time go on
    assert shown(progress)[-1] == "… starting Ray, workers and models  13.0 s"
    clock.advance(2)
    progress.advance(task(), failed=False)
    lines = shown(progress)
    assert lines[0] == ("start-up 15.4 s: checking stages 0.4 s · starting Ray, workers and models 15.0 s")
    assert "1/16 samples (6%) · 0 failed · 0:15 elapsed · ETA – · – samples/s" in lines[1]
    progress.finish()


def test_the_bar_shows_rates_from_the_first_result_and_an_eta_that_counts_down():
    clock = FakeClock()
    console, _ = terminal()
    progress = Progress(console=console, clock=clock, background=False)
    progress.phase("starting Ray, workers and models")
    progress.start(16, STAGES)
    clock.advance(60)                       # a slow start-up is not throughput
    progress.advance(task(), failed=False)
    for i in range(6):
        clock.advance(3)
        progress.advance(task(), failed=i == 2)
    bar = shown(progress)[1]
    assert bar.startswith("━")
    assert "7/16 samples (44%) · 1 failed · 1:18 elapsed · ETA 0:27 · 0.33 samples/s · 8.0 frames/s" in bar
    clock.advance(1)
    assert "1:19 elapsed" in shown(progress)[1] and "ETA 0:26" in shown(progress)[1]
    clock.advance(1)
    assert "ETA 0:25" in shown(progress)[1]
    clock.advance(30)                      # stalled: never less than the 8 samples after the one in flight
    assert "ETA 0:24" in shown(progress)[1]
    assert progress.eta_seconds() == pytest.approx(24.0)
    assert shown(progress)[2] == "time  detect 80% · decode 8% · embed_text 8% · embed_visual 4%"
    progress.shard_committed(7, 1, "shard-000000")
    assert shown(progress)[2].endswith("· 1 shard committed (7 samples)")
    progress.finish()


def test_samples_that_failed_before_running_are_said_once_and_kept_out_of_the_bar_and_rates():
    clock = FakeClock()
    log = io.StringIO()
    progress = Progress(quiet=True, clock=clock, background=False, stream=log)
    progress.start(4, STAGES, failed_early=2885)
    assert "running 4 samples through decode" in log.getvalue()
    assert "; 2885 failed before running (missing files, bad entries)" in log.getvalue()
    progress.advance(task(), failed=False)
    clock.advance(10)
    progress.advance(task(), failed=False)
    assert progress.status_line().startswith("2/4 samples (50%), 0 failed")
    assert progress.rate() == pytest.approx(0.1) and progress.eta_seconds() == pytest.approx(20.0)
    progress.finish()


@pytest.mark.parametrize("width", [80, 120, 200])
def test_no_line_of_the_display_wraps(width):
    clock = FakeClock()
    console, _ = terminal(width)
    progress = Progress(console=console, clock=clock, background=False)
    for name in ("checking the packages and weight files of every stage", "listing 1,000,000 samples",
                 "starting Ray, workers and models"):
        progress.phase(name)
        clock.advance(3)
    progress.start(1_000_000, [f"{name}_with_a_long_name" for name in STAGES])
    for _ in range(3):
        clock.advance(1)
        progress.advance(task(), failed=True)
    progress.shard_committed(3, 3, "shard-000000")
    lines = shown(progress, width)
    assert len(lines) == 3 and all(len(line) < width for line in lines), lines
    assert "samples/s" in lines[1] and "frames/s" in lines[1], lines[1]   # the rates survive 80 columns
    assert "…" not in lines[2] and lines[2].endswith("· 1 shard committed (3 samples)")   # whole stages only
    assert width < 200 or "more" not in lines[2]
    progress.finish()


def test_at_80_columns_the_bar_keeps_its_rates():
    clock = FakeClock()
    console, _ = terminal(80)
    progress = Progress(console=console, clock=clock, background=False)
    progress.start(16, STAGES)
    for i in range(7):
        clock.advance(3)
        progress.advance(task(), failed=i == 2)
    bar = shown(progress, 80)[0]
    assert bar.startswith("━") and bar.endswith("7/16 (44%) · 1 failed · ETA 0:27 · 0.33 samples/s · 8.0 frames/s")
    progress.finish()


def test_nothing_of_the_display_is_left_on_screen_but_logged_lines():
    clock = FakeClock()
    console, buffer = terminal()
    progress = Progress(console=console, clock=clock, background=False)
    progress.phase("checking stages")
    progress.start(3, STAGES)
    progress.phase("starting Ray, workers and models")
    for _ in range(3):
        clock.advance(1)
        progress.tick()
        progress.advance(task(), failed=False)
    progress.log("warning: a line the user must read")
    progress.shard_committed(3, 0, "shard-000000")
    progress.finish()
    progress.finish()                       # idempotent: build_command calls it in a finally
    console.print("the final summary")
    assert Screen(buffer.getvalue()).lines == ["warning: a line the user must read", "the final summary"]
    assert "progress.py" not in buffer.getvalue()      # no rich log line with a source reference


def test_quiet_prints_phases_shards_and_a_status_line_every_interval():
    clock = FakeClock()
    log = io.StringIO()
    progress = Progress(quiet=True, status_interval=30, stream=log, clock=clock, background=False)
    progress.phase("checking stages")
    progress.start(4, ["decode", "detect"])
    progress.phase("starting Ray, workers and models")
    for _ in range(70):                     # the thread ticks every second
        clock.advance(1)
        progress.tick()
    progress.advance(task(), failed=False)
    for _ in range(3):
        clock.advance(10)
        progress.tick()
        progress.advance(task(), failed=False)
        progress.tick()
    progress.shard_committed(4, 0, "shard-000000")
    progress.finish()
    assert log.getvalue().splitlines() == [
        "[finsta] running 4 samples through decode, detect (checking stages 0.0 s)",
        "[finsta] starting Ray, workers and models",
        "[finsta] starting Ray, workers and models: 0:30 so far",
        "[finsta] starting Ray, workers and models: 1:00 so far",
        "[finsta] first result after 70.0 s",
        "[finsta] 3/4 samples (75%), 0 failed, 1:40 elapsed, ETA –, 0.10 samples/s, 2.4 frames/s",
        "[finsta] committed shard-000000: 4 samples, 0 failures (4/4 done)",
        "[finsta] finished 4/4 samples (100%), 0 failed, 1:40 elapsed, 0.10 samples/s, 2.4 frames/s",
    ]


def test_a_display_that_is_not_a_terminal_is_plain_lines():
    log = io.StringIO()
    progress = Progress(console=Console(file=io.StringIO()), stream=log, background=False)
    assert progress.quiet
    progress.start(1, ["decode"])
    progress.finish()
    assert log.getvalue().startswith("[finsta] running 1 samples through decode")


def test_a_run_refused_before_it_starts_prints_only_its_error():
    log = io.StringIO()
    progress = Progress(quiet=True, stream=log, background=False)
    progress.phase("checking stages")
    progress.finish(completed=False)              # preflight raised: the error line is the only line
    assert log.getvalue() == ""
    progress = Progress(quiet=True, stream=log, background=False)
    progress.start(3, ["decode"])
    progress.advance(task(), failed=False)
    progress.finish(completed=False)              # interrupted after one sample
    assert log.getvalue().splitlines()[-1].startswith("[finsta] stopped at 1/3 samples (33%), 0 failed")


def test_the_refresh_thread_stops_at_finish():
    progress = Progress(quiet=True, stream=io.StringIO())
    progress.start(1, ["decode"])
    assert progress._thread is not None and progress._thread.is_alive()
    progress.finish()
    progress._thread.join(timeout=600)     # only a guard against a hang: the thread ends on its next tick
    assert not progress._thread.is_alive()


def test_format_duration():
    assert [format_duration(s) for s in (0, 42.4, 61, 3725)] == ["0:00", "0:42", "1:01", "1:02:05"]


class RecordingProgress(Progress):
    """Progress that notes each driver call (a test double of the display, for the call order)."""

    def __init__(self) -> None:
        super().__init__(quiet=True, stream=io.StringIO(), background=False)
        self.calls: list[tuple] = []

    def phase(self, text):
        self.calls.append(("phase", text))
        super().phase(text)

    def start(self, total, stages, failed_early=0):
        self.calls.append(("start", total))
        super().start(total, stages, failed_early)

    def advance(self, task, failed):
        self.calls.append(("advance", failed))
        super().advance(task, failed)

    def shard_committed(self, n_samples, n_failures, name=""):
        self.calls.append(("shard", n_samples, n_failures, name))
        super().shard_committed(n_samples, n_failures, name)

    def finish(self):
        self.calls.append(("finish",))
        super().finish()


def test_build_reports_phases_samples_and_shards_in_order(tmp_path):
    from pipeline.build import run_build
    from pipeline.config import BuildConfig
    from pipeline.datasets.base import DatasetConfig
    from pipeline.synthetic.generate import generate

    generate(tmp_path / "world", 3, seed=5, duration=2.0, fps=4, width=96, height=72, objects_max=2)
    cfg = BuildConfig(dataset=DatasetConfig(name="synthetic", data_root=str(tmp_path / "world")))
    cfg.detect.name, cfg.run.executor, cfg.write.shard_size = "color", "sequential", 2
    progress = RecordingProgress()
    run_build(cfg, tmp_path / "out", progress)
    assert progress.calls == [("phase", "checking stages"), ("phase", "listing samples"), ("start", 3),
                              ("phase", "loading models"), ("advance", False), ("advance", False),
                              ("shard", 2, 0, "shard-000000"), ("advance", False), ("shard", 1, 0, "shard-000001"),
                              ("finish",)]
    log = progress.stream.getvalue()
    assert "[finsta] first result after" in log and "[finsta] committed shard-000001: 1 sample" in log
