"""An accepted upload becomes a stored video and a queued job, or nothing at all."""

from __future__ import annotations

import logging

from bson import ObjectId
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from clipo_gql.errors import ServiceUnavailableError, UnsupportedMediaError
from clipo_gql.models import Video, VideoSource
from clipo_gql.state import AppState
from clipo_gql.tasks import enqueue_processing
from clipo_gql.uploads import ReceivedFile, safe_filename, sniff_video

log = logging.getLogger(__name__)

ACCEPTED_FORMATS = "MP4/MOV, WebM/Matroska, AVI, MPEG-TS, FLV, Ogg or MXF"


async def accept_upload(app: AppState, received: ReceivedFile) -> Video:
    if received.size == 0:
        raise UnsupportedMediaError("The file is empty")
    if not sniff_video(received.head):
        raise UnsupportedMediaError(
            f"This does not look like a video file; upload {ACCEPTED_FORMATS}"
        )
    video = Video(
        id=ObjectId(),
        filename=safe_filename(received.filename),
        source=VideoSource.UPLOAD,
        size_bytes=received.size,
    )
    assert video.id is not None
    app.storage.adopt(received.path, video.id)
    inserted = False
    try:
        await video.insert()
        inserted = True
        await enqueue_processing(app.redis, video.id)
    except (PyMongoError, RedisError, OSError) as exc:
        log.warning("upload %s rolled back: %r", video.id, exc)
        await _undo(app, video, inserted)
        raise ServiceUnavailableError(
            "The service cannot store or queue videos right now; try again shortly"
        ) from exc
    except BaseException:
        await _undo(app, video, inserted)
        raise
    return video


async def _undo(app: AppState, video: Video, inserted: bool) -> None:
    assert video.id is not None
    await app.storage.remove_video(video.id)
    if inserted:
        try:
            await video.delete()
        except PyMongoError:
            log.exception("could not remove video %s after a failed upload", video.id)
