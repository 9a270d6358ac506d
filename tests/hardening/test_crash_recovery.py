"""Case 13: a real worker process killed (SIGKILL) or stopped (SIGTERM) mid-transcode.

The video must end DONE after recovery with one set of outputs, and the killed worker's
ffmpeg must not outlive it. See worker_process.py for how the worker process gets its video.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix
from bson import json_util
from redis.asyncio import Redis

from clipo_gql.connections import create_redis
from clipo_gql.models import Video, VideoSource
from clipo_gql.settings import Settings
from clipo_gql.tasks import embedded_worker, enqueue_processing, job_id
from tests.clips import make_clip
from tests.conftest import DONE_FILES, Server, incoming_files, output_names, run_server, video_files
from tests.test_api import watch
from tests.test_media import alive, assert_gone

ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 2.0

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # yuv444p must be transcoded, and 20 s of it keeps libx264 busy for a few seconds.
    folder = tmp_path_factory.mktemp("long")
    return make_clip(
        folder / "long.mp4", seconds=20, size="640x360", pix_fmt="yuv444p",
        extra=["-preset", "ultrafast"],
    )  # fmt: skip


@pytest.fixture
def crash_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"job_lease_seconds": LEASE_SECONDS})


@pytest.fixture
async def api(crash_settings: Settings, redis: Redis) -> AsyncIterator[Server]:
    """The API (for subscriptions) without an in-process worker: only the workers the tests
    start take the video's job."""
    async for running in run_server(crash_settings, worker=False):
        yield running


def place_original(settings: Settings, video_id: object, clip: Path) -> None:
    folder = settings.media_dir / "videos" / str(video_id)
    folder.mkdir(parents=True)
    (folder / "original").write_bytes(clip.read_bytes())


async def stored_video(settings: Settings, clip: Path) -> Video:
    """A PENDING video with its original in place, as an upload leaves it (no job queued)."""
    video = Video(filename="long.mp4", source=VideoSource.UPLOAD, size_bytes=1)
    await video.insert()
    place_original(settings, video.id, clip)
    return video


def spawn_worker(settings: Settings, seed: str, **extra_env: str) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "MONGODB_URL" or settings.mongodb_url},
        "MEDIA_DIR": str(settings.media_dir),
        "REDIS_URL": settings.effective_redis_url,
        "QUEUE_NAME": settings.queue_name,
        "REDIS_PREFIX": settings.redis_prefix,
        "MONGODB_DATABASE": settings.mongodb_database,
        "JOB_LEASE_SECONDS": str(settings.job_lease_seconds),
        "CLIPO_TEST_SEED": seed,
        **extra_env,
    }
    with (settings.media_dir.parent / "worker.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.hardening.worker_process"], cwd=ROOT, env=env,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def start_worker(settings: Settings, video: Video) -> subprocess.Popen[bytes]:
    document = await Video.get_motor_collection().find_one({"_id": video.id})
    return spawn_worker(settings, json_util.dumps(document))


def worker_log(settings: Settings) -> str:
    return (settings.media_dir.parent / "worker.log").read_text(errors="replace")


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append((int(stat.parent.name), cmdline))
    return found


async def transcoding_ffmpeg(worker: subprocess.Popen[bytes], settings: Settings) -> int:
    """Wait for the worker's ffmpeg to be in the MP4 step; its pid."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert worker.poll() is None, worker_log(settings)
        for pid, cmdline in children(worker.pid):
            if "libx264" in cmdline:
                return pid
        await asyncio.sleep(0.05)
    raise AssertionError("the worker never started transcoding")


async def recover(api: Server, video_id: str) -> list[dict[str, Any]]:
    """Start a fresh worker and follow the video to its end.

    The worker runs in burst mode: it returns by itself once the queue is empty, instead of
    being cancelled in the middle of a Redis transaction (which leaves a socket to the GC).
    """
    worker = embedded_worker(api.settings)
    worker.burst = True
    watching = asyncio.create_task(watch(api, video_id))
    try:
        await asyncio.wait_for(worker.async_run(), 90)
        return await asyncio.wait_for(watching, 30)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await worker.close()


def assert_one_set_of_outputs(settings: Settings, video_id: str) -> None:
    folder = settings.media_dir / "videos" / video_id
    assert output_names(settings) == DONE_FILES
    assert all(folder in p.parents for p in video_files(settings))
    assert incoming_files(settings) == []
    assert json.loads((folder / "metadata.json").read_text())["id"] == video_id


async def test_sigkilled_worker_job_runs_again_after_the_lease(
    api: Server, crash_settings: Settings, long_clip: Path
):
    video = await stored_video(crash_settings, long_clip)
    assert video.id is not None
    worker = await start_worker(crash_settings, video)
    redis = await create_redis(crash_settings)
    try:
        await enqueue_processing(redis, video.id)
        ffmpeg = await transcoding_ffmpeg(worker, crash_settings)
        # The job holds a short lease, not arq's hour-long lock.
        ttl = await redis.pttl(in_progress_key_prefix + job_id(video.id))
        assert 0 < ttl <= LEASE_SECONDS * 1000

        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        await assert_gone([ffmpeg])  # PR_SET_PDEATHSIG: ffmpeg dies with its worker
        # The job is still queued, locked until the lease runs out.
        assert await redis.zscore(crash_settings.queue_name, job_id(video.id)) is not None
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
        await redis.aclose()

    states = await recover(api, str(video.id))
    assert states[-1]["status"] == "DONE", states[-1]
    assert_one_set_of_outputs(crash_settings, str(video.id))


async def test_sigterm_requeues_at_once(api: Server, crash_settings: Settings, long_clip: Path):
    video = await stored_video(crash_settings, long_clip)
    assert video.id is not None
    worker = await start_worker(crash_settings, video)
    redis = await create_redis(crash_settings)
    channel = redis.pubsub()
    await channel.subscribe(f"{crash_settings.redis_prefix}:video:{video.id}")
    try:
        await enqueue_processing(redis, video.id)
        ffmpeg = await transcoding_ffmpeg(worker, crash_settings)

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0, worker_log(crash_settings)
        assert not alive(ffmpeg)
        # Back in the queue with no lock left: the next worker may take it immediately.
        assert await redis.exists(in_progress_key_prefix + job_id(video.id)) == 0
        assert await redis.zscore(crash_settings.queue_name, job_id(video.id)) is not None
        published = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            message = await channel.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                published.append(json.loads(message["data"]))
        assert published, "the worker published nothing"
        assert published[-1]["status"] == "PENDING", published[-1]
        # No half-written MP4 is left behind for anyone to serve.
        assert not (crash_settings.media_dir / "videos" / str(video.id) / "video.mp4").exists()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
        await channel.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()

    states = await recover(api, str(video.id))
    assert states[-1]["status"] == "DONE", states[-1]
    assert_one_set_of_outputs(crash_settings, str(video.id))
