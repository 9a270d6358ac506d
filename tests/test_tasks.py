"""The arq job: one job per video, idempotent re-runs, and no video left PROCESSING."""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis
from bson import ObjectId

from clipo_gql.connections import create_redis
from clipo_gql.models import Video, VideoSource, VideoStatus
from clipo_gql.settings import Settings
from clipo_gql.tasks import build_context, enqueue_processing, process_video
from tests.conftest import Server, video_files


async def stored_video(server: Server, clip: Any) -> Video:
    """A PENDING video whose original is in place, as an upload leaves it (no job queued)."""
    video = Video(filename="clip.mp4", source=VideoSource.UPLOAD, size_bytes=clip.stat().st_size)
    await video.insert()
    assert video.id is not None
    folder = server.settings.media_dir / "videos" / str(video.id)
    folder.mkdir(parents=True)
    (folder / "original").write_bytes(clip.read_bytes())
    return video


async def job_context(settings: Settings) -> tuple[dict[str, Any], ArqRedis]:
    redis = await create_redis(settings)
    return {**build_context(settings, redis), "job_try": 1}, redis


async def test_same_video_is_queued_once(settings: Settings):
    redis = await create_redis(settings)
    video_id = ObjectId()
    try:
        await enqueue_processing(redis, video_id)
        await enqueue_processing(redis, video_id)
        assert await redis.zcard(settings.queue_name) == 1
    finally:
        await redis.delete(settings.queue_name, f"arq:job:video:{video_id}")
        await redis.aclose()


async def test_rerun_after_done_changes_nothing(server: Server, clips: Any):
    video = await stored_video(server, clips.h264_aac)
    ctx, redis = await job_context(server.settings)
    try:
        await process_video(ctx, str(video.id))
        done = await Video.get(video.id)
        assert done is not None
        assert done.status is VideoStatus.DONE
        files = {p: p.stat().st_mtime_ns for p in video_files(server.settings)}
        await process_video(ctx, str(video.id))  # arq delivers at least once
        again = await Video.get(video.id)
        assert again is not None
        assert again.version == done.version
        assert {p: p.stat().st_mtime_ns for p in video_files(server.settings)} == files
    finally:
        await redis.aclose()


async def test_rerun_of_an_interrupted_job_finishes_with_one_set_of_files(
    server: Server, clips: Any
):
    video = await stored_video(server, clips.h264_aac)
    assert video.id is not None
    # A first attempt died mid-way: PROCESSING, a partial output lying around.
    await Video.get_motor_collection().update_one(
        {"_id": video.id}, {"$set": {"status": "PROCESSING", "progress": 0.4}}
    )
    folder = server.settings.media_dir / "videos" / str(video.id)
    (folder / ".leftover.part").write_bytes(b"half a video")
    ctx, redis = await job_context(server.settings)
    try:
        await process_video({**ctx, "job_try": 2}, str(video.id))
    finally:
        await redis.aclose()
    done = await Video.get(video.id)
    assert done is not None
    assert (done.status, done.progress) == (VideoStatus.DONE, 1.0)
    assert sorted(p.name for p in folder.iterdir()) == [
        "metadata.json", "original", "thumbnail.jpg", "video.mp4",
    ]  # fmt: skip


async def test_video_is_failed_when_its_workers_kept_dying(server: Server, clips: Any):
    video = await stored_video(server, clips.h264_aac)
    ctx, redis = await job_context(server.settings)
    try:
        tries = server.settings.job_max_tries + 1  # the extra try arq gives the job
        await process_video({**ctx, "job_try": tries}, str(video.id))
    finally:
        await redis.aclose()
    failed = await Video.get(video.id)
    assert failed is not None
    assert failed.status is VideoStatus.FAILED
    assert failed.error is not None
    assert "interrupted 3 times" in failed.error


async def test_a_missing_original_fails_with_a_reason(server: Server, clips: Any):
    video = await stored_video(server, clips.h264_aac)
    (server.settings.media_dir / "videos" / str(video.id) / "original").unlink()
    ctx, redis = await job_context(server.settings)
    try:
        await process_video(ctx, str(video.id))
    finally:
        await redis.aclose()
    failed = await Video.get(video.id)
    assert failed is not None
    assert failed.status is VideoStatus.FAILED
    assert failed.error == "The uploaded file is missing; upload it again"


async def test_job_timeout_marks_the_video_failed(server: Server, clips: Any, tmp_path):
    slow = tmp_path / "slow-ffmpeg"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    settings = server.settings.model_copy(
        update={"ffmpeg_binary": str(slow), "job_timeout_seconds": 1}
    )
    video = await stored_video(server, clips.h264_aac)
    ctx, redis = await job_context(settings)
    try:
        await process_video(ctx, str(video.id))
    finally:
        await redis.aclose()
    failed = await Video.get(video.id)
    assert failed is not None
    assert failed.status is VideoStatus.FAILED
    assert failed.error is not None
    assert "1 s" in failed.error
    names = {p.name for p in video_files(server.settings)}
    assert names == {"original"}
