"""The whole path through the real app: multipart upload, worker, subscription, queries, GET."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.conftest import DONE_FILES, Server, incoming_files, output_names, video_files
from tests.wsclient import LEGACY_WS, TRANSPORT_WS, subscribe

VIDEO_FIELDS = """
  id filename source sourceUrl status progress error createdAt updatedAt sizeBytes duration
  durationText width height videoCodec audioCodec frameRate bitRate formatName
  thumbnailUrl streamUrl downloadUrl metadataUrl metadataDownloadUrl
"""
WATCH = f"subscription($id: ID!) {{ videoStatus(id: $id) {{ {VIDEO_FIELDS} }} }}"


async def watch(
    server: Server, video_id: str, protocol: str = TRANSPORT_WS
) -> list[dict[str, Any]]:
    states = []
    async for payload in subscribe(server.ws_url, WATCH, {"id": video_id}, protocol=protocol):
        assert "errors" not in payload or not payload["errors"], payload
        states.append(payload["data"]["videoStatus"])
    return states


async def upload_id(server: Server, clip: Any, **kwargs: Any) -> str:
    response = await server.upload(clip, **kwargs)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    video = body["data"]["uploadVideo"]
    assert video["status"] in ("PENDING", "PROCESSING", "DONE")
    return str(video["id"])


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_upload_is_processed_and_watched_live(server: Server, clips: Any, protocol: str):
    video_id = await upload_id(server, clips.h264_aac, filename="holiday clip.mp4")
    states = await asyncio.wait_for(watch(server, video_id, protocol), 60)

    statuses = [s["status"] for s in states]
    assert statuses[-1] == "DONE", states[-1]
    assert statuses.count("DONE") == 1
    assert set(statuses) <= {"PENDING", "PROCESSING", "DONE"}
    progress = [s["progress"] for s in states if s["progress"] is not None]
    assert progress == sorted(progress), "progress went down"
    final = states[-1]
    assert final["progress"] == 1.0
    assert final["filename"] == "holiday clip.mp4"
    assert final["source"] == "UPLOAD"
    assert final["sizeBytes"] == clips.h264_aac.stat().st_size
    assert abs(final["duration"] - 2.0) < 0.1
    assert final["durationText"] == "00:00:02"
    assert (final["width"], final["height"]) == (320, 240)
    assert (final["videoCodec"], final["audioCodec"]) == ("h264", "aac")
    assert final["frameRate"] == pytest.approx(25.0)
    assert final["bitRate"] > 0
    assert "mp4" in final["formatName"]
    assert final["thumbnailUrl"] == f"{server.url}/thumbnails/{video_id}.jpg"
    assert final["streamUrl"] == f"{server.url}/stream/{video_id}"

    # The thumbnail is a real 320 px JPEG
    thumb = await server.http.get(f"/thumbnails/{video_id}.jpg")
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:3] == b"\xff\xd8\xff"

    # Files on disk: the original, the MP4, the thumbnail, the metadata, the record (for
    # reindex), the storyboard and the ladder; nothing left incoming
    assert output_names(server.settings) == DONE_FILES
    assert incoming_files(server.settings) == []
    metadata = json.loads(
        next(p for p in video_files(server.settings) if p.name == "metadata.json").read_text()
    )
    assert metadata["id"] == video_id
    assert metadata["ffprobe"]["streams"][0]["codec_type"] in ("video", "audio")
    assert "filename" not in metadata["ffprobe"]["format"], "internal path leaked"

    # video(id) agrees with the last event
    body = await server.gql(
        f"query($id: ID!) {{ video(id: $id) {{ {VIDEO_FIELDS} }} }}", id=video_id
    )
    assert body["data"]["video"] == final


async def test_subscribing_after_done_gets_final_state_once(server: Server, clips: Any):
    video_id = await upload_id(server, clips.h264_noaudio)
    await asyncio.wait_for(watch(server, video_id), 60)
    late = await asyncio.wait_for(watch(server, video_id), 10)
    assert len(late) == 1
    assert late[0]["status"] == "DONE"
    assert late[0]["audioCodec"] is None


async def test_webm_is_transcoded_to_browser_playable_mp4(server: Server, clips: Any):
    from clipo_gql.media import Media

    video_id = await upload_id(server, clips.vp9_opus)
    states = await asyncio.wait_for(watch(server, video_id), 90)
    final = states[-1]
    assert final["status"] == "DONE", final
    assert (final["videoCodec"], final["audioCodec"]) == ("vp9", "opus")  # the original
    out = server.settings.media_dir / "videos" / video_id / "video.mp4"
    probe = await Media(server.settings).probe(out)
    assert (probe.video_codec, probe.audio_codec, probe.pix_fmt) == ("h264", "aac", "yuv420p")


async def test_failed_processing_says_why(server: Server, clips: Any):
    video_id = await upload_id(server, clips.truncated)
    states = await asyncio.wait_for(watch(server, video_id), 60)
    final = states[-1]
    assert final["status"] == "FAILED"
    assert final["error"]
    assert "/" not in final["error"], "a path leaked into the error"
    assert final["thumbnailUrl"] is None
    thumb = await server.http.get(f"/thumbnails/{video_id}.jpg")
    assert thumb.status_code == 409
    names = {p.name for p in video_files(server.settings)}
    assert names == {"original", "record.json"}, "partial outputs were left behind"


async def test_unknown_and_malformed_ids(server: Server):
    body = await server.gql('{ video(id: "0123456789abcdef01234567") { id } }')
    assert body["data"]["video"] is None
    body = await server.gql('{ video(id: "../../etc/passwd") { id } }')
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    for path in (
        "/thumbnails/0123456789abcdef01234567.jpg",
        "/thumbnails/nope.jpg",
        "/thumbnails/..%2f..%2fetc%2fpasswd.jpg",
    ):
        response = await server.http.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]
    payloads = [
        p async for p in subscribe(server.ws_url, WATCH, {"id": "0123456789abcdef01234567"})
    ]
    assert payloads[0]["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_websocket_from_a_foreign_origin_is_refused(server: Server):
    import websockets

    with pytest.raises(websockets.InvalidStatus) as refused:
        async for _ in subscribe(
            server.ws_url, WATCH, {"id": "0123456789abcdef01234567"}, origin="https://evil.example"
        ):
            pass
    assert refused.value.response.status_code == 403
    # the API's own origin is welcome
    payloads = [
        p
        async for p in subscribe(
            server.ws_url, WATCH, {"id": "0123456789abcdef01234567"}, origin=server.url
        )
    ]
    assert payloads[0]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
