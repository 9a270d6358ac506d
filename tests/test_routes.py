"""GET routes for a processed video: stream with ranges, downloads, metadata."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from bson import ObjectId
from starlette.applications import Starlette
from starlette.routing import Route

from clipo_gql.models import Video, VideoSource
from clipo_gql.responses import (
    CHUNK_BYTES,
    MediaFileResponse,
    accel_uri,
    content_disposition,
    download_name,
)
from clipo_gql.settings import Settings
from tests.conftest import Server, run_server
from tests.test_api import upload_id, watch


@pytest.fixture
async def done(server: Server, clips: Any) -> tuple[str, bytes]:
    """A processed video's id and the bytes of its MP4."""
    video_id = await upload_id(server, clips.h264_aac, filename="fête finale.mov")
    states = await asyncio.wait_for(watch(server, video_id), 60)
    assert states[-1]["status"] == "DONE"
    mp4 = server.settings.media_dir / "videos" / video_id / "video.mp4"
    return video_id, mp4.read_bytes()


async def test_stream_whole_file(server: Server, done: tuple[str, bytes]):
    video_id, data = done
    response = await server.http.get(f"/stream/{video_id}")
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["etag"]
    assert response.headers["last-modified"]
    assert "content-disposition" not in response.headers


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),  # first byte
        ("bytes=-1", -1, -1),  # last byte
        ("bytes=-500", -500, -1),  # suffix
        ("bytes=100-", 100, -1),  # open
        ("bytes=10-19", 10, 19),
    ],
)
async def test_stream_single_ranges(
    server: Server, done: tuple[str, bytes], header: str, start: int, end: int
):
    video_id, data = done
    size = len(data)
    first, last = start % size, end % size
    response = await server.http.get(f"/stream/{video_id}", headers={"range": header})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {first}-{last}/{size}"
    assert response.content == data[first : last + 1]


async def test_range_past_the_end_is_416(server: Server, done: tuple[str, bytes]):
    video_id, data = done
    response = await server.http.get(
        f"/stream/{video_id}", headers={"range": f"bytes={len(data)}-"}
    )
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(data)}"


@pytest.mark.parametrize("header", ["bytes=5-2", "garbage", "items=0-1", "bytes=x-y"])
async def test_malformed_range_gets_the_whole_file(
    server: Server, done: tuple[str, bytes], header: str
):
    video_id, data = done
    response = await server.http.get(f"/stream/{video_id}", headers={"range": header})
    assert response.status_code == 200
    assert response.content == data


async def test_multiple_ranges_answer_multipart_byteranges(server: Server, done: tuple[str, bytes]):
    video_id, data = done
    response = await server.http.get(f"/stream/{video_id}", headers={"range": "bytes=0-9,100-109"})
    assert response.status_code == 206
    assert response.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert data[0:10] in response.content
    assert data[100:110] in response.content


