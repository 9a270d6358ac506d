"""retryVideo and deleteVideo through the API."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from clipo_gql.models import Video
from clipo_gql.settings import Settings
from tests.conftest import DONE_FILES, Server, output_names, run_server, video_files
from tests.test_api import upload_id, watch
from tests.test_media import alive
from tests.wsclient import subscribe

RETRY = "mutation($id: ID!) { retryVideo(id: $id) { id status error progress } }"
DELETE = "mutation($id: ID!) { deleteVideo(id: $id) }"


async def test_retry_turns_a_failed_video_into_done_once_the_cause_is_gone(
    server: Server, clips: Any
):
    video_id = await upload_id(server, clips.truncated)
    assert (await asyncio.wait_for(watch(server, video_id), 60))[-1]["status"] == "FAILED"
    # The cause goes away (here: the file is repaired in place).
    original = server.settings.media_dir / "videos" / video_id / "original"
    original.write_bytes(clips.h264_aac.read_bytes())

    body = await server.gql(RETRY, id=video_id)
    assert body["data"]["retryVideo"] == {
        "id": video_id, "status": "PENDING", "error": None, "progress": None,
    }  # fmt: skip
    final = (await asyncio.wait_for(watch(server, video_id), 60))[-1]
    assert final["status"] == "DONE"
    assert final["error"] is None
    assert output_names(server.settings) == DONE_FILES


async def test_retry_refuses_what_is_not_failed(server: Server, clips: Any):
    video_id = await upload_id(server, clips.h264_aac)
    await asyncio.wait_for(watch(server, video_id), 60)
    error = (await server.gql(RETRY, id=video_id))["errors"][0]
    assert error["extensions"]["code"] == "INVALID_STATE"
    assert "DONE" in error["message"]
    missing = (await server.gql(RETRY, id="0123456789abcdef01234567"))["errors"][0]
    assert missing["extensions"]["code"] == "NOT_FOUND"
    malformed = (await server.gql(RETRY, id="nope"))["errors"][0]
    assert malformed["extensions"]["code"] == "BAD_USER_INPUT"


async def test_delete_removes_the_document_and_every_file(server: Server, clips: Any):
    video_id = await upload_id(server, clips.h264_aac)
    await asyncio.wait_for(watch(server, video_id), 60)
    assert (await server.gql(DELETE, id=video_id)) == {"data": {"deleteVideo": True}}
    assert await Video.find_all().count() == 0
    assert video_files(server.settings) == []
    assert not (server.settings.media_dir / "videos" / video_id).exists()
    assert (await server.http.get(f"/stream/{video_id}")).status_code == 404
    # Deleting again, or something that never existed, is not an error
    assert (await server.gql(DELETE, id=video_id)) == {"data": {"deleteVideo": False}}


def hanging_ffmpeg(folder: Path) -> tuple[Path, Path]:
    pid_file = folder / "ffmpeg.pid"
    script = folder / "ffmpeg"
    script.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
    script.chmod(0o755)
    return script, pid_file


async def test_delete_while_processing_stops_the_job_and_leaves_nothing(
    settings: Settings, clips: Any, tmp_path: Path, redis
):
    script, pid_file = hanging_ffmpeg(tmp_path)
    slow = settings.model_copy(update={"ffmpeg_binary": str(script)})
    async for server in run_server(slow):
        await delete_mid_job(server, clips, pid_file)


async def delete_mid_job(server: Server, clips: Any, pid_file: Path) -> None:
    video_id = await upload_id(server, clips.h264_aac)
    states: list[str] = []

    async def follow() -> None:
        query = "subscription($id: ID!) { videoStatus(id: $id) { status } }"
        async for payload in subscribe(server.ws_url, query, {"id": video_id}):
            states.append(payload["data"]["videoStatus"]["status"])

    watcher = asyncio.create_task(follow())
    async with asyncio.timeout(20):
        while not await asyncio.to_thread(pid_file.exists):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    ffmpeg = int(await asyncio.to_thread(pid_file.read_text))

    assert (await server.gql(DELETE, id=video_id)) == {"data": {"deleteVideo": True}}
    await asyncio.wait_for(watcher, 10)  # the subscription completes
    assert states[-1] == "PROCESSING"
    async with asyncio.timeout(10):
        while alive(ffmpeg):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # let the cancelled job finish its clean-up
    assert await Video.find_all().count() == 0
    assert not (server.settings.media_dir / "videos" / video_id).exists()
    assert video_files(server.settings) == []
