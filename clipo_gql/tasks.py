"""arq jobs and the worker's set-up: the glue between the queue and the pipeline."""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from signal import Signals
from typing import Any, TypedDict, cast

from arq import func
from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker, get_kwargs
from bson import ObjectId
from pymongo.errors import ConnectionFailure, PyMongoError
from redis.exceptions import RedisError

from clipo_gql import logs, records
from clipo_gql.auth.media_links import MediaLinks
from clipo_gql.connections import init_mongo, redis_settings
from clipo_gql.events import EventPublisher
from clipo_gql.job_lease import close_worker, hold_lease, keep_running, stop
from clipo_gql.media import Media
from clipo_gql.models import Video, VideoStatus
from clipo_gql.ops.exporter import WorkerMetrics
from clipo_gql.ops.monitor import Heartbeat
from clipo_gql.processing import Pipeline
from clipo_gql.settings import Settings
from clipo_gql.storage import open_storage, parse_id
from clipo_gql.sweeper import sweep
from clipo_gql.tus.expiry import expire_uploads
from clipo_gql.videos import ACTIVE, VideoService
from clipo_gql.webhooks.dispatch import (
    Dispatcher,
    dispatch_stranded,
    expire_log,
    requeue_pending,
)
from clipo_gql.webhooks.jobs import run_webhook_worker

log = logging.getLogger(__name__)

PROCESS_VIDEO = "process_video"


class WorkerContext(TypedDict):
    redis: ArqRedis
    settings: Settings
    videos: VideoService
    pipeline: Pipeline
    heartbeat: Heartbeat
    dispatcher: Dispatcher


def job_id(video_id: ObjectId) -> str:
    """One job per video: enqueueing twice while one is queued or running is a no-op."""
    return f"video:{video_id}"


async def enqueue_processing(redis: ArqRedis, video_id: ObjectId) -> bool:
    """Queue the video's job; False when it is already queued or running."""
    job = await redis.enqueue_job(PROCESS_VIDEO, str(video_id), _job_id=job_id(video_id))
    return job is not None


