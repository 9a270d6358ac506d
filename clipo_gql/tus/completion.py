"""After an upload's last byte: the original in place, the video PENDING, its job queued,
each exactly once, even when two requests (in two API processes, say after a lock's lease
ran out under a stalled one) both reach the end.

The rename of the partial file is atomic (one of the racers moves it); the state change is a
conditional `find_one_and_update` on `status: UPLOADING` (VideoService.upload_complete), so
exactly one racer gets the video back, and only that one queues the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bson import ObjectId
from redis.exceptions import RedisError

from clipo_gql import records, tasks
from clipo_gql.models import Video
from clipo_gql.ops.metrics import TUS_UPLOADS, VIDEOS_CREATED
from clipo_gql.state import AppState

log = logging.getLogger(__name__)


async def complete(app: AppState, video_id: ObjectId, length: int) -> Video | None:
    """The video PENDING and queued; None when another request did it (or it is gone)."""
    # First the file, so no worker can see PENDING before the original is there.
    with contextlib.suppress(FileNotFoundError):  # moved by the other racer, or removed
        await asyncio.to_thread(app.storage.finish_upload, video_id)
    video = await app.videos.upload_complete(video_id, length)
    if video is None:
        return None
    await records.update(app.storage, video)
    try:
        await tasks.enqueue_processing(app.redis, video_id)
    except (RedisError, OSError) as exc:
        # PENDING without a job: the workers' requeue pass queues it (tasks.enqueue_active).
        log.warning("upload %s complete but not queued yet: %s", video_id, exc)
    TUS_UPLOADS.labels("completed").inc()
    VIDEOS_CREATED.labels("upload").inc()
    return video
