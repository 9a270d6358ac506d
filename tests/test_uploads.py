from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Message, Scope

from clipo_gql import uploads
from clipo_gql.errors import BadUserInputError, ClipoError, PayloadTooLargeError
from clipo_gql.uploads import (
    HEAD_BYTES,
    MultipartLimits,
    ReceivedFile,
    receive_multipart,
    safe_filename,
    sniff_video,
)

MiB = 1 << 20
BOUNDARY = "clipo-test-boundary-7f3a"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
LIMITS = MultipartLimits(max_file_bytes=64 * MiB)
OPERATIONS = json.dumps(
    {"query": "mutation ($f: Upload!) { upload(file: $f) { id } }", "variables": {"f": None}}
)
MAP = json.dumps({"0": ["variables.f"]})


def part(
    name: str,
    data: bytes,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    disposition: str | None = None,
) -> bytes:
    if disposition is None:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
    headers = f"Content-Disposition: {disposition}\r\n"
    if content_type is not None:
        headers += f"Content-Type: {content_type}\r\n"
    return headers.encode() + b"\r\n" + data


def multipart(*parts: bytes, close: bool = True) -> bytes:
    delimiter = f"--{BOUNDARY}".encode()
    body = b"".join(delimiter + b"\r\n" + p + b"\r\n" for p in parts)
    return body + delimiter + b"--\r\n" if close else body


def video_bytes(size: int, seed: int = 1) -> bytes:
    """Random bytes with near-misses of the delimiter sprinkled in, as a parser stress."""
    data = bytearray(random.Random(seed).randbytes(size))
    near_miss = f"\r\n--{BOUNDARY}"[:-1].encode()
    for offset in range(1000, size - len(near_miss), 300_001):
        data[offset : offset + len(near_miss)] = near_miss
    data[:12] = b"\x00\x00\x00\x20ftypisom"
    return bytes(data)


