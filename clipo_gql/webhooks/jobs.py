"""Delivering: the `deliver_webhook` job, its retry schedule, and the worker that runs it.

Deliveries have their own arq queue and worker (started beside each processing worker), so
a backlog of either never waits behind the other. One job is one attempt; a failed attempt
queues the next after the schedule's delay (its job id names the attempt, so queueing it
twice is a no-op), and the last failure marks the delivery FAILED. A worker killed mid-
attempt loses its short lease, and the job runs again: at least once.

At most WEBHOOK_ENDPOINT_CONCURRENCY attempts to one endpoint run at once, counted in Redis
across processes: a job that finds no free slot steps back for a moment (arq's Retry, which
leaves the worker's slot to someone else's delivery), so a slow receiver cannot take over
the WEBHOOK_CONCURRENCY slots of a worker.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
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
from clipo_gql.job_lease import hold_lease, stop
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

DELIVER_WEBHOOK = "deliver_webhook"
# Retries for a free slot are arq tries too: far more than any schedule needs.
MAX_TRIES = 100_000
LEASE_SECONDS = 5.0
# A job early by more than this is a duplicate of one queued for later: it leaves it be.
EARLY_SLACK = timedelta(seconds=1)
OUTAGE_DELAY_SECONDS = 2.0

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


def job_id(delivery_id: ObjectId, attempt: int) -> str:
    return f"webhook:{delivery_id}:{attempt}"


def redelivery_job_id(delivery_id: ObjectId, attempt: int) -> str:
    # Not the scheduled attempt's id, which may be queued for hours from now: whichever of
    # the two runs first makes the attempt, the other finds it made.
    return f"{job_id(delivery_id, attempt)}:redeliver:{uuid.uuid4().hex[:12]}"


def slots_key(settings: Settings, endpoint_id: ObjectId) -> str:
    return f"{settings.redis_prefix}:webhook-slots:{endpoint_id}"


async def enqueue_delivery(
    redis: ArqRedis, settings: Settings, delivery_id: ObjectId | None, attempt: int,
    delay: float = 0.0, arq_job_id: str | None = None,
) -> bool:  # fmt: skip
    """Queue the attempt that follows `attempt` earlier ones; False if its job is queued."""
    assert delivery_id is not None
    job = await redis.enqueue_job(
        DELIVER_WEBHOOK,
        str(delivery_id),
        attempt,
        _job_id=arq_job_id or job_id(delivery_id, attempt),
        _queue_name=settings.webhook_queue_name,
        _defer_by=timedelta(seconds=delay) if delay > 0 else None,
    )
    return job is not None


async def deliver_webhook(ctx: dict[str, Any], delivery_id: str, attempt: int) -> None:
    """Make the attempt that follows `attempt` earlier ones, if that is still to be made."""
    try:
        await _deliver(cast(WebhookContext, ctx), ctx["job_id"], delivery_id, attempt)
    except (PyMongoError, RedisError, OSError) as exc:
        # An outage: soon again, not after the periodic pass finds the delivery overdue. If
        # it struck after the POST, the receiver gets the event twice (at least once).
        log.warning("webhook delivery %s: %r; trying again shortly", delivery_id, exc)
        raise Retry(defer=OUTAGE_DELAY_SECONDS) from exc


async def _deliver(wctx: WebhookContext, arq_job_id: str, delivery_id: str, attempt: int) -> None:
    oid = parse_id(delivery_id)
    delivery = None if oid is None else await WebhookDelivery.get(oid)
    if delivery is None or delivery.status is not WebhookDeliveryStatus.PENDING:
        return  # delivered, given up, or its endpoint deleted meanwhile
    if delivery.attempts != attempt:
        return  # made already (a redelivery, or a duplicate run)
    due = delivery.next_attempt_at
    if due is not None and due > now() + EARLY_SLACK:
        return
    endpoint = await WebhookEndpoint.get(delivery.endpoint_id)
    if endpoint is None:
        return
    settings = wctx["settings"]
    redis = wctx["redis"]
    assert endpoint.id is not None
    key = slots_key(settings, endpoint.id)
    token = uuid.uuid4().hex
    lease_ms = int((settings.webhook_timeout_seconds + LEASE_SECONDS) * 1000)
    held = await redis.eval(  # type: ignore[misc]
        _ACQUIRE,
        1,
        key,
        str(_ms()),
        str(lease_ms),
        str(settings.webhook_endpoint_concurrency),
        token,
    )
    if not held:
        raise Retry(defer=random.uniform(0.05, 0.25))
    lease = asyncio.create_task(hold_lease(redis, arq_job_id, LEASE_SECONDS))
    try:
        outcome = await wctx["sender"].send(
            endpoint.url, endpoint.secret, delivery.event_id, delivery.body
        )
    finally:
        await stop(lease)
        await redis.zrem(key, token)
    await _record(wctx, delivery, outcome)


async def _record(wctx: WebhookContext, delivery: WebhookDelivery, outcome: Outcome) -> None:
    """Store the attempt's outcome and queue the next one; a duplicate run of the same
    attempt (at least once) finds `attempts` moved on and changes nothing."""
    settings = wctx["settings"]
    delays = settings.webhook_delays
    attempt = delivery.attempts + 1
    fields: dict[str, Any] = {
        "last_status_code": outcome.status_code,
        "last_error": outcome.error,
        "next_attempt_at": None,
    }
    delay: float | None = None
    if outcome.delivered:
        fields["status"] = WebhookDeliveryStatus.DELIVERED.value
        result = "delivered"
    elif delivery.schedule_step < len(delays):
        delay = delays[delivery.schedule_step]
        fields["schedule_step"] = delivery.schedule_step + 1
        fields["next_attempt_at"] = now() + timedelta(seconds=delay)
        result = "retried"
    else:
        fields["status"] = WebhookDeliveryStatus.FAILED.value
        result = "failed"
    stored = await WebhookDelivery.get_motor_collection().update_one(
        {"_id": delivery.id, "attempts": delivery.attempts,
         "status": WebhookDeliveryStatus.PENDING.value},
        {"$set": fields, "$inc": {"attempts": 1}},
    )  # fmt: skip
    if stored.modified_count == 0:
        return
    WEBHOOK_DELIVERIES.labels(result, _attempt_label(attempt, len(delays))).inc()
    if outcome.delivered:
        WEBHOOK_LATENCY.observe(max(0.0, (now() - delivery.event_at).total_seconds()))
    if delay is not None:
        await enqueue_delivery(wctx["redis"], settings, delivery.id, attempt, delay)


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
        ctx.update(WebhookContext(redis=ctx["redis"], settings=settings, sender=sender))

    return worker_class(
        functions=[
            func(
                deliver_webhook,
                name=DELIVER_WEBHOOK,
                timeout=settings.webhook_timeout_seconds + LEASE_SECONDS,
                max_tries=MAX_TRIES,
                keep_result=0,
            )
        ],
        redis_settings=redis_settings(settings),
        queue_name=settings.webhook_queue_name,
        max_jobs=settings.webhook_concurrency,
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
