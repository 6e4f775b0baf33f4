"""Locations by URL: ``s3://bucket/key``, ``gs://bucket/key``, ``https://host/path`` or a local path.

One place knows how to reach each kind of location; datasets and the decode stage
go through it. :func:`location` turns a string into a ``pathlib.Path`` (local) or
a :class:`UrlPath` with the same small API (``/``, ``name``, ``suffix``,
``parent``, ``is_file``, ``is_dir``, ``open``, ``read_text``), so a dataset
reads a manifest or a captions file the same way wherever it lives.

Objects are read, listed, written, copied and deleted through pyarrow.fs
(``S3FileSystem``, ``GcsFileSystem``); boto3 only presigns s3:// videos for
ffmpeg, checks the credentials before a run, makes the writer lock's
conditional writes, which pyarrow.fs cannot send, reads a whole S3 object
in one request (pyarrow.fs asks for its size first) and reads input videos'
ETags (pyarrow.fs's file info has none).

Credentials come from the standard places only, read where the object is read
(on the worker for videos), never passed around: S3 through the AWS chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``,
``AWS_PROFILE``, ``~/.aws/credentials`` and ``~/.aws/config``, instance roles),
with ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for MinIO, other
S3-compatible stores or a local test server; GCS through pyarrow's
``GcsFileSystem`` (``GOOGLE_APPLICATION_CREDENTIALS`` or the machine's default
account). A task carries only the plain URL; a presigned URL (which is a
credential) is made in the worker right before ffmpeg opens it and never
leaves that process except on ffmpeg's command line. Every message that could
hold one goes through :func:`redact`.

Errors are the standard ones, with messages naming only the URL:
``FileNotFoundError`` (no such object), ``PermissionError`` (no or wrong
credentials, access denied) and ``ConnectionError`` (the network, after
retries with backoff: the AWS SDK's standard retry mode for S3, the Google
client's for GCS, :func:`_retry` for HTTP).
"""
from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator, Optional, Union

URL_SCHEMES = ("s3", "gs", "http", "https")
RETRIES = 5                      # attempts for one request before it is a ConnectionError
BACKOFF_S = 0.25                 # first wait between attempts; doubles each time, at most 8 s
READ_BLOCK = 8 << 20             # a stream of an s3/gs object reads this much per request
SPOOL_MAX_BYTES_DEFAULT = 8 << 30   # gs:// videos are spooled to a local file at most this big
_SIGNED_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")


def is_url(path: object) -> bool:
    """Is ``path`` a URL this module reads (``s3://``, ``gs://``, ``http(s)://``)?"""
    return isinstance(path, (str, UrlPath)) and str(path).split("://", 1)[0].lower() in URL_SCHEMES \
        and "://" in str(path)


def split_url(url: str) -> tuple[str, str, str]:
    """``(scheme, bucket or host, key or path)`` of a URL (no leading ``/`` on the key)."""
    scheme, rest = str(url).split("://", 1)
    bucket, _, key = rest.partition("/")
    return scheme.lower(), bucket, key


def redact(text: str) -> str:
    """``text`` with every URL query string replaced: a presigned URL's signature is a credential."""
    return _SIGNED_QUERY.sub(r"\1?<signature removed>", text)


def resolved(path: Union[str, os.PathLike, "UrlPath"]) -> str:
    """An absolute local path, or the URL as it is: what names a dataset wherever it is read from."""
    return str(path) if is_url(str(path)) else str(Path(path).resolve())


def location(path: Union[str, os.PathLike, "UrlPath"]) -> Union[Path, "UrlPath"]:
    """A ``Path`` for a local path, a :class:`UrlPath` for a URL."""
    if isinstance(path, UrlPath):
        return path
    return UrlPath(str(path)) if is_url(str(path)) else Path(path)


