"""Delivering: the `deliver_webhooks` job, the retry schedule, and the worker that runs it.

Deliveries have their own arq queue and worker (started beside each processing worker), so
a backlog of either never waits behind the other. An event's first attempts, one per
endpoint, are one job that makes them side by side (one read and one write for all of
them, where a job per delivery cost the queue and the database more than the POST); each
retry is a job of its own. A failed attempt queues the next after the schedule's delay (its
job id names the attempt, so queueing it twice is a no-op), and the last failure marks the
delivery FAILED. A worker killed mid-attempt loses its short lease, and the job runs again:
at least once.

At most WEBHOOK_ENDPOINT_CONCURRENCY attempts to one endpoint run at once, counted in Redis
across processes, and WEBHOOK_CONCURRENCY POSTs per process: an attempt whose endpoint has
no free slot is not waited for but queued on its own a moment later, so a slow receiver
holds a few slots, never the worker.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import OrderedDict
from datetime import timedelta
from typing import Any, TypedDict, cast

from arq import Retry, func
from arq.connections import ArqRedis
from arq.worker import Worker
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from clipo_gql.connections import redis_settings
from clipo_gql.job_lease import close_worker, hold_lease, keep_running, stop
from clipo_gql.models import (
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
    now,
)
from clipo_gql.ops.metrics import WEBHOOK_DELIVERIES, WEBHOOK_LATENCY
from clipo_gql.settings import Settings
from clipo_gql.storage import parse_id
from clipo_gql.webhooks.sender import Outcome, Sender

log = logging.getLogger(__name__)

DELIVER_WEBHOOKS = "deliver_webhooks"
# Retries for a free slot are arq tries too: far more than any schedule needs.
MAX_TRIES = 100_000
# A job's lock: renewed while it runs, so another worker takes over this soon after a crash.
# Not much shorter: an event loop stalled that long would let a second run start beside it.
LEASE_SECONDS = 10.0
# A job early by more than this is a duplicate of one queued for later: it leaves it be.
EARLY_SLACK = timedelta(seconds=1)
OUTAGE_DELAY_SECONDS = 2.0
SLOT_WAIT_SECONDS = 1.0
GATES = 4096

# A sorted set of slot holders per endpoint, scored by when their lease ends.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class WebhookContext(TypedDict):
    redis: ArqRedis
    settings: Settings
    sender: Sender
    # POSTs in flight in this process: WEBHOOK_CONCURRENCY.
    sending: asyncio.Semaphore
    gates: Gates


# Which attempt a job makes of each of its deliveries: delivery id -> attempts made before.
Due = dict[str, int]


def job_id(delivery_id: ObjectId, attempt: int) -> str:
    return f"webhook:{delivery_id}:{attempt}"


def event_job_id(event_id: str) -> str:
    """The job of an event's first attempts, one per endpoint, made side by side."""
    return f"webhook-event:{event_id}"


def redelivery_job_id(delivery_id: ObjectId, attempt: int) -> str:
    # Not the scheduled attempt's id, which may be queued for hours from now: whichever of
    # the two runs first makes the attempt, the other finds it made.
    return f"{job_id(delivery_id, attempt)}:redeliver:{uuid.uuid4().hex[:12]}"


def slots_key(settings: Settings, endpoint_id: ObjectId) -> str:
    return f"{settings.redis_prefix}:webhook-slots:{endpoint_id}"


async def enqueue_deliveries(
    redis: ArqRedis, settings: Settings, due: Due, arq_job_id: str, delay: float = 0.0
) -> bool:
    """Queue a job making the attempts in `due`; False if a job of that id is queued."""
    job = await redis.enqueue_job(
        DELIVER_WEBHOOKS,
        due,
        _job_id=arq_job_id,
        _queue_name=settings.webhook_queue_name,
        _defer_by=timedelta(seconds=delay) if delay > 0 else None,
    )
    return job is not None


async def enqueue_delivery(
    redis: ArqRedis, settings: Settings, delivery_id: ObjectId | None, attempt: int,
    delay: float = 0.0, arq_job_id: str | None = None,
) -> bool:  # fmt: skip
    """Queue one delivery's attempt that follows `attempt` earlier ones."""
    assert delivery_id is not None
    return await enqueue_deliveries(
        redis, settings, {str(delivery_id): attempt},
        arq_job_id or job_id(delivery_id, attempt), delay,
    )  # fmt: skip


async def deliver_webhooks(ctx: dict[str, Any], due: Due) -> None:
    """Make the attempts in `due` that are still to be made, side by side."""
    try:
        await _deliver(cast(WebhookContext, ctx), ctx["job_id"], ctx.get("job_try", 1), due)
    except (PyMongoError, RedisError, OSError) as exc:
        # An outage: soon again, not after the periodic pass finds them overdue. Attempts
        # recorded already are skipped then; one that struck after its POST is sent twice.
        log.warning("webhook deliveries %s: %r; trying again shortly", list(due)[:3], exc)
        raise Retry(defer=OUTAGE_DELAY_SECONDS) from exc


