"""Starting Ray, for ``build-sgs`` and ``train`` alike: one start-up, address check, environment and reaper.

:func:`start_ray` joins a cluster (``address``) or starts this run's own local Ray instance
(``address="local"``: never another process's), and returns a :class:`RaySession` whose
:meth:`~RaySession.close` shuts down what it started. The same for both commands:

* **Address check**: a ``HOST:PORT`` that nothing answers is one line at once (a TCP check), not Ray's
  connect retries; ``auto`` and ``ray://`` are left to ``ray.init`` and the time limit.
* **Loopback clusters**: an address on ``127.0.0.1``/``localhost`` (every node of a cluster on one machine
  started with ``--node-ip-address 127.0.0.1``) is joined as given, the driver on the loopback address too
  (:func:`_keep_loopback`); Ray alone would rewrite it to the machine's network IP.
* **Environment**: a local Ray inherits this process's environment (``PYTHONPATH`` names this checkout, usage
  stats off); a cluster's workers get ``PYTHONPATH`` and the ``forward`` variables through the runtime env.
  Ray's console output stays in its session log (``log_to_driver=False``); the driver-side notices of dead
  workers (``(raylet) A worker died ...``) go to the ``finsta.ray`` logger (debug) instead of stdout (:func:`_quiet_raylet`).
* **Reaper**: for a local Ray, :mod:`schemas.reaper` is armed *before* ``ray.init``, so a ``kill -9`` of the
  driver at any point, during the start included, leaves no Ray agents behind.
* **Failures**: every failure of the start — Ray's own time-outs (a plain ``Exception``), a refused
  connection, a bad address — is one :class:`~schemas.errors.UserError` line; what it started is shut down.
* **Signals** (``stop``, e.g. ``schemas.stop.StopSignals``; duck-typed, since schemas imports nothing of
  ours): the start runs under ``stop.starting(...)`` (a signal ends the process at once with one line: nothing
  has run yet, and the reaper ends Ray's processes) and ``stop.deadline(timeout_s, ...)`` (Ray's connect loop
  blocks in native code, out of reach of signals and exceptions).

Example::

    session = start_ray(None, num_cpus=2, timeout_s=60)   # or start_ray("10.0.0.5:6379", ...)
    try:
        ...                                              # ray.remote, Ray Train
    finally:
        session.close()
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from schemas import reaper
from schemas.errors import UserError

REPO = Path(__file__).resolve().parents[1]
# what a cluster's workers always get from the driver (a local Ray inherits the whole environment)
FORWARDED = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# Ray's logs stay in its session folder; the console shows finsta's progress and one line per problem
RAY_KWARGS = dict(logging_level="ERROR", log_to_driver=False, configure_logging=True)


@dataclass
class RaySession:
    """Ray as :func:`start_ray` left it: ``started`` whether this call started (or joined) it, so that
    :meth:`close` shuts it down (a caller's own Ray is left alone), and the reaper of a local Ray."""

    started: bool
    address: Optional[str] = None
    reaper: Optional[subprocess.Popen] = None

    def close(self) -> None:
        if self.started:
            import ray
            with contextlib.suppress(Exception):
                ray.shutdown()
            self.started = False
        reaper.stop(self.reaper)
        self.reaper = None


def start_ray(address: Optional[str], *, timeout_s: float, num_cpus: Optional[int] = None,
              forward: tuple[str, ...] = (), stop: Any = None, needs: str = "Ray") -> RaySession:
    """Join ``address`` or start a local Ray (see the module docstring). ``needs`` names what asked for
    Ray in the one-line error when Ray is not installed."""
    try:
        import ray
    except ImportError:
        raise UserError(f"{needs} needs Ray: pip install -r requirements.in") from None
    if ray.is_initialized():   # a caller's Ray (tests, notebooks): used as it is, never shut down here
        return RaySession(started=False, address=address)
    where = address or "a local Ray instance"
    if address:
        check_address(address)
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    session = RaySession(started=True, address=address, reaper=None if address else reaper.start())
    starting = stop.starting(f"while starting Ray at {where}: stopping now") if stop else \
        contextlib.nullcontext()
    limit = stop.deadline(timeout_s, f"could not start or join Ray at {where} within {timeout_s:g}s "
                                     "(run.ray_start_timeout_s)") if stop else contextlib.nullcontext()
    try:
        with starting, limit:
            if address:
                env = {"PYTHONPATH": pythonpath,
                       **{n: os.environ[n] for n in (*FORWARDED, *forward) if n in os.environ}}
                with _keep_loopback(address) as node_ip:
                    ray.init(address=address, runtime_env={"env_vars": env}, _node_ip_address=node_ip, **RAY_KWARGS)
            else:
                # address="local" always starts a new instance, even when another is recorded in Ray's temp
                # folder (a `ray start` or a test cluster)
                with _environment(PYTHONPATH=pythonpath,
                                  RAY_USAGE_STATS_ENABLED=os.environ.get("RAY_USAGE_STATS_ENABLED", "0")):
                    ray.init(address="local", num_cpus=num_cpus or None, include_dashboard=False, **RAY_KWARGS)
        _quiet_raylet()
        return session
    except SystemExit:            # ray.init's own SIGTERM handler, while it ran
        session.close()
        if stop is not None:
            stop.check()
        raise
    except Exception as error:   # Ray's own time-outs are plain Exceptions; ours, raised in native code, SystemError
        session.close()
        if stop is not None:
            stop.check()
        raise UserError(f"cannot start or join Ray at {where}: " + " ".join(str(error).split())[:300]) from None
    except BaseException:        # a StopRun or KeyboardInterrupt: what started is shut down, the stop goes on
        session.close()
        raise
    finally:
        if stop is not None:
            stop.reinstall()      # ray.init installs its own SIGTERM handler


@contextlib.contextmanager
def ray_session(address: Optional[str], **options: Any) -> Iterator[RaySession]:
    """:func:`start_ray` for the duration of a block."""
    session = start_ray(address, **options)
    try:
        yield session
    finally:
        session.close()


def check_address(address: str, timeout_s: float = 5.0) -> None:
    """One line now, instead of Ray's connect retries, when nothing listens at ``HOST:PORT``
    (``auto`` and ``ray://`` addresses are left to ``ray.init`` and its time limit)."""
    if address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        port_number = int(port)
    except ValueError:
        raise UserError(f"--ray-address {address!r}: write HOST:PORT (e.g. 10.0.0.5:6379), auto, or leave it "
                        "out for a local Ray") from None
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", port_number), timeout=timeout_s):
            pass
    except OSError as error:
        raise UserError(f"cannot reach a Ray cluster at {address}: {error.strerror or error} (is `ray start "
                        "--head` running there?)") from None


def loopback_host(address: str) -> Optional[str]:
    """The IP of ``address`` when it is this machine's loopback (``127.0.0.1:6379``, ``localhost:6379``,
    ``[::1]:6379``), else None."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return "127.0.0.1"
    try:
        return host if ipaddress.ip_address(host).is_loopback else None
    except ValueError:
        return None


@contextlib.contextmanager
def _keep_loopback(address: str) -> Iterator[Optional[str]]:
    """Join a cluster whose nodes listen on the loopback address (a multi-node cluster on one machine,
    every node started with ``--node-ip-address 127.0.0.1``): yields the driver's node IP, the loopback
    one, or None (Ray picks) for any other address.

    Ray rewrites a loopback address to this machine's network IP before connecting
    (``services.resolve_ip_for_localhost``; ray-project/ray#59110), where nothing of such a cluster
    listens, and then retries for a minute. For the duration of ``ray.init`` only, a loopback address is
    kept as given."""
    node_ip = loopback_host(address) if address not in ("auto", "local") and "://" not in address else None
    if node_ip is None:
        yield None
        return
    from ray._private import services

    original = services.resolve_ip_for_localhost
    services.resolve_ip_for_localhost = lambda host: host if loopback_host(f"{host}:0") else original(host)
    try:
        yield node_ip
    finally:
        services.resolve_ip_for_localhost = original


def _quiet_raylet() -> None:
    """Route the driver's ``(raylet) A worker died ...`` notices to the ``finsta.ray`` logger at debug
    level (dropped unless someone turns it up) instead of stdout. Ray prints them from a listener thread
    through ``ray._private.worker.print_to_stdstream``, which ``log_to_driver=False`` does not reach and no
    option turns off; the executors report each dead worker themselves, as one line."""
    import logging

    from ray._private import worker

    original = getattr(worker.print_to_stdstream, "finsta_original", worker.print_to_stdstream)
    log = logging.getLogger("finsta.ray")   # not Ray's own logger, whose handlers write to the terminal

    def print_to_stdstream(data, ignore_prefix: bool, *args, **kwargs):
        if data.get("pid") == "raylet":
            for line in data.get("lines", []):
                log.debug("raylet: %s", line)
            return None
        return original(data, ignore_prefix, *args, **kwargs)

    print_to_stdstream.finsta_original = original
    worker.print_to_stdstream = print_to_stdstream


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of the block (what ``ray.init`` hands its processes)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