class UrlPath:
    """The part of ``pathlib.Path``'s API the datasets use, for an object-store or HTTP URL.

    An object store has no folders: ``is_dir`` is true when any key starts with
    ``<key>/`` (HTTP cannot list, so an HTTP "folder" is assumed to exist).
    """

    def __init__(self, url: str):
        scheme, bucket, key = split_url(url)
        self.scheme, self.bucket = scheme, bucket
        self.key = str(PurePosixPath("/" + key))[1:] if key else ""   # drops "./" and doubled "/"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}"

    __repr__ = __str__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UrlPath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, part: Union[str, os.PathLike]) -> "UrlPath":
        return UrlPath(f"{self.scheme}://{self.bucket}/{self.key}/{os.fspath(part)}".replace(
            f"{self.bucket}//", f"{self.bucket}/"))

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.key).suffix

    @property
    def stem(self) -> str:
        return PurePosixPath(self.key).stem

    @property
    def parent(self) -> "UrlPath":
        return UrlPath(f"{self.scheme}://{self.bucket}/{PurePosixPath(self.key).parent}".rstrip("."))

    def expanduser(self) -> "UrlPath":
        return self

    def is_absolute(self) -> bool:
        return True

    def is_file(self) -> bool:
        try:
            return object_size(str(self)) is not None
        except FileNotFoundError:
            return False

    def is_dir(self) -> bool:
        return is_folder(str(self))

    def open(self, mode: str = "r", newline: Optional[str] = None, encoding: Optional[str] = None):
        if mode not in ("r", "rb"):
            raise ValueError(f"{self} can only be opened for reading")
        stream = open_read(str(self))
        return stream if mode == "rb" else io.TextIOWrapper(stream, encoding=encoding or "utf-8", newline=newline)

    def read_bytes(self) -> bytes:
        return read_object(str(self))

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    # -- what the shard store (schemas/store.py) uses on an s3:// output
    def __lt__(self, other: "UrlPath") -> bool:
        return str(self) < str(other)

    def with_name(self, name: str) -> "UrlPath":
        return self.parent / name

    def relative_to(self, other: "UrlPath") -> PurePosixPath:
        return PurePosixPath(self.key).relative_to(other.key)

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def iterdir(self) -> Iterator["UrlPath"]:
        """The objects and "folders" (key prefixes) directly under this one."""
        for name in list_names(str(self), folders=True):
            yield self / name.rstrip("/")

    def write_bytes(self, data: bytes) -> None:
        put_bytes(str(self), data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        put_bytes(str(self), text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        remove_object(str(self))   # S3 deletes of an absent key succeed

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        pass   # an object store has no folders: a key's prefix exists once an object is put under it


# ------------------------------------------------------------------ object stores: pyarrow.fs
# Every read, listing, write, copy and delete of an s3:// or gs:// object goes through pyarrow.fs
# (S3FileSystem, GcsFileSystem). boto3 does only what pyarrow.fs cannot: presign a URL for ffmpeg,
# check the credentials before a run (preflight), the lock's conditional writes (If-None-Match,
# If-Match; see ObjectLock), read a whole S3 object in one GET (read_object) and the ETags of input
# videos (object_version, list_versions).
@lru_cache(maxsize=1)
def _aws_session():
    try:
        import boto3
    except ImportError:
        raise PermissionError("s3:// needs boto3: pip install boto3") from None
    return boto3.session.Session()


@lru_cache(maxsize=1)
def _s3():
    """One boto3 S3 client per process: standard credential chain, AWS_ENDPOINT_URL honoured by boto3."""
    from botocore.config import Config
    session = _aws_session()
    config = Config(retries={"max_attempts": RETRIES, "mode": "standard"}, connect_timeout=10, read_timeout=60,
                    signature_version="s3v4")
    return session.client("s3", region_name=session.region_name or "us-east-1", config=config)


@lru_cache(maxsize=4)
def _filesystem(scheme: str, pid: int):
    """The pyarrow file system of ``scheme``, one per process (``pid``: a forked child makes its own).

    S3: boto3 resolves the region and the endpoint (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, the
    config files) so both clients reach the same store; credentials come from the AWS SDK's standard
    chain. ``allow_delayed_open``: a small object is one PUT (not a three-request multipart upload).
    GCS: GOOGLE_APPLICATION_CREDENTIALS or the default account; ``CLOUD_STORAGE_EMULATOR_ENDPOINT`` (the
    Google client libraries' own variable, honoured by pyarrow's client) points at an emulator, which
    takes no credentials."""
    import pyarrow.fs
    if scheme == "gs":
        return pyarrow.fs.GcsFileSystem(anonymous=bool(os.environ.get("CLOUD_STORAGE_EMULATOR_ENDPOINT")))
    client = _s3()
    endpoint = urllib.parse.urlsplit(client.meta.endpoint_url)
    options = {}
    if not (endpoint.hostname or "").endswith("amazonaws.com"):   # MinIO, another S3 API, a test server
        options = {"endpoint_override": endpoint.netloc, "scheme": endpoint.scheme}
    return pyarrow.fs.S3FileSystem(region=client.meta.region_name, allow_delayed_open=True, connect_timeout=10,
                                   request_timeout=60, **options,
                                   retry_strategy=pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=RETRIES))


@lru_cache(maxsize=4)
def _fsspec_filesystem(scheme: str, pid: int):
    from fsspec.implementations.arrow import ArrowFSWrapper
    from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

    class ObjectFS(ArrowFSWrapper):
        @property
        def fsid(self) -> str:   # fsspec's wrapper names every file system after HDFS's host and port
            return f"finsta-{scheme}"

        def cat_file(self, path, start=None, end=None, **kwargs):
            if scheme == "s3" and start is None and end is None:   # a whole object: one GET (read_object)
                return read_object(f"s3://{self._strip_protocol(path)}")
            return super().cat_file(path, start=start, end=end, **kwargs)

    return AsyncFileSystemWrapper(ObjectFS(_filesystem(scheme, pid)), asynchronous=True)


def fsspec_filesystem(url: str):
    """``(async fsspec file system, "bucket/key")`` over the same pyarrow file system: what zarr's
    ``FsspecStore`` takes."""
    path = _fs_of(url)[1]
    return _fsspec_filesystem(split_url(url)[0], os.getpid()), path


def reset_clients() -> None:
    """Forget the clients made so far (after the environment that configures them changed)."""
    _aws_session.cache_clear()
    _s3.cache_clear()
    _filesystem.cache_clear()
    _fsspec_filesystem.cache_clear()


def _fs_of(url: str):
    """``(pyarrow file system, "bucket/key")`` of an s3:// or gs:// URL. Raises PermissionError when no AWS
    credentials are found (the SDK would send anonymous requests)."""
    scheme, bucket, key = split_url(url)
    if scheme == "s3" and _aws_session().get_credentials() is None:
        raise PermissionError(f"no AWS credentials for {url} (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                              "AWS_PROFILE, or ~/.aws/credentials)")
    return _filesystem(scheme, os.getpid()), f"{bucket}/{key}".rstrip("/")


_DENIED = re.compile(r"ACCESS_DENIED|AccessDenied|Forbidden|InvalidAccessKeyId|SignatureDoesNotMatch|ExpiredToken|"
                     r"Unauthorized|[Pp]ermission|[Cc]redential|HTTP status 40[13]|\b40[13]\b")
_ABSENT = re.compile(r"NoSuchBucket|NO_SUCH_BUCKET|NoSuchKey|[Bb]ucket .* (not found|does not exist)|\b404\b")


def _object_call(url: str, fn):
    """``fn(filesystem, "bucket/key")``, its errors as FileNotFoundError / PermissionError / ConnectionError
    naming only ``url`` (the SDKs retry network errors with backoff first)."""
    fs, path = _fs_of(url)
    try:
        return fn(fs, path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such object: {url}") from None
    except OSError as error:
        raise _object_error(str(error), url) from None


def _object_error(text: str, url: str) -> OSError:
    s3 = url.lower().startswith("s3")
    if _DENIED.search(text):
        return PermissionError(f"access denied to {url} (check " + ("the AWS credentials and AWS_ENDPOINT_URL)"
                                                                   if s3 else "GOOGLE_APPLICATION_CREDENTIALS)"))
    if _ABSENT.search(text):
        return FileNotFoundError(f"no such object: {url}")
    return ConnectionError(f"cannot reach {'S3' if s3 else 'GCS'} for {url}")


def _s3_error(error: Exception, url: str) -> OSError:
    """A botocore error as FileNotFoundError / PermissionError / ConnectionError naming only ``url``."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return PermissionError(f"no AWS credentials for {url} (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                               "AWS_PROFILE, or ~/.aws/credentials)")
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
            return FileNotFoundError(f"no such object: {url}")
        if status in (401, 403) or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                                            "ExpiredToken", "InvalidToken", "403"):
            return PermissionError(f"access denied to {url} ({code}: check the AWS credentials and "
                                   "AWS_ENDPOINT_URL)")
        return ConnectionError(f"S3 error on {url}: {code or status}")
    return ConnectionError(f"cannot reach S3 for {url}: {type(error).__name__}")


def _s3_call(url: str, method: str, **kwargs):
    from botocore.exceptions import BotoCoreError, ClientError
    try:
        return getattr(_s3(), method)(**kwargs)
    except (BotoCoreError, ClientError) as error:
        raise _s3_error(error, url) from None


def presign(url: str, expires_s: float) -> str:
    """An ``https://`` (or endpoint) URL ffmpeg can read with range requests; a credential: never log it."""
    _, bucket, key = split_url(url)
    return _s3_call(url, "generate_presigned_url", ClientMethod="get_object",
                    Params={"Bucket": bucket, "Key": key}, ExpiresIn=max(60, int(expires_s)))


# ------------------------------------------------------------------ HTTP
def _retry(url: str, fn):
    """``fn()`` with up to RETRIES attempts and exponential backoff on network errors and 5xx/429."""
    for attempt in range(RETRIES):
        try:
            return fn()
        except urllib.error.HTTPError as error:
            if error.code == 404 or error.code == 410:
                raise FileNotFoundError(f"no such object: {url}") from None
            if error.code in (401, 403):
                raise PermissionError(f"access denied to {url} (HTTP {error.code})") from None
            if error.code < 500 and error.code != 429:
                raise ConnectionError(f"HTTP {error.code} on {url}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError):
            pass
        if attempt + 1 < RETRIES:
            time.sleep(min(8.0, BACKOFF_S * 2 ** attempt))
    raise ConnectionError(f"cannot reach {url} after {RETRIES} attempts")


def _http_open(url: str, method: str = "GET"):
    return _retry(redact(url), lambda: urllib.request.urlopen(urllib.request.Request(url, method=method),
                                                               timeout=60))


# ------------------------------------------------------------------ operations
def object_size(url: str) -> Optional[int]:
    """The object's size in bytes (None when the server does not say); raises FileNotFoundError if absent."""
    if split_url(url)[0] in ("s3", "gs"):
        import pyarrow.fs
        info = _object_call(url, lambda fs, path: fs.get_file_info(path))
        if info.type != pyarrow.fs.FileType.File:
            raise FileNotFoundError(f"no such object: {url}")
        return info.size
    with _http_open(url, "HEAD") as response:
        length = response.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else None


def object_version(url: str) -> list:
    """What tells this version of the object from another, from one metadata request (never its bytes):
    ``[size, ETag]`` on S3 (a rewrite changes the ETag; through boto3: pyarrow.fs's file info carries no
    ETag), ``[size, update time in ns]`` on GCS and
    ``[size, ETag or Last-Modified]`` over HTTP. Raises FileNotFoundError when the object is absent."""
    scheme, bucket, key = split_url(url)
    if scheme == "s3":
        head = _s3_call(url, "head_object", Bucket=bucket, Key=key)
        return [int(head["ContentLength"]), head.get("ETag") or str(head.get("LastModified"))]
    if scheme == "gs":
        import pyarrow.fs
        info = _object_call(url, lambda fs, path: fs.get_file_info(path))
        if info.type != pyarrow.fs.FileType.File:
            raise FileNotFoundError(f"no such object: {url}")
        return [info.size, info.mtime_ns]
    with _http_open(url, "HEAD") as response:
        headers = response.headers
        return [headers.get("Content-Length"), headers.get("ETag") or headers.get("Last-Modified")]


def list_versions(folder: str) -> Optional[dict[str, list]]:
    """``{name: version}`` (as :func:`object_version`) of the objects directly under ``folder``, from
    the listing alone (S3's LIST and GCS's carry size and ETag/update time: no request per object).
    HTTP cannot list: None."""
    scheme, bucket, key = split_url(folder)
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    if scheme == "s3":
        from botocore.exceptions import BotoCoreError, ClientError
        found: dict[str, list] = {}
        try:
            for page in _s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
                found.update({item["Key"][len(prefix):]: [int(item["Size"]), item.get("ETag") or
                                                          str(item.get("LastModified"))]
                              for item in page.get("Contents", [])})
        except (BotoCoreError, ClientError) as error:
            raise _s3_error(error, folder) from None
        return found
    if scheme == "gs":
        import pyarrow.fs
        selector = pyarrow.fs.FileSelector(f"{bucket}/{prefix}", allow_not_found=True)
        infos = _object_call(folder, lambda fs, path: fs.get_file_info(selector))
        return {info.base_name: [info.size, info.mtime_ns] for info in infos if info.type == pyarrow.fs.FileType.File}
    return None


def list_versions_page(folder: str, token: Optional[str] = None,
                       max_keys: int = 1000) -> tuple[dict[str, list], str, Optional[str]]:
    """One page of :func:`list_versions` on S3 (one ListObjectsV2 request: at most ``max_keys`` entries):
    ``({name: version}, last, next_token)``. S3 lists in key order, so every name ``<= last`` that the
    page lacks is absent (``last``: the page's greatest object or subfolder name); ``next_token`` (None:
    the listing is complete) asks for the next page. For a caller that lists only as far as it needs."""
    scheme, bucket, key = split_url(folder)
    if scheme != "s3":
        raise ValueError(f"list_versions_page lists s3:// folders only, not {folder}")
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    options = {"ContinuationToken": token} if token else {}
    page = _s3_call(folder, "list_objects_v2", Bucket=bucket, Prefix=prefix, Delimiter="/",
                   MaxKeys=max_keys, **options)
    found = {item["Key"][len(prefix):]: [int(item["Size"]), item.get("ETag") or str(item.get("LastModified"))]
             for item in page.get("Contents", [])}
    names = [item["Key"][len(prefix):] for item in page.get("Contents", [])[-1:]]
    names += [item["Prefix"][len(prefix):] for item in page.get("CommonPrefixes", [])[-1:]]
    return found, max(names, default=""), page.get("NextContinuationToken") if page.get("IsTruncated") else None


def open_read(url: str) -> BinaryIO:
    """A buffered binary stream of the object, read as it is consumed (never fetched whole first)."""
    if split_url(url)[0] in ("s3", "gs"):   # one ranged GET per READ_BLOCK
        stream = _object_call(url, lambda fs, path: fs.open_input_stream(path, buffer_size=READ_BLOCK))
    else:
        stream = _http_open(url)
    return io.BufferedReader(_RawReader(stream, url), 1 << 20)


def read_object(url: str) -> bytes:
    """The whole object: on S3 one GET through boto3 (pyarrow.fs asks for an object's size first: two
    requests for each shard.json or Arrow file read), on GCS through pyarrow.fs."""
    scheme, bucket, key = split_url(url)
    if scheme == "s3":
        _fs_of(url)   # the credentials check
        body = _s3_call(url, "get_object", Bucket=bucket, Key=key)["Body"]
        try:
            return body.read()
        except Exception as error:   # a dropped connection mid-object
            raise ConnectionError(f"reading {url} failed: {type(error).__name__}") from None
    if scheme != "gs":
        with open_read(url) as stream:
            return stream.read()
    def read(fs, path):
        with fs.open_input_file(path) as source:
            return source.readall()
    return _object_call(url, read)


class _RawReader(io.RawIOBase):
    """Adapts anything with ``read(n)`` to a raw stream (so ``BufferedReader.readline`` works)."""

    def __init__(self, source, url: str):
        self.source, self.url = source, url

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self.source.read(len(buffer))
        except Exception as error:   # a dropped connection mid-object
            raise ConnectionError(f"reading {self.url} failed: {type(error).__name__}") from None
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self.source.close()
        finally:
            super().close()


def list_names(folder: str, limit: Optional[int] = None, folders: bool = False) -> list[str]:
    """Names of the objects directly under ``folder`` (a "folder" is a key prefix ending in ``/``);
    ``folders``: the names of the "folders" under it too, each ending in ``/``."""
    if split_url(folder)[0] not in ("s3", "gs"):
        return []   # HTTP cannot list: videos are found by <id>.mp4 or a --mapping file
    import pyarrow.fs
    infos = _object_call(folder, lambda fs, path: fs.get_file_info(pyarrow.fs.FileSelector(path,
                                                                                           allow_not_found=True)))
    names = sorted(info.base_name + ("/" if info.type == pyarrow.fs.FileType.Directory else "") for info in infos
                   if info.type == pyarrow.fs.FileType.File or (folders and info.type == pyarrow.fs.FileType.Directory))
    return names[:limit] if limit is not None else names


def is_folder(url: str) -> bool:
    """Does any object's key start with ``<key>/``? (HTTP cannot list: assumed true.)"""
    if split_url(url)[0] not in ("s3", "gs"):
        return True
    import pyarrow.fs
    return _object_call(url, lambda fs, path: fs.get_file_info(path)).type == pyarrow.fs.FileType.Directory


@contextmanager
def media_source(path: str, expires_s: float) -> Iterator[str]:
    """What ffmpeg should open for ``path``: the path itself (local, http(s)), a presigned URL (s3),
    or a bounded local spool of the object (gs), removed on exit.

    Checks the object exists first, so a missing one is a FileNotFoundError naming the URL.
    """
    if not is_url(path):
        yield path
        return
    scheme = split_url(path)[0]
    size = object_size(path)
    if scheme == "s3":
        yield presign(path, expires_s)
    elif scheme == "gs":
        with _spool(path, size) as local:
            yield local
    else:
        yield path


@contextmanager
def _spool(url: str, size: Optional[int]) -> Iterator[str]:
    """Copy the object into a temporary file (refusing one over FINSTA_SPOOL_MAX_BYTES); always removed."""
    limit = int(os.environ.get("FINSTA_SPOOL_MAX_BYTES", SPOOL_MAX_BYTES_DEFAULT))
    if size is not None and size > limit:
        raise ConnectionError(f"{url} is {size} bytes, over FINSTA_SPOOL_MAX_BYTES={limit}")
    suffix = PurePosixPath(split_url(url)[2]).suffix
    with tempfile.NamedTemporaryFile(prefix="finsta-spool-", suffix=suffix) as local:
        with open_read(url) as stream:
            shutil.copyfileobj(stream, local, 1 << 20)
        local.flush()
        yield local.name


def preflight(url: str) -> None:
    """Read one byte of ``url`` (the first input), so wrong credentials stop the run before workers start.

    A missing object is fine here (it becomes that sample's failure row);
    PermissionError and ConnectionError propagate.
    """
    scheme, bucket, key = split_url(url)
    try:
        if scheme == "s3":
            _s3_call(url, "get_object", Bucket=bucket, Key=key, Range="bytes=0-0")["Body"].close()
        else:
            object_size(url)
    except FileNotFoundError:
        pass


# ------------------------------------------------------------------ writing (s3:// and gs:// outputs)
# An object store has no rename and no folders: a PUT replaces one whole object atomically, and a
# "folder" is a key prefix. The shard store commits by order instead of by rename (schemas/store.py).
def _writable(url: str) -> tuple[str, str, str]:
    scheme, bucket, key = split_url(url)
    if scheme not in ("s3", "gs"):
        raise PermissionError(f"{url}: finsta writes datasets to local folders, s3:// and gs:// only")
    return scheme, bucket, key


def put_bytes(url: str, data: bytes, if_none_match: bool = False, if_match: Optional[str] = None) -> Optional[str]:
    """Write one object whole. ``if_none_match``: only if no such object exists; ``if_match``: only if its
    tag (:func:`read_tagged`) is still that; either way returns the new tag and raises FileExistsError
    when the condition does not hold (see :class:`ObjectLock` for what that guarantees on gs://)."""
    scheme, bucket, key = _writable(url)
    if not (if_none_match or if_match):
        def put(fs, path):
            with fs.open_output_stream(path) as sink:
                sink.write(data)
        _object_call(url, put)
        return None
    if scheme == "gs":   # pyarrow's GCS client sends no preconditions: compare, then write
        current = read_tagged(url)
        if (current is not None) if if_none_match else (current is None or current[1] != if_match):
            raise FileExistsError(f"{url} was written by someone else")
        put_bytes(url, data)
        return _tag(data)
    conditions = {"IfNoneMatch": "*"} if if_none_match else {"IfMatch": if_match}
    from botocore.exceptions import ClientError
    try:
        return _s3().put_object(Bucket=bucket, Key=key, Body=data, **conditions)["ETag"]
    except ClientError as error:
        if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
            raise FileExistsError(f"{url} was written by someone else") from None
        raise _s3_error(error, url) from None
    except Exception as error:   # botocore's network errors
        raise _s3_error(error, url) from None


def _tag(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


def read_tagged(url: str) -> Optional[tuple[bytes, str]]:
    """``(content, tag)`` of an object, None when absent; the tag changes whenever the object is
    rewritten (S3: its ETag; GCS: the sha256 of its content)."""
    scheme, bucket, key = _writable(url)
    try:
        if scheme == "s3":
            answer = _s3_call(url, "get_object", Bucket=bucket, Key=key)
            return answer["Body"].read(), answer["ETag"]
        data = read_object(url)
        return data, _tag(data)
    except FileNotFoundError:
        return None


def remove_object(url: str, if_match: Optional[str] = None) -> None:
    """Delete one object (deleting an absent one is not an error); ``if_match``: only if its tag is that."""
    scheme, bucket, key = _writable(url)
    if if_match and scheme == "s3":
        _s3_call(url, "delete_object", Bucket=bucket, Key=key, IfMatch=if_match)
        return
    if if_match:
        current = read_tagged(url)
        if current is None or current[1] != if_match:
            return
    try:
        _object_call(url, lambda fs, path: fs.delete_file(path))
    except FileNotFoundError:
        pass


def copy_object(source: str, target: str) -> None:
    """Server-side copy within one store (the bytes never pass through this machine)."""
    _writable(target)
    target_path = _fs_of(target)[1]
    _object_call(source, lambda fs, path: fs.copy_file(path, target_path))


def list_tree(folder: str) -> dict[str, int]:
    """Every object under ``folder``, at any depth: ``{path relative to folder: bytes}``; one listing
    (S3: one LIST request per 1,000 objects)."""
    import pyarrow.fs
    def walk(fs, path):
        return fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True, allow_not_found=True))
    prefix = _fs_of(folder)[1] + "/"
    return {info.path[len(prefix):]: info.size for info in _object_call(folder, walk)
            if info.type == pyarrow.fs.FileType.File and info.path.startswith(prefix)}


def remove_tree(folder: str, first: tuple[str, ...] = ()) -> None:
    """Delete every object under ``folder``; the relative paths in ``first`` go first, in that order.
    The rest goes in batches (S3: DeleteObjects, up to 1,000 keys a request)."""
    for rel in first:
        remove_object(f"{str(folder).rstrip('/')}/{rel}")
    def drop(fs, path):
        try:
            fs.delete_dir(path)
        except FileNotFoundError:
            pass
    _object_call(folder, drop)


class ObjectLock:
    """One writer per s3:// or gs:// dataset: a lease held in one object, taken by a conditional create.

    ``acquire`` puts the lock object only if none exists (S3 ``If-None-Match: *``); a thread renews
    the lease every ``lease_s / 3`` by rewriting it only if it is still ours (``If-Match`` on its
    ETag). A lock whose lease ran out (its writer died: kill -9, lost node) is taken over with
    ``If-Match`` on the stale ETag, so of two runs taking over at once exactly one wins. What is
    guaranteed on S3: two live writers never both hold it, as long as a writer's renewals reach S3 within
    ``lease_s``; a writer that could not renew in time (``lost``) stops committing (``check``).
    A crashed run blocks the dataset for at most ``lease_s``.

    On gs:// the same protocol runs without server-side preconditions (pyarrow's GCS client cannot
    send ``ifGenerationMatch``): each conditional write reads the lock, compares, then writes, and
    ``acquire`` reads it back after ``SETTLE_S``. Guaranteed: a run that starts while another holds
    the lock is refused; two runs whose acquisitions overlap within ``SETTLE_S`` can both start, and
    the one whose lock was overwritten finds out at its first renewal (``lease_s / 3``) and stops
    committing.
    """

    LEASE_S = 60.0
    SETTLE_S = 1.0

    def __init__(self, url: "UrlPath", lease_s: Optional[float] = None):
        self.path = url
        self.lease_s = float(lease_s or os.environ.get("FINSTA_S3_LOCK_LEASE_S", self.LEASE_S))
        self.etag: Optional[str] = None
        self.lost: Optional[str] = None
        self._stop = None

    def _holder(self) -> bytes:
        import json
        import socket
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime(
            "%Y-%m-%d %H:%M:%S"), "expires": time.time() + self.lease_s}).encode()

    def acquire(self) -> Optional[dict]:
        """Take the lock; returns the stale holder's record when one was taken over. Raises
        PermissionError (``held by``, holder) when a live run holds it."""
        import json
        stale = None
        try:
            self.etag = put_bytes(str(self.path), self._holder(), if_none_match=True)
        except FileExistsError:
            data, tag = read_tagged(str(self.path)) or (b"", None)
            try:
                stale = json.loads(data)
            except ValueError:
                stale = {}
            if not isinstance(stale, dict) or float(stale.get("expires", 0)) > time.time():
                raise LockHeld(stale if isinstance(stale, dict) else {}) from None
            try:
                self.etag = put_bytes(str(self.path), self._holder(), if_match=tag)
            except FileExistsError:   # another run took it over first
                raise LockHeld({}) from None
        if self.path.scheme == "gs":   # no preconditions: a run that wrote at the same time overwrote ours
            time.sleep(self.SETTLE_S)
            now = read_tagged(str(self.path))
            if now is None or now[1] != self.etag:
                raise LockHeld(json.loads(now[0]) if now else {})
        self._start_renewing()
        return stale

    def _start_renewing(self) -> None:
        import threading
        self._stop = threading.Event()
        thread = threading.Thread(target=self._renew, args=(self._stop,), name="finsta-s3-lock", daemon=True)
        thread.start()

    def _renew(self, stop) -> None:
        deadline = time.time() + self.lease_s
        while not stop.wait(self.lease_s / 3):
            try:
                self.etag = put_bytes(str(self.path), self._holder(), if_match=self.etag)
                deadline = time.time() + self.lease_s
            except FileExistsError:
                self.lost = f"another run took over the lock {self.path}"
                return
            except OSError:
                if time.time() > deadline:
                    self.lost = f"could not renew the lock {self.path} within {self.lease_s:g} s"
                    return

    def check(self) -> None:
        """Raise PermissionError when the lease was lost (a commit now could race another writer)."""
        if self.lost:
            raise PermissionError(self.lost)

    def release(self) -> None:
        if self._stop is None:
            return
        self._stop.set()
        self._stop = None
        if not self.lost:
            try:
                remove_object(str(self.path), if_match=self.etag)
            except OSError:
                pass   # the lease runs out by itself


class LockHeld(PermissionError):
    """The dataset's lock is held by a live run; ``holder`` is its record (pid, host, started)."""

    def __init__(self, holder: dict):
        super().__init__(f"held by {holder}")
        self.holder = holder
