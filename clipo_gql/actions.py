"""What the mutations do: each either completes or leaves nothing behind.

An accepted upload or URL becomes a stored video and a queued job, a failed video is queued
again, a deleted one loses its document, its job and its files.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from bson import ObjectId
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from clipo_gql import records
from clipo_gql.auth.ownership import find_video, scope
from clipo_gql.auth.principal import Principal
from clipo_gql.errors import (
    CANNOT_STORE,
    InvalidStateError,
    NotFoundError,
    ServiceUnavailableError,
    UnsupportedMediaError,
)
from clipo_gql.fetch import filename_from_url
from clipo_gql.models import Video, VideoSource
from clipo_gql.ops.metrics import VIDEOS_CREATED
from clipo_gql.ssrf import validate_url
from clipo_gql.state import AppState
from clipo_gql.tasks import cancel_processing, enqueue_again, enqueue_processing
from clipo_gql.uploads import ReceivedFile, safe_filename, sniff_video

log = logging.getLogger(__name__)

ACCEPTED_FORMATS = "MP4/MOV, WebM/Matroska, AVI, MPEG-TS, FLV, Ogg or MXF"


@dataclass(frozen=True)
class Caller:
    """Who asks (auth/), and the key their limits are counted under (auth/quotas.py)."""

    principal: Principal
    limit_key: str


async def accept_upload(app: AppState, caller: Caller, received: ReceivedFile) -> Video:
    if received.size == 0:
        raise UnsupportedMediaError("The file is empty")
    if not sniff_video(received.head):
        raise UnsupportedMediaError(
            f"This does not look like a video file; upload {ACCEPTED_FORMATS}"
        )
    await app.quotas.admit_new_video(caller.limit_key, received.size)
    video = Video(
        id=received.video_id or ObjectId(),
        filename=safe_filename(received.filename),
        source=VideoSource.UPLOAD,
        size_bytes=received.size,
        owner_id=caller.principal.owner_id,
        limit_key=caller.limit_key,
    )
    assert video.id is not None
    app.storage.adopt(received, video.id)
    return await _store_and_queue(app, video)


async def accept_url(app: AppState, caller: Caller, url: str) -> Video:
    """Check the URL now (FORBIDDEN_URL, no video); the worker downloads it, checking again."""
    checked = await validate_url(url, app.settings)
    await app.quotas.admit_new_video(caller.limit_key, None)
    video = Video(
        id=ObjectId(),
        filename=filename_from_url(checked.url),
        source=VideoSource.URL,
        source_url=checked.url,
        owner_id=caller.principal.owner_id,
        limit_key=caller.limit_key,
    )
    return await _store_and_queue(app, video)


async def retry(app: AppState, principal: Principal, video_id: ObjectId) -> Video:
    try:
        video = await app.videos.requeue(video_id, scope(principal))
        if video is None:
            current = await find_video(principal, video_id)
            if current is None:
                raise NotFoundError("No video with this id")
            raise InvalidStateError(
                f"Only FAILED videos can be retried; this one is {current.status}"
            )
        await enqueue_again(app.redis, video_id)
    except (RedisError, OSError) as exc:
        # Not queued: back to FAILED rather than PENDING with no job. (The state is stored
        # before it is published, so with Redis down only the publish fails.)
        with contextlib.suppress(RedisError, OSError):
            await app.videos.fail(video_id, "Retrying failed: the job queue was unavailable")
        raise ServiceUnavailableError("The job queue is unavailable; try again shortly") from exc
    return video


async def delete(app: AppState, principal: Principal, video_id: ObjectId) -> bool:
    """Remove the document, stop its job if one runs, remove its files. False if none existed
    (or it is not the principal's to delete: the same answer)."""
    if not await app.videos.delete(video_id, scope(principal)):
        return False
    app.done.forget(video_id)
    await cancel_processing(app.redis, video_id)
    await app.storage.remove_video(video_id)
    return True


async def _store_and_queue(app: AppState, video: Video) -> Video:
    assert video.id is not None
    inserted = False
    try:
        # The record first: a document always has one, for `reindex` after a lost database.
        await records.write_new(app.storage, video)
        await app.videos.insert(video)
        inserted = True
        await enqueue_processing(app.redis, video.id)
        VIDEOS_CREATED.labels(video.source.value.lower()).inc()
    except (PyMongoError, RedisError, OSError) as exc:
        log.warning("upload %s rolled back: %r", video.id, exc)
        await _undo(app, video, inserted)
        raise ServiceUnavailableError(CANNOT_STORE) from exc
    except BaseException:
        await _undo(app, video, inserted)
        raise
    await app.videos.announce(video)
    return video


async def _undo(app: AppState, video: Video, inserted: bool) -> None:
    assert video.id is not None
    try:
        await app.storage.remove_video(video.id)
    except OSError as exc:
        # The store is down too: the workers' sweeper removes the files once it answers.
        log.warning("could not remove the files of video %s after a failed upload: %s",
                    video.id, exc)  # fmt: skip
    if inserted:
        try:
            await video.delete()
        except PyMongoError:
            log.exception("could not remove video %s after a failed upload", video.id)
