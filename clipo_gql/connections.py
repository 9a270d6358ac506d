"""Connection factories shared by the API and the worker. Nothing connects at import time."""

from __future__ import annotations

import logging
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from beanie import init_beanie
from motor.motor_asyncio import AsyncIOMotorClient

from clipo_gql.indexes import ensure_indexes
from clipo_gql.models import (
    ANONYMOUS_OWNER,
    INDEXES,
    ApiKey,
    Video,
    WebhookDelivery,
    WebhookEndpoint,
)
from clipo_gql.settings import Settings

log = logging.getLogger(__name__)


MISSING_MONGODB = (
    "MONGODB_URL is not set. `serve` and `worker` share state through MongoDB: "
    "set MONGODB_URL, or use `clipo-gql dev` for the in-process stand-in."
)


class ConfigError(RuntimeError):
    """The configuration cannot work; the message says what to set."""


async def init_mongo(settings: Settings, *, allow_stand_in: bool) -> Any:
    """Connect Beanie to MongoDB, or to the in-process stand-in when that is allowed."""
    client: Any
    if settings.mongodb_url:
        client = AsyncIOMotorClient(
            settings.mongodb_url, tz_aware=True, serverSelectionTimeoutMS=5000
        )
    elif allow_stand_in:
        from mongomock_motor import AsyncMongoMockClient

        log.warning(
            "MONGODB_URL is not set: using an in-process MongoDB stand-in, rebuilt from"
            " MEDIA_DIR at each start (videos: ids, owners, states, files). Anything else,"
            " API keys included, is forgotten when this process exits."
        )
        client = AsyncMongoMockClient(tz_aware=True)
    else:
        raise ConfigError(MISSING_MONGODB)
    # Indexes are ours to create (indexes.py): Beanie's way breaks FerretDB.
    await init_beanie(
        database=client[settings.mongodb_database],
        document_models=[Video, ApiKey, WebhookEndpoint, WebhookDelivery],
        skip_indexes=True,
    )
    # The stand-in checks every document's expiry on every read of a collection with a TTL
    # index (each webhook-log read then costs the whole log twice): without it, the workers'
    # pass expires the log as on servers that have none (indexes.py).
    await ensure_indexes(INDEXES, ttl=bool(settings.mongodb_url))
    # Videos stored before owners existed belong to `anonymous` (README: how to hand them
    # over). Queries filter on owner_id, and a missing field would match no owner at all.
    await Video.get_motor_collection().update_many(
        {"owner_id": {"$exists": False}}, {"$set": {"owner_id": ANONYMOUS_OWNER}}
    )
    return client


def redis_settings(settings: Settings) -> RedisSettings:
    return RedisSettings.from_dsn(settings.effective_redis_url)


async def create_redis(settings: Settings) -> ArqRedis:
    """One pool for enqueueing, publishing and the event hub's pub/sub connection."""
    return await create_pool(redis_settings(settings), default_queue_name=settings.queue_name)


async def ping_mongo() -> None:
    await Video.get_motor_collection().database.command("ping")