async def _deliver(wctx: WebhookContext, arq_job_id: str, job_try: int, due: Due) -> None:
    ids = [oid for oid in map(parse_id, due) if oid is not None]
    pending = WebhookDeliveryStatus.PENDING.value
    found = await WebhookDelivery.find({"_id": {"$in": ids}, "status": pending}).to_list()
    late = now() + EARLY_SLACK
    # Not made already (a redelivery, a duplicate run), and not a duplicate of a later one.
    ready = [
        d for d in found
        if d.attempts == due.get(str(d.id))
        and (d.next_attempt_at is None or d.next_attempt_at <= late)
    ]  # fmt: skip
    if not ready:
        return
    wanted = list({d.endpoint_id for d in ready})
    endpoints: dict[object, WebhookEndpoint] = {
        e.id: e for e in await WebhookEndpoint.find({"_id": {"$in": wanted}}).to_list()
    }
    lease = asyncio.create_task(hold_lease(wctx["redis"], arq_job_id, LEASE_SECONDS))
    try:
        outcomes = await asyncio.gather(
            *(_attempt(wctx, d, endpoints.get(d.endpoint_id)) for d in ready)
        )
    finally:
        await stop(lease)
    made = [(d, o) for d, o in zip(ready, outcomes, strict=True) if isinstance(o, Outcome)]
    await _record(wctx, made)
    busy = [d for d, o in zip(ready, outcomes, strict=True) if o is BUSY]
    if busy and len(due) == 1:
        # A delivery on its own, its endpoint still busy: again later, backing off.
        raise Retry(defer=min(30.0, 0.1 * 2 ** min(job_try, 9)) * random.uniform(1, 1.5))
    for delivery in busy:
        # Its endpoint has all its slots in use: on its own, so this job does not wait.
        await enqueue_delivery(
            wctx["redis"], wctx["settings"], delivery.id, delivery.attempts,
            random.uniform(0.05, 0.25),
        )  # fmt: skip


BUSY = object()


