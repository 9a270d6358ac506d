"""deploy/nginx.conf in front of the API with ACCEL_REDIRECT_PREFIX set, as compose.yaml runs
them: a real nginx (rendered for loopback by bench/nginx.py, the same file otherwise) and the
API on a real port, driven by real HTTP and websocket clients.

The API decides (credentials, signed links, 404/409), nginx sends the bytes: what a client gets
must be the file itself, with Range, HEAD and conditional requests, and a refused request must
never reach a byte of it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import m3u8  # type: ignore[import-untyped]
import pytest
import websockets
from redis.asyncio import Redis
from websockets.typing import Subprotocol

from bench.nginx import ACCEL_PREFIX, MISSING, NGINX, deployed
from clipo_gql.auth.media_links import Kind, MediaLinks
from clipo_gql.settings import Settings
from tests.clips import Clips
from tests.conftest import Server, run_server
from tests.hardening.test_access import ALICE, BOB, auth_settings, bearer, upload
from tests.test_tus import OCTETS, TUS, metadata
from tests.wsclient import TRANSPORT_WS

pytestmark = [
    pytest.mark.skipif(not Path(NGINX).is_file(), reason=MISSING),
    pytest.mark.timeout(120),
]

PLAYER = "http://player.example"
FIELDS = (
    "id status streamUrl downloadUrl metadataUrl metadataDownloadUrl thumbnailUrl hlsUrl "
    "storyboardUrl"
)
WATCH = f"subscription($id: ID!) {{ videoStatus(id: $id) {{ {FIELDS} }} }}"
VIDEO = f"query($id: ID!) {{ video(id: $id) {{ {FIELDS} }} }}"


@dataclass
class Front(Server):
    access_log: Path = Path()

    def answers(self, path: str) -> list[str]:
        """How the `answers` server answered each request for `path` so far, in order: MISS
        (asked the API), HIT (a kept answer), BYPASS (a credential in a header), ..."""
        lines = self.access_log.read_text().splitlines()
        return [line.rsplit("answer=", 1)[1] for line in lines if f" {path} HTTP/" in line]


@pytest.fixture
async def front(settings: Settings, redis: Redis, tmp_path: Path) -> AsyncIterator[Front]:
    """The API (auth on, X-Accel-Redirect) behind nginx; `Server.url` is nginx's."""
    configured = auth_settings(
        settings, accel_redirect_prefix=ACCEL_PREFIX, hls_segment_seconds=1,
        allowed_origins=PLAYER,
    )  # fmt: skip
    async for api in run_server(configured):
        upstream = urlsplit(api.url).netloc
        with deployed(tmp_path, [upstream], configured.media_dir) as proxy:
            async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as http:
                log = proxy.prefix / "access.log"
                yield Front(url=proxy.url, settings=configured, http=http, access_log=log)


def nginx_etag(path: Path) -> str:
    """The ETag nginx makes for a file it sends (the API's would be an MD5): proof that the
    bytes came from nginx, not through the API."""
    stat = path.stat()
    return f'"{int(stat.st_mtime):x}-{stat.st_size:x}"'