async def in_chunks(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


def describe(file: ReceivedFile) -> dict[str, Any]:
    return {
        "path": str(file.path),
        "filename": file.filename,
        "content_type": file.content_type,
        "size": file.size,
        "head": file.head.hex(),
    }


def make_app(incoming: Path, limits: MultipartLimits) -> Starlette:
    async def upload(request: Request) -> JSONResponse:
        try:
            fields, files = await receive_multipart(request, incoming, limits)
        except ClipoError as exc:
            body = {"code": exc.code, "message": exc.message}
            return JSONResponse(body, status_code=exc.http_status)
        return JSONResponse(
            {"fields": fields, "files": {name: describe(f) for name, f in files.items()}}
        )

    return Starlette(routes=[Route("/upload", upload, methods=["POST"])])


async def post(
    incoming: Path,
    content: bytes | AsyncIterator[bytes],
    limits: MultipartLimits = LIMITS,
    content_type: str = CONTENT_TYPE,
) -> httpx.Response:
    transport = httpx.ASGITransport(make_app(incoming, limits))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/upload", content=content, headers={"content-type": content_type})


def contents(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def sha256_and_remove(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 * MiB):
            digest.update(block)
    size = path.stat().st_size
    path.unlink()
    return digest.hexdigest(), size


def leftovers(incoming: Path) -> list[str]:
    return sorted(p.name for p in incoming.iterdir()) if incoming.exists() else []


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    return tmp_path / "media" / "incoming"


def request_on(messages: Iterator[Message] | None, receive: Any = None) -> Request:
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/upload",
        "query_string": b"",
        "headers": [(b"content-type", CONTENT_TYPE.encode())],
    }
    if receive is None:
        assert messages is not None

        async def receive() -> Message:
            return next(messages)

    return Request(scope, receive)


# -- parsing --------------------------------------------------------------------------------


async def test_fields_and_one_file(incoming: Path) -> None:
    data = video_bytes(3 * MiB + 12345)
    body = multipart(
        part("operations", OPERATIONS.encode()),
        part("map", MAP.encode()),
        part("0", data, filename="clip.mp4", content_type="video/mp4"),
    )
    response = await post(incoming, in_chunks(body, 100_000))

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["fields"] == {"operations": OPERATIONS, "map": MAP}
    file = result["files"]["0"]
    path = Path(file["path"])
    assert path.parent == incoming
    assert re.fullmatch(r"[0-9a-f]{32}\.part", path.name)
    assert contents(path) == data
    assert file["size"] == len(data)
    assert bytes.fromhex(file["head"]) == data[:HEAD_BYTES]
    assert file["filename"] == "clip.mp4"
    assert file["content_type"] == "video/mp4"
    assert leftovers(incoming) == [path.name]


async def test_tiny_chunks_split_everywhere(incoming: Path) -> None:
    data = video_bytes(700_001, seed=5)
    body = multipart(part("operations", OPERATIONS.encode()), part("0", data, filename="a.mp4"))
    response = await post(incoming, in_chunks(body, 37))

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["fields"] == {"operations": OPERATIONS}
    assert contents(result["files"]["0"]["path"]) == data
    assert bytes.fromhex(result["files"]["0"]["head"]) == data[:HEAD_BYTES]


async def test_two_files_and_an_empty_one_from_httpx_encoder(incoming: Path) -> None:
    first, second = video_bytes(2 * MiB, seed=2), video_bytes(5000, seed=3)
    transport = httpx.ASGITransport(make_app(incoming, LIMITS))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(
            "/upload",
            data={"operations": OPERATIONS, "map": MAP},
            files=[
                ("0", ("a.mp4", first, "video/mp4")),
                ("1", ("b.webm", second, "video/webm")),
                ("2", ("empty.mp4", b"", "application/octet-stream")),
            ],
        )

    assert response.status_code == 200, response.text
    files = response.json()["files"]
    assert contents(files["0"]["path"]) == first
    assert contents(files["1"]["path"]) == second
    assert contents(files["2"]["path"]) == b""
    assert [files[k]["filename"] for k in "012"] == ["a.mp4", "b.webm", "empty.mp4"]
    assert files["2"]["size"] == 0
    assert len(leftovers(incoming)) == 3


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ('form-data; name="0"; filename="../../etc/passwd"', "../../etc/passwd"),
        ('form-data; name="0"; filename="my \\"best\\" clip.mp4"', 'my "best" clip.mp4'),
        (
            'form-data; name="0"; filename="fallback.mp4"; filename*=UTF-8\'\'%C3%A9t%C3%A9.mp4',
            "été.mp4",
        ),
        ("form-data; name=\"0\"; filename*=utf-8''na%C3%AFve%20clip.mov", "naïve clip.mov"),
        (
            'form-data; name="0"; filename="x; filename*=UTF-8\'\'evil.exe"',
            "x; filename*=UTF-8''evil.exe",
        ),
        ('form-data; name="0"; filename=""', ""),
    ],
)
async def test_client_filenames(incoming: Path, disposition: str, expected: str) -> None:
    body = multipart(part("0", b"\x1a\x45\xdf\xa3data", disposition=disposition))
    response = await post(incoming, body)

    assert response.status_code == 200, response.text
    assert response.json()["files"]["0"]["filename"] == expected


async def test_raw_utf8_filename_as_browsers_send_it(incoming: Path) -> None:
    head = 'Content-Disposition: form-data; name="0"; filename="vidéo 🎬.mp4"\r\n\r\n'
    body = multipart(head.encode("utf-8") + b"data")
    response = await post(incoming, body)

    assert response.status_code == 200, response.text
    file = response.json()["files"]["0"]
    assert file["filename"] == "vidéo 🎬.mp4"
    assert safe_filename(file["filename"]) == "vidéo 🎬.mp4"


# -- limits ----------------------------------------------------------------------------------


async def test_file_over_the_cap_is_refused_and_removed(incoming: Path) -> None:
    limits = MultipartLimits(max_file_bytes=2 * MiB)
    body = multipart(
        part("operations", OPERATIONS.encode()),
        part("0", video_bytes(5 * MiB), filename="big.mp4"),
    )
    seen_on_disk: list[str] = []

    async def watching() -> AsyncIterator[bytes]:
        async for chunk in in_chunks(body):
            seen_on_disk.extend(leftovers(incoming))
            yield chunk

    response = await post(incoming, watching(), limits)

    assert response.status_code == 413
    assert response.json() == {
        "code": "PAYLOAD_TOO_LARGE",
        "message": "The file is larger than the 2 MiB upload limit",
    }
    assert seen_on_disk, "the file should have reached the disk before the cap was hit"
    assert leftovers(incoming) == []


