"""The one Ray start-up of build-sgs and train: one line for any failure, the reaper armed before ray.init,
a signal while starting stops at once, and both commands start Ray through it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from schemas.errors import UserError
from schemas.reaper import _stat

ray = pytest.importorskip("ray")
from schemas import ray_runtime  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# a driver that starts a local Ray as build-sgs does (under its stop handler) and says when ray.init returned
DRIVER = """
import sys, time
sys.path.insert(0, {repo!r})
from pipeline.stop import StopSignals
from schemas.ray_runtime import start_ray
with StopSignals() as stop:
    began = time.monotonic()
    session = start_ray(None, timeout_s=600, num_cpus=1, stop=stop)
    print("started", time.monotonic() - began, flush=True)
    session.close()
"""


class _RayTimeout(Exception):
    """What Ray raises when its own start-up times out (a plain Exception; stands in for a slow GCS)."""


@pytest.fixture
def failing_init(monkeypatch):
    calls = []

    def init(*args, **kwargs):
        calls.append(kwargs)
        raise _RayTimeout("The current node timed out during startup.\nThis could happen because ...")
    monkeypatch.setattr(ray, "init", init)
    return calls


def test_any_ray_start_failure_is_one_line_and_stops_the_reaper(failing_init, monkeypatch):
    started = []
    real_start = ray_runtime.reaper.start
    monkeypatch.setattr(ray_runtime.reaper, "start", lambda: started.append(real_start()) or started[-1])
    with pytest.raises(UserError) as error:
        ray_runtime.start_ray(None, timeout_s=60)
    assert str(error.value) == ("cannot start or join Ray at a local Ray instance: The current node timed out "
                                "during startup. This could happen because ...")
    # armed before ray.init was called, gone after the failure
    assert len(failing_init) == 1 and len(started) == 1 and started[0].poll() is not None


def test_build_sgs_and_train_start_ray_through_the_same_start_up(failing_init):
    from finsta_model.distributed import _ray
    from pipeline.executors.ray import RayExecutor
    from pipeline.stop import StopSignals

    cfg = SimpleNamespace(run=SimpleNamespace(ray_address=None, ray_start_timeout_s=60, num_cpus=2))
    with StopSignals() as stop, pytest.raises(UserError) as build:
        RayExecutor([], cfg, stop)._start()
    with pytest.raises(UserError) as train, _ray(None):
        pass
    assert str(build.value) == str(train.value) and "timed out during startup" in str(train.value)
    # the same environment and options: a local instance of this run's own, Ray's logs kept off the console
    assert failing_init[0]["address"] == failing_init[1]["address"] == "local"
    assert failing_init[0]["log_to_driver"] is failing_init[1]["log_to_driver"] is False


def _ray_processes(temp: str, part: str = "") -> set[tuple[int, int]]:
    """(pid, start time) of every live process of the Ray instance whose temp folder is ``temp`` (and whose
    command line holds ``part``)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            stat = _stat(int(entry))
            if temp in cmdline and part in cmdline and stat is not None and "reaper.py" not in cmdline:
                found.add((int(entry), stat[1]))
    return found


def _start_driver(temp: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_TMPDIR": temp}
    return subprocess.Popen([sys.executable, "-c", DRIVER.format(repo=str(REPO))], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _until_ray_is_starting(proc: subprocess.Popen, temp: str, part: str = "") -> None:
    """Wait until ray.init has started Ray's processes (``part``: one whose command line holds it); it has
    not returned (the driver says so when it has)."""
    while not _ray_processes(temp, part):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


def _wait_all_gone(temp: str, bound_s: float = 30.0) -> set:
    """Ray's processes of ``temp`` still alive once they are all gone or ``bound_s`` passed (the reaper
    acts within about a second of the driver's end; the bound only ends a failing test)."""
    end = time.monotonic() + bound_s
    while (alive := _ray_processes(temp)) and time.monotonic() < end:
        time.sleep(0.25)
    return alive


@pytest.mark.slow
def test_a_kill_9_during_ray_init_leaves_no_ray_process():
    with tempfile.TemporaryDirectory(prefix="rt", dir="/tmp") as temp:
        proc = _start_driver(temp)
        _until_ray_is_starting(proc, temp, "agent")    # the raylet has started its agents: they outlive a kill
        proc.kill()
        out, _ = proc.communicate()
        assert "started" not in out     # killed during ray.init
        assert not _wait_all_gone(temp)


@pytest.mark.slow
def test_a_signal_while_starting_ray_stops_at_once_with_one_line():
    with tempfile.TemporaryDirectory(prefix="rt", dir="/tmp") as temp:
        whole = _start_driver(temp)                     # the reference: a whole start, measured in this run
        out, err = whole.communicate()
        assert whole.returncode == 0, err
        start_s = float(out.split()[-1])
        assert not _wait_all_gone(temp)
        proc = _start_driver(temp)
        _until_ray_is_starting(proc, temp)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate()
        stopped_s = time.monotonic() - sent
        assert proc.returncode == 143 and "started" not in out
        assert err.strip().splitlines() == ["SIGTERM while starting Ray at a local Ray instance: stopping now"]
        # at once: a small part of what the rest of the start would have taken
        assert stopped_s < start_s / 4, (stopped_s, start_s)
        assert not _wait_all_gone(temp)


# a driver whose actor kills its own process; Ray's error-listener thread then reports the death
DYING = """
import logging, os, sys, time
sys.path.insert(0, {repo!r})
import ray
from schemas.ray_runtime import start_ray

class Seen(logging.Handler):
    lines = []
    def emit(self, record):
        self.lines.append(record.getMessage())

session = start_ray(None, timeout_s=600, num_cpus=1)
logging.getLogger("finsta.ray").addHandler(Seen())
logging.getLogger("finsta.ray").setLevel(logging.DEBUG)

@ray.remote(max_restarts=0)
class Doomed:
    def die(self):
        os._exit(1)

try:
    ray.get(Doomed.remote().die.remote())
except Exception as error:
    print("actor failed:", type(error).__name__, flush=True)
end = time.monotonic() + 120      # only ends a failing run: the notice normally comes within a second or two
while not any("worker exit type" in line.lower() for line in Seen.lines) and time.monotonic() < end:
    time.sleep(0.1)
print("routed" if any("worker exit type" in line.lower() for line in Seen.lines) else "not routed", flush=True)
session.close()
"""


@pytest.mark.slow
def test_the_notice_of_a_dead_worker_goes_to_a_logger_not_the_terminal():
    with tempfile.TemporaryDirectory(prefix="rt", dir="/tmp") as temp:
        done = subprocess.run([sys.executable, "-c", DYING.format(repo=str(REPO))], text=True, capture_output=True,
                              env={**os.environ, "RAY_TMPDIR": temp})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["actor failed: ActorDiedError", "routed"], done.stdout
    assert "worker exit type" not in done.stderr.lower()