async def watch(server: Server, video_id: str, who: dict[str, str]) -> list[dict[str, Any]]:
    """Every state of the subscription, over nginx's websocket upgrade (graphql-transport-ws),
    from a browser page of the API's own origin."""
    states = []
    async with websockets.connect(
        server.ws_url, subprotocols=[Subprotocol(TRANSPORT_WS)],
        additional_headers={"Origin": server.url},
    ) as ws:  # fmt: skip
        await ws.send(json.dumps({"type": "connection_init", "payload": who}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        payload = {"query": WATCH, "variables": {"id": video_id}}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        while (message := json.loads(await ws.recv()))["type"] != "complete":
            assert message["type"] == "next", message
            states.append(message["payload"]["data"]["videoStatus"])
    return states


async def done(server: Server, clip: Path, who: dict[str, str]) -> dict[str, Any]:
    """A clip uploaded through nginx (multipart) and followed over its websocket to DONE."""
    response = await upload(server, clip, who)
    assert response.status_code == 200, response.text
    video_id = response.json()["data"]["uploadVideo"]["id"]
    states = await asyncio.wait_for(watch(server, video_id, who), 60)
    assert states[-1]["status"] == "DONE", states[-1]
    return states[-1]


def media(server: Server, video_id: str, *parts: str) -> Path:
    return server.settings.media_dir.joinpath("videos", video_id, *parts)


async def test_every_file_route_sends_the_file_through_nginx(front: Server, clips: Clips):
    who = bearer(front, ALICE)
    video = await done(front, clips.h264_aac, {"authorization": who["Authorization"]})
    video_id = video["id"]
    assert video["streamUrl"].startswith(f"{front.url}/stream/{video_id}?token=")
    http = front.http
    files = {
        "streamUrl": ("video.mp4", "video/mp4", None),
        "downloadUrl": ("video.mp4", "video/mp4", "h264_aac.mp4"),
        "metadataUrl": ("metadata.json", "application/json", None),
        "metadataDownloadUrl": ("metadata.json", "application/json", "h264_aac.metadata.json"),
        "thumbnailUrl": ("thumbnail.jpg", "image/jpeg", None),
    }
    for field, (name, media_type, attachment) in files.items():
        path = media(front, video_id, name)
        for method in ("GET", "HEAD"):
            answer = await http.request(method, video[field])  # the signed link, no header
            assert answer.status_code == 200, (field, method, answer.text)
            assert answer.headers["content-type"] == media_type, field
            assert answer.headers["content-length"] == str(path.stat().st_size), field
            assert answer.headers["etag"] == nginx_etag(path), field
            assert answer.headers["cache-control"] == "private, no-cache", field
            assert answer.headers["accept-ranges"] == "bytes", field
            assert "last-modified" in answer.headers
            assert "x-accel-redirect" not in answer.headers
            assert answer.content == (path.read_bytes() if method == "GET" else b""), field
        disposition = answer.headers.get("content-disposition")
        if attachment is None:
            assert disposition is None, field
        else:
            assert disposition == (
                f"attachment; filename=\"{attachment}\"; filename*=UTF-8''{attachment}"
            )

    # Range, as a player seeks: nginx answers it from the file.
    data = media(front, video_id, "video.mp4").read_bytes()
    last = len(data) - 1
    for asked, start, end in (("100-1099", 100, 1099), (f"{last - 9}-", last - 9, last),
                              ("-500", last - 499, last)):  # fmt: skip
        ranged = await http.get(video["streamUrl"], headers={"Range": f"bytes={asked}"})
        assert ranged.status_code == 206, asked
        assert ranged.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
        assert ranged.content == data[start : end + 1], asked
    unsatisfiable = await http.get(video["streamUrl"], headers={"Range": f"bytes={len(data)}-"})
    assert unsatisfiable.status_code == 416
    etag = nginx_etag(media(front, video_id, "video.mp4"))
    cached = await http.get(video["streamUrl"], headers={"If-None-Match": etag})
    assert (cached.status_code, cached.content) == (304, b"")
    # A player on another origin (ALLOWED_ORIGINS) reads the CORS answer the API made.
    cors = await http.get(video["streamUrl"], headers={"Origin": PLAYER, "Range": "bytes=0-9"})
    assert cors.headers["access-control-allow-origin"] == PLAYER
    assert "content-range" in cors.headers["access-control-expose-headers"]
    assert re.fullmatch(r"[0-9a-f]{32}", cors.headers["x-request-id"])  # nginx's $request_id

    # HLS: playlists rewritten per request (the token in every URI) come from the API, the
    # segments and init segments from nginx.
    master = await http.get(video["hlsUrl"])
    assert master.status_code == 200
    assert "token=" in master.text
    assert master.headers["etag"] != nginx_etag(media(front, video_id, "hls", "master.m3u8"))
    variant = m3u8.loads(master.text).playlists[0].uri
    playlist = m3u8.loads((await http.get(f"/hls/{video_id}/{variant}")).text)
    rung = Path(urlsplit(variant).path).parent.name
    uris = [playlist.segment_map[0].uri, playlist.segments[0].uri, playlist.segments[-1].uri]
    for uri in uris:
        name = urlsplit(uri).path
        answer = await http.get(f"/hls/{video_id}/{rung}/{uri}")
        path = media(front, video_id, "hls", rung, name)
        assert answer.status_code == 200, uri
        assert answer.content == path.read_bytes(), uri
        assert answer.headers["etag"] == nginx_etag(path)
        assert answer.headers["content-type"] in ("video/mp4", "video/iso.segment")
    segment = f"/hls/{video_id}/{rung}/{uris[1]}"
    ranged = await http.get(segment, headers={"Range": "bytes=0-99"})
    assert (ranged.status_code, len(ranged.content)) == (206, 100)
    sprite = await http.get(f"/storyboard/{video_id}/storyboard.jpg", headers=who)
    assert sprite.content == media(front, video_id, "storyboard.jpg").read_bytes()
    assert sprite.headers["content-type"] == "image/jpeg"
    vtt = await http.get(video["storyboardUrl"])
    assert vtt.headers["content-type"].startswith("text/vtt")
    assert "token=" in vtt.text


async def test_a_refused_request_is_answered_by_the_api_and_never_gets_a_byte(
    front: Front, clips: Clips
):
    who = bearer(front, ALICE)
    video = await done(front, clips.h264_aac, {"authorization": who["Authorization"]})
    video_id = video["id"]
    data = media(front, video_id, "video.mp4").read_bytes()
    stream = f"/stream/{video_id}"
    refusals = {
        "no credential": (stream, {}, 401),
        "a forged link": (f"{stream}?token=x.y.z", {}, 403),
        "another file's link": (video["thumbnailUrl"].replace(f"/thumbnails/{video_id}.jpg",
                                                               stream), {}, 403),
        "another owner": (stream, bearer(front, BOB), 404),
        "an unknown id": ("/stream/6b0269d6ac40a7b6d6c5976d", who, 404),
        "a malformed id": ("/stream/6b0269d6ac40a7b6d6c5976%25", who, 404),
        "an HLS path the ladder never makes": (f"/hls/{video_id}/original", who, 404),
    }  # fmt: skip
    for why, (url, headers, status) in refusals.items():
        for method in ("GET", "HEAD"):
            answer = await front.http.request(
                method, url, headers={**headers, "Range": "bytes=0-99"}
            )
            assert answer.status_code == status, (why, method, answer.text)
            assert "content-range" not in answer.headers, why
            if method == "GET":
                assert answer.headers["content-type"] == "application/json", why
                assert "error" in answer.json(), why
                assert data[:100] not in answer.content, why
        # A refusal is never kept: asked again, the API decides again.
        assert "HIT" not in front.answers(url), why
    # The internal location exists only for the API's X-Accel-Redirect answers; a path above
    # the root is nginx's own 400.
    for path, status in (
        (f"{ACCEL_PREFIX}videos/{video_id}/video.mp4", 404), (f"{ACCEL_PREFIX}videos/", 404),
        (f"/stream/..%2F..%2F{ACCEL_PREFIX}videos/{video_id}/video.mp4", 400),
    ):  # fmt: skip
        direct = await front.http.get(path, headers=who)
        assert direct.status_code == status, path
        assert data[:100] not in direct.content


async def test_a_resumable_upload_goes_through_nginx(front: Server, clips: Clips):
    who = bearer(front, ALICE)
    data = clips.h264_aac.read_bytes()
    created = await front.http.post(
        "/uploads",
        headers={**TUS, **who, "Upload-Length": str(len(data)),
                 "Upload-Metadata": metadata(filename="clip.mp4", filetype="video/mp4")},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    assert location.startswith(f"{front.url}/uploads/"), location  # nginx's Host, passed on
    half = len(data) // 2
    for offset, chunk in ((0, data[:half]), (half, data[half:])):
        sent = await front.http.patch(
            location, content=chunk, headers={**TUS, **OCTETS, **who, "Upload-Offset": str(offset)}
        )
        assert sent.status_code == 204, sent.text
        assert sent.headers["Upload-Offset"] == str(offset + len(chunk))
    video_id = created.headers["Clipo-Video-Id"]
    states = await asyncio.wait_for(
        watch(front, video_id, {"authorization": who["Authorization"]}), 60
    )
    assert states[-1]["status"] == "DONE"
    assert media(front, video_id, "original").read_bytes() == data


async def test_a_foreign_page_cannot_open_a_websocket_through_nginx(front: Server):
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(
            front.ws_url, subprotocols=[Subprotocol(TRANSPORT_WS)],
            additional_headers={"Origin": "http://evil.example"},
        ):  # fmt: skip
            pass


async def test_nginx_keeps_an_allowed_answer_for_a_signed_link_only(front: Front, clips: Clips):
    """A signed link's X-Accel-Redirect answer is kept a second (deploy/nginx.conf's `answers`
    server): the same URL again is sent without asking the API. A credential in a header, a
    refusal, another Origin and a link about to expire are always asked again."""
    who = bearer(front, ALICE)
    video = await done(front, clips.h264_aac, {"authorization": who["Authorization"]})
    video_id = video["id"]
    data = media(front, video_id, "video.mp4").read_bytes()
    signed = urlsplit(video["streamUrl"])
    link = f"{signed.path}?{signed.query}"
    ids = set()
    for asked in ("0-99", "1000-1999", "0-99"):
        answer = await front.http.get(link, headers={"Range": f"bytes={asked}"})
        start, end = map(int, asked.split("-"))
        assert (answer.status_code, answer.content) == (206, data[start : end + 1])
        assert "x-accel-expires" not in answer.headers
        ids.add(answer.headers["x-request-id"])
    assert len(ids) == 3  # each answer has its own request id, a kept one too
    assert front.answers(link) == ["MISS", "HIT", "HIT"]

    # The CORS headers are the API's for that Origin: a kept answer is one per Origin.
    for _ in range(2):
        cors = await front.http.get(link, headers={"Origin": PLAYER, "Range": "bytes=0-9"})
        assert cors.headers["access-control-allow-origin"] == PLAYER
    assert front.answers(link)[3:] == ["MISS", "HIT"]

    # An Authorization header: its answer is the API's each time, never kept nor reused.
    stream = f"/stream/{video_id}"
    for _ in range(2):
        answer = await front.http.get(stream, headers={**who, "Range": "bytes=0-9"})
        assert answer.content == data[:10]
        refused = await front.http.get(stream)
        assert refused.status_code == 401  # the kept answers were not this URL's
    assert front.answers(stream) == ["BYPASS", "MISS", "BYPASS", "MISS"]

    # A link with less than two seconds left is not shared: nginx may keep an answer up to
    # 2 s (whole seconds), and a kept answer never outlives its link.
    links = MediaLinks(front.settings)
    ending = f"{stream}?token={links.token(video_id, Kind.STREAM, int(time.time()) + 2)}"
    for _ in range(2):
        answer = await front.http.get(ending, headers={"Range": "bytes=0-9"})
        if answer.status_code == 403:  # the link expired meanwhile (a slow machine)
            break
        assert answer.content == data[:10]
    assert "HIT" not in front.answers(ending)

    # Deleted within its second: nginx finds no file and answers 404, never a byte.
    await front.http.get(link, headers={"Range": "bytes=0-9"})
    delete = {"query": "mutation($id: ID!) { deleteVideo(id: $id) }", "variables": {"id": video_id}}
    deleted = await front.http.post("/graphql", headers=who, json=delete)
    assert deleted.json() == {"data": {"deleteVideo": True}}
    gone = await front.http.get(link, headers={"Range": "bytes=0-9"})
    assert gone.status_code == 404
    assert data[:10] not in gone.content