async def test_file_exactly_at_the_cap_is_accepted(incoming: Path) -> None:
    data = video_bytes(2 * MiB)
    limits = MultipartLimits(max_file_bytes=len(data))
    response = await post(incoming, multipart(part("0", data, filename="a.mp4")), limits)

    assert response.status_code == 200, response.text
    assert contents(response.json()["files"]["0"]["path"]) == data


async def test_too_many_files(incoming: Path) -> None:
    limits = MultipartLimits(max_file_bytes=MiB, max_files=2)
    body = multipart(
        *(part(str(i), video_bytes(100_000, seed=i), filename=f"{i}.mp4") for i in range(3))
    )
    response = await post(incoming, in_chunks(body, 50_000), limits)

    assert response.status_code == 400
    assert response.json()["code"] == "BAD_USER_INPUT"
    assert "Too many files" in response.json()["message"]
    assert leftovers(incoming) == []


async def test_too_many_fields(incoming: Path) -> None:
    limits = MultipartLimits(max_file_bytes=MiB, max_fields=3)
    body = multipart(
        part("0", b"video", filename="a.mp4"),
        *(part(f"f{i}", b"x") for i in range(4)),
    )
    response = await post(incoming, in_chunks(body, 10), limits)

    assert response.status_code == 400
    assert "Too many form fields" in response.json()["message"]
    assert leftovers(incoming) == []


async def test_oversized_field(incoming: Path) -> None:
    limits = MultipartLimits(max_file_bytes=MiB, max_field_bytes=1024)
    body = multipart(part("operations", b"{" + b" " * 2000 + b"}"))
    response = await post(incoming, body, limits)

    assert response.status_code == 400
    assert response.json()["message"] == "The form field 'operations' is larger than 1 KiB"


@pytest.mark.parametrize(
    "headers",
    [
        # one long line (python-multipart's per-line limit) ...
        'Content-Disposition: form-data; name="0"; filename="' + "a" * 9000 + '"\r\n',
        # ... and many lines that only together exceed the per-part limit
        'Content-Disposition: form-data; name="0"; filename="a.mp4"\r\n'
        + "".join(f"X-Pad-{i}: {'p' * 3000}\r\n" for i in range(3)),
    ],
)
async def test_oversized_part_headers(incoming: Path, headers: str) -> None:
    limits = MultipartLimits(max_file_bytes=MiB, max_header_bytes=8192)
    body = multipart(headers.encode() + b"\r\nvideo")
    response = await post(incoming, body, limits)

    assert response.status_code == 400
    assert response.json()["message"] == "The headers of a multipart part are larger than 8 KiB"
    assert leftovers(incoming) == []


# -- malformed requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        ("multipart/form-data", "multipart boundary"),
        ("multipart/form-data; boundary=", "multipart boundary"),
        ('multipart/form-data; boundary="bad\tboundary"', "multipart boundary"),
        (f"multipart/form-data; boundary={'b' * 300}", "multipart boundary"),
        ("application/json", "multipart boundary"),
    ],
)
async def test_unusable_content_type(incoming: Path, content_type: str, message: str) -> None:
    body = multipart(part("0", b"video", filename="a.mp4"))
    response = await post(incoming, body, content_type=content_type)

    assert response.status_code == 400
    assert message in response.json()["message"]
    assert leftovers(incoming) == []


