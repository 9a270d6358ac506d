"""Cases 7, 8, 12: oversized and abandoned uploads, abusive requests, and the same work twice."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from clipo_gql.models import Video
from clipo_gql.settings import Settings
from tests.clips import Clips
from tests.conftest import DONE_FILES, Server, incoming_files, output_names, run_server, video_files
from tests.test_api import upload_id, watch

pytestmark = pytest.mark.timeout(120)

OPERATIONS = json.dumps(
    {"query": "mutation($f: Upload!) { uploadVideo(file: $f) { id } }", "variables": {"f": None}}
)


async def test_upload_over_the_cap_leaves_nothing(
    settings: Settings, redis: Any, clips: Clips, tmp_path: Path
):
    small_cap = settings.model_copy(update={"max_upload_bytes": 100_000})
    big = tmp_path / "big.mp4"
    big.write_bytes(clips.h264_aac.read_bytes() + bytes(200_000))
    async for server in run_server(small_cap):
        response = await server.upload(big)
        assert response.status_code == 413
        assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
        assert await Video.find_all().count() == 0
        assert incoming_files(small_cap) == []
        assert video_files(small_cap) == []


async def test_client_vanishing_mid_upload_leaves_nothing(server: Server, clips: Clips):
    url = urlsplit(server.url)
    assert url.hostname
    assert url.port
    boundary = "clipoboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n{OPERATIONS}'
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="map"\r\n\r\n'
        '{"0": ["variables.f"]}'
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="0"; filename="a.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    declared = len(head) + 10_000_000
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        # Writes go to disk in 1 MiB pieces: send a few, then vanish before the end.
        writer.write(
            (
                f"POST /graphql HTTP/1.1\r\nHost: {url.netloc}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {declared}\r\napollo-require-preflight: true\r\n\r\n"
            ).encode()
            + head
            + clips.h264_aac.read_bytes()
            + bytes(3 * 1024 * 1024)
        )
        await writer.drain()
        for _ in range(200):
            if incoming_files(server.settings):
                break
            await asyncio.sleep(0.01)
        assert incoming_files(server.settings), "the upload never reached the disk"
    finally:
        # Closed in every case: an open connection would keep the server from shutting down.
        writer.close()
    for _ in range(200):
        if not incoming_files(server.settings):
            break
        await asyncio.sleep(0.02)
    assert incoming_files(server.settings) == []
    assert await Video.find_all().count() == 0
    assert (await server.http.get("/healthz")).status_code == 200


async def test_two_thousand_parts_are_refused(server: Server):
    files = {f"p{n}": (f"{n}.mp4", b"x", "video/mp4") for n in range(2000)}
    response = await server.http.post(
        "/graphql",
        data={"operations": OPERATIONS, "map": '{"p0": ["variables.f"]}'},
        files=files,
        headers={"apollo-require-preflight": "true"},
    )
    assert response.status_code in (400, 413), response.text
    assert response.json()["errors"][0]["extensions"]["code"] in (
        "BAD_USER_INPUT",
        "PAYLOAD_TOO_LARGE",
    )
    assert incoming_files(server.settings) == []
    assert await Video.find_all().count() == 0


async def test_multipart_without_the_preflight_header_is_refused(server: Server, clips: Clips):
    response = await server.http.post(
        "/graphql",
        data={"operations": OPERATIONS, "map": '{"0": ["variables.f"]}'},
        files={"0": ("a.mp4", clips.h264_aac.read_bytes(), "video/mp4")},
    )
    assert response.status_code == 400
    assert await Video.find_all().count() == 0
    assert incoming_files(server.settings) == []


@pytest.mark.parametrize(
    ("query", "refusal"),
    [
        ("{ __typename }", None),
        ("query { " + "videos { edges { node { " * 25 + "id" + " } } }" * 25 + " }", ("depth",)),
        # 1,000 aliases are also 3,000 tokens: whichever limit trips first refuses it.
        ("{ " + " ".join(f"a{n}: __typename" for n in range(1000)) + " }", ("aliases", "tokens")),
        ("{ " + "a " * 100_000 + "}", ("tokens",)),
    ],
    ids=["sane", "depth-50", "1000-aliases", "100k-tokens"],
)
async def test_abusive_queries_are_refused(
    server: Server, query: str, refusal: tuple[str, ...] | None
):
    response = await server.http.post("/graphql", json={"query": query})
    body = response.json()
    if refusal is None:
        assert body == {"data": {"__typename": "Query"}}
        return
    assert body.get("data") is None, body
    message = body["errors"][0]["message"].lower()
    assert any(word in message for word in refusal), message
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert (await server.http.get("/healthz")).status_code == 200


async def test_same_file_uploaded_twice_at_once_is_two_videos_each_processed_once(
    server: Server, clips: Clips
):
    first, second = await asyncio.gather(
        upload_id(server, clips.h264_aac), upload_id(server, clips.h264_aac)
    )
    assert first != second
    for video_id in (first, second):
        states = await asyncio.wait_for(watch(server, video_id), 60)
        assert states[-1]["status"] == "DONE"
        stored = await Video.get(video_id)
        assert stored is not None
        assert stored.attempts == 1, "processed more than once"
    assert output_names(server.settings) == sorted(DONE_FILES * 2)
