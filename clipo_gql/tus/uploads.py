"""A resumable upload's life before its last byte: creation (a video in UPLOADING, counted by
the owner's limits), and receiving one request body at the stored offset.

Bytes are written as the multipart path writes them (`uploads.WRITE_BYTES` batches, one
thread hop each, the cap counted as they arrive), and the first ones are sniffed by the same
`sniff_video` as soon as enough have arrived. An offset is stored only once the bytes before
it are fsynced, so a `HEAD` after any crash tells the truth; what a crashed request wrote
past it is cut when the next one starts (`pieces.open_at`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from datetime import timedelta
from typing import Any

from bson import ObjectId
from pymongo.errors import PyMongoError
from starlette.requests import ClientDisconnect, Request

from clipo_gql import records
from clipo_gql.actions import ACCEPTED_FORMATS, Caller
from clipo_gql.errors import (
    CANNOT_STORE,
    BadUserInputError,
    ChecksumMismatchError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    UnsupportedMediaError,
)
from clipo_gql.models import Video, VideoSource, VideoStatus, now
from clipo_gql.ops.metrics import TUS_BYTES, TUS_UPLOADS
from clipo_gql.state import AppState
from clipo_gql.tus import pieces
from clipo_gql.tus.completion import complete
from clipo_gql.tus.protocol import Checksum
from clipo_gql.units import human_size
from clipo_gql.uploads import HEAD_BYTES, WRITE_BYTES, safe_filename, sniff_video

log = logging.getLogger(__name__)

# Progress is stored and published at most this often per upload (api-next.md § D).
ANNOUNCE_EVERY_SECONDS = 0.25
_ANNOUNCED_KEPT = 10_000
# When each upload's progress was last published by this process (bounded: oldest dropped).
_announced: OrderedDict[ObjectId, float] = OrderedDict()


def too_large(settings_max: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The file is larger than the {human_size(settings_max)} upload limit"
    )


async def create_upload(app: AppState, caller: Caller, filename: str, length: int) -> Video:
    """A new upload of `length` bytes: its video (UPLOADING, owned by the caller) and an empty
    file for its bytes. Refused like any new video by the owner's limits and the disk guard,
    with `length` counted as what the disk must still take."""
    if length <= 0:
        raise BadUserInputError("An empty file is not a video: the upload length must be above 0")
    if length > app.settings.max_upload_bytes:
        raise too_large(app.settings.max_upload_bytes)
    await app.quotas.admit_new_video(caller.limit_key, length, incoming=True)
    video = Video(
        id=ObjectId(),
        filename=safe_filename(filename),
        source=VideoSource.UPLOAD,
        status=VideoStatus.UPLOADING,
        progress=0.0,
        size_bytes=length,
        owner_id=caller.principal.owner_id,
        limit_key=caller.limit_key,
        upload_length=length,
        upload_offset=0,
        upload_expires_at=now() + timedelta(seconds=app.settings.upload_expiry_seconds),
    )
    assert video.id is not None
    try:
        await records.write_new(app.storage, video)
        await pieces.create(app.storage, video.id)
        await app.videos.insert(video)
    except (PyMongoError, OSError) as exc:
        log.warning("upload %s not created: %r", video.id, exc)
        await app.storage.remove_video(video.id)
        raise ServiceUnavailableError(CANNOT_STORE) from exc
    except BaseException:
        await app.storage.remove_video(video.id)
        raise
    TUS_UPLOADS.labels("created").inc()
    await app.videos.announce(video)
    return video


async def remove_upload(app: AppState, video_id: ObjectId) -> None:
    """End an upload: its document (subscribers hear it is gone) and every byte of it."""
    _announced.pop(video_id, None)
    await app.videos.delete(video_id, {})
    app.done.forget(video_id)
    await app.storage.remove_video(video_id)


async def receive(
    app: AppState, video: Video, request: Request, checksum: Checksum | None
) -> Video:
    """Append the request body at the video's stored offset (the caller holds the upload's
    lock and has checked the offset the client sent). Returns the video as stored after it:
    still UPLOADING with the new offset, or PENDING when this was the last byte."""
    assert video.id is not None
    assert video.upload_length is not None
    video_id, length = video.id, video.upload_length
    start = video.upload_offset or 0
    try:
        file = await pieces.open_at(app.storage, video_id, start)
    except FileNotFoundError:
        raise NotFoundError("No upload with this id") from None
    # The first bytes are sniffed once enough are there: by the request that gets them there.
    threshold = min(HEAD_BYTES, length) if start < min(HEAD_BYTES, length) else 0
    head = bytearray()
    if threshold:
        head += await file.head(start)
    hasher = checksum.hasher() if checksum is not None else None
    received = start  # bytes of the upload received so far, written or pending
    stored = start  # the offset the document holds
    pending: list[bytes] = []
    pending_bytes = 0
    loop = asyncio.get_running_loop()
    synced_at = loop.time()

    async def write() -> None:
        nonlocal pending, pending_bytes
        batch, pending, pending_bytes = pending, [], 0
        await file.write(batch)
        TUS_BYTES.inc(sum(map(len, batch)))

    async def store(offset: int) -> Video:
        nonlocal stored, synced_at
        await file.sync()
        synced_at = loop.time()
        stored_video = await _store_offset(app, video_id, offset, length)
        stored = offset
        return stored_video

    try:
        try:
            async with contextlib.aclosing(request.stream()) as stream:
                async for data in stream:
                    if not data:
                        continue
                    received += len(data)
                    if received > length:
                        raise PayloadTooLargeError(
                            f"More bytes than the upload's length ({length}) were sent"
                        )
                    if hasher is not None:
                        hasher.update(data)
                    if start < threshold and len(head) < threshold:  # not sniffed yet
                        head += data[: threshold - len(head)]
                        if len(head) >= threshold:
                            _sniff(head)
                    pending.append(data)
                    pending_bytes += len(data)
                    if pending_bytes >= WRITE_BYTES:
                        await write()
                        # Without a checksum, every stored offset is final: store it as we go,
                        # so a connection or a process lost mid-PATCH costs little to resume.
                        if (
                            hasher is None
                            and loop.time() - synced_at >= ANNOUNCE_EVERY_SECONDS
                            and received - stored >= file.sync_every_bytes
                        ):
                            video = await store(received)
        except ClientDisconnect:
            if hasher is None and received > stored:
                # Keep what arrived (tusd does too): the client resumes from there.
                with contextlib.suppress(Exception):
                    await write()
                    await store(received)
            raise
        await write()
        if hasher is not None and hasher.digest() != checksum.digest:  # type: ignore[union-attr]
            await file.truncate(start)
            raise ChecksumMismatchError(
                f"The {checksum.algorithm} checksum of the chunk does not match its bytes;"  # type: ignore[union-attr]
                " the chunk was discarded"
            )
        if received > stored or received == length:
            video = await store(received)
    except UnsupportedMediaError:
        await file.close()
        TUS_UPLOADS.labels("refused").inc()
        await remove_upload(app, video_id)
        raise
    finally:
        await file.close()
    if received == length:
        _announced.pop(video_id, None)
        completed = await complete(app, video_id, length)
        if completed is not None:
            return completed
        fresh = await Video.get(video_id)
        if fresh is None:
            raise NotFoundError("No upload with this id")
        return fresh
    return video


async def _store_offset(app: AppState, video_id: ObjectId, offset: int, length: int) -> Video:
    moment = asyncio.get_running_loop().time()
    last = _announced.get(video_id)
    announce = last is None or moment - last >= ANNOUNCE_EVERY_SECONDS or offset == length
    fields: dict[str, Any] = {
        "progress": round(offset / length, 4),
        "upload_expires_at": now() + timedelta(seconds=app.settings.upload_expiry_seconds),
    }
    stored = await app.videos.upload_received(video_id, offset, fields, announce=announce)
    if stored is None:
        # Deleted, expired or terminated while this request wrote.
        raise NotFoundError("No upload with this id (it was removed meanwhile)")
    if announce:
        _announced[video_id] = moment
        _announced.move_to_end(video_id)
        while len(_announced) > _ANNOUNCED_KEPT:
            _announced.popitem(last=False)
    return stored


def _sniff(head: bytearray) -> None:
    if not sniff_video(bytes(head)):
        raise UnsupportedMediaError(
            f"This does not look like a video file; upload {ACCEPTED_FORMATS}. "
            "The upload was removed"
        )