FILE_PART = part("0", video_bytes(3 * MiB), filename="a.mp4")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"this is not multipart at all", "Malformed multipart body"),
        (b"", "ended before its closing boundary"),
        (multipart(FILE_PART, close=False), "ended before its closing boundary"),
        (multipart(FILE_PART)[:-500], "ended before its closing boundary"),
        (multipart(FILE_PART, part("0", b"again", filename="b.mp4")), "appears twice"),
        (multipart(FILE_PART, part("0", b"field")), "appears twice"),
        (multipart(FILE_PART, part("x", b"", disposition="form-data")), "has no name"),
        (multipart(FILE_PART, b"Content-Type: text/plain\r\n\r\nx"), "no Content-Disposition"),
        (multipart(FILE_PART, part("x", b"", disposition='attachment; name="x"')), "form-data"),
        (multipart(FILE_PART, part("operations", b"\xff\xfe")), "not valid UTF-8"),
        (multipart(FILE_PART) + b"epilogue" * 100_000, "after the multipart body"),
        (multipart(FILE_PART, b"Bad Header: x\r\n\r\n"), "Malformed multipart body"),
    ],
    ids=[
        "garbage",
        "empty",
        "no-closing-delimiter",
        "truncated",
        "duplicate-file",
        "duplicate-field",
        "no-name",
        "no-disposition",
        "not-form-data",
        "bad-utf8",
        "endless-epilogue",
        "bad-header-name",
    ],
)
async def test_malformed_body_leaves_nothing(incoming: Path, body: bytes, message: str) -> None:
    response = await post(incoming, in_chunks(body, 300_000))

    assert response.status_code == 400, response.text
    assert response.json()["code"] == "BAD_USER_INPUT"
    assert message in response.json()["message"]
    assert leftovers(incoming) == []


# -- disconnect and cancellation ---------------------------------------------------------------


def file_upload_messages(file_mib: int) -> list[Message]:
    start = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="0"; filename="a.mp4"\r\n\r\n'
    chunks = [start.encode()] + [video_bytes(MiB, seed=i) for i in range(file_mib)]
    return [{"type": "http.request", "body": c, "more_body": True} for c in chunks]


async def test_client_disconnect_removes_files(incoming: Path) -> None:
    messages = file_upload_messages(3)
    on_disk_at_disconnect: list[str] = []

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        on_disk_at_disconnect.extend(leftovers(incoming))
        return {"type": "http.disconnect"}

    with pytest.raises(ClientDisconnect):
        await receive_multipart(request_on(None, receive), incoming, LIMITS)

    assert on_disk_at_disconnect, "the disconnect should come after data reached the disk"
    assert leftovers(incoming) == []


