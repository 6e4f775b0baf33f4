"""schemas.storage against real servers on 127.0.0.1 (moto's S3 server, a GCS emulator, a stdlib HTTP range server)."""
import os

import pytest

from schemas import storage
from tests.storage_servers import TEST_SECRET, make_bucket, make_gcs_bucket


def test_url_paths_join_and_name_like_pathlib():
    root = storage.location("s3://bucket/data/")
    assert str(root / "captions" / "val.json") == "s3://bucket/data/captions/val.json"
    assert str((root / "./clips/a.mp4").parent) == "s3://bucket/data/clips"
    assert (root / "a.mp4").name == "a.mp4" and (root / "a.jsonl").suffix == ".jsonl"
    assert storage.location("clips/a.mp4").__class__.__name__.endswith("Path")
    assert not storage.is_url("clips/a.mp4") and storage.is_url("gs://b/k") and storage.is_url("HTTPS://h/p")


def test_gs_read_list_stat_missing_and_spool(gcs_env):
    bucket = make_gcs_bucket(gcs_env, "greads", {"data/a.jsonl": b'{"id": 1}\nline two\n', "data/v/x.mp4": b"12345"})
    path = storage.location(f"{bucket}/data/a.jsonl")
    assert path.is_file() and path.read_text().splitlines() == ['{"id": 1}', "line two"]
    assert storage.list_names(f"{bucket}/data") == ["a.jsonl"] and storage.list_names(f"{bucket}/data/v") == ["x.mp4"]
    assert storage.location(f"{bucket}/data/v").is_dir() and not storage.location(f"{bucket}/nothing").is_dir()
    assert storage.object_size(f"{bucket}/data/v/x.mp4") == 5
    with pytest.raises(FileNotFoundError, match="no such object: gs://greads/data/none.mp4"):
        storage.object_size(f"{bucket}/data/none.mp4")
    with storage.media_source(f"{bucket}/data/v/x.mp4", 60) as local:   # gs: a bounded local copy
        assert open(local, "rb").read() == b"12345"
    assert not os.path.exists(local)   # removed on exit
    version = storage.object_version(f"{bucket}/data/v/x.mp4")   # size and update time, as the listing has them
    assert version[0] == 5 and version[1] and storage.list_versions(f"{bucket}/data/v") == {"x.mp4": version}


def test_redact_removes_signatures():
    text = "cannot open http://h:1/b/k.mp4?X-Amz-Signature=abc&X-Amz-Credential=KEY: 403"
    assert storage.redact(text) == "cannot open http://h:1/b/k.mp4?<signature removed> 403"


def test_s3_read_list_stat_missing(s3_env, tmp_path):
    bucket = make_bucket(s3_env, "reads", {"data/a.jsonl": b'{"id": 1}\nline two\n', "data/v/x.mp4": b"12345"})
    path = storage.location(f"{bucket}/data/a.jsonl")
    assert path.is_file() and path.read_text().splitlines() == ['{"id": 1}', "line two"]
    with path.open("rb") as fh:
        assert fh.readline() == b'{"id": 1}\n'
    assert storage.list_names(f"{bucket}/data") == ["a.jsonl"]
    assert storage.list_names(f"{bucket}/data/v/") == ["x.mp4"]
    assert storage.location(f"{bucket}/data/v").is_dir() and not storage.location(f"{bucket}/nothing").is_dir()
    assert storage.object_size(f"{bucket}/data/v/x.mp4") == 5
    with pytest.raises(FileNotFoundError, match="no such object: s3://reads/data/none.mp4"):
        storage.object_size(f"{bucket}/data/none.mp4")
    assert not storage.location(f"{bucket}/data/none.mp4").is_file()
    storage.preflight(f"{bucket}/data/none.mp4")   # credentials work: a missing object is that sample's row


def test_object_versions_change_with_the_object_and_a_listing_has_the_same(s3_env, http_server):
    bucket = make_bucket(s3_env, "versions", {"v/a.mp4": b"12345", "v/b.mp4": b"x"})
    first = storage.object_version(f"{bucket}/v/a.mp4")
    assert first[0] == 5 and storage.list_versions(f"{bucket}/v") == {
        "a.mp4": first, "b.mp4": storage.object_version(f"{bucket}/v/b.mp4")}   # the LIST says what HEAD says
    storage.put_bytes(f"{bucket}/v/a.mp4", b"54321")   # rewritten, same size: another ETag
    assert storage.object_version(f"{bucket}/v/a.mp4")[0] == 5 and storage.object_version(f"{bucket}/v/a.mp4") != first
    with pytest.raises(FileNotFoundError, match="no such object: s3://versions/v/none.mp4"):
        storage.object_version(f"{bucket}/v/none.mp4")
    base, folder = http_server   # HTTP: Content-Length and the ETag or Last-Modified of one HEAD
    (folder / "a.mp4").write_bytes(b"12345")
    size, stamp = storage.object_version(f"{base}/a.mp4")
    assert size == "5" and stamp and storage.list_versions(base) is None
    with pytest.raises(FileNotFoundError):
        storage.object_version(f"{base}/none.mp4")


