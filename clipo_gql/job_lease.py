"""What arq workers share: a short, renewed lock for a running job, stopping helper tasks,
and keeping an in-process worker running through Redis outages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.worker import Worker
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


async def hold_lease(redis: ArqRedis, arq_job_id: str, seconds: float) -> None:
    """Keep arq's in-progress lock short and renewed while the job runs.

    arq sets that lock once, for its longest job timeout plus 10 s (an hour by default): a
    worker killed mid-job would leave its job untouched that long. A lease renewed every
    third of `seconds` expires soon after the worker dies, and another worker takes the job.
    PEXPIRE never creates the key, so a renewal racing the job's end is harmless.
    """
    key = in_progress_key_prefix + arq_job_id
    while True:
        try:
            await redis.pexpire(key, int(seconds * 1000))
        except (RedisError, OSError) as exc:
            log.warning("could not renew the lock of job %s: %s", arq_job_id, exc)
        await asyncio.sleep(seconds / 3)


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel a helper task and wait for it: one left running could hand a connection back
    to a pool that has been closed meanwhile, leaking it."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


W = TypeVar("W", bound=Worker)


async def keep_running(
    make: Callable[[], W], close: Callable[[W], Awaitable[None]], what: str
) -> None:
    """Run a worker made by `make`, and a new one when it loses Redis (backing off up to
    5 s); `close` each one that ends, and the last when this is cancelled."""
    delay = 0.5
    while True:
        worker = make()
        try:
            await worker.async_run()
        except (RedisError, OSError) as exc:
            log.warning("%s lost Redis (%s); starting again in %.1f s", what, exc, delay)
        finally:
            await close(worker)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def close_worker(worker: Worker) -> None:
    """arq's close(); with Redis gone it fails before closing its pool, so close that here."""
    try:
        await worker.close()
    except (RedisError, OSError) as exc:
        log.warning("a worker closed without Redis: %r", exc)
        if worker._pool is not None:
            await worker._pool.aclose()