async def test_cancellation_removes_files(incoming: Path) -> None:
    messages = file_upload_messages(3)
    stalled = asyncio.Event()

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        stalled.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    task = asyncio.create_task(receive_multipart(request_on(None, receive), incoming, LIMITS))
    await asyncio.wait_for(stalled.wait(), 10)
    assert len(leftovers(incoming)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leftovers(incoming) == []


async def test_cancellation_while_the_file_is_being_created(
    incoming: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creating, release = threading.Event(), threading.Event()
    create = uploads._create

    def slow_create(path: Path) -> Any:
        creating.set()
        release.wait(10)
        return create(path)

    monkeypatch.setattr(uploads, "_create", slow_create)
    messages = file_upload_messages(2)

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    task = asyncio.create_task(receive_multipart(request_on(None, receive), incoming, LIMITS))
    await asyncio.to_thread(creating.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    for _ in range(200):  # the executor thread creates the file, then the loop removes it
        await asyncio.sleep(0.01)
        if not leftovers(incoming):
            break
    assert leftovers(incoming) == []


async def test_errors_are_the_documented_types(incoming: Path) -> None:
    messages = iter([{"type": "http.request", "body": b"garbage", "more_body": False}])
    with pytest.raises(BadUserInputError):
        await receive_multipart(request_on(messages), incoming, LIMITS)
    big = multipart(part("0", b"x" * 2000, filename="a.mp4"))
    messages = iter([{"type": "http.request", "body": big, "more_body": False}])
    with pytest.raises(PayloadTooLargeError):
        await receive_multipart(request_on(messages), incoming, MultipartLimits(1000))


# -- real server -------------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_64_mib_upload_over_real_uvicorn(incoming: Path) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(make_app(incoming, LIMITS), lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    digest = hashlib.sha256()
    size = 64 * MiB

    async def body() -> AsyncIterator[bytes]:
        yield b"\r\n".join(
            [
                f"--{BOUNDARY}".encode(),
                part("operations", OPERATIONS.encode()),
                f"--{BOUNDARY}".encode(),
                part("map", MAP.encode()),
                f"--{BOUNDARY}".encode(),
                b'Content-Disposition: form-data; name="0"; filename="big.mp4"\r\n\r\n',
            ]
        )
        rng = random.Random(64)
        for _ in range(size // MiB):
            chunk = rng.randbytes(MiB)
            digest.update(chunk)
            yield chunk
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(
                f"http://127.0.0.1:{port}/upload",
                content=body(),
                headers={"content-type": CONTENT_TYPE},
            )
    finally:
        server.should_exit = True
        await serving
        sock.close()

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["fields"] == {"operations": OPERATIONS, "map": MAP}
    received, on_disk = sha256_and_remove(Path(result["files"]["0"]["path"]))
    assert result["files"]["0"]["size"] == size == on_disk
    assert received == digest.hexdigest()


# -- sniffing and names --------------------------------------------------------------------------


def ts_packets(offset: int, packet: int, count: int) -> bytes:
    data = bytearray(b"\x00" * (packet * count))
    for i in range(count):
        data[offset + i * packet] = 0x47
    return bytes(data)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", True),
        (b"\x00\x00\x00\x14ftypqt  ", True),
        (b"\x00\x00\x01\x00moov\x00\x00", True),
        (b"\x00\x00\x00\x08wide\x00\x00", True),
        (b"\x00\x00\x00\x08mdat", True),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01", True),
        (b"RIFF\x24\x00\x10\x00AVI LIST", True),
        (b"RIFF\x24\x00\x10\x00WAVEfmt ", False),
        (ts_packets(0, 188, 2)[:64], True),
        (ts_packets(0, 188, 2), True),
        (b"\x00\x00\x00\x00" + ts_packets(0, 192, 2), True),  # M2TS / AVCHD
        (b"\x47" + b"\x00" * 187 + b"\x00" * 10, False),  # sync byte missing at 188
        (b"FLV\x01\x05\x00\x00\x00\x09", True),
        (b"OggS\x00\x02", True),
        (b"\x06\x0e\x2b\x34\x02\x05\x01\x01\x0d\x01\x02\x01", True),
        (b"\x06\x0e\x2b\x34\x01\x01\x01\x01", False),
        (b"#EXTM3U\n#EXT-X-VERSION:3\n", False),  # HLS playlist
        (b"ffconcat version 1.0\n", False),
        (b"\x89PNG\r\n\x1a\n", False),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", False),
        (b"ID3\x04\x00", False),
        (b"%PDF-1.7", False),
        (b"PK\x03\x04", False),
        (b"", False),
        (b"\x00\x00", False),
    ],
)
def test_sniff_video(head: bytes, expected: bool) -> None:
    assert sniff_video(head) is expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("clip.mp4", "clip.mp4"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\Videos\\holiday.mov", "holiday.mov"),
        ("a/b\\c/d.mkv", "d.mkv"),
        ("dir/", "video"),
        ("", "video"),
        (".", "video"),
        ("..", "video"),
        ("../..", "video"),
        ("  spaced.mp4  ", "spaced.mp4"),
        ("line\nbreak\r\x00.mp4", "linebreak.mp4"),
        ("evil\u202egpj.mp4", "evilgpj.mp4"),  # right-to-left override
        ("zero\u200bwidth.mp4", "zerowidth.mp4"),
        ("e\u0301te\u0301.mp4", "été.mp4"),  # NFD -> NFC
        ('my "best" clip.mp4', 'my "best" clip.mp4'),
        ("\x00\x01", "video"),
        (".hidden.mp4", ".hidden.mp4"),
        ("a" * 300 + ".mp4", "a" * 196 + ".mp4"),
        ("a" * 300, "a" * 200),
        ("a" * 150 + "." + "b" * 100, ("a" * 150 + "." + "b" * 100)[:200]),
        ("é" * 250 + ".webm", "é" * 195 + ".webm"),
    ],
)
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected
    assert len(expected) <= 200


def test_safe_filename_default() -> None:
    assert safe_filename("/", default="upload") == "upload"