async def test_if_range_and_conditional_requests(server: Server, done: tuple[str, bytes]):
    video_id, data = done
    etag = (await server.http.head(f"/stream/{video_id}")).headers["etag"]
    fresh = await server.http.get(
        f"/stream/{video_id}", headers={"range": "bytes=0-3", "if-range": etag}
    )
    assert (fresh.status_code, fresh.content) == (206, data[:4])
    stale = await server.http.get(
        f"/stream/{video_id}", headers={"range": "bytes=0-3", "if-range": '"stale"'}
    )
    assert (stale.status_code, stale.content) == (200, data)
    cached = await server.http.get(f"/stream/{video_id}", headers={"if-none-match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag
    changed = await server.http.get(f"/stream/{video_id}", headers={"if-none-match": '"old"'})
    assert changed.status_code == 200


async def test_head_sends_headers_only(server: Server, done: tuple[str, bytes]):
    video_id, data = done
    response = await server.http.head(f"/stream/{video_id}")
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(data))
    assert response.content == b""


async def test_download_is_an_attachment_named_after_the_original(
    server: Server, done: tuple[str, bytes]
):
    video_id, data = done
    response = await server.http.get(f"/download/{video_id}")
    assert response.status_code == 200
    assert response.content == data
    disposition = response.headers["content-disposition"]
    assert disposition == (
        "attachment; filename=\"f_te finale.mp4\"; filename*=UTF-8''f%C3%AAte%20finale.mp4"
    )


async def test_metadata_inline_and_as_attachment(server: Server, done: tuple[str, bytes]):
    video_id, _ = done
    inline = await server.http.get(f"/metadata/{video_id}")
    assert inline.status_code == 200
    assert inline.headers["content-type"] == "application/json"
    assert "content-disposition" not in inline.headers
    document = inline.json()
    assert document["id"] == video_id
    assert document["filename"] == "fête finale.mov"
    assert document["videoCodec"] == "h264"
    assert {"streams", "format"} <= set(document["ffprobe"])
    attachment = await server.http.get(f"/download/{video_id}/metadata")
    assert attachment.status_code == 200
    assert json.loads(attachment.content) == document
    assert attachment.headers["content-disposition"].startswith(
        'attachment; filename="f_te finale.metadata.json"'
    )


@pytest.mark.parametrize(
    "path",
    ["/stream/{id}", "/download/{id}", "/metadata/{id}", "/download/{id}/metadata",
     "/thumbnails/{id}.jpg"],
)  # fmt: skip
async def test_unknown_malformed_and_unfinished_videos(server: Server, path: str):
    pending = Video(filename="p.mp4", source=VideoSource.UPLOAD)
    await pending.insert()
    for raw, status in (
        ("0123456789abcdef01234567", 404),
        ("not-an-id", 404),
        ("..%2F..%2Fetc%2Fpasswd", 404),
        ("%2e%2e", 404),
        (str(pending.id), 409),
    ):
        response = await server.http.get(path.format(id=raw))
        assert response.status_code == status, (path, raw)
        assert response.json()["error"], (path, raw)


async def test_a_missing_file_is_404_not_500(server: Server, done: tuple[str, bytes]):
    video_id, _ = done
    assert (await server.http.get(f"/stream/{video_id}")).status_code == 200  # remembered DONE
    os.remove(server.settings.media_dir / "videos" / video_id / "video.mp4")
    response = await server.http.get(f"/stream/{video_id}")
    assert response.status_code == 404
    assert response.json() == {"error": "The file of this video is missing"}


async def test_a_video_deleted_by_another_process_is_gone_here_too(
    server: Server, done: tuple[str, bytes]
):
    # This process remembers the video as DONE; another one deletes it (document, then files).
    video_id, _ = done
    assert (await server.http.get(f"/stream/{video_id}")).status_code == 200
    await Video.get_motor_collection().delete_one({"_id": ObjectId(video_id)})
    shutil.rmtree(server.settings.media_dir / "videos" / video_id)
    for path in (f"/stream/{video_id}", f"/thumbnails/{video_id}.jpg"):
        response = await server.http.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"error": "No video with this id"}


def media_response(path: Path) -> MediaFileResponse:
    return MediaFileResponse(path, path.stat(), media_type="video/mp4")


