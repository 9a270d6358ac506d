"""A short, renewed lock for a running arq job, and stopping helper tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
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
