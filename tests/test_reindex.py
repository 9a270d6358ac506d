"""reindex.py: a lost database is rebuilt from MEDIA_DIR; nothing unknown is removed."""

from __future__ import annotations

import asyncio
import json
import shutil
from typing import Any

from bson import ObjectId
from redis.asyncio import Redis

from clipo_gql import records
from clipo_gql.connections import create_redis
from clipo_gql.models import Video, VideoSource, VideoStatus
from clipo_gql.reindex import Summary, reindex
from clipo_gql.storage import Storage
from tests.conftest import Server
from tests.test_api import upload_id, watch

# What a rebuilt document must hold as it was (updated_at, version and attempts restart).
LASTING = [
    "id", "filename", "owner_id", "limit_key", "source", "source_url", "created_at", "status",
    "progress", "error", "size_bytes", "duration", "width", "height", "video_codec",
    "audio_codec", "frame_rate", "bit_rate", "format_name", "remuxed", "published", "renditions",
]  # fmt: skip


def lasting(video: Video) -> dict[str, Any]:
    fields: dict[str, Any] = video.model_dump(include=set(LASTING))
    return fields


async def stored() -> dict[str, dict[str, Any]]:
    return {str(v.id): lasting(v) for v in await Video.find_all().to_list()}


async def lose_the_database() -> None:
    await Video.get_motor_collection().delete_many({})


async def recorded_upload(storage: Storage, clip: Any, *, with_original: bool = True) -> Video:
    """An accepted upload whose document was lost before a worker took it."""
    video = Video(
        id=ObjectId(), filename="waiting.mp4", source=VideoSource.UPLOAD, owner_id="carol",
        limit_key="carol", size_bytes=clip.stat().st_size,
    )  # fmt: skip
    assert video.id is not None
    await records.write_new(storage, video)
    if with_original:
        shutil.copyfile(clip, storage.original(video.id))
    return video


async def until_final(video: Video) -> Video:
    async with asyncio.timeout(60):
        while True:
            current = await Video.get(video.id)
            assert current is not None
            if current.status.is_final:
                return current
            await asyncio.sleep(0.05)


def leftovers(summary: Summary) -> dict[str, str]:
    return {left.path.name: left.reason for left in summary.leftovers}


async def test_a_lost_database_comes_back_from_the_files(server: Server, redis: Redis, clips: Any):
    storage = Storage(server.settings.media_dir)
    done_id = await upload_id(server, clips.h264_aac, filename="holiday.mov")
    failed_id = await upload_id(server, clips.truncated)
    for video_id in (done_id, failed_id):
        await asyncio.wait_for(watch(server, video_id), 60)
    before = await stored()
    assert before[done_id]["status"] is VideoStatus.DONE
    assert before[done_id]["remuxed"] is not None
    assert before[done_id]["published"] == ["mp4", "hls", "storyboard"]
    assert before[done_id]["renditions"]
    assert before[failed_id]["status"] is VideoStatus.FAILED

    await lose_the_database()
    waiting = await recorded_upload(storage, clips.h264_aac)
    # What is not a video of ours, or cannot be read, stays where it is.
    (storage.videos / "not-an-id").mkdir()
    (storage.videos / "not-an-id" / "notes.txt").write_text("mine")
    unknown, broken, other = ObjectId(), ObjectId(), ObjectId()
    storage.video_dir(unknown).mkdir()
    (storage.video_dir(unknown) / "original").write_bytes(b"who knows")
    storage.video_dir(broken).mkdir()
    storage.record(broken).write_text("{not json")
    storage.video_dir(other).mkdir()
    assert waiting.id is not None
    shutil.copyfile(storage.record(waiting.id), storage.record(other))
    lost_upload = await recorded_upload(storage, clips.h264_aac, with_original=False)
    kept_files = sorted(p for p in storage.videos.rglob("*") if p.is_file())

    arq = await create_redis(server.settings)
    try:
        summary = await reindex(storage, arq)
        assert (summary.done, summary.failed, summary.pending, summary.kept) == (1, 1, 1, 0)
        assert summary.queued == 1
        assert leftovers(summary) == {
            "not-an-id": "not a video id",
            str(unknown): "files without record.json: whose it is is unknown",
            str(broken): "record.json is not valid JSON",
            str(other): "record.json is another video's (its id differs)",
            str(lost_upload.id): "an upload whose original is missing, and no outputs",
        }
        assert all(left.path.exists() for left in summary.leftovers)
        # Every file is where it was: reindex removes nothing.
        assert sorted(p for p in storage.videos.rglob("*") if p.is_file()) == kept_files

        after = await stored()
        assert after[done_id] == before[done_id]
        assert after[failed_id] == before[failed_id]
        # The queued one is processed like any upload (carol's: `watch` would not show it).
        restored = await until_final(waiting)
        assert restored.status is VideoStatus.DONE
        assert (restored.owner_id, restored.limit_key) == ("carol", "carol")

        # Again: everything is kept, nothing changes.
        await Video.get_motor_collection().update_one(
            {"_id": ObjectId(done_id)}, {"$set": {"filename": "renamed.mp4"}}
        )
        versions = {str(v.id): v.version for v in await Video.find_all().to_list()}
        again = await reindex(storage, arq)
        assert (again.restored, again.kept, again.queued) == (0, 3, 0)
        assert leftovers(again) == leftovers(summary)
        assert {str(v.id): v.version for v in await Video.find_all().to_list()} == versions
        renamed = await Video.get(ObjectId(done_id))
        assert renamed is not None
        assert renamed.filename == "renamed.mp4"
    finally:
        await arq.aclose()


async def test_a_done_video_needs_its_outputs_and_readable_metadata(
    server: Server, redis: Redis, clips: Any
):
    storage = Storage(server.settings.media_dir)
    first = await upload_id(server, clips.h264_aac)
    second = await upload_id(server, clips.h264_aac)
    for video_id in (first, second):
        await asyncio.wait_for(watch(server, video_id), 60)
    await lose_the_database()
    # A folder that lost its MP4 is processed again from its original; one whose metadata
    # is damaged is reported, not guessed at.
    storage.processed(ObjectId(first)).unlink()
    storage.metadata(ObjectId(second)).write_text("[1, 2")

    summary = await reindex(storage, None)
    assert (summary.done, summary.pending, summary.queued) == (0, 1, 0)
    assert leftovers(summary) == {second: "metadata.json is not valid JSON"}
    video = await Video.get(ObjectId(first))
    assert video is not None
    assert (video.status, video.progress, video.duration) == (VideoStatus.PENDING, None, None)


async def test_a_url_submission_comes_back_pending_without_a_file(server: Server, redis: Redis):
    storage = Storage(server.settings.media_dir)
    video = Video(
        id=ObjectId(), filename="clip.mp4", source=VideoSource.URL,
        source_url="http://127.0.0.1:9/clip.mp4", owner_id="dave",
    )  # fmt: skip
    assert video.id is not None
    await records.write_new(storage, video)
    summary = await reindex(storage, None)
    assert summary.pending == 1
    restored = await Video.get(video.id)
    assert restored is not None
    assert (restored.source, restored.source_url, restored.owner_id) == (
        VideoSource.URL, "http://127.0.0.1:9/clip.mp4", "dave",
    )  # fmt: skip
    assert json.loads(storage.record(video.id).read_text())["status"] == "PENDING"