class Gates:
    """This process's share of each endpoint's slots: attempts wait here without asking
    Redis (which counts them across processes) until one of the endpoint's is free."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._gates: OrderedDict[object, asyncio.Semaphore] = OrderedDict()

    def of(self, endpoint_id: object) -> asyncio.Semaphore:
        gate = self._gates.get(endpoint_id)
        if gate is None:
            gate = self._gates[endpoint_id] = asyncio.Semaphore(self.limit)
            if len(self._gates) > GATES:
                # The least recently used; one still held only lets a few more in at once.
                self._gates.popitem(last=False)
        else:
            self._gates.move_to_end(endpoint_id)
        return gate


async def _attempt(
    wctx: WebhookContext, delivery: WebhookDelivery, endpoint: WebhookEndpoint | None
) -> Outcome | object | None:
    """The attempt's outcome; BUSY if the endpoint had no free slot within SLOT_WAIT_SECONDS
    (a slow receiver's are taken); None without endpoint (deleted meanwhile, its log with
    it)."""
    if endpoint is None:
        return None
    gate = wctx["gates"].of(endpoint.id)
    try:
        async with asyncio.timeout(SLOT_WAIT_SECONDS):
            await gate.acquire()
    except TimeoutError:
        return BUSY
    try:
        async with wctx["sending"]:
            return await _send_in_slot(wctx, delivery, endpoint)
    finally:
        gate.release()


async def _send_in_slot(
    wctx: WebhookContext, delivery: WebhookDelivery, endpoint: WebhookEndpoint
) -> Outcome | object:
    settings, redis = wctx["settings"], wctx["redis"]
    assert endpoint.id is not None
    key = slots_key(settings, endpoint.id)
    token = uuid.uuid4().hex
    lease_ms = int((settings.webhook_timeout_seconds + LEASE_SECONDS) * 1000)
    limit = settings.webhook_endpoint_concurrency
    waited, pause = 0.0, 0.005
    # Other processes' attempts to the endpoint (this one's wait at its gate).
    while not await redis.eval(  # type: ignore[misc]
        _ACQUIRE, 1, key, str(_ms()), str(lease_ms), str(limit), token
    ):
        if waited >= SLOT_WAIT_SECONDS:
            return BUSY
        await asyncio.sleep(pause)
        waited += pause
        pause = min(pause * 2, 0.1)
    try:
        return await wctx["sender"].send(
            endpoint.url, endpoint.secret, delivery.event_id, delivery.body
        )
    finally:
        await redis.zrem(key, token)


async def _record(wctx: WebhookContext, made: list[tuple[WebhookDelivery, Outcome]]) -> None:
    """Store the attempts' outcomes (one write for all) and queue the retries. A duplicate
    run of an attempt (at least once) finds `attempts` moved on and changes nothing; the
    retry it queues has the id of the one already queued."""
    if not made:
        return
    settings = wctx["settings"]
    delays = settings.webhook_delays
    # Deliveries with the same outcome, attempt and step share one update (a job's
    # deliveries mostly do: one event's first attempts, all answered 2xx).
    groups: dict[str, tuple[dict[str, Any], dict[str, Any], list[object]]] = {}
    retries: list[tuple[WebhookDelivery, float]] = []
    moment = now()
    for delivery, outcome in made:
        fields: dict[str, Any] = {
            "last_status_code": outcome.status_code,
            "last_error": outcome.error,
            "next_attempt_at": None,
        }
        if outcome.delivered:
            fields["status"] = WebhookDeliveryStatus.DELIVERED.value
            result = "delivered"
            WEBHOOK_LATENCY.observe(max(0.0, (moment - delivery.event_at).total_seconds()))
        elif delivery.schedule_step < len(delays):
            delay = delays[delivery.schedule_step]
            fields["schedule_step"] = delivery.schedule_step + 1
            fields["next_attempt_at"] = moment + timedelta(seconds=delay)
            retries.append((delivery, delay))
            result = "retried"
        else:
            fields["status"] = WebhookDeliveryStatus.FAILED.value
            result = "failed"
        WEBHOOK_DELIVERIES.labels(result, _attempt_label(delivery.attempts + 1, len(delays))).inc()
        condition = {"attempts": delivery.attempts, "status": WebhookDeliveryStatus.PENDING.value}
        key = repr((sorted(fields.items()), delivery.attempts))
        groups.setdefault(key, (condition, fields, []))[2].append(delivery.id)
    collection = WebhookDelivery.get_motor_collection()
    for condition, fields, ids in groups.values():
        await collection.update_many(
            {"_id": {"$in": ids}, **condition}, {"$set": fields, "$inc": {"attempts": 1}}
        )
    for delivery, delay in retries:
        await enqueue_delivery(wctx["redis"], settings, delivery.id, delivery.attempts + 1, delay)


def _attempt_label(attempt: int, retries: int) -> str:
    # Bounded by the schedule; a redelivered one counts past it as "more".
    return str(attempt) if attempt <= retries + 1 else "more"


def _ms() -> int:
    return int(time.time() * 1000)


def webhook_worker(settings: Settings, worker_class: type[Worker] = Worker) -> Worker:
    """The delivery worker of a process: its own queue, slots and Redis pool; started and
    closed by the processing worker's start-up and shut-down (tasks.py)."""
    sender = Sender(settings)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        await sender.aclose()

    async def on_startup(ctx: dict[str, Any]) -> None:
        sending = asyncio.Semaphore(settings.webhook_concurrency)
        gates = Gates(settings.webhook_endpoint_concurrency)
        ctx.update(
            WebhookContext(
                redis=ctx["redis"], settings=settings, sender=sender, sending=sending, gates=gates
            )
        )

    return worker_class(
        functions=[
            func(
                deliver_webhooks,
                name=DELIVER_WEBHOOKS,
                # A job's POSTs may wait for the process's slots before their own timeouts.
                timeout=(settings.webhook_timeout_seconds + LEASE_SECONDS) * 6,
                max_tries=MAX_TRIES,
                keep_result=0,
            )
        ],
        redis_settings=redis_settings(settings),
        queue_name=settings.webhook_queue_name,
        # Jobs wait at busy endpoints (a second at most) and for the process's POST slots:
        # more of them than POSTs, so one waiting never keeps a ready one from starting.
        max_jobs=settings.webhook_concurrency * 4,
        poll_delay=settings.worker_poll_delay_seconds,
        handle_signals=False,
        health_check_interval=30,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )


async def redeliver(redis: ArqRedis, settings: Settings, delivery_id: ObjectId) -> WebhookDelivery:
    """Send a delivery again now, with a fresh retry schedule (whatever its status)."""
    raw = await WebhookDelivery.get_motor_collection().find_one_and_update(
        {"_id": delivery_id},
        {"$set": {"status": WebhookDeliveryStatus.PENDING.value, "schedule_step": 0,
                  "next_attempt_at": now()}},
        return_document=ReturnDocument.AFTER,
    )  # fmt: skip
    delivery: WebhookDelivery = WebhookDelivery.model_validate(raw)
    await enqueue_delivery(
        redis, settings, delivery_id, delivery.attempts,
        arq_job_id=redelivery_job_id(delivery_id, delivery.attempts),
    )  # fmt: skip
    return delivery


async def run_webhook_worker(settings: Settings, worker_class: type[Worker] = Worker) -> None:
    """The delivery worker of a process, started again when it loses Redis (the processing
    worker beside it may not: a blip between its polls), closed when this is cancelled."""
    await keep_running(lambda: webhook_worker(settings, worker_class), _close, "webhook worker")


async def _close(worker: Worker) -> None:
    """End the running jobs (their attempts run again elsewhere: at least once), then let
    arq close its pool. arq's close() gathers the job tasks it cancels, and a cancelled one
    makes that gather raise before the pool is closed: its connections then leak. So the
    jobs are ended here first."""
    jobs = list(worker.tasks.values())
    for task in jobs:
        task.cancel()
    await asyncio.gather(*jobs, return_exceptions=True)
    worker.tasks.clear()
    await close_worker(worker)
