"""Case 16: hostile Range headers on a DONE video's stream, and hostile ids on every GET route.

Paths go out over a raw socket: httpx (like browsers) removes `..` segments before sending,
which would test the client's normalisation instead of the server's routing.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from redis.asyncio import Redis

from clipo_gql.settings import Settings
from tests.conftest import Server, run_server
from tests.test_routes import done  # noqa: F401  (the fixture, used by name)

ROOT = Path(__file__).resolve().parents[2]
WAIT = 10.0
# The answer to a hostile Range header must not take noticeably longer than a normal one;
# generous, so a loaded machine does not fail it, yet far below what a quadratic blow-up costs.
PROMPT_SECONDS = 3.0

ROUTES = [
    "/stream/{id}",
    "/download/{id}",
    "/metadata/{id}",
    "/download/{id}/metadata",
    "/thumbnails/{id}.jpg",
]
BAD_IDS = [
    "../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e%2fsettings.py",
    "..%2f..%2fpyproject.toml",
    "%2e%2e%2f%2e%2e%2fpyproject.toml",
    "..%5c..%5cpyproject.toml",
    "%2e%2e",
    "0123456789abcdef01234567",  # well formed, no such video
    "0123456789abcdef012345678",  # 25 characters
    "0123456789abcdef0123456",  # 23 characters
    "0123456789abcdef0123456%00",  # 24 characters once decoded, one of them NUL
    "%00",
    "0123456789abcdef01234567%00",
    "0123456789ABCDEF0123456G",  # 24 characters, not all hex
]
# What a leaked file would start with or contain.
LEAKS = (b"root:", b"[project]", b"class Settings", b"ftyp", b"\xff\xd8\xff")


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


async def raw_get(
    server: Server, target: str, headers: dict[str, str] | None = None
) -> RawResponse:
    """GET `target` exactly as given, on a fresh connection the server closes after answering."""
    url = urlsplit(server.url)
    assert url.hostname is not None
    assert url.port is not None
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    lines = [f"GET {target} HTTP/1.1", f"Host: {url.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = (line.split(":", 1) for line in header_lines)
    response = RawResponse(
        status=int(status_line.split()[1]),
        headers={name.strip().lower(): value.strip() for name, value in fields},
        body=body,
    )
    # Only fixed-length answers are expected here; a chunked one would need decoding.
    assert "transfer-encoding" not in response.headers, response.headers
    return response


async def timed_range(server: Server, video_id: str, header: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await server.http.get(f"/stream/{video_id}", headers={"range": header})
    return response, time.monotonic() - started


# -- ranges ---------------------------------------------------------------------------------


async def test_one_byte_and_suffix_ranges(server: Server, done: tuple[str, bytes]):  # noqa: F811
    video_id, data = done
    size = len(data)
    assert size > 1000, "the clip must be larger than the ranges below"

    first = await server.http.get(f"/stream/{video_id}", headers={"range": "bytes=0-0"})
    assert first.status_code == 206
    assert first.content == data[:1]
    assert first.headers["content-length"] == "1"
    assert first.headers["content-range"] == f"bytes 0-0/{size}"

    tail = await server.http.get(f"/stream/{video_id}", headers={"range": "bytes=-500"})
    assert tail.status_code == 206
    assert tail.content == data[-500:]
    assert tail.headers["content-length"] == "500"
    assert tail.headers["content-range"] == f"bytes {size - 500}-{size - 1}/{size}"

    # A suffix longer than the file is the whole file, as a 206 (RFC 9110 14.1.2).
    longer = await server.http.get(f"/stream/{video_id}", headers={"range": f"bytes=-{size * 9}"})
    assert longer.status_code == 206
    assert longer.content == data
    assert longer.headers["content-range"] == f"bytes 0-{size - 1}/{size}"


async def test_unsatisfiable_ranges_are_416(server: Server, done: tuple[str, bytes]):  # noqa: F811
    video_id, data = done
    size = len(data)
    for header in (
        f"bytes={size}-",
        f"bytes={size}-{size}",
        f"bytes={size + 1000}-{size + 2000}",
        "bytes=" + "9" * 40 + "-",
        "bytes=-0",  # an empty suffix selects nothing
    ):
        response = await server.http.get(f"/stream/{video_id}", headers={"range": header})
        assert response.status_code == 416, header
        assert response.headers["content-range"] == f"bytes */{size}", header
        assert data[:16] not in response.content, header


@pytest.mark.parametrize(
    "header",
    [
        "bytes=5-2",  # last before first: invalid, so ignored (Starlette would answer 400)
        "bytes=abc",
        "items=0-1",
        "bytes=",
        "bytes",
        "bytes=-",
        "bytes=,,,",
        "bytes=a-b,c-d",
        "bytes=0-1-2",
        "bytes=1e3-",
        "bytes=0x10-0x20",
        "bytes=" + "1" * 5000 + "-",  # more digits than int() accepts by default
    ],
)
async def test_malformed_ranges_get_the_whole_file(
    server: Server,
    done: tuple[str, bytes],  # noqa: F811
    header: str,
):
    video_id, data = done
    response = await server.http.get(f"/stream/{video_id}", headers={"range": header})
    assert response.status_code == 200
    assert response.content == data
    assert "content-range" not in response.headers


async def test_many_ranges_are_answered_promptly(server: Server, done: tuple[str, bytes]):  # noqa: F811
    video_id, data = done
    size = len(data)
    assert size > 400

    # Over Starlette's cap of 100 ranges: not parsed at all, the whole file instead.
    many = ",".join(f"{2 * n}-{2 * n}" for n in range(200))
    response, took = await timed_range(server, video_id, f"bytes={many}")
    assert (response.status_code, took < PROMPT_SECONDS) == (200, True), took
    assert response.content == data

    # At the cap: a multipart answer with one part per range, each one byte.
    hundred = ",".join(f"{2 * n}-{2 * n}" for n in range(100))
    response, took = await timed_range(server, video_id, f"bytes={hundred}")
    assert (response.status_code, took < PROMPT_SECONDS) == (206, True), took
    boundary = response.headers["content-type"].removeprefix("multipart/byteranges; boundary=")
    parts = response.content.split(f"--{boundary}".encode())[1:-1]
    assert len(parts) == 100
    for n, part in enumerate(parts):
        part_head, _, part_body = part.partition(b"\r\n\r\n")
        assert f"content-range: bytes {2 * n}-{2 * n}/{size}".encode() in part_head.lower()
        assert part_body.removesuffix(b"\r\n") == data[2 * n : 2 * n + 1]
    # The framing must not amplify a small request into a large answer without bound.
    assert len(response.content) < 100 * 300

    # 100 copies of the whole file overlap: merged into one range, not 100 copies sent.
    response, took = await timed_range(server, video_id, "bytes=" + ",".join(["0-"] * 100))
    assert (response.status_code, took < PROMPT_SECONDS) == (206, True), took
    assert response.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
    assert response.content == data

    health = await server.http.get("/healthz")
    assert health.status_code == 200


# -- ids and traversal ----------------------------------------------------------------------


async def test_raw_paths_reach_the_server_unchanged(server: Server):
    # httpx folds `/x/../healthz` into `/healthz`; the raw request must not.
    assert (await server.http.get("/x/../healthz")).status_code == 200
    assert (await raw_get(server, "/healthz")).status == 200
    refused = await raw_get(server, "/x/../healthz")
    assert (refused.status, refused.body) == (404, b'{"error":"Not Found"}')


@pytest.mark.parametrize("route", ROUTES)
async def test_traversal_and_malformed_ids_are_json_404s(
    server: Server,
    done: tuple[str, bytes],  # noqa: F811
    route: str,
):
    video_id, _ = done
    served = await raw_get(server, route.format(id=video_id))
    assert served.status == 200, "the route itself works"
    for bad in [*BAD_IDS, f"{video_id}%00", f"{video_id}/../{video_id}", f"..%2f{video_id}"]:
        target = route.format(id=bad)
        response = await raw_get(server, target)
        assert response.status == 404, (target, response)
        assert response.headers["content-type"] == "application/json", target
        body = response.body.decode()
        assert re.fullmatch(r'\{"error":"[^"]+"\}', body), (target, body)
        assert not any(leak in response.body for leak in LEAKS), target


async def test_traversal_cannot_reach_past_the_frontend_dir(
    settings: Settings, redis: Redis, tmp_path: Path
):
    # With FRONTEND_DIR set, paths no API route claims fall through to StaticFiles at `/`.
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>hello</h1>")
    (tmp_path / "secret.txt").write_text("not for the web")
    targets = [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/site/../../secret.txt",
        "/stream/../../secret.txt",
        "/thumbnails/..%2f..%2f..%2fsecret.txt",
        "/" + "../" * 12 + "etc/passwd",
        "/" + "%2e%2e%2f" * 12 + "etc%2fpasswd",
        f"/{'../' * 8}{ROOT.relative_to('/')}/pyproject.toml",
        "/index.html%00.txt",
    ]
    servers = run_server(settings.model_copy(update={"frontend_dir": site}))
    server = await anext(servers)
    try:
        assert (await raw_get(server, "/")).body == b"<h1>hello</h1>"
        for target in targets:
            response = await raw_get(server, target)
            assert response.status == 404, (target, response)
            assert response.body == b'{"error":"Not Found"}', (target, response.body)
    finally:
        await anext(servers, None)
