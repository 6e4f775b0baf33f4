"""The line and exit code of a build stopped by a signal (the signal handling: tests/schemas/test_stop.py)."""
from __future__ import annotations

import signal

from pipeline.stop import Interrupted


def test_the_interrupted_line_and_exit_codes():
    stopped = Interrupted(signal.SIGTERM, 7, 2)
    assert stopped.line() == "interrupted: 7 committed, 2 in flight not kept; rerun the same command to continue"
    assert stopped.exit_code == 143 and Interrupted(signal.SIGINT, 0, 0).exit_code == 130
