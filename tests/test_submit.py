"""submitVideo end to end against a local HTTP server (private addresses allowed for it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from clipo_gql.models import Video
from clipo_gql.settings import Settings
from tests.conftest import Server, run_server, video_files
from tests.test_api import VIDEO_FIELDS, watch

SUBMIT = f"mutation($url: String!) {{ submitVideo(url: $url) {{ {VIDEO_FIELDS} }} }}"


def source_app(clip: Path, hits: list[str]) -> Starlette:
    head = clip.read_bytes()[:64]

    async def clip_file(request: Request) -> Response:
        hits.append(request.url.path)
        return FileResponse(clip, media_type="video/mp4")

    async def named(request: Request) -> Response:
        hits.append(request.url.path)
        return FileResponse(
            clip, headers={"content-disposition": 'attachment; filename="holiday.mp4"'}
        )

    async def redirect(request: Request) -> Response:
        hits.append(request.url.path)
        return RedirectResponse("/files/clip.mp4", status_code=302)

    async def endless(request: Request) -> Response:
        hits.append(request.url.path)

        async def body() -> AsyncIterator[bytes]:
            yield head
            while True:
                yield b"\0" * 65536
                await asyncio.sleep(0)  # let the server notice the client hung up

        return StreamingResponse(body(), media_type="video/mp4")

    async def stalls(request: Request) -> Response:
        hits.append(request.url.path)

        async def body() -> AsyncIterator[bytes]:
            yield head
            await asyncio.sleep(30)
            yield b""

        return StreamingResponse(body(), media_type="video/mp4")

    async def missing(request: Request) -> Response:
        hits.append(request.url.path)
        return Response("no such file", status_code=404)

    return Starlette(
        routes=[
            Route("/files/clip.mp4", clip_file),
            Route("/named", named),
            Route("/redirect", redirect),
            Route("/endless.mp4", endless),
            Route("/stalls.mp4", stalls),
            Route("/missing.mp4", missing),
        ]
    )


@pytest.fixture
async def source(clips: Any) -> AsyncIterator[tuple[str, int, list[str]]]:
    """A local file server: its base URL, its port, and the paths it was asked for."""
    hits: list[str] = []
    config = uvicorn.Config(source_app(clips.h264_aac, hits), port=0, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", port, hits
    server.should_exit = True
    server.force_exit = True
    await task


@pytest.fixture
async def api(
    settings: Settings, source: tuple[str, int, list[str]], redis: Any
) -> AsyncIterator[Server]:
    _, port, _ = source
    local = settings.model_copy(
        update={
            "url_fetch_allow_private": True,
            "url_fetch_allowed_ports": str(port),
            "url_fetch_read_timeout_seconds": 1.0,
            "max_upload_bytes": 1_000_000,
        }
    )
    async for server in run_server(local):
        yield server


async def submit(server: Server, url: str) -> dict[str, Any]:
    body = await server.gql(SUBMIT, url=url)
    assert "errors" not in body, body
    video: dict[str, Any] = body["data"]["submitVideo"]
    return video


async def test_submitted_url_is_downloaded_and_processed(
    api: Server, source: tuple[str, int, list[str]], clips: Any
):
    base, _, hits = source
    video = await submit(api, f"{base}/files/clip.mp4")
    assert (video["status"], video["source"]) == ("PENDING", "URL")
    assert video["sourceUrl"] == f"{base}/files/clip.mp4"
    assert video["filename"] == "clip.mp4"
    states = await asyncio.wait_for(watch(api, video["id"]), 60)
    final = states[-1]
    assert final["status"] == "DONE", final
    assert final["sizeBytes"] == clips.h264_aac.stat().st_size
    assert (final["videoCodec"], final["audioCodec"]) == ("h264", "aac")
    progress = [s["progress"] for s in states if s["progress"] is not None]
    assert progress == sorted(progress)
    assert hits == ["/files/clip.mp4"]
    original = api.settings.media_dir / "videos" / video["id"] / "original"
    assert original.read_bytes() == clips.h264_aac.read_bytes()


async def test_redirect_and_content_disposition_name(
    api: Server, source: tuple[str, int, list[str]]
):
    base, _, hits = source
    redirected = await submit(api, f"{base}/redirect")
    named = await submit(api, f"{base}/named")
    assert (await asyncio.wait_for(watch(api, redirected["id"]), 60))[-1]["status"] == "DONE"
    final = (await asyncio.wait_for(watch(api, named["id"]), 60))[-1]
    assert final["status"] == "DONE"
    assert final["filename"] == "holiday.mp4"
    metadata = (await api.http.get(f"/metadata/{named['id']}")).json()
    assert metadata["filename"] == "holiday.mp4"
    assert sorted(hits) == ["/files/clip.mp4", "/named", "/redirect"]


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/endless.mp4", "larger than"),
        ("/stalls.mp4", "timed out"),
        ("/missing.mp4", "404"),
    ],
)
async def test_download_failures_end_failed_with_a_reason(
    api: Server, source: tuple[str, int, list[str]], path: str, reason: str
):
    base, _, _ = source
    video = await submit(api, f"{base}{path}")
    final = (await asyncio.wait_for(watch(api, video["id"]), 30))[-1]
    assert final["status"] == "FAILED"
    assert reason in final["error"], final["error"]
    # Nothing of the download is kept; the record says FAILED (for reindex).
    assert [p.name for p in video_files(api.settings)] == ["record.json"]


async def test_a_download_stops_at_what_the_storage_quota_has_left(
    settings: Settings, source: tuple[str, int, list[str]], clips: Any, redis: Any
):
    """A URL's size is unknown when it is admitted: the worker caps the download instead."""
    base, port, _ = source
    size = clips.h264_aac.stat().st_size
    quota = size + size // 2
    limited = settings.model_copy(
        update={
            "url_fetch_allow_private": True,
            "url_fetch_allowed_ports": str(port),
            "quota_bytes": quota,
        }
    )
    async for api in run_server(limited):
        first = await submit(api, f"{base}/files/clip.mp4")
        assert (await asyncio.wait_for(watch(api, first["id"]), 60))[-1]["status"] == "DONE"
        # Under the quota, so admitted; the file is more than the half clip left.
        second = await submit(api, f"{base}/files/clip.mp4")
        final = (await asyncio.wait_for(watch(api, second["id"]), 60))[-1]
        assert final["status"] == "FAILED"
        assert "your storage quota has left" in final["error"], final["error"]
        assert "delete videos to make room" in final["error"]
        assert not (api.settings.media_dir / "videos" / second["id"] / "original").exists()


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/",
        "http://0x7f000001/",
        "http://example.com:22/",
        "not a url",
    ],
)
async def test_hostile_urls_are_refused_before_any_video_exists(
    server: Server, url: str, source: tuple[str, int, list[str]]
):
    _, _, hits = source
    body = await server.gql(SUBMIT, url=url)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN_URL", body
    assert await Video.find_all().count() == 0
    assert hits == []


async def test_private_addresses_are_refused_unless_allowed(
    settings: Settings, source: tuple[str, int, list[str]], redis: Any
):
    base, port, hits = source
    strict = settings.model_copy(update={"url_fetch_allowed_ports": str(port)})
    async for server in run_server(strict):
        body = await server.gql(SUBMIT, url=f"{base}/files/clip.mp4")
        error = body["errors"][0]
        assert error["extensions"]["code"] == "FORBIDDEN_URL"
        assert "127.0.0.1" in error["message"]
        assert await Video.find_all().count() == 0
    assert hits == []
