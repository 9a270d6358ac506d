"""Removing resumable uploads that stopped receiving bytes (the expiration extension).

Each stored offset moves `upload_expires_at` to UPLOAD_EXPIRY_SECONDS later; the workers'
periodic pass (tasks.housekeeping) removes the uploads past it: the document (with a
conditional delete, so one that just received bytes stays), then the folder with the bytes.
Until then the routes answer 410 for an expired upload; after, 404.
"""

from __future__ import annotations

import logging

from clipo_gql.models import Video, VideoStatus, now
from clipo_gql.ops.metrics import TUS_UPLOADS
from clipo_gql.storage import Storage
from clipo_gql.videos import VideoService

log = logging.getLogger(__name__)

BATCH = 500


def expired_filter() -> dict[str, object]:
    return {"status": VideoStatus.UPLOADING.value, "upload_expires_at": {"$lt": now()}}


async def expire_uploads(storage: Storage, videos: VideoService) -> int:
    """Remove every expired upload (each with its `video.deleted` event); how many were."""
    collection = Video.get_motor_collection()
    removed = 0
    ids = [raw["_id"] async for raw in collection.find(expired_filter(), {"_id": 1}).limit(BATCH)]
    for video_id in ids:
        if not await videos.delete(video_id, expired_filter()):
            continue  # bytes arrived, or it completed or was deleted, meanwhile
        await storage.remove_video(video_id)
        removed += 1
    if removed:
        TUS_UPLOADS.labels("expired").inc(removed)
        log.info("removed %d expired resumable uploads", removed)
    return removed
