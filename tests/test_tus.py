"""The tus 1.0.0 server (clipo_gql/tus/), organised by the protocol's sections
(https://tus.io/protocols/resumable-upload), then what api-next.md § D adds: the video in
UPLOADING, ownership, limits, completion exactly once, expiry, and GraphQL's createUpload."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from clipo_gql import tasks
from clipo_gql.auth.tokens import mint
from clipo_gql.connections import create_redis
from clipo_gql.events import EventPublisher
from clipo_gql.settings import Settings
from clipo_gql.storage import Storage
from clipo_gql.tus.completion import complete
from clipo_gql.tus.expiry import expire_uploads
from clipo_gql.tus.lock import lock_key
from clipo_gql.videos import VideoService
from tests.clips import Clips
from tests.conftest import Server, run_server, video_files

pytestmark = pytest.mark.timeout(120)

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}
VIDEO = "query($id: ID!) { video(id: $id) { id status progress filename sizeBytes ownerId } }"
SECRET = "test-jwt-secret-" + "s" * 32


def metadata(**pairs: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


async def create(
    server: Server, length: int, who: dict[str, str] | None = None, **headers: str
) -> httpx.Response:
    return await server.http.post(
        "/uploads",
        headers={
            **TUS,
            "Upload-Length": str(length),
            "Upload-Metadata": metadata(filename="clip.mp4", filetype="video/mp4"),
            **(who or {}),
            **headers,
        },
    )


async def created(server: Server, length: int, who: dict[str, str] | None = None) -> str:
    response = await create(server, length, who)
    assert response.status_code == 201, response.text
    return response.headers["Location"]


async def patch(
    server: Server,
    url: str,
    offset: int,
    data: bytes,
    who: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = {**TUS, **OCTETS, "Upload-Offset": str(offset), **(who or {}), **(headers or {})}
    return await server.http.patch(url, content=data, headers=sent)


async def head(server: Server, url: str, who: dict[str, str] | None = None) -> httpx.Response:
    return await server.http.head(url, headers={**TUS, **(who or {})})


async def send_all(server: Server, url: str, data: bytes, chunk: int = 32 * 1024) -> None:
    for offset in range(0, len(data), chunk):
        response = await patch(server, url, offset, data[offset : offset + chunk])
        assert response.status_code == 204, response.text
        assert response.headers["Upload-Offset"] == str(min(offset + chunk, len(data)))
        assert response.headers["Tus-Resumable"] == "1.0.0"


async def video(server: Server, video_id: str, who: dict[str, str] | None = None) -> Any:
    response = await server.http.post(
        "/graphql", json={"query": VIDEO, "variables": {"id": video_id}}, headers=who or {}
    )
    return response.json()["data"]["video"]


async def until_status(
    server: Server, video_id: str, status: str, who: dict[str, str] | None = None
) -> Any:
    for _ in range(1200):
        found = await video(server, video_id, who)
        if found["status"] == status:
            return found
        assert found["status"] != "FAILED", found
        await asyncio.sleep(0.05)
    raise AssertionError(f"never {status}")


def upload_id(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def folder(server: Server, url: str) -> Path:
    return server.settings.media_dir / "videos" / upload_id(url)


def sha1(data: bytes) -> str:
    return "sha1 " + base64.b64encode(hashlib.sha1(data).digest()).decode()


@pytest.fixture
async def small(settings: Settings, redis: Redis) -> AsyncIterator[Server]:
    """A server whose MAX_UPLOAD_BYTES is 1 MiB."""
    async for running in run_server(settings.model_copy(update={"max_upload_bytes": 1 << 20})):
        yield running


# -- § Core protocol: OPTIONS, Tus-Resumable ---------------------------------------------------


async def test_options_lists_version_extensions_size_and_checksums(server: Server):
    for path in ("/uploads", "/uploads/0123456789abcdef01234567"):
        response = await server.http.options(path)
        assert response.status_code == 204
        assert response.headers["Tus-Resumable"] == "1.0.0"
        assert response.headers["Tus-Version"] == "1.0.0"
        assert set(response.headers["Tus-Extension"].split(",")) == {
            "creation", "creation-with-upload", "termination", "expiration", "checksum",
        }  # fmt: skip
        assert response.headers["Tus-Max-Size"] == str(server.settings.max_upload_bytes)
        assert "sha1" in response.headers["Tus-Checksum-Algorithm"].split(",")


@pytest.mark.parametrize("version", [None, "0.2.2", "2.0.0"])
async def test_412_without_a_supported_version(server: Server, version: str | None):
    headers = {"Upload-Length": "10"} | ({"Tus-Resumable": version} if version else {})
    response = await server.http.post("/uploads", headers=headers)
    assert response.status_code == 412
    assert response.headers["Tus-Version"] == "1.0.0"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert "1.0.0" in response.json()["error"]
    url = await created(server, 10)
    for method in ("HEAD", "PATCH", "DELETE"):
        bare = await server.http.request(method, url, headers={**OCTETS, "Upload-Offset": "0"})
        assert bare.status_code == 412, method


# -- § Creation ------------------------------------------------------------------------------


async def test_creation_makes_an_uploading_video(server: Server):
    response = await create(server, 1000)
    assert response.status_code == 201, response.text
    assert response.headers["Tus-Resumable"] == "1.0.0"
    location = response.headers["Location"]
    assert location.startswith(server.url + "/uploads/")
    video_id = response.headers["Clipo-Video-Id"]
    assert upload_id(location) == video_id
    expires = email.utils.parsedate_to_datetime(response.headers["Upload-Expires"])
    left = (expires - datetime.now(UTC)).total_seconds()
    assert 86400 - 60 < left <= 86400
    found = await video(server, video_id)
    assert found["status"] == "UPLOADING"
    assert found["progress"] == 0.0
    assert found["filename"] == "clip.mp4"
    assert found["sizeBytes"] == 1000
    assert (folder(server, location) / "upload.tus").stat().st_size == 0


@pytest.mark.parametrize(
    ("headers", "status", "words"),
    [
        ({"Upload-Length": None}, 400, "Upload-Length"),
        ({"Upload-Length": None, "Upload-Defer-Length": "1"}, 400, "Upload-Defer-Length"),
        ({"Upload-Length": "-5"}, 400, "Upload-Length"),
        ({"Upload-Length": "0"}, 400, "empty"),
        ({"Upload-Metadata": "filename !!notbase64"}, 400, "base64"),
        ({"Upload-Concat": "partial"}, 400, "concatenation"),
    ],
)
async def test_creation_refusals(server: Server, headers: dict[str, Any], status: int, words: str):
    base = {**TUS, "Upload-Length": "10"}
    for name, value in headers.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    response = await server.http.post("/uploads", headers=base)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
    assert not video_files(server.settings)


async def test_413_past_tus_max_size(small: Server):
    response = await create(small, (1 << 20) + 1)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]
    assert not video_files(small.settings)


async def test_creation_with_upload(server: Server, clips: Clips):
    data = clips.h264_aac.read_bytes()
    first = data[:50_000]
    response = await server.http.post(
        "/uploads",
        content=first,
        headers={**TUS, **OCTETS, "Upload-Length": str(len(data)), "Upload-Checksum": sha1(first)},
    )
    assert response.status_code == 201, response.text
    assert response.headers["Upload-Offset"] == str(len(first))
    url = response.headers["Location"]
    response = await patch(server, url, len(first), data[len(first) :])
    assert response.status_code == 204
    await until_status(server, upload_id(url), "DONE")


# -- § HEAD, § PATCH -------------------------------------------------------------------------


async def test_head_tells_offset_and_length_and_is_not_cached(server: Server):
    url = await created(server, 1000)
    assert (
        await patch(server, url, 0, b"\x00\x00\x00\x20ftypisom" + b"x" * 488)
    ).status_code == 204
    response = await head(server, url)
    assert response.status_code == 200
    assert response.headers["Upload-Offset"] == "500"
    assert response.headers["Upload-Length"] == "1000"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    email.utils.parsedate_to_datetime(response.headers["Upload-Expires"])
    found = await video(server, upload_id(url))
    assert found["progress"] == 0.5  # bytes received / Upload-Length


async def test_patch_refusals(server: Server):
    url = await created(server, 1000)
    body = b"\x00\x00\x00\x20ftypisom" + b"x" * 100
    wrong_type = await server.http.patch(
        url, content=body, headers={**TUS, "Upload-Offset": "0",
                                    "Content-Type": "application/octet-stream"},
    )  # fmt: skip
    assert wrong_type.status_code == 415
    assert "application/offset+octet-stream" in wrong_type.json()["error"]
    wrong_offset = await patch(server, url, 7, body)
    assert wrong_offset.status_code == 409
    assert "HEAD" in wrong_offset.json()["error"]
    no_offset = await server.http.patch(url, content=body, headers={**TUS, **OCTETS})
    assert no_offset.status_code == 400
    too_long = await patch(server, url, 0, b"\x00\x00\x00\x20ftypisom" + b"x" * 1000)
    assert too_long.status_code == 413
    assert (await head(server, url)).headers["Upload-Offset"] == "0"
    for unknown in ("/uploads/0123456789abcdef01234567", "/uploads/nope", "/uploads/..%2f.."):
        assert (await patch(server, unknown, 0, body)).status_code == 404
        assert (await head(server, unknown)).status_code == 404
        assert (await server.http.delete(unknown, headers=TUS)).status_code == 404
    missing = await patch(server, "/uploads/0123456789abcdef01234567", 0, body)
    assert missing.json() == {"error": "No upload with this id"}


async def test_413_for_a_chunk_over_tus_max_size_from_content_length(small: Server):
    url = await created(small, 1 << 20)
    response = await patch(small, url, 0, b"\x00\x00\x00\x20ftypisom" + b"x" * (1 << 20))
    assert response.status_code == 413
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert "error" in response.json()


async def test_chunks_to_done(server: Server, clips: Clips):
    data = clips.h264_aac.read_bytes()
    url = await created(server, len(data))
    await send_all(server, url, data)
    after = await head(server, url)
    assert after.headers["Upload-Offset"] == str(len(data))
    await until_status(server, upload_id(url), "DONE")
    assert (folder(server, url) / "original").read_bytes() == data
    assert not (folder(server, url) / "upload.tus").exists()
    # The upload is complete: an empty PATCH at its end changes nothing, more bytes are refused.
    assert (await patch(server, url, len(data), b"")).status_code == 204
    assert (await patch(server, url, len(data), b"x")).status_code in (409, 413)
    metrics = (await server.http.get("/metrics")).text
    for family in (
        "clipo_tus_bytes_received_total",
        'clipo_tus_uploads_total{event="created"}',
        'clipo_tus_uploads_total{event="completed"}',
        'clipo_tus_patch_duration_seconds_count{status="2xx"}',
    ):
        assert family in metrics, family


# -- § Checksum ------------------------------------------------------------------------------


async def test_checksum_mismatch_discards_the_chunk(server: Server, clips: Clips):
    data = clips.h264_aac.read_bytes()
    url = await created(server, len(data))
    chunk = data[:40_000]
    bad = await patch(server, url, 0, chunk, headers={"Upload-Checksum": sha1(b"other bytes")})
    assert bad.status_code == 460
    assert "checksum" in bad.json()["error"]
    assert (await head(server, url)).headers["Upload-Offset"] == "0"
    assert (folder(server, url) / "upload.tus").stat().st_size == 0
    unknown = await patch(server, url, 0, chunk, headers={"Upload-Checksum": "crc99 AAAA"})
    assert unknown.status_code == 400
    good = await patch(server, url, 0, chunk, headers={"Upload-Checksum": sha1(chunk)})
    assert good.status_code == 204
    assert good.headers["Upload-Offset"] == str(len(chunk))


# -- § Termination, § Expiration -------------------------------------------------------------


async def test_termination_removes_upload_and_video(server: Server):
    url = await created(server, 1000)
    await patch(server, url, 0, b"\x00\x00\x00\x20ftypisom" + b"x" * 500)
    response = await server.http.delete(url, headers=TUS)
    assert response.status_code == 204
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert (await head(server, url)).status_code == 404
    assert await video(server, upload_id(url)) is None
    assert not folder(server, url).exists()


async def test_expired_uploads_answer_410_then_are_removed(settings: Settings, redis: Redis):
    async for server in run_server(settings.model_copy(update={"upload_expiry_seconds": 2})):
        url = await created(server, 1000)
        await patch(server, url, 0, b"\x00\x00\x00\x20ftypisom" + b"x" * 500)
        kept = await created(server, 1000)
        await asyncio.sleep(1.2)
        ok = await patch(server, kept, 0, b"\x00\x00\x00\x20ftypisom" + b"x" * 500)
        assert ok.status_code == 204  # bytes arrived: expires 2 s from now
        await asyncio.sleep(1.0)
        assert (await head(server, url)).status_code == 410
        assert (await patch(server, url, 500, b"x")).status_code == 410
        removed = await expire_uploads(
            Storage(settings.media_dir), VideoService(EventPublisher(redis, settings.redis_prefix))
        )
        assert removed == 1
        assert (await head(server, url)).status_code == 404
        assert not folder(server, url).exists()
        assert await video(server, upload_id(url)) is None
        assert (await head(server, kept)).status_code == 200


# -- what api-next.md § D adds ---------------------------------------------------------------


async def test_a_non_video_is_refused_on_its_first_bytes(server: Server, clips: Clips):
    text = clips.not_video.read_bytes() * 100
    url = await created(server, len(text) + 10_000)
    response = await patch(server, url, 0, text)
    assert response.status_code == 415
    assert "video" in response.json()["error"]
    assert (await head(server, url)).status_code == 404
    assert not folder(server, url).exists()
    assert await video(server, upload_id(url)) is None


async def test_the_sniff_waits_for_enough_bytes(server: Server, clips: Clips):
    data = clips.h264_aac.read_bytes()
    url = await created(server, len(data))
    for offset in range(0, 420, 7):  # the first bytes trickle in, 7 at a time
        assert (await patch(server, url, offset, data[offset : offset + 7])).status_code == 204
    assert (await patch(server, url, 420, data[420:])).status_code == 204
    await until_status(server, upload_id(url), "DONE")


async def test_tuspy_end_to_end(server: Server, clips: Clips):
    from tusclient import client

    data = clips.h264_aac.read_bytes()

    def upload() -> str:
        tus = client.TusClient(server.url + "/uploads")
        # Our own stream: with `file_path` tuspy leaves the file open (a ResourceWarning).
        with clips.h264_aac.open("rb") as stream:
            uploader = tus.uploader(
                file_stream=stream,
                chunk_size=64 * 1024,
                metadata={"filename": "tuspy.mp4", "filetype": "video/mp4"},
                upload_checksum=True,
            )
            uploader.upload()
        return str(uploader.url)

    url = await asyncio.to_thread(upload)
    done = await until_status(server, upload_id(url), "DONE")
    assert done["filename"] == "tuspy.mp4"
    assert (folder(server, url) / "original").read_bytes() == data


async def held_patch(
    base: str, path: str, offset: int, length: int, sent: bytes, authorization: str | None = None
) -> asyncio.StreamWriter:
    """A PATCH announcing `length` bytes of which only `sent` go out: the socket stays open,
    so the server holds the upload (its lock) until the caller closes it."""
    parts = urlsplit(base)
    assert parts.hostname is not None
    assert parts.port is not None
    _, writer = await asyncio.open_connection(parts.hostname, parts.port)
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    request = (
        f"PATCH {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{auth}"
        f"Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Upload-Offset: {offset}\r\nContent-Length: {length}\r\n\r\n"
    )
    writer.write(request.encode() + sent)
    await writer.drain()
    return writer


async def _offset_becomes(server: Server, url: str, expected: int) -> None:
    for _ in range(200):
        if (await head(server, url)).headers["Upload-Offset"] == str(expected):
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"offset never {expected}: {(await head(server, url)).headers}")


async def _patch_when_unlocked(
    server: Server, url: str, offset: int, data: bytes
) -> httpx.Response:
    for _ in range(200):
        response = await patch(server, url, offset, data)
        if response.status_code != 423:
            return response
        await asyncio.sleep(0.025)
    raise AssertionError("the upload stayed locked")


async def test_a_killed_connection_resumes_from_heads_offset(server: Server, clips: Clips):
    data = clips.h264_aac.read_bytes()
    url = await created(server, len(data))
    half = len(data) // 2
    writer = await held_patch(server.url, urlsplit(url).path, 0, len(data), data[:half])
    await asyncio.sleep(0.2)  # the server reads what was sent
    writer.transport.abort()  # the connection dies mid-PATCH
    await _offset_becomes(server, url, half)  # what arrived is kept, fsynced
    offset = int((await head(server, url)).headers["Upload-Offset"])
    response = await _patch_when_unlocked(server, url, offset, data[offset:])
    assert response.status_code == 204, response.text
    await until_status(server, upload_id(url), "DONE")
    assert (folder(server, url) / "original").read_bytes() == data


async def test_bytes_past_the_stored_offset_are_cut_on_resume(server: Server, clips: Clips):
    data = clips.h264_aac.read_bytes()
    url = await created(server, len(data))
    assert (await patch(server, url, 0, data[:30_000])).status_code == 204
    # A process killed after writing but before storing the offset leaves bytes behind.
    with (folder(server, url) / "upload.tus").open("ab") as partial:
        partial.write(b"garbage written by a process that died" * 100)
    assert (await head(server, url)).headers["Upload-Offset"] == "30000"
    assert (await patch(server, url, 30_000, data[30_000:])).status_code == 204
    await until_status(server, upload_id(url), "DONE")
    assert (folder(server, url) / "original").read_bytes() == data


async def test_one_patch_at_a_time(server: Server, redis: Redis, clips: Clips):
    data = clips.h264_aac.read_bytes()
    url = await created(server, len(data))
    writer = await held_patch(server.url, urlsplit(url).path, 0, len(data), data[:1000])
    key = lock_key(server.settings.redis_prefix, upload_id(url))  # type: ignore[arg-type]
    for _ in range(200):
        if await redis.exists(key):
            break
        await asyncio.sleep(0.01)
    second = await patch(server, url, 0, data)
    assert second.status_code in (409, 423)
    assert "error" in second.json()
    writer.write(data[1000:])
    await writer.drain()
    await _offset_becomes(server, url, len(data))
    writer.close()
    await until_status(server, upload_id(url), "DONE")


async def test_racing_the_last_chunk_queues_once(server: Server, clips: Clips):
    data = clips.h264_aac.read_bytes()
    url = await created(server, len(data))
    assert (await patch(server, url, 0, data[:-1000])).status_code == 204
    calls: list[object] = []
    real = tasks.enqueue_processing

    async def counting(redis: Any, video_id: Any) -> bool:
        calls.append(video_id)
        return await real(redis, video_id)

    with mock.patch.object(tasks, "enqueue_processing", counting):
        answers = await asyncio.gather(
            *(patch(server, url, len(data) - 1000, data[-1000:]) for _ in range(4))
        )
        await until_status(server, upload_id(url), "DONE")
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(204) >= 1
    assert set(statuses) <= {204, 409, 423}
    assert [str(c) for c in calls] == [upload_id(url)]


async def test_completion_is_conditional_on_uploading(server: Server, clips: Clips):
    """Two completions racing (say, after a lock's lease ran out): one wins, one job."""
    data = clips.h264_aac.read_bytes()
    url = await created(server, len(data))
    (folder(server, url) / "upload.tus").write_bytes(data)
    settings = server.settings
    redis = await create_redis(settings)
    app: Any = SimpleNamespace(
        settings=settings,
        storage=Storage(settings.media_dir),
        videos=VideoService(EventPublisher(redis, settings.redis_prefix)),
        redis=redis,
    )
    calls: list[object] = []
    real = tasks.enqueue_processing

    async def counting(client: Any, video_id: Any) -> bool:
        calls.append(video_id)
        return await real(client, video_id)

    from bson import ObjectId

    try:
        with mock.patch.object(tasks, "enqueue_processing", counting):
            results = await asyncio.gather(
                *(complete(app, ObjectId(upload_id(url)), len(data)) for _ in range(5))
            )
    finally:
        await redis.aclose()
    assert sum(r is not None for r in results) == 1
    assert len(calls) == 1
    await until_status(server, upload_id(url), "DONE")


async def test_create_upload_through_graphql(server: Server, clips: Clips):
    data = clips.h264_aac.read_bytes()
    body = await server.gql(
        "mutation($n: String!, $s: BigInt!) { createUpload(filename: $n, sizeBytes: $s) "
        "{ uploadUrl video { id status sizeBytes filename progress } } }",
        n="from-graphql.mp4",
        s=len(data),
    )
    session = body["data"]["createUpload"]
    assert session["video"]["status"] == "UPLOADING"
    assert session["video"]["sizeBytes"] == len(data)
    url = session["uploadUrl"]
    assert url == f"{server.url}/uploads/{session['video']['id']}"
    await send_all(server, url, data)
    done = await until_status(server, session["video"]["id"], "DONE")
    assert done["filename"] == "from-graphql.mp4"


async def test_create_upload_refusals_through_graphql(small: Server):
    body = await small.gql(
        'mutation { createUpload(filename: "x.mp4", sizeBytes: 99999999) { uploadUrl } }'
    )
    assert body["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_delete_video_ends_an_upload(server: Server):
    url = await created(server, 1000)
    await patch(server, url, 0, b"\x00\x00\x00\x20ftypisom" + b"x" * 500)
    body = await server.gql("mutation($id: ID!) { deleteVideo(id: $id) }", id=upload_id(url))
    assert body["data"]["deleteVideo"] is True
    assert (await head(server, url)).status_code == 404
    assert (await patch(server, url, 500, b"x" * 10)).status_code == 404
    assert not folder(server, url).exists()


async def test_progress_is_published_to_subscribers(server: Server, clips: Clips):
    from tests.wsclient import TRANSPORT_WS  # noqa: F401 - the module the other tests use

    data = clips.h264_aac.read_bytes()
    url = await created(server, len(data))
    channel = f"{server.settings.redis_prefix}:video:{upload_id(url)}"
    listener = Redis.from_url(server.settings.effective_redis_url)
    seen: list[str] = []
    try:
        async with listener.pubsub() as pubsub:
            await pubsub.subscribe(channel)
            await send_all(server, url, data, chunk=len(data) // 3 + 1)
            for _ in range(200):
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
                if message is not None:
                    seen.append(message["data"].decode())
                if any('"PENDING"' in s for s in seen):
                    break
    finally:
        await listener.aclose()
    uploading = [s for s in seen if '"UPLOADING"' in s]
    assert uploading, seen
    assert any('"PENDING"' in s for s in seen)


async def test_unfinished_uploads_count_against_the_owners_limits(settings: Settings, redis: Redis):
    async for server in run_server(settings.model_copy(update={"max_active_videos": 1})):
        await created(server, 1000)
        refused = await create(server, 1000)
        assert refused.status_code == 403
        assert "waiting or processing" in refused.json()["error"]
        assert refused.headers["Tus-Resumable"] == "1.0.0"


async def test_cors_exposes_the_tus_headers(settings: Settings, redis: Redis):
    origin = "https://app.example"
    async for server in run_server(settings.model_copy(update={"allowed_origins": origin})):
        preflight = await server.http.options(
            "/uploads",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": "tus-resumable,upload-offset,upload-checksum,"
                "content-type,upload-metadata,upload-length,authorization,x-http-method-override",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert "PATCH" in preflight.headers["access-control-allow-methods"]
        response = await create(server, 1000, {"Origin": origin})
        exposed = response.headers["access-control-expose-headers"].lower()
        for name in ("location", "upload-offset", "upload-expires", "tus-resumable",
                     "clipo-video-id", "upload-length", "tus-max-size"):  # fmt: skip
            assert name in exposed


# -- ownership, with auth on ------------------------------------------------------------------


async def test_another_owners_upload_is_not_found(settings: Settings, redis: Redis):
    secured = settings.model_copy(
        update={
            "auth_mode": "required",
            "auth_jwt_secret": SecretStr(SECRET),
            "media_url_secret": SecretStr("test-media-secret-" + "m" * 32),
        }
    )
    async for server in run_server(secured):
        alice = {"Authorization": f"Bearer {mint(secured, 'alice')}"}
        bob = {"Authorization": f"Bearer {mint(secured, 'bob')}"}
        assert (await create(server, 1000)).status_code == 401
        url = await created(server, 1000, alice)
        body = b"\x00\x00\x00\x20ftypisom" + b"x" * 100
        assert (await head(server, url)).status_code == 401
        assert (await head(server, url, bob)).status_code == 404
        assert (await patch(server, url, 0, body, bob)).status_code == 404
        deleted = await server.http.delete(url, headers={**TUS, **bob})
        assert deleted.status_code == 404
        assert deleted.json() == {"error": "No upload with this id"}
        assert (await head(server, url, alice)).status_code == 200
        assert (await patch(server, url, 0, body, alice)).status_code == 204
        found = await video(server, upload_id(url), alice)
        assert found["ownerId"] == "alice"
