"""StopSignals: a signal stops an interruptible phase at once, only flags a running one, and the process
always ends within the grace period (even when the main thread is stuck), or at a deadline."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.stop import Interrupted, StopRun, StopSignals

REPO = Path(__file__).resolve().parents[2]


def test_a_signal_raises_in_an_interruptible_phase_and_only_flags_elsewhere():
    before = signal.getsignal(signal.SIGINT)   # pytest's, or one a library (Ray Train) left in this process
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.signum == signal.SIGTERM               # flagged, nothing raised
        with pytest.raises(StopRun) as raised:
            with stop.interruptible():
                pass
        assert raised.value.signum == signal.SIGTERM
    with StopSignals() as stop:
        with pytest.raises(StopRun):
            with stop.interruptible():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
    assert signal.getsignal(signal.SIGINT) is before   # handlers given back


def test_the_interrupted_line_and_exit_codes():
    stopped = Interrupted(signal.SIGTERM, 7, 2)
    assert stopped.line() == "interrupted: 7 committed, 2 in flight not kept; rerun the same command to continue"
    assert stopped.exit_code == 143 and Interrupted(signal.SIGINT, 0, 0).exit_code == 130


STUCK = textwrap.dedent("""
    import sys, threading, time
    sys.path.insert(0, {repo!r})
    from pipeline.stop import StopSignals
    with StopSignals(grace_s=2.0) as stop:
        stop.hard_exit_note = lambda: "3 committed"
        {body}
""")


def run_script(tmp_path: Path, body: str, signum=None, after: float = 1.5) -> tuple[int, str, float]:
    script = tmp_path / "stuck.py"
    script.write_text(STUCK.format(repo=str(REPO), body=body))
    proc = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    time.sleep(after)
    sent = time.monotonic()
    if signum is not None:
        proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr.strip(), time.monotonic() - sent


def test_a_main_thread_that_ignores_the_signal_is_ended_after_the_grace_period(tmp_path):
    # the main thread never looks at the flag (as when stuck in native code): the watcher ends the process
    code, stderr, waited = run_script(tmp_path, "threading.Event().wait(60)", signal.SIGTERM)
    assert code == 143 and stderr == "still stopping 2s after SIGTERM; stopping now; 3 committed"
    assert 1.5 < waited < 10


def test_a_second_signal_ends_the_process_at_once(tmp_path):
    script = tmp_path / "twice.py"
    script.write_text(STUCK.format(repo=str(REPO), body="threading.Event().wait(60)").replace("grace_s=2.0",
                                                                                               "grace_s=50"))
    proc = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and stderr.strip() == "second SIGINT: stopping now; 3 committed"


def test_a_deadline_ends_a_block_that_does_not_return(tmp_path):
    body = 'with stop.deadline(1.0, "could not start Ray within 1s"):\n        threading.Event().wait(60)'
    code, stderr, waited = run_script(tmp_path, body, after=0)
    assert code == 2 and stderr == "error: could not start Ray within 1s; 3 committed" and waited < 10
