"""Helpers for tests that watch processes through ``/proc`` (Linux): command lines, the reaper of a driver
(:mod:`schemas.reaper`) and how far it got."""
from __future__ import annotations

import os
import time
from pathlib import Path

REAPER = str(Path(__file__).resolve().parents[1] / "schemas" / "reaper.py")


def cmdline(pid: int) -> str:
    """``pid``'s command line, words joined by spaces ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def reapers_of(driver: int) -> list[int]:
    """The reapers watching ``driver`` (its children, in a session of their own)."""
    return [int(entry) for entry in os.listdir("/proc")
            if entry.isdigit() and cmdline(int(entry)).split()[-2:] == [REAPER, str(driver)]]


def _blocked(pid: int) -> int:
    """How many times ``pid`` has blocked (its voluntary context switches)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError(f"no voluntary_ctxt_switches in /proc/{pid}/status")


def wait_for_polls(reaper: int, polls: int = 2) -> None:
    """Return once ``reaper`` has polled ``polls`` more times (it sleeps once a poll, and blocks nowhere
    else): what existed now is then in what it watches, at any load."""
    start = _blocked(reaper)
    while _blocked(reaper) < start + polls + 1:
        time.sleep(0.05)
