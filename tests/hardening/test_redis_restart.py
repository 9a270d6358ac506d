"""Case 14: Redis restarted while a video is processing, on a private redis-server.

With persistence on (append-only file, as compose.yaml runs it) the queued job survives the
restart. With it off the queue is gone, and every worker start queues the unfinished videos
again from MongoDB (`enqueue_active`). Either way subscribers get the final state: they re-read
MongoDB after their pub/sub connection comes back.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bson import ObjectId
from redis import Redis

from clipo_gql.devredis import answers, free_port
from clipo_gql.settings import Settings
from clipo_gql.tasks import job_id
from tests.clips import make_clip
from tests.conftest import DONE_FILES, output_names, run_server
from tests.test_api import upload_id, watch

pytestmark = pytest.mark.timeout(180)


class RedisProcess:
    """A redis-server that can be stopped and started again on the same port and folder."""

    def __init__(self, folder: Path, *, appendonly: bool) -> None:
        self.folder = folder
        self.port = free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
             "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not answers(self.url):
            assert self.proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(params=[True, False], ids=["persistent", "no-persistence"])
def private_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisProcess]:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisProcess(folder, appendonly=request.param)
    server.start()
    yield server
    server.stop()


async def wait_for(predicate: object, seconds: float = 30) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_processing_survives_a_redis_restart(
    settings: Settings, private_redis: RedisProcess, tmp_path: Path
):
    clip = make_clip(
        tmp_path / "long.mp4", seconds=20, size="640x360", pix_fmt="yuv444p",
        extra=["-preset", "ultrafast"],
    )  # fmt: skip
    # One job at a time: the second video is still queued when Redis restarts.
    isolated = settings.model_copy(
        update={
            "redis_url": private_redis.url,
            "worker_concurrency": 1,
            "requeue_interval_seconds": 1,
        }
    )
    async for server in run_server(isolated):
        running = await upload_id(server, clip)
        queued = await upload_id(server, clip)
        watchers = [asyncio.create_task(watch(server, v)) for v in (running, queued)]
        # Restart while the first video's MP4 is being written (video.mp4 itself only appears
        # at the end): one job running, one queued, both watched.
        parts = isolated.media_dir / "videos" / running

        def writing_mp4(folder: Path = parts) -> bool:
            return any(folder.glob(".video.mp4.*.part"))

        await wait_for(writing_mp4)
        private_redis.stop()
        await asyncio.sleep(1)
        private_redis.start()
        if private_redis.appendonly:
            # Checked before the worker is back (it waits at least 0.5 s), whose start-up pass
            # would queue the job again anyway: the job itself must have survived.
            check = Redis.from_url(private_redis.url)
            try:
                score = check.zscore(isolated.queue_name, job_id(ObjectId(queued)))
            finally:
                check.close()
            assert score is not None, "the persistent Redis lost the queued job"

        for watcher in watchers:
            states = await asyncio.wait_for(watcher, 120)
            assert states[-1]["status"] == "DONE", states[-1]
            assert [s["status"] for s in states].count("DONE") == 1
        assert output_names(isolated) == sorted(DONE_FILES * 2)
        # The service answers normally afterwards.
        assert (await server.http.get("/readyz")).status_code == 200