def test_s3_presigned_url_is_made_in_process_and_readable(s3_env):
    import urllib.request
    bucket = make_bucket(s3_env, "signed", {"v.mp4": b"video bytes"})
    with storage.media_source(f"{bucket}/v.mp4", expires_s=120) as url:
        assert "X-Amz-Signature" in url
        assert urllib.request.urlopen(url, timeout=30).read() == b"video bytes"
    with pytest.raises(FileNotFoundError):
        with storage.media_source(f"{bucket}/gone.mp4", expires_s=120):
            pass


def test_no_credentials_is_a_permission_error_without_secrets(s3_env, monkeypatch):
    make_bucket(s3_env, "locked", {"v.mp4": b"x"})
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    storage.reset_clients()
    with pytest.raises(PermissionError, match="no AWS credentials for s3://locked/v.mp4") as error:
        storage.preflight("s3://locked/v.mp4")
    assert "secret" not in str(error.value).lower().replace("aws_secret_access_key", "")


def test_wrong_credentials_are_a_permission_error_without_secrets(s3_env, s3_server_checking_keys, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server_checking_keys)
    storage.reset_clients()
    with pytest.raises(PermissionError, match=r"access denied to s3://b/k.mp4 \(InvalidAccessKeyId") as error:
        storage.preflight("s3://b/k.mp4")
    assert TEST_SECRET not in str(error.value)


def test_http_read_missing_and_retry(http_server, monkeypatch):
    monkeypatch.setattr(storage, "BACKOFF_S", 0.01)
    base, folder = http_server
    (folder / "m.jsonl").write_bytes(b"a\nb\n")
    assert storage.location(f"{base}/m.jsonl").read_text() == "a\nb\n"
    assert storage.object_size(f"{base}/m.jsonl") == 4
    with pytest.raises(FileNotFoundError, match=f"no such object: {base}/none.mp4"):
        storage.object_size(f"{base}/none.mp4")
    # two 503s, then the file: retried with backoff, not a failure
    assert storage.location(f"{base}/flaky/2/m.jsonl").read_text() == "a\nb\n"
    with pytest.raises(ConnectionError, match="after 5 attempts"):
        storage.object_size(f"{base}/flaky/9/m.jsonl")


def test_an_unreachable_s3_endpoint_is_retried_then_a_connection_error(s3_env, monkeypatch):
    import socket
    with socket.socket() as sock:   # a port nothing listens on: every attempt is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    storage.reset_clients()
    with pytest.raises(ConnectionError, match="cannot reach S3 for s3://b/k.mp4") as error:
        storage.object_size("s3://b/k.mp4")
    assert "finsta-test" not in str(error.value)


def test_the_s3_lock_is_a_conditional_create_renewed_while_held_and_lost_when_taken(s3_env):
    import json
    import time
    bucket = make_bucket(s3_env, "locks")
    held_lock = storage.ObjectLock(storage.location(f"{bucket}/ds/.lock"), lease_s=600)   # outlives any load
    assert held_lock.acquire() is None
    with pytest.raises(storage.LockHeld) as held:
        storage.ObjectLock(storage.location(f"{bucket}/ds/.lock")).acquire()
    assert held.value.holder["expires"] > time.time()
    held_lock.release()
    lock = storage.ObjectLock(storage.location(f"{bucket}/ds/.lock"), lease_s=1.5)   # renewed every 0.5 s
    assert lock.acquire() is None
    first = lock.etag
    give_up = time.time() + 120   # only bounds a hung test
    while lock.etag == first:     # renewed: a new ETag, a later expiry
        assert time.time() < give_up and lock.lost is None
        time.sleep(0.05)
    storage.put_bytes(f"{bucket}/ds/.lock", json.dumps({"pid": 2, "expires": time.time() + 600}).encode())
    while lock.lost is None:      # another run took it: the next renewal sees a changed ETag
        assert time.time() < give_up
        time.sleep(0.05)
    with pytest.raises(PermissionError, match="another run took over"):
        lock.check()
    lock.release()
    assert json.loads(storage.location(f"{bucket}/ds/.lock").read_text())["pid"] == 2   # theirs is left alone
