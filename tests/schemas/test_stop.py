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

from schemas.stop import StopRun, StopSignals

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


STUCK = textwrap.dedent("""
    import sys, threading, time
    sys.path.insert(0, {repo!r})
    from schemas.stop import StopSignals
    with StopSignals(grace_s={grace}) as stop:
        stop.hard_exit_note = lambda: "3 committed"
        print("ready", flush=True)
        {body}
""")


def slack(startup_s: float) -> float:
    """How long a few-second step may take on this machine now, from what starting the script took: under load
    (a shared 2-core machine) both stretch together, so no bound is a wall-clock constant."""
    return 5.0 + 10.0 * startup_s


def start_script(tmp_path: Path, body: str, grace: float = 2.0) -> tuple[subprocess.Popen, float]:
    """The script running with its handlers installed (it said "ready": no fixed sleep), and its start-up time."""
    script = tmp_path / "stuck.py"
    script.write_text(STUCK.format(repo=str(REPO), body=body, grace=grace))
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc, time.monotonic() - started


def run_script(tmp_path: Path, body: str, signum=None) -> tuple[int, str, float, float]:
    """``(exit code, stderr, seconds from the signal (or from "ready") to the exit, start-up seconds)``."""
    proc, startup = start_script(tmp_path, body)
    sent = time.monotonic()
    if signum is not None:
        proc.send_signal(signum)
    _, stderr = proc.communicate()
    return proc.returncode, stderr.strip(), time.monotonic() - sent, startup


def test_a_main_thread_that_ignores_the_signal_is_ended_after_the_grace_period(tmp_path):
    # the main thread never looks at the flag (as when stuck in native code): the watcher ends the process
    code, stderr, waited, startup = run_script(tmp_path, "threading.Event().wait(600)", signal.SIGTERM)
    assert code == 143 and stderr == "still stopping 2s after SIGTERM; stopping now; 3 committed"
    assert 1.5 < waited < 2.0 + slack(startup)


# A thread that says when the first signal has been seen, so the second is sent after it, however slow the machine.
FLAGGED = """def say_when_flagged():
        while stop.signum is None:
            time.sleep(0.01)
        print("flagged", flush=True)
    threading.Thread(target=say_when_flagged, daemon=True).start()
    threading.Event().wait(600)"""


def test_a_second_signal_ends_the_process_at_once(tmp_path):
    proc, startup = start_script(tmp_path, FLAGGED, grace=600)
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline().strip() == "flagged"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate()
    assert proc.returncode == 130 and stderr.strip() == "second SIGINT: stopping now; 3 committed"


def test_a_deadline_ends_a_block_that_does_not_return(tmp_path):
    body = 'with stop.deadline(1.0, "could not start Ray within 1s"):\n        threading.Event().wait(600)'
    code, stderr, waited, startup = run_script(tmp_path, body)
    assert code == 2 and stderr == "error: could not start Ray within 1s; 3 committed"
    assert waited < 1.0 + slack(startup)
