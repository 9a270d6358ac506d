"""One request at a time writes an upload, whichever API process it reaches: a Redis lock
with a lease (`SET NX PX`), renewed while the request runs, released only by its holder.

A process killed mid-PATCH holds the lock no longer than the lease; the offset it leaves is
the last one it fsynced and stored, and what it wrote past that is cut by the next PATCH.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

from bson import ObjectId
from redis.asyncio import Redis
from redis.exceptions import RedisError

from clipo_gql.errors import CANNOT_STORE, LockedError, ServiceUnavailableError

# Delete / extend the key only while it still holds our token.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


def lock_key(prefix: str, video_id: ObjectId) -> str:
    return f"{prefix}:tus:lock:{video_id}"


def completion_key(prefix: str, video_id: ObjectId) -> str:
    return f"{prefix}:tus:completing:{video_id}"


async def claim_completion(redis: Redis, prefix: str, video_id: ObjectId, seconds: float) -> bool:
    """Whether this request is the one to complete the upload: `SET NX`, atomic on every
    server. For `seconds` only, so that a request that died while completing can be
    followed by another (an empty PATCH at the end completes the upload again)."""
    try:
        return bool(
            await redis.set(completion_key(prefix, video_id), "1", nx=True, px=int(seconds * 1000))
        )
    except (RedisError, OSError) as exc:
        raise ServiceUnavailableError(CANNOT_STORE) from exc


@contextlib.asynccontextmanager
async def upload_lock(
    redis: Redis, prefix: str, video_id: ObjectId, lease_seconds: float
) -> AsyncIterator[None]:
    """Hold the upload's lock for the block; LockedError (423) when another request has it."""
    key = lock_key(prefix, video_id)
    token = secrets.token_hex(16)
    lease_ms = int(lease_seconds * 1000)
    try:
        taken = await redis.set(key, token, nx=True, px=lease_ms)
    except (RedisError, OSError) as exc:
        raise ServiceUnavailableError(CANNOT_STORE) from exc
    if not taken:
        raise LockedError("Another request is uploading to this upload right now; try again")

    async def renew() -> None:
        while True:
            await asyncio.sleep(lease_seconds / 3)
            with contextlib.suppress(RedisError, OSError):
                await redis.eval(_RENEW, 1, key, token, str(lease_ms))  # type: ignore[misc]

    renewing = asyncio.create_task(renew())
    try:
        yield
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        with contextlib.suppress(RedisError, OSError):
            await redis.eval(_RELEASE, 1, key, token)  # type: ignore[misc]
