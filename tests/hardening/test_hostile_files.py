"""Cases 1-6: hostile and broken files, uploaded through the API like any client would.

Each ends in a clear refusal (`UNSUPPORTED_MEDIA`, no document, no file) or `FAILED` with a
reason and no outputs, within the time limits, and the service keeps answering.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from clipo_gql.errors import UnsupportedMediaError
from clipo_gql.media import Media
from clipo_gql.models import Video
from clipo_gql.settings import Settings
from tests.clips import Clips, ffmpeg, make_clip
from tests.conftest import Server, incoming_files, run_server, video_files
from tests.test_api import watch
from tests.test_media import assert_gone, fake_tool, written_pids

pytestmark = pytest.mark.timeout(120)

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + b"\0" * 64
PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


async def upload(server: Server, path: Path) -> dict[str, Any]:
    response = await server.upload(path, filename="clip.mp4")
    body: dict[str, Any] = response.json()
    return body


async def final_state(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in body, body
    states = await asyncio.wait_for(watch(server, body["data"]["uploadVideo"]["id"]), 60)
    return states[-1]


def outputs(settings: Settings) -> list[str]:
    """Names of every file in the media folder except the kept originals and records."""
    return sorted(
        p.name for p in video_files(settings) if p.name not in ("original", "record.json")
    )


async def assert_refused_and_nothing_kept(server: Server, body: dict[str, Any]) -> None:
    assert body["errors"][0]["extensions"]["code"] == "UNSUPPORTED_MEDIA", body
    assert body["errors"][0]["message"]
    assert await Video.find_all().count() == 0
    assert incoming_files(server.settings) == []
    assert video_files(server.settings) == []
    assert (await server.http.get("/healthz")).status_code == 200


@pytest.mark.parametrize(
    "content",
    [b"", os.urandom(4096), b"just some text, not a video\n" * 20, PNG, PDF],
    ids=["zero-bytes", "random", "text", "png", "pdf"],
)
async def test_non_videos_named_mp4_are_refused(server: Server, tmp_path: Path, content: bytes):
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    await assert_refused_and_nothing_kept(server, await upload(server, path))


@pytest.mark.parametrize("name", ["hls_as_mp4", "concat_as_mp4"])
async def test_playlists_and_concat_scripts_are_refused(server: Server, clips: Clips, name: str):
    await assert_refused_and_nothing_kept(server, await upload(server, getattr(clips, name)))


async def test_a_playlist_never_makes_ffprobe_fetch_what_it_names(tmp_path: Path):
    # Uploads sniff the first bytes, so a playlist is refused before ffprobe sees it; this is
    # the layer behind that: probing a playlist must not make any request. (ffmpeg 5.1 also
    # keeps a local playlist to local segments by itself, so this passes even without our
    # demuxer and protocol allow-lists: they guard against the ffmpeg that does not.)
    connections = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    listener = await asyncio.start_server(count, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    path = tmp_path / "playlist.mp4"
    path.write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
        f"#EXTINF:10.0,\nhttp://127.0.0.1:{port}/segment.ts\n#EXT-X-ENDLIST\n"
    )
    try:
        with pytest.raises(UnsupportedMediaError):
            await Media(Settings()).probe(path)
    finally:
        listener.close()
        await listener.wait_closed()
    assert connections == 0


async def test_avi_carrying_an_hls_playlist_never_reads_the_local_file(
    server: Server, clips: Clips, tmp_path: Path
):
    # The CVE-2017-9993 shape: a file that passes as AVI but holds an HLS playlist naming a
    # local file. Whatever ffmpeg makes of it, the file's bytes must appear in no output.
    marker = uuid.uuid4().hex.encode()
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"SECRET " + marker + b"\n")
    playlist = (
        f"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\nfile://{secret}\n"
        f"#EXTINF:10.0,\n{secret}\n#EXT-X-ENDLIST\n"
    ).encode()
    avi = tmp_path / "base.avi"
    ffmpeg("-i", str(clips.h264_aac), "-c", "copy", "-t", "1", str(avi))
    hostile = tmp_path / "hostile.avi"
    data = avi.read_bytes()
    # Once in a JUNK chunk inside the header and once after the index.
    junk = b"JUNK" + len(playlist).to_bytes(4, "little") + playlist
    hostile.write_bytes(data[:12] + junk + data[12:] + playlist)

    body = await upload(server, hostile)
    if "errors" in body:
        assert body["errors"][0]["extensions"]["code"] == "UNSUPPORTED_MEDIA"
    else:
        final = await final_state(server, body)
        assert final["status"] in ("DONE", "FAILED"), final
    for path in video_files(server.settings):
        if path.name != "original":
            assert marker not in path.read_bytes(), f"{path.name} holds the local file's bytes"


@pytest.mark.parametrize("kind", ["truncated", "moov-renamed"])
async def test_mp4_without_its_index_fails_with_a_reason(
    server: Server, clips: Clips, tmp_path: Path, kind: str
):
    if kind == "truncated":
        path = clips.truncated
    else:
        # The moov box blanked out (a mere rename is found again by ffmpeg: "moov in free").
        data = clips.h264_aac.read_bytes()
        at = data.index(b"moov") - 4
        size = int.from_bytes(data[at : at + 4], "big")
        path = tmp_path / "no-moov.mp4"
        path.write_bytes(
            data[:at] + data[at : at + 4] + b"free" + bytes(size - 8) + data[at + size :]
        )
    final = await final_state(server, await upload(server, path))
    assert final["status"] == "FAILED", final
    assert final["error"]
    assert "/" not in final["error"], "the reason must not leak paths"
    assert outputs(server.settings) == []


def out_of_bounds(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.mkv"
    if kind == "9000x9000":
        ffmpeg("-f", "lavfi", "-i", "color=size=9000x9000:duration=0.04:rate=25",
               "-c:v", "mjpeg", "-frames:v", "1", str(path))  # fmt: skip
    elif kind == "20-streams":
        small = make_clip(folder / "small.mp4", seconds=0.2, size="64x48", acodec=None)
        maps = [arg for _ in range(20) for arg in ("-map", "0:v")]
        ffmpeg("-i", str(small), *maps, "-c", "copy", str(path))
    else:
        make_clip(path, seconds=0.1, size="64x48", fps=1000, acodec=None)
    return path


@pytest.mark.parametrize("kind", ["9000x9000", "20-streams", "1000-fps"])
async def test_out_of_bounds_media_is_refused_before_decoding(
    server: Server, tmp_path: Path, kind: str
):
    final = await final_state(server, await upload(server, out_of_bounds(kind, tmp_path)))
    assert final["status"] == "FAILED", final
    assert final["error"]
    # Refused at the probe: no thumbnail was cut, nothing was encoded.
    assert outputs(server.settings) == []


async def test_audio_only_is_failed_by_policy(server: Server, clips: Clips):
    final = await final_state(server, await upload(server, clips.audio_only))
    assert final["status"] == "FAILED", final
    assert "video stream" in final["error"], final["error"]
    assert outputs(server.settings) == []


async def test_hanging_ffmpeg_is_killed_at_the_limit(
    settings: Settings, redis: Redis, clips: Clips, tmp_path: Path
):
    # A fake ffmpeg that never ends, with a child of its own. The thumbnail's and the MP4's
    # run side by side (the limit leaves the MP4's ample time to start): when the thumbnail
    # times out, both, and both children, must be killed.
    fake, pids = fake_tool(tmp_path)
    hanging = settings.model_copy(
        update={"ffmpeg_binary": str(fake), "thumbnail_timeout_seconds": 3.0}
    )
    async for server in run_server(hanging):
        final = await final_state(server, await upload(server, clips.h264_aac))
        assert final["status"] == "FAILED", final
        assert "time" in final["error"].lower(), final["error"]
        started = written_pids(pids)
        assert started is not None
        assert len(started) == 4  # (shell, child) of the thumbnail's, and of the MP4's
        await assert_gone(started)
        assert outputs(server.settings) == []
        assert (await server.http.get("/healthz")).status_code == 200
