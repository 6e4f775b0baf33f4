"""Real servers on 127.0.0.1 for the URL-input tests: an S3 API (moto's standalone server, as s3fs's own
tests use), a GCS JSON API (gcp-storage-emulator) and an HTTP server with range requests (what ffmpeg
needs to seek in an mp4).

All are real servers reached over sockets by the real clients (boto3, pyarrow's GCS client, urllib,
ffmpeg): nothing is mocked. The S3 and GCS fixtures skip the test when their server is not installed or
does not come up.
Each fixture kills what it started.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

import pytest

# The credentials the test server accepts (moto accepts any); placeholders, not secrets.
TEST_KEY_ID, TEST_SECRET = "finsta-test-key", "finsta-test-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(command: list[str], port: int, extra_env: dict[str, str], what: str, log: Optional[Path] = None):
    """Run a server in its own process until the generator is closed; yields its endpoint. ``log``: where its
    output goes (moto's access log: one line per request)."""
    sink = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(command, stdout=sink, stderr=sink, env={**os.environ, **extra_env})
    try:
        # Wait for the port to accept; the only bound is the server process itself dying (load-safe).
        while True:
            if proc.poll() is not None:
                pytest.skip(f"{what} exited with {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()
        if log:
            sink.close()


def _moto(extra_env: dict[str, str], log: Optional[Path] = None):
    """Run moto's S3 server in its own process until the generator is closed; yields its endpoint."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    pytest.importorskip("boto3")
    port = _free_port()
    yield from _serve([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port, extra_env,
                      "moto server", log)


_REQUEST_LOGS: dict[str, Path] = {}   # endpoint → its server's access log


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """The endpoint URL of a moto S3 server accepting any credentials; killed at the end of the session."""
    log = tmp_path_factory.mktemp("moto") / "requests.log"
    for endpoint in _moto({}, log):
        _REQUEST_LOGS[endpoint] = log
        yield endpoint


class Requests:
    """The S3 requests a block of code made, read from the moto server's access log (werkzeug writes one
    line per request, ``"METHOD /bucket/key?query HTTP/1.1" status``), e.g.::

        with Requests(s3_env) as made:
            open_dataset("s3://bucket/ds")
        len(made.lines), made.count("POST", "?delete")
    """

    _LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d+)')

    def __init__(self, endpoint: str):
        self.endpoint, self.log, self.lines = endpoint, _REQUEST_LOGS[endpoint], []

    def _mark(self) -> int:
        """Make a request nobody else makes and wait for its line: every earlier request is logged by then."""
        import urllib.error
        import urllib.request
        token = f"/finsta-mark-{time.monotonic_ns()}"
        try:
            urllib.request.urlopen(urllib.request.Request(self.endpoint + token, method="HEAD"), timeout=30)
        except urllib.error.URLError:
            pass   # a 404: the line is all we need
        while True:
            text = self.log.read_text(errors="replace")
            if token in text:
                return text.index(token)
            time.sleep(0.05)

    def __enter__(self) -> "Requests":
        self._start = self._mark()
        return self

    def __exit__(self, *exc) -> None:
        end = self._mark()
        text = self.log.read_text(errors="replace")[self._start:end]
        self.lines = [" ".join(m.groups()) for m in self._LINE.finditer(text) if "finsta-mark-" not in m.group(2)]

    def count(self, method: str, contains: str = "") -> int:
        return sum(1 for line in self.lines if line.startswith(method + " ") and contains in line)


@pytest.fixture(scope="session")
def s3_server_checking_keys():
    """A moto S3 server that checks credentials (IAM on, no users): any access key is refused with 403."""
    yield from _moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    """Point boto3 at the test server through the standard variables only; a fresh client per test."""
    from schemas import storage
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    storage.reset_clients()
    yield s3_server
    storage.reset_clients()


def make_bucket(endpoint: str, name: str, files: dict[str, bytes | Path] = {}) -> str:
    """Create ``name`` on the server and upload ``files`` (key → bytes or a local file); returns s3://name."""
    import boto3
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=TEST_KEY_ID, aws_secret_access_key=TEST_SECRET)
    client.create_bucket(Bucket=name)
    for key, body in files.items():
        client.put_object(Bucket=name, Key=key, Body=body.read_bytes() if isinstance(body, Path) else body)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def gcs_server():
    """The endpoint URL of a GCS JSON API emulator (gcp-storage-emulator, in memory, no credentials)."""
    pytest.importorskip("gcp_storage_emulator", reason="gcp-storage-emulator is not installed")
    port = _free_port()
    yield from _serve([sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port",
                       str(port), "--in-memory"], port, {}, "GCS emulator")


@pytest.fixture
def gcs_env(gcs_server, monkeypatch):
    """Point pyarrow's GCS client at the emulator through the Google libraries' own variable."""
    from schemas import storage
    monkeypatch.setenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", gcs_server)
    storage.reset_clients()
    yield gcs_server
    storage.reset_clients()


def make_gcs_bucket(endpoint: str, name: str, files: dict[str, bytes | Path] = {}) -> str:
    """Create ``name`` on the emulator and upload ``files`` (key → bytes or a local file); returns gs://name."""
    import pyarrow.fs
    fs = pyarrow.fs.GcsFileSystem(anonymous=True, scheme="http", endpoint_override=endpoint.split("://", 1)[1],
                                  project_id="finsta-test")
    fs.create_dir(name)
    for key, body in files.items():
        with fs.open_output_stream(f"{name}/{key}") as sink:
            sink.write(body.read_bytes() if isinstance(body, Path) else body)
    return f"gs://{name}"


class _RangeHandler(SimpleHTTPRequestHandler):
    """Static files with ``Range: bytes=a-b`` (206) support; ``/flaky/N/...`` fails N times with 503 first."""

    failures: dict[str, int] = {}

    def log_message(self, *args) -> None:
        pass

    def send_head(self):
        flaky = re.match(r"/flaky/(\d+)(/.*)", self.path)
        if flaky:
            left = self.failures.setdefault(self.path, int(flaky.group(1)))
            if left > 0:
                self.failures[self.path] = left - 1
                self.send_error(503)
                return None
            self.path = flaky.group(2)
        match = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        if not match or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start = int(match.group(1))
        end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
        if start >= size:
            self.send_error(416)
            return None
        handle = open(path, "rb")
        handle.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self._remaining = end - start + 1
        return _Limited(handle, end - start + 1)

    def end_headers(self) -> None:
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()


class _Limited:
    """A file handle that stops after ``n`` bytes (copyfile reads to EOF)."""

    def __init__(self, handle, n: int):
        self.handle, self.left = handle, n

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = self.handle.read(size)
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.handle.close()


@pytest.fixture
def http_server(tmp_path):
    """``(base URL, folder)``: an HTTP range server on 127.0.0.1 serving ``folder``; shut down after the test."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = lambda *args, **kwargs: _RangeHandler(*args, directory=str(folder), **kwargs)  # noqa: E731
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    _RangeHandler.failures = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