async def enqueue_again(redis: ArqRedis, video_id: ObjectId, wait_seconds: float = 5) -> bool:
    """Queue a retried video's job. The job that failed it may still be ending (it writes the
    record, arq its bookkeeping) and its id is then taken: wait for it rather than leave the
    video PENDING until the next requeue pass. A queued job of the same id will run it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while not await enqueue_processing(redis, video_id):
        running = await redis.exists(in_progress_key_prefix + job_id(video_id))
        if not running and await redis.exists(job_key_prefix + job_id(video_id)):
            return False  # queued, not running: it will process the video as it is now
        # Neither: the job ended between arq's WATCH and its EXEC (the enqueue lost the
        # race, not to a queued job), so try again.
        if loop.time() > deadline:
            log.warning(
                "video %s: its last job is still running; the requeue pass will queue it", video_id
            )
            return False
        await asyncio.sleep(0.02)
    return True


async def enqueue_active(redis: ArqRedis) -> int:
    """Queue every PENDING or PROCESSING video again; those whose job still exists (queued or
    running) are untouched. After Redis lost its data (a restart without persistence) this is
    what brings their jobs back."""
    active = {"status": {"$in": [s.value for s in ACTIVE]}, "deleting_at": None}
    queued = 0
    async for raw in Video.get_motor_collection().find(active, {"_id": 1}):
        queued += await enqueue_processing(redis, raw["_id"])
    if queued:
        log.warning("queued %d unfinished videos whose jobs were missing from Redis", queued)
    return queued


async def housekeeping(wctx: WorkerContext) -> None:
    """Through outages: remove what dead processes left (`sweeper.sweep`) and hand on the
    webhook events they left (webhooks/dispatch.py) at start and every
    REQUEUE_INTERVAL_SECONDS, and as often queue the videos whose job is missing (the
    worker's start-up made that pass already, `requeue_missing`)."""
    redis, settings = wctx["redis"], wctx["settings"]
    storage, videos = wctx["pipeline"].storage, wctx["videos"]

    async def finish_delete(video_id: ObjectId) -> None:
        await videos.remove(video_id)
        await cancel_processing(redis, video_id)
        await storage.remove_video(video_id)

    while True:
        try:
            # A job's scratch (object storage) is idle for at most arq's backstop timeout.
            job_seconds = settings.job_timeout_seconds + 60
            await sweep(storage, settings.orphan_grace_seconds, job_seconds)
            await expire_uploads(storage, videos)
        except (PyMongoError, RedisError, OSError) as exc:
            log.warning("could not look for abandoned files: %s", exc)
        try:
            await dispatch_stranded(wctx["dispatcher"], finish_delete)
            await requeue_pending(wctx["dispatcher"])
            await expire_log()
        except (PyMongoError, RedisError, OSError) as exc:
            log.warning("could not look for undelivered webhook events: %s", exc)
        await asyncio.sleep(settings.requeue_interval_seconds)
        await requeue_missing(redis)


async def requeue_missing(redis: ArqRedis) -> None:
    """`enqueue_active`, with an outage logged and left to the next pass."""
    try:
        await enqueue_active(redis)
    except (RedisError, PyMongoError, OSError) as exc:
        log.warning("could not check for unqueued videos: %s", exc)


async def cancel_processing(redis: ArqRedis, video_id: ObjectId) -> None:
    """Ask whichever worker runs (or will pick up) the video's job to cancel it."""
    await redis.zadd(abort_jobs_ss, {job_id(video_id): timestamp_ms()})


async def process_video(ctx: dict[str, Any], video_id: str) -> None:
    wctx = cast(WorkerContext, ctx)
    oid = parse_id(video_id)
    if oid is None:
        log.error("process_video called with a malformed id %r", video_id)
        return
    max_tries = wctx["settings"].job_max_tries
    if ctx.get("job_try", 1) > max_tries:
        # Only reached when earlier tries died with their worker (killed, lost power):
        # the try that fails normally marks the video itself.
        await wctx["videos"].fail(
            oid, f"Processing was interrupted {max_tries} times (the worker stopped); gave up"
        )
        return
    lease = asyncio.create_task(
        hold_lease(wctx["redis"], ctx["job_id"], wctx["settings"].job_lease_seconds)
    )
    # Every line logged for this job (ffmpeg's failures, outages) names the video.
    logged_as = logs.video_id.set(video_id)
    try:
        with wctx["heartbeat"].job(video_id) as job:
            job.outcome = await _run_through_outages(wctx["pipeline"], oid)
    finally:
        logs.video_id.reset(logged_as)
        await stop(lease)


async def _run_through_outages(pipeline: Pipeline, video_id: ObjectId) -> VideoStatus | None:
    """Process the video, waiting out MongoDB outages: the job holds its lease meanwhile, so
    no other worker takes it, and arq's timeout still bounds the whole job. (arq's own Retry
    would spend one of the tries that count worker deaths, see `process_video`.)"""
    delay = 0.5
    while True:
        try:
            return await pipeline.run(video_id)
        except ConnectionFailure as exc:
            log.warning(
                "MongoDB unavailable while processing video %s (%s); trying again in %.1f s",
                video_id, exc, delay,
            )  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def build_context(settings: Settings, redis: ArqRedis) -> WorkerContext:
    storage = open_storage(settings)
    storage.prepare()
    dispatcher = Dispatcher(settings, redis, MediaLinks(settings))
    videos = VideoService(
        EventPublisher(redis, settings.redis_prefix),
        partial(records.update, storage),
        dispatch=dispatcher,
    )
    pipeline = Pipeline(settings, videos, Media(settings), storage)
    return WorkerContext(
        redis=redis,
        settings=settings,
        videos=videos,
        pipeline=pipeline,
        heartbeat=Heartbeat(settings, redis),
        dispatcher=dispatcher,
    )


def _functions(settings: Settings) -> list[Any]:
    return [
        func(
            process_video,
            name=PROCESS_VIDEO,
            # The pipeline enforces job_timeout_seconds itself and marks the video FAILED;
            # arq's own timeout is only a backstop.
            timeout=settings.job_timeout_seconds + 60,
            # One more than ours, so the job still runs to mark the video FAILED.
            max_tries=settings.job_max_tries + 1,
            keep_result=0,
        )
    ]


def _worker_options(settings: Settings) -> dict[str, Any]:
    return {
        "queue_name": settings.queue_name,
        "max_jobs": settings.worker_concurrency,
        "poll_delay": settings.worker_poll_delay_seconds,
        "health_check_interval": 30,
        "allow_abort_jobs": True,  # deleteVideo cancels a running job
    }


def worker_lifecycle(settings: Settings, *, own_mongo: bool, standalone: bool) -> dict[str, Any]:
    """arq's on_startup/on_shutdown. `own_mongo`: connect to MongoDB (else the API process
    has); `standalone`: a worker process of its own, which serves its metrics itself."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        if own_mongo:
            ctx["mongo"] = await init_mongo(settings, allow_stand_in=False)
        ctx.update(build_context(settings, ctx["redis"]))
        if standalone and settings.metrics_enabled and settings.worker_metrics_port is not None:
            # `dev`'s worker metrics are in the API's /metrics: same process, same registry.
            ctx["metrics"] = WorkerMetrics(settings, ctx["redis"])
            ctx["metrics"].start()
        # Before "ready": whoever waits for it (a supervisor, a test storing videos) then
        # knows the jobs lost by a Redis restart are back in the queue.
        await requeue_missing(ctx["redis"])
        ctx["requeuer"] = asyncio.create_task(housekeeping(cast(WorkerContext, ctx)))
        # Deliveries run beside the jobs, on their own queue and slots (webhooks/jobs.py).
        ctx["webhook_runner"] = asyncio.create_task(run_webhook_worker(settings, PromptWorker))
        ctx["heartbeat"].start()
        # Supervisors and the topology tests wait for this line.
        log.info("worker ready: MongoDB and Redis answer, taking jobs from %s", settings.queue_name)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        await _stop_helpers(ctx)
        mongo = ctx.get("mongo")
        if mongo is not None:
            mongo.close()

    return {"on_startup": on_startup, "on_shutdown": on_shutdown}


class PromptWorker(Worker):
    """arq's Worker, which looks for the next job as soon as one ends, not at its next poll.

    arq only picks jobs every `poll_delay`, so a slot freed by a finished job stayed idle for
    half of that on average: with short clips, a tenth of the throughput (bench row 7).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pickers: set[asyncio.Task[None]] = set()
        self._stopping = False

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        running = self.main_task is not None and not self.main_task.done()
        if running and self.allow_pick_jobs and not (self._stopping or self.burst):
            picker = self.loop.create_task(self._pick_now())
            self._pickers.add(picker)
            picker.add_done_callback(self._pickers.discard)

    async def _pick_now(self) -> None:
        try:
            job_ids = await self.pool.zrangebyscore(
                self.queue_name, min=float("-inf"), max=timestamp_ms(),
                start=self._queue_read_offset, num=self.queue_read_limit,
            )  # fmt: skip
            if not self._stopping:
                await self.start_jobs(job_ids)
        except (RedisError, OSError) as exc:
            log.debug("could not look for the next job at once (%s): the next poll will", exc)

    def handle_sig(self, signum: Signals) -> None:
        self._stopping = True
        for picker in self._pickers:
            picker.cancel()
        super().handle_sig(signum)

    async def close(self) -> None:
        self._stopping = True
        for picker in list(self._pickers):
            await stop(picker)
        await super().close()


def embedded_worker(settings: Settings) -> PromptWorker:
    """A worker inside the API process (`clipo-gql dev`, tests) using the API's MongoDB client.

    It keeps its own Redis pool because `Worker.close()` closes the pool it runs on.
    """
    return PromptWorker(
        functions=_functions(settings),
        redis_settings=redis_settings(settings),
        handle_signals=False,
        **_worker_options(settings),
        **worker_lifecycle(settings, own_mongo=False, standalone=False),
    )


async def run_embedded_worker(settings: Settings) -> None:
    """The worker of `clipo-gql dev`: started again when Redis goes away, closed when cancelled.

    A separate `clipo-gql worker` process exits when it loses Redis and its supervisor
    restarts it; inside the API process nobody would, so this loop does.
    """
    await keep_running(lambda: embedded_worker(settings), _close, "embedded worker")


async def _close(worker: PromptWorker) -> None:
    try:
        await close_worker(worker)
    finally:
        # on_shutdown does not run when close() fails: stop the helpers here too.
        await _stop_helpers(worker.ctx)


async def _stop_helpers(ctx: dict[str, Any]) -> None:
    """What on_startup started; each at most once (close() may follow on_shutdown)."""
    requeuer = ctx.pop("requeuer", None)
    if requeuer is not None:
        await stop(requeuer)
    deliveries = ctx.pop("webhook_runner", None)
    if deliveries is not None:
        await stop(deliveries)
    heartbeat = ctx.get("heartbeat")
    if heartbeat is not None:
        await heartbeat.stop()
    metrics = ctx.pop("metrics", None)
    if metrics is not None:
        await metrics.stop()
    pipeline = ctx.get("pipeline")
    if pipeline is not None:
        pipeline.storage.close()


def run_worker(settings: Settings, **overrides: Any) -> None:
    """The `clipo-gql worker` process: arq's run_worker() with PromptWorker, the same settings,
    signal handling and start-up (`overrides` replace WorkerSettings entries)."""
    PromptWorker(**{**get_kwargs(worker_settings(settings)), **overrides}).run()


def worker_settings(settings: Settings) -> type:
    """The class `arq` reads (`arq worker.WorkerSettings`): its own process, its own clients."""
    return type(
        "WorkerSettings",
        (),
        {
            "functions": _functions(settings),
            "redis_settings": redis_settings(settings),
            **_worker_options(settings),
            **worker_lifecycle(settings, own_mongo=True, standalone=True),
        },
    )
