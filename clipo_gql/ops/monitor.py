"""The live job monitor: each worker's heartbeat in Redis, and the queue as admins see it.

A worker writes `<prefix>:worker:<id>` (its JSON status, expiring after three heartbeats) and
its id in the sorted set `<prefix>:workers` (scored by when it last beat): a worker that dies
disappears within three heartbeats, one that stops cleanly at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from clipo_gql.models import VideoStatus
from clipo_gql.ops.metrics import JOB_DURATION, JOBS, JOBS_RUNNING
from clipo_gql.settings import Settings

log = logging.getLogger(__name__)

MISSED_BEATS = 3


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    started_at: datetime
    last_seen_at: datetime
    running_video_ids: list[str]
    jobs_done: int
    jobs_failed: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "host": self.host,
                "pid": self.pid,
                "startedAt": self.started_at.isoformat(),
                "lastSeenAt": self.last_seen_at.isoformat(),
                "runningVideoIds": self.running_video_ids,
                "jobsDone": self.jobs_done,
                "jobsFailed": self.jobs_failed,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> WorkerInfo:
        data = json.loads(raw)
        return cls(
            id=data["id"],
            host=data["host"],
            pid=int(data["pid"]),
            started_at=datetime.fromisoformat(data["startedAt"]),
            last_seen_at=datetime.fromisoformat(data["lastSeenAt"]),
            running_video_ids=[str(v) for v in data["runningVideoIds"]],
            jobs_done=int(data["jobsDone"]),
            jobs_failed=int(data["jobsFailed"]),
        )


@dataclass(frozen=True)
class QueueInfo:
    queued: int
    running: int
    workers: list[WorkerInfo]


def _workers_key(settings: Settings) -> str:
    return f"{settings.redis_prefix}:workers"


def _worker_key(settings: Settings, worker_id: str) -> str:
    return f"{settings.redis_prefix}:worker:{worker_id}"


def _ttl(settings: Settings) -> float:
    return settings.worker_heartbeat_seconds * MISSED_BEATS


async def queue_status(redis: Redis, settings: Settings) -> QueueInfo:
    """The queue and the live workers. arq keeps a running job in the queue's sorted set
    until it ends, so what waits is the set's size less what the workers say they run."""
    oldest = (time.time() - _ttl(settings)) * 1000
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(settings.queue_name)
        pipe.zrangebyscore(_workers_key(settings), oldest, "+inf")
        in_queue, ids = await pipe.execute()
    workers: list[WorkerInfo] = []
    if ids:
        names = [i.decode() if isinstance(i, bytes) else i for i in ids]
        for raw in await redis.mget([_worker_key(settings, name) for name in names]):
            if raw is None:
                continue  # its status expired between the two reads
            try:
                workers.append(WorkerInfo.from_json(raw))
            except (ValueError, KeyError, TypeError):
                log.warning("ignored a malformed worker heartbeat in Redis")
    workers.sort(key=lambda w: w.started_at)
    running = sum(len(w.running_video_ids) for w in workers)
    return QueueInfo(queued=max(0, in_queue - running), running=running, workers=workers)


@dataclass
class _Job:
    started: float = field(default_factory=time.perf_counter)
    outcome: VideoStatus | None = None


class Heartbeat:
    """What one worker process is doing, counted as jobs run and sent to Redis."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.started_at = datetime.now(UTC)
        self.running: dict[str, _Job] = {}
        self.done = 0
        self.failed = 0
        self._task: asyncio.Task[None] | None = None
        self._warned = False
        # Set when a job starts or ends: the monitor shows it then, not a heartbeat later.
        self._changed = asyncio.Event()

    @contextlib.contextmanager
    def job(self, video_id: str) -> Iterator[_Job]:
        """Around one job: set `.outcome` to the video's final status when it has one."""
        job = self.running[video_id] = _Job()
        JOBS_RUNNING.inc()
        self._changed.set()
        try:
            yield job
        finally:
            JOBS_RUNNING.dec()
            del self.running[video_id]
            self._changed.set()
            if job.outcome is not None:
                outcome = "done" if job.outcome is VideoStatus.DONE else "failed"
                if outcome == "done":
                    self.done += 1
                else:
                    self.failed += 1
                JOBS.labels(outcome).inc()
                JOB_DURATION.labels(outcome).observe(time.perf_counter() - job.started)

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id,
            host=self.host,
            pid=self.pid,
            started_at=self.started_at,
            last_seen_at=datetime.now(UTC),
            running_video_ids=list(self.running),
            jobs_done=self.done,
            jobs_failed=self.failed,
        )

    async def beat(self) -> None:
        ttl = _ttl(self.settings)
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(_worker_key(self.settings, self.id), self.info().to_json(), px=int(ttl * 1000))
            pipe.zadd(_workers_key(self.settings), {self.id: now * 1000})
            # Dead workers' ids: their status keys have expired already.
            pipe.zremrangebyscore(_workers_key(self.settings), "-inf", (now - ttl) * 1000)
            await pipe.execute()

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
                self._warned = False
            except (RedisError, OSError) as exc:
                if not self._warned:  # once per outage: arq itself reports a lost Redis
                    log.warning("worker heartbeat not sent: %s", exc)
                    self._warned = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.worker_heartbeat_seconds):
                    await self._changed.wait()
            self._changed.clear()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop beating and leave the monitor at once (best effort: else the TTL does it)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(_worker_key(self.settings, self.id))
                pipe.zrem(_workers_key(self.settings), self.id)
                await pipe.execute()
        except (RedisError, OSError):
            pass
