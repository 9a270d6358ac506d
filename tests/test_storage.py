"""Both storages through the real app: MEDIA_DIR on disk, and an S3-compatible store (the
SeaweedFS server the test command starts: scripts/seaweedfs-env). Uploads (multipart and
tus), processing, serving (302 to a presigned URL, or proxied with Range), deletes, refusals
that leave nothing, reindex from the store, and the migration of a local library."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from bson import ObjectId
from pydantic import SecretStr
from redis.asyncio import Redis

from clipo_gql.models import Video
from clipo_gql.reindex import reindex
from clipo_gql.settings import Settings
from clipo_gql.storage import open_storage
from clipo_gql.storage.migrate import migrate
from clipo_gql.storage.presign import presigned_get
from clipo_gql.storage.s3 import ObjectStore
from clipo_gql.sweeper import sweep
from tests.conftest import Server, run_server
from tests.test_api import upload_id, watch
from tests.test_tasks import run_job
from tests.test_tus import created, patch

S3_ENDPOINT = os.environ.get("CLIPO_S3_ENDPOINT_URL")
needs_s3 = pytest.mark.skipif(
    S3_ENDPOINT is None, reason="no S3 server (scripts/seaweedfs-env builds one with Go)"
)
STORAGES = ["disk", pytest.param("s3", marks=needs_s3)]


def s3_settings(settings: Settings, **more: Any) -> Settings:
    """`settings` on a prefix of the test bucket of its own."""
    return settings.model_copy(
        update={
            "storage_url": f"s3://{os.environ['CLIPO_S3_BUCKET']}/t-{uuid.uuid4().hex[:12]}",
            "s3_endpoint_url": S3_ENDPOINT,
            "s3_region": os.environ.get("CLIPO_S3_REGION", "us-east-1"),
            "aws_access_key_id": os.environ["CLIPO_S3_ACCESS_KEY_ID"],
            "aws_secret_access_key": SecretStr(os.environ["CLIPO_S3_SECRET_ACCESS_KEY"]),
            **more,
        }
    )


@pytest.fixture(params=STORAGES)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def stored_settings(settings: Settings, kind: str) -> Settings:
    return s3_settings(settings) if kind == "s3" else settings


@pytest.fixture
async def app(stored_settings: Settings, redis: Redis) -> AsyncIterator[Server]:
    async for running in run_server(stored_settings):
        yield running


async def keys(settings: Settings, video_id: str = "") -> list[str]:
    store = ObjectStore(settings)
    return sorted(await store.keys(f"videos/{video_id}"))


def local_names(settings: Settings, video_id: str) -> list[str]:
    folder = settings.media_dir / "videos" / video_id
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


async def stored_names(settings: Settings, video_id: str) -> list[str]:
    if settings.storage_url is None:
        return local_names(settings, video_id)
    return [key.removeprefix(f"videos/{video_id}/") for key in await keys(settings, video_id)]


async def fetch(server: Server, path: str, **headers: str) -> httpx.Response:
    """A media route as a browser fetches it: redirects followed (to the store, unsigned by
    us: the presigned URL alone must do)."""
    async with httpx.AsyncClient(follow_redirects=True, timeout=30) as browser:
        return await browser.get(server.url + path, headers=headers)


async def processed(server: Server, clip: Any, **kwargs: Any) -> str:
    video_id = await upload_id(server, clip, **kwargs)
    states = await asyncio.wait_for(watch(server, video_id), 90)
    assert states[-1]["status"] == "DONE", states[-1]
    return video_id


async def test_upload_is_processed_served_and_deleted(app: Server, clips: Any, kind: str):
    settings = app.settings
    video_id = await processed(app, clips.h264_aac, filename="fête.mov")
    names = await stored_names(settings, video_id)
    for name in ("original", "video.mp4", "thumbnail.jpg", "metadata.json", "record.json"):
        assert name in names, names
    assert "hls/master.m3u8" in names
    if kind == "s3":
        # The worker's scratch is gone: the store alone holds the video.
        assert not (settings.media_dir / "videos" / video_id).exists()

    stream = await app.http.get(f"/stream/{video_id}")
    if kind == "s3":
        assert stream.status_code == 302
        assert "X-Amz-Signature=" in stream.headers["location"]
        assert stream.headers["cache-control"] == "no-store"
    whole = await fetch(app, f"/stream/{video_id}")
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.content[4:8] == b"ftyp"
    part = await fetch(app, f"/stream/{video_id}", range="bytes=100-199")
    assert part.status_code == 206
    assert part.content == whole.content[100:200]
    download = await fetch(app, f"/download/{video_id}")
    assert download.headers["content-disposition"].startswith("attachment;")
    assert "f%C3%AAte.mp4" in download.headers["content-disposition"]
    assert download.content == whole.content
    thumbnail = await fetch(app, f"/thumbnails/{video_id}.jpg")
    assert thumbnail.content[:2] == b"\xff\xd8"

    # Playlists are answered by the API itself (their relative URIs must resolve to it);
    # the segments they name are fetched through it.
    master = await app.http.get(f"/hls/{video_id}/master.m3u8")
    assert master.status_code == 200
    assert master.text.startswith("#EXTM3U")
    rung = next(line for line in master.text.splitlines() if line.endswith("index.m3u8"))
    playlist = await app.http.get(f"/hls/{video_id}/{rung}")
    assert playlist.status_code == 200
    segment = next(line for line in playlist.text.splitlines() if line.endswith(".m4s"))
    folder = rung.rsplit("/", 1)[0]
    got = await fetch(app, f"/hls/{video_id}/{folder}/{segment}")
    assert got.status_code == 200
    assert len(got.content) > 0

    deleted = await app.gql("mutation($id: ID!) { deleteVideo(id: $id) }", id=video_id)
    assert deleted["data"]["deleteVideo"] is True
    assert await stored_names(settings, video_id) == []
    assert (await app.http.get(f"/stream/{video_id}")).status_code == 404


@needs_s3
async def test_proxied_when_redirects_are_off(settings: Settings, redis: Redis, clips: Any):
    proxied = s3_settings(settings, storage_redirect=False)
    async for server in run_server(proxied):
        video_id = await processed(server, clips.h264_aac)
        whole = await server.http.get(f"/stream/{video_id}")
        assert whole.status_code == 200
        assert whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["content-length"] == str(len(whole.content))
        size = len(whole.content)
        part = await server.http.get(f"/stream/{video_id}", headers={"range": "bytes=10-19"})
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes 10-19/{size}"
        assert part.content == whole.content[10:20]
        tail = await server.http.get(f"/stream/{video_id}", headers={"range": "bytes=-5"})
        assert tail.content == whole.content[-5:]
        beyond = await server.http.get(
            f"/stream/{video_id}", headers={"range": f"bytes={size + 10}-"}
        )
        assert beyond.status_code == 416
        etag = whole.headers["etag"]
        same = await server.http.get(f"/stream/{video_id}", headers={"if-none-match": etag})
        assert same.status_code == 304
        heads = await server.http.head(f"/download/{video_id}")
        assert heads.status_code == 200
        assert heads.headers["content-length"] == str(size)
        assert heads.headers["content-disposition"].startswith("attachment;")
        assert heads.content == b""


async def test_a_refused_upload_leaves_nothing(app: Server, tmp_path: Any, kind: str):
    text = tmp_path / "notes.mp4"
    text.write_bytes(b"these are not the frames you are looking for\n" * 1000)
    response = await app.upload(text)
    body = response.json()
    assert body["errors"][0]["extensions"]["code"] == "UNSUPPORTED_MEDIA"
    await asyncio.sleep(0)  # the request's clean-up has run before its answer
    if kind == "s3":
        assert await keys(app.settings) == []
    assert not list((app.settings.media_dir / "videos").glob("*"))
    assert not [p for p in (app.settings.media_dir / "incoming").rglob("*.part")]


async def test_resumable_upload_in_pieces(app: Server, clips: Any, kind: str):
    data = clips.h264_aac.read_bytes()
    url = await created(app, len(data))
    video_id = url.rsplit("/", 1)[1]
    third = len(data) // 3
    for start, end in ((0, third), (third, 2 * third), (2 * third, len(data))):
        response = await patch(app, url, start, data[start:end])
        assert response.status_code == 204, response.text
    states = await asyncio.wait_for(watch(app, video_id), 90)
    assert states[-1]["status"] == "DONE"
    names = await stored_names(app.settings, video_id)
    assert "original" in names
    assert not [name for name in names if name.startswith("upload.tus")], names
    if kind == "s3":
        original = await ObjectStore(app.settings).read(f"videos/{video_id}/original")
        assert hashlib.sha256(original).digest() == hashlib.sha256(data).digest()


@needs_s3
async def test_reindex_rebuilds_from_the_store(settings: Settings, redis: Redis, clips: Any):
    in_store = s3_settings(settings)
    async for server in run_server(in_store):
        video_id = await processed(server, clips.h264_aac)
        await Video.get_motor_collection().delete_many({})
        summary = await reindex(open_storage(in_store), None)
        assert (summary.done, summary.leftovers) == (1, [])
        back = await server.gql("query($id: ID!) { video(id: $id) { status } }", id=video_id)
        assert back["data"]["video"]["status"] == "DONE"


@needs_s3
async def test_migrate_copies_a_local_library(settings: Settings, redis: Redis, clips: Any):
    async for server in run_server(settings):
        video_id = await processed(server, clips.h264_aac)
    local = local_names(settings, video_id)
    target = s3_settings(settings)
    assert target.storage_url is not None
    # `target` has settings' MEDIA_DIR, and the store's credentials.
    first = await migrate(target, target.storage_url)
    assert (first.copied, first.skipped, first.mismatched) == (len(local), 0, [])
    again = await migrate(target, target.storage_url)  # resumable: nothing left to copy
    assert (again.copied, again.skipped) == (0, len(local))
    assert await stored_names(target, video_id) == local


def test_presigned_url_matches_awss_example():
    # docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
    url = presigned_get(
        "https://examplebucket.s3.amazonaws.com", "test.txt",
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region="us-east-1", expires_seconds=86400, at=datetime(2013, 5, 24, tzinfo=UTC),
    )  # fmt: skip
    assert url.endswith(
        "X-Amz-SignedHeaders=host&X-Amz-Signature="
        "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )


@needs_s3
async def test_a_crashed_attempts_objects_are_never_served_and_are_replaced(
    settings: Settings, redis: Redis, clips: Any
):
    """What a worker killed mid-publish left in the store: not served before DONE (the
    document decides), and removed by the next attempt before it publishes its own."""
    in_store = s3_settings(settings)
    async for server in run_server(in_store, worker=False):
        video_id = await upload_id(server, clips.h264_aac)
        remote = ObjectStore(in_store)
        for name in ("video.mp4", "thumbnail.jpg", "hls/999p/index.m3u8"):
            await remote.put_bytes(f"videos/{video_id}/{name}", b"half-written")
        assert (await server.http.get(f"/stream/{video_id}")).status_code == 409
        assert (await server.http.get(f"/thumbnails/{video_id}.jpg")).status_code == 409
        video = await Video.get(ObjectId(video_id))
        assert video is not None
        done = await run_job(in_store, video)
        assert done.status.value == "DONE"
        names = await stored_names(in_store, video_id)
        assert "hls/999p/index.m3u8" not in names
        mp4 = await remote.read(f"videos/{video_id}/video.mp4")
        assert mp4[4:8] == b"ftyp"
        assert not (in_store.media_dir / "videos" / video_id).exists()


@needs_s3
async def test_the_sweeper_removes_scratch_left_by_a_killed_worker(
    settings: Settings, redis: Redis
):
    in_store = s3_settings(settings)
    async for _ in run_server(in_store, worker=False):
        storage = open_storage(in_store)
        videos = in_store.media_dir / "videos"
        left, running = videos / str(ObjectId()), videos / str(ObjectId())
        for folder in (left, running):
            folder.mkdir(parents=True)
            (folder / "original").write_bytes(b"x")
        hour_ago = time.time() - 3600
        for path in (left / "original", left):
            os.utime(path, (hour_ago, hour_ago))
        swept = await sweep(storage, grace_seconds=60, job_seconds=600)
        assert swept.scratch == 1
        assert not left.exists()
        assert (running / "original").exists()


async def test_an_upload_cut_mid_body_leaves_nothing(app: Server, clips: Any, kind: str):
    """The client goes away after 20 MiB of a multipart body: no file, no object (an S3
    multipart upload never completed is not an object)."""
    boundary = "cut-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n'
        '{"query": "mutation($f: Upload!) { uploadVideo(file: $f) { id } }",'
        ' "variables": {"f": null}}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="map"\r\n\r\n'
        '{"0": ["variables.f"]}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="0"; filename="big.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode() + clips.h264_aac.read_bytes()[:4096]

    class Cut(Exception):
        pass

    async def body() -> AsyncIterator[bytes]:
        yield head
        for _ in range(20):
            yield b"\0" * (1 << 20)
        raise Cut

    with pytest.raises(Cut):
        await app.http.post(
            "/graphql",
            content=body(),
            headers={
                "content-type": f"multipart/form-data; boundary={boundary}",
                "apollo-require-preflight": "true",
                "content-length": str(len(head) + (100 << 20)),
            },
        )
    for _ in range(100):  # the server notices the disconnect on its next read
        leftovers = await keys(app.settings) if kind == "s3" else []
        partials = [p for p in (app.settings.media_dir / "incoming").rglob("*.part")]
        if not leftovers and not partials:
            break
        await asyncio.sleep(0.05)
    assert (leftovers, partials) == ([], [])
    assert not list((app.settings.media_dir / "videos").glob("*"))
