"""Ends what a killed driver's local Ray leaves behind.

Ray ties its head processes to the driver that started them, but the agents
the raylet starts (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) outlive a
``kill -9`` of the driver by a minute or more. This tiny watcher, started by
:func:`schemas.ray_runtime.start_ray` just before it starts a local Ray (its own
session, standard library only; armed before ``ray.init``, since a kill during
``ray.init`` leaves the agents too), notes the driver's descendants every second while the
driver lives; once the driver is gone it kills those still alive (each checked
by its start time, so a reused pid is never hit) and exits. After a clean run
the driver stops it first (:func:`stop`). Linux only (it reads ``/proc``).

Usage (what ``start_ray`` runs)::

    python schemas/reaper.py DRIVER_PID
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

POLL_S = 1.0


def _stat(pid: int) -> Optional[tuple[int, int]]:
    """``(parent pid, start time)`` of ``pid``, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()   # the name in parentheses may hold spaces
    return int(fields[1]), int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """``{pid: start time}`` of every process below ``root``."""
    parents: dict[int, int] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                parents[int(entry)], starts[int(entry)] = stat
    found, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = starts[pid]
                frontier.append(pid)
    return found


def watch(driver: int) -> None:
    me = os.getpid()
    start = _stat(driver)
    if start is None:
        return
    seen: dict[int, int] = {}
    while (_stat(driver) or (0, -1))[1] == start[1]:
        seen.update({pid: t for pid, t in _descendants(driver).items() if pid != me})
        time.sleep(POLL_S)
    for _ in range(3):   # a process may start its own children while it goes
        for pid, started in list(seen.items()):
            stat = _stat(pid)
            if stat is not None and stat[1] == started:
                seen.update(_descendants(pid))
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.2)


def start() -> Optional[subprocess.Popen]:
    """Start the watcher for this process (None where there is no ``/proc``)."""
    if not os.path.isdir("/proc"):
        return None
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)


def stop(process: Optional[subprocess.Popen]) -> None:
    """The run ended cleanly: nothing left to reap."""
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()


if __name__ == "__main__":
    watch(int(sys.argv[1]))
