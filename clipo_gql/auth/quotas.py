"""How much one owner may ask (OWASP API4, unrestricted resource consumption).

New videos (uploads, URL submissions) pass, in this order: the free-disk guard
(MIN_FREE_DISK_BYTES, for everyone), the owner's unfinished videos (MAX_ACTIVE_VIDEOS), the
owner's stored bytes (QUOTA_BYTES), then the rate (RATE_LIMIT_VIDEOS, a moving window kept in
Redis by the `limits` library, so every API process counts the same hits). "Owner" is the
principal with auth on, the client's address with it off (`limit_key`; behind a proxy the
address comes from X-Forwarded-For only for the proxies uvicorn trusts, FORWARDED_ALLOW_IPS).

Websockets are counted per API process, per client (the owner once the socket has
authenticated, its address before) and in all, and refused with close code 1013 (try again
later) past either limit: one client cannot take every file descriptor of the process.
"""

from __future__ import annotations

import math
import shutil
import time
from collections import Counter
from typing import Any

from bson import ObjectId
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from clipo_gql.auth.principal import Principal
from clipo_gql.errors import (
    CANNOT_STORE,
    InsufficientStorageError,
    QuotaExceededError,
    RateLimitedError,
    ServiceUnavailableError,
)
from clipo_gql.models import Video, VideoStatus
from clipo_gql.ops.metrics import LIMIT_REFUSALS, WEBSOCKET_CONNECTIONS
from clipo_gql.settings import Settings
from clipo_gql.units import human_size

UNFINISHED = [
    VideoStatus.UPLOADING.value,
    VideoStatus.PENDING.value,
    VideoStatus.PROCESSING.value,
]
WS_TRY_AGAIN_LATER = 1013


def limit_key(settings: Settings, principal: Principal, client_address: str | None) -> str:
    if settings.auth_required:
        return f"owner:{principal.owner_id}"
    return f"address:{client_address or 'unknown'}"


class Quotas:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.rate: RateLimitItem = parse(settings.rate_limit_videos)
        storage = RedisStorage(
            settings.effective_redis_url.replace("redis", "async+redis", 1),
            implementation="redispy",
            key_prefix=f"{settings.redis_prefix}:limits",
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]
        )
        self.limiter = MovingWindowRateLimiter(storage)

    def check_disk(self, incoming_bytes: int = 0) -> None:
        """`incoming_bytes`: what the request announces it will store (a tus Upload-Length)."""
        free = shutil.disk_usage(self.settings.media_dir).free
        if free - incoming_bytes < self.settings.min_free_disk_bytes:
            LIMIT_REFUSALS.labels("disk").inc()
            raise InsufficientStorageError(
                "The server is low on disk space and accepts no new videos right now; "
                "try again later"
            )

    async def check_rate(self, key: str) -> None:
        """Refuse when the window is full, without counting a hit (before a body is read)."""
        await self._within_rate(key, count=False)

    async def _within_rate(self, key: str, *, count: bool) -> None:
        """RATE_LIMITED when the window is full; `count`: this request takes a place in it."""
        check = self.limiter.hit if count else self.limiter.test
        try:
            allowed = await check(self.rate, "videos", key)
        except (RedisError, OSError) as exc:
            # With Redis down nothing could be queued anyway: the answer uploads get then.
            raise ServiceUnavailableError(CANNOT_STORE) from exc
        if not allowed:
            LIMIT_REFUSALS.labels("rate").inc()
            raise await self._rate_limited(key)

    async def admit_new_video(
        self, key: str, size_bytes: int | None, *, incoming: bool = False
    ) -> None:
        """Every check a new video passes, counting it against the rate. `incoming`: its
        `size_bytes` are still to arrive (a resumable upload), so the disk must hold them."""
        self.check_disk((size_bytes or 0) if incoming else 0)
        unfinished = await Video.get_motor_collection().count_documents(
            {"limit_key": key, "status": {"$in": UNFINISHED}},
            limit=self.settings.max_active_videos,
        )
        if unfinished >= self.settings.max_active_videos:
            LIMIT_REFUSALS.labels("active_videos").inc()
            raise QuotaExceededError(
                f"You have {unfinished} videos waiting or processing, the most allowed; "
                "wait for some to finish"
            )
        quota = self.settings.quota_bytes
        if quota is not None:
            used = await stored_bytes(key)
            if used + (size_bytes or 0) > quota or (size_bytes is None and used >= quota):
                LIMIT_REFUSALS.labels("storage_quota").inc()
                raise QuotaExceededError(
                    f"This would exceed your storage quota of {human_size(quota)} "
                    f"({human_size(used)} used); delete videos to make room"
                )
        await self._within_rate(key, count=True)

    async def _rate_limited(self, key: str) -> RateLimitedError:
        stats = await self.limiter.get_window_stats(self.rate, "videos", key)
        retry_after = math.ceil(stats.reset_time - time.time())
        return RateLimitedError(
            f"Too many new videos ({self.rate}); try again in {max(1, retry_after)} s",
            retry_after=retry_after,
        )


async def stored_bytes(key: str, excluding: ObjectId | None = None) -> int:
    """The `sizeBytes` of every video counted under `key`, but `excluding`."""
    match: dict[str, Any] = {"limit_key": key}
    if excluding is not None:
        match["_id"] = {"$ne": excluding}
    pipeline: list[dict[str, Any]] = [
        {"$match": match},
        {"$group": {"_id": None, "total": {"$sum": "$size_bytes"}}},
    ]
    rows = await Video.get_motor_collection().aggregate(pipeline).to_list(1)
    return int(rows[0]["total"]) if rows else 0


async def quota_left(settings: Settings, video: Video) -> int | None:
    """The bytes a URL's download may take under its owner's QUOTA_BYTES (None: no quota).

    A submitted URL's size is unknown when it is admitted, so the worker caps the download
    here, against what the owner's other videos hold by then."""
    if settings.quota_bytes is None or video.limit_key is None:
        return None
    return max(0, settings.quota_bytes - await stored_bytes(video.limit_key, excluding=video.id))


class ConnectionCounter:
    """Websockets of this process, per client and in all."""

    def __init__(self, settings: Settings) -> None:
        self.per_client = settings.ws_max_connections_per_client
        self.total_cap = settings.ws_max_connections
        self.by_client: Counter[str] = Counter()
        self.total = 0

    def acquire(self, client: str) -> str | None:
        """Count a connection; the reason to refuse it instead (nothing counted then)."""
        if self.total >= self.total_cap:
            LIMIT_REFUSALS.labels("websockets").inc()
            return "Too many connections to this server; try again later"
        if self.by_client[client] >= self.per_client:
            LIMIT_REFUSALS.labels("websockets").inc()
            return f"Too many connections from this client (at most {self.per_client})"
        self.by_client[client] += 1
        self.total += 1
        WEBSOCKET_CONNECTIONS.inc()
        return None

    def release(self, client: str) -> None:
        WEBSOCKET_CONNECTIONS.dec()
        self.total -= 1
        self.by_client[client] -= 1
        if self.by_client[client] <= 0:
            del self.by_client[client]

    def move(self, old: str, new: str) -> str | None:
        """A socket authenticated: count it under its owner instead of its address."""
        if old == new:
            return None
        if self.by_client[new] >= self.per_client:
            LIMIT_REFUSALS.labels("websockets").inc()
            return f"Too many connections for this owner (at most {self.per_client})"
        self.release(old)
        self.by_client[new] += 1
        self.total += 1
        WEBSOCKET_CONNECTIONS.inc()
        return None
