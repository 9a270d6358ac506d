"""The arq job: one job per video, idempotent re-runs, and no video left PROCESSING."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix, job_key_prefix
from bson import ObjectId
from redis.asyncio import Redis

from clipo_gql.connections import create_redis
from clipo_gql.models import Video, VideoSource, VideoStatus
from clipo_gql.settings import Settings
from clipo_gql.tasks import (
    build_context,
    embedded_worker,
    enqueue_again,
    enqueue_processing,
    job_id,
    process_video,
)
from clipo_gql.videos import VideoService
from tests.conftest import DONE_FILES, Server, output_names, run_server, video_files


@pytest.fixture
async def server(settings: Settings, redis: Redis) -> AsyncIterator[Server]:
    """The app without its in-process worker. These tests run each job themselves; a worker
    would race them for it (its start-up pass queues any PENDING video without a job)."""
    async for running in run_server(settings, worker=False):
        yield running


async def stored_video(server: Server, clip: Any) -> Video:
    """A PENDING video whose original is in place, as an upload leaves it (no job queued)."""
    video = Video(filename="clip.mp4", source=VideoSource.UPLOAD, size_bytes=clip.stat().st_size)
    await video.insert()
    assert video.id is not None
    folder = server.settings.media_dir / "videos" / str(video.id)
    folder.mkdir(parents=True)
    (folder / "original").write_bytes(clip.read_bytes())
    return video


async def run_job(settings: Settings, video: Video, job_try: int = 1) -> Video:
    """Run the job as arq would, and return the video's stored state afterwards."""
    assert video.id is not None
    redis = await create_redis(settings)
    try:
        ctx = {**build_context(settings, redis), "job_try": job_try, "job_id": job_id(video.id)}
        await process_video(ctx, str(video.id))
    finally:
        await redis.aclose()
    stored = await Video.get(video.id)
    assert stored is not None
    return stored


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
    done = await run_job(server.settings, video)
    assert done.status is VideoStatus.DONE
    files = {p: p.stat().st_mtime_ns for p in video_files(server.settings)}
    again = await run_job(server.settings, video)  # arq delivers at least once
    assert again.version == done.version
    assert {p: p.stat().st_mtime_ns for p in video_files(server.settings)} == files


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
    done = await run_job(server.settings, video, job_try=2)
    assert (done.status, done.progress) == (VideoStatus.DONE, 1.0)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*DONE_FILES, "hls"])


async def test_video_is_failed_when_its_workers_kept_dying(server: Server, clips: Any):
    video = await stored_video(server, clips.h264_aac)
    tries = server.settings.job_max_tries + 1  # the extra try arq gives the job
    failed = await run_job(server.settings, video, job_try=tries)
    assert failed.status is VideoStatus.FAILED
    assert failed.error is not None
    assert "interrupted 3 times" in failed.error


async def test_a_missing_original_fails_with_a_reason(server: Server, clips: Any):
    video = await stored_video(server, clips.h264_aac)
    (server.settings.media_dir / "videos" / str(video.id) / "original").unlink()
    failed = await run_job(server.settings, video)
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
    failed = await run_job(settings, video)
    assert failed.status is VideoStatus.FAILED
    assert failed.error is not None
    assert "1 s" in failed.error
    names = {p.name for p in video_files(server.settings)}
    assert names == {"original", "record.json"}


async def test_cancelled_after_done_was_stored_keeps_the_outputs(
    server: Server, clips: Any, monkeypatch: pytest.MonkeyPatch
):
    # The worker stopping while the final change is being published (a Redis outage makes
    # that slow): the video is DONE in MongoDB, so its files must stay.
    video = await stored_video(server, clips.h264_aac)
    assert video.id is not None
    stored_done = asyncio.Event()
    real_finish = VideoService.finish

    async def slow_publish_finish(self: VideoService, *args: Any, **kwargs: Any) -> Any:
        result = await real_finish(self, *args, **kwargs)
        stored_done.set()
        await asyncio.sleep(60)
        return result

    monkeypatch.setattr(VideoService, "finish", slow_publish_finish)
    job = asyncio.create_task(run_job(server.settings, video))
    await asyncio.wait_for(stored_done.wait(), 60)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    stored = await Video.get(video.id)
    assert stored is not None
    assert stored.status is VideoStatus.DONE
    # The record is kept as DONE is stored, before it is published: it is there too.
    assert output_names(server.settings) == DONE_FILES


async def test_a_freed_slot_takes_the_next_job_without_waiting_for_the_poll(
    server: Server, clips: Any
):
    # One slot, a poll every 60 s: the first poll (at start) takes the first job; the second
    # can only finish within the timeout if the worker looks again when the first one ends.
    settings = server.settings.model_copy(
        update={"worker_concurrency": 1, "worker_poll_delay_seconds": 60.0}
    )
    videos = [await stored_video(server, clips.h264_aac) for _ in range(2)]
    redis = await create_redis(settings)
    try:
        for video in videos:
            assert video.id is not None
            await enqueue_processing(redis, video.id)
    finally:
        await redis.aclose()
    worker = embedded_worker(settings)
    running = asyncio.create_task(worker.async_run())
    try:
        async with asyncio.timeout(30):
            while True:
                stored = [await Video.get(v.id) for v in videos]
                if all(v is not None and v.status is VideoStatus.DONE for v in stored):
                    break
                await asyncio.sleep(0.1)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await worker.close()


async def test_a_retry_while_the_failed_job_is_ending_is_queued_once_it_ended(
    settings: Settings, redis: Redis
):
    """The job that failed a video is still ending (writing its record, arq's bookkeeping)
    when a client retries it: its id is taken, and an enqueue then would be lost."""
    arq = await create_redis(settings)
    video_id = ObjectId()
    keys = [prefix + job_id(video_id) for prefix in (job_key_prefix, in_progress_key_prefix)]
    try:
        for key in keys:
            await arq.set(key, b"the failing job")

        async def end() -> None:
            await asyncio.sleep(0.3)
            await arq.delete(*keys)

        ending = asyncio.create_task(end())
        assert await enqueue_again(arq, video_id)
        assert ending.done()
        assert await arq.zscore(settings.queue_name, job_id(video_id)) is not None
        # Only queued, not running: that job will run the video; nothing to wait for.
        await arq.delete(keys[1])
        assert not await enqueue_again(arq, video_id, wait_seconds=0)
    finally:
        await arq.aclose()
