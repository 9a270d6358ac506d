"""After an upload's last byte: the original in place, the video PENDING, its job queued,
each exactly once, even when two requests (in two API processes, say after a lock's lease
ran out under a stalled one) both reach the end.

Two gates. A Redis `SET NX` claim picks one racer; then the state change is a conditional
`find_one_and_update` on `status: UPLOADING` (VideoService.upload_complete), so only one
racer ever gets the video back, and only that one queues the job. The claim is there because
MongoDB-wire servers differ here: MongoDB applies a findAndModify atomically per document, but
FerretDB 1.x (SQLite) was seen to let five concurrent ones all match (tests/test_tus.py).
"""

from __future__ import annotations

import contextlib
import logging

from bson import ObjectId
from redis.exceptions import RedisError

from clipo_gql import records, tasks
from clipo_gql.models import Video
from clipo_gql.ops.metrics import TUS_UPLOADS, VIDEOS_CREATED
from clipo_gql.state import AppState
from clipo_gql.tus import pieces
from clipo_gql.tus.lock import claim_completion

log = logging.getLogger(__name__)


async def complete(app: AppState, video_id: ObjectId, length: int) -> Video | None:
    """The video PENDING and queued; None when another request did it (or it is gone)."""
    settings = app.settings
    if not await claim_completion(
        app.redis, settings.redis_prefix, video_id, settings.upload_lock_lease_seconds
    ):
        return None
    # First the file, so no worker can see PENDING before the original is there.
    with contextlib.suppress(FileNotFoundError):  # moved by the other racer, or removed
        await pieces.finish(app.storage, video_id)
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
