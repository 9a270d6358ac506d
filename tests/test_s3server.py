"""The S3 server the suite runs on (SeaweedFS, scripts/seaweedfs-env) does what the storage code
will ask of S3: objects, ranges, multipart uploads, presigned GETs with a download name, listing
by prefix. Skipped without CLIPO_S3_ENDPOINT_URL (no Go: no server)."""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import httpx
import pytest

from tests.s3server import REGION, S3_NS, S3Client, S3Server, from_env, seaweedfs_s3

pytestmark = pytest.mark.once_per_run  # nothing here depends on the database

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def s3() -> S3Server:
    server = from_env()
    if server is None:
        pytest.skip("no S3 server: CLIPO_S3_ENDPOINT_URL is unset (./scripts/test sets it)")
    return server


@pytest.fixture
def client(s3: S3Server) -> Iterator[S3Client]:
    with s3.client() as c:
        yield c


@pytest.fixture
def prefix(s3: S3Server, client: S3Client) -> Iterator[str]:
    """A key prefix of this test's own, emptied afterwards."""
    p = f"test-s3server/{uuid.uuid4().hex[:12]}/"
    yield p
    for key in client.list_keys(s3.bucket, p):
        client.request("DELETE", s3.bucket, key)


def test_put_get_delete(s3: S3Server, client: S3Client, prefix: str) -> None:
    key = prefix + "hello.txt"
    body = b"hello, s3 " * 100
    put = client.request(
        "PUT", s3.bucket, key, content=body, headers={"content-type": "text/plain"}
    )
    assert put.status_code == 200, put.text
    assert put.headers["etag"].strip('"') == hashlib.md5(body).hexdigest()

    got = client.request("GET", s3.bucket, key)
    assert got.status_code == 200
    assert got.content == body
    assert got.headers["content-type"] == "text/plain"
    head = client.request("HEAD", s3.bucket, key)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(body))

    assert client.request("DELETE", s3.bucket, key).status_code == 204
    assert client.request("GET", s3.bucket, key).status_code == 404


def test_range(s3: S3Server, client: S3Client, prefix: str) -> None:
    key = prefix + "range.bin"
    body = bytes(range(256)) * 4
    assert client.request("PUT", s3.bucket, key, content=body).status_code == 200
    got = client.request("GET", s3.bucket, key, headers={"range": "bytes=10-19"})
    assert got.status_code == 206
    assert got.content == body[10:20]
    assert got.headers["content-range"] == f"bytes 10-19/{len(body)}"
    tail = client.request("GET", s3.bucket, key, headers={"range": "bytes=-5"})
    assert (tail.status_code, tail.content) == (206, body[-5:])


def test_multipart_upload(s3: S3Server, client: S3Client, prefix: str) -> None:
    key = prefix + "multipart.bin"
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(1024)]
    created = client.request("POST", s3.bucket, key, params={"uploads": ""})
    assert created.status_code == 200, created.text
    upload_id = ET.fromstring(created.content).findtext(f"{S3_NS}UploadId")
    assert upload_id

    etags = []
    for number, part in enumerate(parts, start=1):
        put = client.request(
            "PUT",
            s3.bucket,
            key,
            params={"partNumber": str(number), "uploadId": upload_id},
            content=part,
        )
        assert put.status_code == 200, put.text
        etags.append(put.headers["etag"])
    complete = "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
        for n, etag in enumerate(etags, start=1)
    )
    done = client.request(
        "POST",
        s3.bucket,
        key,
        params={"uploadId": upload_id},
        content=f"<CompleteMultipartUpload>{complete}</CompleteMultipartUpload>".encode(),
    )
    assert done.status_code == 200, done.text
    assert b"<Error>" not in done.content, done.text

    whole = b"".join(parts)
    got = client.request("GET", s3.bucket, key)
    assert got.status_code == 200
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(whole).digest()
    # A range across the first part boundary.
    across = client.request(
        "GET", s3.bucket, key, headers={"range": f"bytes={5 * MIB - 10}-{5 * MIB + 9}"}
    )
    assert (across.status_code, across.content) == (206, whole[5 * MIB - 10 : 5 * MIB + 10])


def test_presigned_get_with_download_name(s3: S3Server, client: S3Client, prefix: str) -> None:
    key = prefix + "clip.mp4"
    body = b"\x00\x00\x00\x18ftypmp42" + os.urandom(1000)
    put = client.request("PUT", s3.bucket, key, content=body, headers={"content-type": "video/mp4"})
    assert put.status_code == 200
    disposition = "attachment; filename=\"clip.mp4\"; filename*=UTF-8''%C3%A9t%C3%A9.mp4"
    url = client.presign(s3.bucket, key, params={"response-content-disposition": disposition})
    with httpx.Client() as anonymous:
        got = anonymous.get(url)
        assert got.status_code == 200, got.text
        assert got.content == body
        assert got.headers["content-disposition"] == disposition
        assert got.headers["content-type"] == "video/mp4"
        ranged = anonymous.get(url, headers={"range": "bytes=0-3"})
        assert (ranged.status_code, ranged.content) == (206, body[:4])
        # A signature that does not match is refused, and so is no signature at all.
        assert anonymous.get(url[:-4] + "0000").status_code == 403
        assert anonymous.get(url.split("?")[0]).status_code == 403


def test_list_by_prefix(s3: S3Server, client: S3Client, prefix: str) -> None:
    for name in ("a/1", "a/2", "b/1"):
        assert client.request("PUT", s3.bucket, prefix + name, content=b"x").status_code == 200
    assert client.list_keys(s3.bucket, prefix + "a/") == [prefix + "a/1", prefix + "a/2"]
    assert client.list_keys(s3.bucket, prefix) == [prefix + n for n in ("a/1", "a/2", "b/1")]


def test_private_server() -> None:
    """tests.s3server.seaweedfs_s3 starts one of its own (topology tests and benchmarks)."""
    if not os.environ.get("CLIPO_SEAWEEDFS_BIN"):
        pytest.skip("CLIPO_SEAWEEDFS_BIN is unset (./scripts/test builds weed)")
    with seaweedfs_s3("private-bucket") as server:
        endpoint_url, bucket, key, secret = server
        assert bucket == "private-bucket"
        with S3Client(endpoint_url, key, secret) as client:
            assert client.request("PUT", bucket, "k", content=b"v").status_code == 200
            assert client.request("GET", bucket, "k").content == b"v"
    port = urllib.parse.urlsplit(endpoint_url).port
    assert port
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "still listening after the block"


def test_obstore(s3: S3Server, prefix: str) -> None:
    """The client the storage code is likely to use, against the same server."""
    obstore = pytest.importorskip("obstore")  # not a dependency yet: uv run --with obstore
    store = pytest.importorskip("obstore.store").S3Store(
        s3.bucket,
        endpoint=s3.endpoint_url,
        access_key_id=s3.access_key_id,
        secret_access_key=s3.secret_access_key,
        region=REGION,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    key = prefix + "obstore.bin"
    body = os.urandom(100_000)
    obstore.put(store, key, body)
    assert bytes(obstore.get(store, key).bytes()) == body
    assert bytes(obstore.get_range(store, key, start=10, end=20)) == body[10:20]
    url = obstore.sign(store, "GET", key, datetime.timedelta(minutes=5))
    with httpx.Client() as anonymous:
        assert anonymous.get(url).content == body
    obstore.delete(store, key)