async def get(response: MediaFileResponse, headers: dict[str, str] | None = None) -> httpx.Response:
    app = Starlette(routes=[Route("/file", lambda _: response)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/file", headers=headers)


async def test_files_and_ranges_larger_than_one_read(tmp_path: Path):
    data = os.urandom(CHUNK_BYTES * 5 // 2)
    path = tmp_path / "big.mp4"
    path.write_bytes(data)
    response = media_response(path)
    whole = await get(response)
    assert whole.status_code == 200
    assert whole.content == data
    start, end = 1000, 1000 + CHUNK_BYTES * 3 // 2
    part = await get(response, {"range": f"bytes={start}-{end - 1}"})
    assert part.status_code == 206
    assert part.content == data[start:end]
    small = await get(response, {"range": "bytes=5-9"})
    assert small.content == data[5:10]


async def test_a_file_deleted_after_its_stat_is_404_not_500(tmp_path: Path):
    path = tmp_path / "gone.mp4"
    path.write_bytes(b"x" * 100)
    response = media_response(path)
    path.unlink()  # between the route's stat and the read
    for headers in ({}, {"range": "bytes=0-9"}):
        got = await get(response, headers)
        assert got.status_code == 404
        assert got.json() == {"error": "The file of this video is missing"}


def test_download_names_are_safe_for_any_original_name():
    assert content_disposition("attachment", download_name('a "b"\\c.mov', ".mp4")) == (
        "attachment; filename=\"c.mp4\"; filename*=UTF-8''c.mp4"
    )
    assert content_disposition("attachment", download_name('say "hi" ünïcode.mkv', ".mp4")) == (
        'attachment; filename="say _hi_ _n_code.mp4"; '
        "filename*=UTF-8''say%20%22hi%22%20%C3%BCn%C3%AFcode.mp4"
    )
    assert download_name("", ".metadata.json") == "video.metadata.json"


async def test_frontend_dir_is_served_at_the_root_and_api_routes_win(
    settings: Any, redis: Any, tmp_path: Any
):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>hello</h1>")
    async for running in run_server(settings.model_copy(update={"frontend_dir": site})):
        index = await running.http.get("/")
        assert index.status_code == 200
        assert index.text == "<h1>hello</h1>"
        assert (await running.http.get("/healthz")).status_code == 200
        # Traversal is tried with raw request lines (httpx folds `..` away) in
        # tests/hardening/test_ranges_and_ids.py.
        response = await running.http.get("/missing.js")
        assert response.status_code == 404
        assert response.json() == {"error": "Not Found"}


async def test_without_frontend_dir_the_root_is_a_json_404(server: Server):
    response = await server.http.get("/")
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}


async def test_with_an_accel_prefix_the_api_names_the_file_and_sends_no_byte(
    settings: Settings, redis: Any, clips: Any
):
    """ACCEL_REDIRECT_PREFIX: the checks as always, then nginx is told which file to send
    (tests/test_nginx.py runs it behind nginx itself)."""
    accel = settings.model_copy(update={"accel_redirect_prefix": "/_media/"})
    async for server in run_server(accel):
        video_id = await upload_id(server, clips.h264_aac, filename="fête finale.mov")
        states = await asyncio.wait_for(watch(server, video_id), 60)
        assert states[-1]["status"] == "DONE"
        for method in ("GET", "HEAD"):
            answer = await server.http.request(
                method, f"/download/{video_id}", headers={"Range": "bytes=0-9"}
            )
            assert (answer.status_code, answer.content) == (200, b"")
            assert answer.headers["x-accel-redirect"] == f"/_media/videos/{video_id}/video.mp4"
            assert answer.headers["content-type"] == "video/mp4"
            assert answer.headers["content-disposition"] == content_disposition(
                "attachment", "fête finale.mp4"
            )
            assert "content-range" not in answer.headers  # nginx's to answer
            # Auth off: the URL alone earned it, so nginx may keep the answer (routes.py).
            assert answer.headers["x-accel-expires"] == "1"
        thumbnail = await server.http.get(f"/thumbnails/{video_id}.jpg")
        assert thumbnail.headers["x-accel-redirect"] == f"/_media/videos/{video_id}/thumbnail.jpg"
        # The checks still come first: nothing is redirected for what the API refuses.
        for path in ("/stream/6b0269d6ac40a7b6d6c5976d", "/stream/nope", f"/hls/{video_id}/x"):
            refused = await server.http.get(path)
            assert refused.status_code == 404, path
            assert "x-accel-redirect" not in refused.headers, path
            assert "x-accel-expires" not in refused.headers, path


def test_accel_uris_are_percent_encoded_paths_under_the_media_dir():
    # nginx decodes the URI it is redirected to: `%`, `?`, `#` and spaces must be escaped.
    root = Path("/data/media")
    named = accel_uri("/_media/", root, root / "a b" / "x%y?#.mp4")
    assert named == "/_media/a%20b/x%25y%3F%23.mp4"
    for escape in ("/data/media/../etc/passwd", "/etc/passwd", "/data/media2/x", "/data/media"):
        with pytest.raises(ValueError, match="not a path under MEDIA_DIR"):
            accel_uri("/_media/", root, Path(escape))


@pytest.mark.parametrize(
    ("value", "expected"), [("", None), ("  ", None), ("/_media/", "/_media/"), ("/a/b/", "/a/b/")]
)
def test_the_accel_prefix_setting(value: str, expected: str | None):
    assert Settings(accel_redirect_prefix=value).accel_redirect_prefix == expected


@pytest.mark.parametrize("value", ["_media/", "/_media", "/_media/?x=/"])
def test_an_accel_prefix_nginx_could_not_match_is_refused(value: str):
    with pytest.raises(ValueError, match="must be a path that starts and ends with /"):
        Settings(accel_redirect_prefix=value)
