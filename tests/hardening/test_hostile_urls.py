"""Cases 10 and 11: hostile URLs are refused without a connection; hostile servers are cut off.

The table of hostile URLs of the URL issue is in tests/test_submit.py; these are the ones the
hardening issue adds, plus servers that redirect to the metadata address or lie about size.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from clipo_gql.models import Video
from clipo_gql.settings import Settings
from tests.clips import Clips
from tests.conftest import Server, incoming_files, run_server, video_files
from tests.test_api import watch
from tests.test_submit import SUBMIT

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A loopback port that records every connection: proof that nothing connected."""
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(200))
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], seen
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize(
    "url",
    [
        "http://100.64.0.1/clip.mp4",  # carrier-grade NAT
        "http://[::ffff:169.254.169.254]/latest/meta-data",  # metadata, IPv4-mapped
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",  # metadata, NAT64
        "http://[::ffff:127.0.0.1]:{port}/clip.mp4",  # loopback, IPv4-mapped
        "http://127.1:{port}/clip.mp4",  # loopback, short form
        "http://2130706433:{port}/clip.mp4",  # loopback, one decimal number
        "http://localhost:{port}/clip.mp4",  # a name that resolves to loopback
        "http://[::1]:{port}/clip.mp4",
        "http://0.0.0.0:{port}/clip.mp4",
        "http://169.254.169.254.nip.io/clip.mp4",  # a name for the metadata address
    ],
)
async def test_hostile_urls_are_forbidden_without_connecting(
    settings: Settings, redis: Redis, listener: tuple[int, list[bytes]], url: str
):
    port, seen = listener
    # The listener's port is allowed, so only the address rules stand between the URL and it.
    strict = settings.model_copy(update={"url_fetch_allowed_ports": f"80,{port}"})
    async for server in run_server(strict):
        body = await server.gql(SUBMIT, url=url.format(port=port))
        error = body["errors"][0]
        assert error["extensions"]["code"] == "FORBIDDEN_URL", body
        assert error["message"]
        assert await Video.find_all().count() == 0
    assert seen == []


@pytest.fixture
async def liar(clips: Clips) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A raw HTTP server: `/short.mp4` promises 1 MB and sends 100 KB, `/to-metadata.mp4`
    redirects to the cloud metadata address."""
    head = clips.h264_aac.read_bytes()[:100_000]
    requests: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        requests.append(request.split(b"\r\n", 1)[0])
        if b" /short.mp4 " in request:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: 1000000\r\n\r\n"
                + head
            )
        else:
            writer.write(
                b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n"
                b"Location: http://169.254.169.254/latest/meta-data/clip.mp4\r\n\r\n"
            )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", requests
    server.close()
    await server.wait_closed()


@pytest.fixture
async def api(settings: Settings, redis: Redis, liar: tuple[str, list[bytes]]) -> Any:
    port = liar[0].rsplit(":", 1)[1]
    # Port 80 too, so the redirect to the metadata address is refused for its address.
    local = settings.model_copy(
        update={"url_fetch_allow_private": True, "url_fetch_allowed_ports": f"80,{port}"}
    )
    async for server in run_server(local):
        yield server


async def submitted_and_finished(server: Server, url: str) -> dict[str, Any]:
    body = await server.gql(SUBMIT, url=url)
    assert "errors" not in body, body
    states = await asyncio.wait_for(watch(server, body["data"]["submitVideo"]["id"]), 30)
    return states[-1]


async def test_redirect_to_the_metadata_address_is_refused(
    api: Server, liar: tuple[str, list[bytes]]
):
    base, requests = liar
    final = await submitted_and_finished(api, f"{base}/to-metadata.mp4")
    assert final["status"] == "FAILED", final
    assert "169.254.169.254" in final["error"], final["error"]
    assert requests == [b"GET /to-metadata.mp4 HTTP/1.1"]
    # Nothing of the download is kept; the record says FAILED (for reindex).
    assert [p.name for p in video_files(api.settings)] == ["record.json"]
    assert incoming_files(api.settings) == []


async def test_a_lying_content_length_fails_and_leaves_no_partial_file(
    api: Server, liar: tuple[str, list[bytes]]
):
    base, _ = liar
    final = await submitted_and_finished(api, f"{base}/short.mp4")
    assert final["status"] == "FAILED", final
    assert final["error"]
    # Nothing of the download is kept; the record says FAILED (for reindex).
    assert [p.name for p in video_files(api.settings)] == ["record.json"]
    assert incoming_files(api.settings) == []
