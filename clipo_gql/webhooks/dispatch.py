"""From a video's outbox to deliveries: one per event and endpoint, each with a queued job.

The outbox (`Video.webhook_outbox`) is written by the same update as the change it
announces (videos.py); dispatching creates the deliveries (a unique index on event and
endpoint makes a second dispatch find the first's), queues their jobs, and only then
removes the events from the outbox. A process that dies on the way leaves them there, and
the workers' periodic pass (`dispatch_stranded`) dispatches them again: at least once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from arq.connections import ArqRedis
from arq.constants import job_key_prefix
from bson import ObjectId
from pymongo.errors import BulkWriteError, PyMongoError
from redis.exceptions import RedisError

from clipo_gql.auth.media_links import MediaLinks
from clipo_gql.models import (
    OutboxEntry,
    Video,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
    now,
)
from clipo_gql.ops.metrics import WEBHOOK_EVENTS, WEBHOOK_PENDING
from clipo_gql.settings import Settings
from clipo_gql.webhooks import events
from clipo_gql.webhooks.events import outbox_document
from clipo_gql.webhooks.jobs import (
    Due,
    enqueue_deliveries,
    enqueue_delivery,
    event_job_id,
    job_id,
)

log = logging.getLogger(__name__)

BATCH = 500
DUPLICATE_KEY = 11000
# VideoService.remove: the second step of a delete.
FinishDelete = Callable[[ObjectId], Awaitable[object]]


class Dispatcher:
    def __init__(self, settings: Settings, redis: ArqRedis, links: MediaLinks) -> None:
        self.settings = settings
        self.redis = redis
        self.links = links

    async def __call__(self, video: Video) -> None:
        """Dispatch `video`'s outbox; an outage is logged, the events stay for the next pass."""
        try:
            await self.dispatch(video)
        except (PyMongoError, RedisError, OSError) as exc:
            log.warning("webhook events of video %s left for the next pass: %r", video.id, exc)

    async def dispatch(self, video: Video) -> None:
        if not video.webhook_outbox:
            return
        endpoints = await WebhookEndpoint.find({"owner_id": video.owner_id}).to_list()
        for event in video.webhook_outbox:
            await self._fan_out(video, event, endpoints)
        # The very entries dispatched, by value: one pushed meanwhile stays. ($pullAll, not
        # $pull with a condition, which FerretDB 1.24 takes for a value to match.)
        dispatched = [outbox_document(e) for e in video.webhook_outbox]
        await Video.get_motor_collection().update_one(
            {"_id": video.id}, {"$pullAll": {"webhook_outbox": dispatched}}
        )

    async def _fan_out(
        self, video: Video, event: OutboxEntry, endpoints: list[WebhookEndpoint]
    ) -> None:
        bodies: dict[str, str] = {}
        deliveries = []
        for endpoint in endpoints:
            if event.type not in endpoint.events:
                continue
            assert endpoint.id is not None
            base_url = self.settings.public_base_url or endpoint.base_url
            body = bodies.get(base_url)
            if body is None:
                body = bodies[base_url] = events.body(video, event, base_url, self.links)
            deliveries.append(
                WebhookDelivery(
                    endpoint_id=endpoint.id,
                    owner_id=endpoint.owner_id,
                    event_id=event.id,
                    event_type=event.type,
                    body=body,
                    event_at=event.at,
                    expires_at=now()
                    + timedelta(seconds=self.settings.webhook_log_retention_seconds),
                )  # fmt: skip
            )
        if deliveries:
            due = await self._store(event, deliveries)
            if due:
                await enqueue_deliveries(self.redis, self.settings, due, event_job_id(event.id))
        WEBHOOK_EVENTS.labels(event.type.value).inc()

    async def _store(self, event: OutboxEntry, deliveries: list[WebhookDelivery]) -> Due:
        """Insert the deliveries; what is due of them, with those an earlier dispatch of the
        event made (a unique index on event and endpoint) that are still pending."""
        collection = WebhookDelivery.get_motor_collection()
        documents = [d.model_dump(by_alias=True, exclude={"id"}) | {"_id": ObjectId()}
                     for d in deliveries]  # fmt: skip
        try:
            await collection.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise
            pending = WebhookDeliveryStatus.PENDING.value
            found = collection.find({"event_id": event.id, "status": pending})
            return {str(raw["_id"]): int(raw["attempts"]) async for raw in found}
        return {str(doc["_id"]): 0 for doc in documents}


async def dispatch_stranded(dispatcher: Dispatcher, finish_delete: FinishDelete) -> int:
    """Events older than WEBHOOK_DISPATCH_GRACE_SECONDS still in an outbox (their process
    died before dispatching them), and deletes that stopped after recording their event:
    dispatch, and finish those deletes. How many videos had events."""
    cutoff = now() - timedelta(seconds=dispatcher.settings.webhook_dispatch_grace_seconds)
    collection = Video.get_motor_collection()
    stranded = collection.find(
        {"$or": [{"webhook_outbox.at": {"$lt": cutoff}}, {"deleting_at": {"$lt": cutoff}}]}
    ).limit(BATCH)
    found = 0
    async for raw in stranded:
        video = Video.from_mongo(raw)
        found += 1
        await dispatcher.dispatch(video)
        if video.deleting_at is not None:
            assert video.id is not None
            await finish_delete(video.id)
    if found:
        log.warning("dispatched the webhook events of %d videos a stopped process left", found)
    return found


async def requeue_pending(dispatcher: Dispatcher) -> int:
    """Queue again the pending deliveries overdue by the grace whose job is gone (lost with
    Redis's data, or a process died between recording an attempt and queueing the next);
    one whose job is still queued or running (its event's, or its own) is left to it. Also
    sets the pending gauge."""
    settings, redis = dispatcher.settings, dispatcher.redis
    collection = WebhookDelivery.get_motor_collection()
    pending = {"status": WebhookDeliveryStatus.PENDING.value}
    WEBHOOK_PENDING.set(await collection.count_documents(pending))
    cutoff = now() - timedelta(seconds=settings.webhook_dispatch_grace_seconds)
    overdue = collection.find(
        {**pending, "next_attempt_at": {"$lt": cutoff}}, {"_id": 1, "attempts": 1, "event_id": 1}
    ).limit(BATCH)
    queued = 0
    async for raw in overdue:
        delivery_id, attempts = ObjectId(raw["_id"]), int(raw["attempts"])
        jobs = [job_id(delivery_id, attempts), event_job_id(str(raw["event_id"]))]
        if await redis.exists(*(job_key_prefix + j for j in jobs)):
            continue
        queued += await enqueue_delivery(redis, settings, delivery_id, attempts)
    return queued


async def expire_log() -> int:
    """Remove the delivery log entries past their `expires_at`. MongoDB's TTL index does this
    by itself; FerretDB 1.24 has none (indexes.py), so the periodic pass does it there."""
    result = await WebhookDelivery.get_motor_collection().delete_many(
        {"expires_at": {"$lt": now()}}
    )
    return int(result.deleted_count)
