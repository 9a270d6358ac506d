"""The status flow of a video: every change is stored in MongoDB first, then published.

Updates are atomic `find_one_and_update` calls guarded by the state they expect, so two
workers (arq delivers at least once) or a delete racing a job cannot move a video backwards.

The changes webhooks announce (created, DONE, FAILED, deleted) write their event into the
video's outbox in that same update (webhooks/dispatch.py hands it on afterwards): no path
can make one of them without its event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, Literal, TypeAlias

from bson import ObjectId
from pymongo import ReturnDocument

from clipo_gql.auth.ownership import find_video
from clipo_gql.auth.principal import Principal
from clipo_gql.errors import NotFoundError
from clipo_gql.events import EventHub, EventPublisher
from clipo_gql.models import Output, Video, VideoStatus, WebhookEventType, now
from clipo_gql.webhooks import endpoints
from clipo_gql.webhooks.events import new_event, outbox_push

ACTIVE = (VideoStatus.PENDING, VideoStatus.PROCESSING)
# Published instead of a video when one is deleted.
DELETED: Literal["deleted"] = "deleted"
# Whenever the files go (a failure, an interruption, a retry) or are about to be made again.
UNPUBLISHED: dict[str, Any] = {"published": [], "renditions": []}
VideoEvent: TypeAlias = Video | Literal["deleted"]
Dispatch: TypeAlias = Callable[[Video], Awaitable[None]]


def decode_event(data: str) -> VideoEvent:
    """What the hub hands every subscriber of a video channel (decoded once per message)."""
    return DELETED if data == DELETED else Video.model_validate_json(data)


class VideoService:
    def __init__(
        self,
        events: EventPublisher,
        keep_record: Callable[[Video], Awaitable[None]] | None = None,
        dispatch: Dispatch | None = None,
    ) -> None:
        self.events = events
        # Called with each new final state (DONE, FAILED) and retry, once stored and before it
        # is published: whoever sees the change finds the video's folder as it will stay.
        self.keep_record = keep_record
        # Hands a stored change's webhook events on (webhooks/dispatch.py), after it is
        # published; it never raises. Without it (some tests) they wait in the outbox.
        self.dispatch = dispatch

    async def _update(
        self,
        video_id: ObjectId,
        fields: dict[str, Any],
        *,
        expect: Collection[VideoStatus],
        extra_filter: dict[str, Any] | None = None,
        inc: dict[str, int] | None = None,
        lasting: bool = False,
        announce: bool = True,
        event: WebhookEventType | None = None,
    ) -> Video | None:
        """Apply `fields` if the video is in one of `expect`; publish and return the new state."""
        # A video being deleted (`delete`'s first step done) changes no more.
        query: dict[str, Any] = {
            "_id": video_id,
            "status": {"$in": [s.value for s in expect]},
            "deleting_at": None,
        }
        query.update(extra_filter or {})
        update: dict[str, Any] = {
            "$set": {**fields, "updated_at": now()},
            "$inc": {"version": 1, **(inc or {})},
        }
        if event is not None and await _wants_events(video_id):
            update["$push"] = outbox_push(new_event(event))
        else:
            event = None
        raw = await Video.get_motor_collection().find_one_and_update(
            query, update, return_document=ReturnDocument.AFTER
        )
        if raw is None:
            return None
        video = Video.from_mongo(raw)
        if lasting and self.keep_record is not None:
            await self.keep_record(video)
        if announce:
            await self.events.publish(video)
        if event is not None:
            await self.announce(video)
        return video

    async def insert(self, video: Video) -> None:
        """Store a new video with its `video.created` event, which `announce` hands on once
        the caller's whole step has worked (a video rolled back takes its event with it)."""
        if await endpoints.any_for(video.owner_id):
            video.webhook_outbox.append(new_event(WebhookEventType.VIDEO_CREATED))
        await video.insert()

    async def announce(self, video: Video) -> None:
        """Dispatch the webhook events in `video`'s outbox (a no-op when it has none)."""
        if video.webhook_outbox and self.dispatch is not None:
            await self.dispatch(video)

    async def upload_received(
        self, video_id: ObjectId, offset: int, fields: dict[str, Any], *, announce: bool
    ) -> Video | None:
        """A resumable upload's stored (fsynced) offset, never moved back; with `progress`
        and `upload_expires_at` in `fields`. `announce`: publish it (at most 4 times a
        second, the caller's throttle). None when it is no longer UPLOADING (deleted,
        expired or completed meanwhile) or is past `offset` already."""
        return await self._update(
            video_id,
            {**fields, "upload_offset": offset},
            expect=(VideoStatus.UPLOADING,),
            extra_filter={"upload_offset": {"$lte": offset}},
            announce=announce,
        )

    async def upload_complete(self, video_id: ObjectId, length: int) -> Video | None:
        """UPLOADING -> PENDING once the last byte is stored: a conditional update, so of
        requests racing on the last chunk (in any API process) exactly one gets the video."""
        return await self._update(
            video_id,
            {
                "status": VideoStatus.PENDING.value,
                "progress": None,
                "upload_offset": length,
                "upload_expires_at": None,
            },
            expect=(VideoStatus.UPLOADING,),
        )

    async def start_processing(self, video_id: ObjectId) -> Video | None:
        return await self._update(
            video_id,
            {"status": VideoStatus.PROCESSING.value, "progress": 0.0, "error": None, **UNPUBLISHED},
            expect=ACTIVE,
            inc={"attempts": 1},
        )

    async def set_progress(self, video_id: ObjectId, progress: float) -> Video | None:
        """Store a higher progress; a lower or equal one is dropped (progress never goes down)."""
        progress = stored_progress(progress)
        return await self._update(
            video_id,
            {"progress": progress},
            expect=(VideoStatus.PROCESSING,),
            extra_filter={"progress": {"$lt": progress}},
        )

    async def finish(self, video_id: ObjectId, fields: dict[str, Any]) -> Video | None:
        return await self._update(
            video_id,
            {**fields, "status": VideoStatus.DONE.value, "progress": 1.0, "error": None},
            expect=(VideoStatus.PROCESSING,),
            lasting=True,
            event=WebhookEventType.VIDEO_READY,
        )

    async def fail(self, video_id: ObjectId, reason: str) -> Video | None:
        return await self._update(
            video_id,
            {"status": VideoStatus.FAILED.value, "error": reason, **UNPUBLISHED},
            expect=ACTIVE,
            lasting=True,
            event=WebhookEventType.VIDEO_FAILED,
        )

    async def publish(
        self, video_id: ObjectId, published: list[Output], fields: dict[str, Any]
    ) -> Video | None:
        """Outputs ready while still PROCESSING (the MP4 before the ladder): their URLs appear
        and their routes answer from here on."""
        return await self._update(
            video_id, {**fields, "published": [o.value for o in published]},
            expect=(VideoStatus.PROCESSING,),
        )  # fmt: skip

    async def record(self, video_id: ObjectId, fields: dict[str, Any]) -> Video | None:
        """Store what processing learned (probe fields, the downloaded file's name and size)."""
        return await self._update(video_id, fields, expect=(VideoStatus.PROCESSING,))

    async def requeue(self, video_id: ObjectId, scope: dict[str, Any]) -> Video | None:
        """FAILED -> PENDING, for a retry; None when the video is not FAILED (or not there,
        or outside `scope`: ownership.scope)."""
        return await self._update(
            video_id,
            {"status": VideoStatus.PENDING.value, "error": None, "progress": None, **UNPUBLISHED},
            expect=(VideoStatus.FAILED,),
            extra_filter=scope,
            lasting=True,
        )

    async def interrupted(self, video_id: ObjectId) -> Video | None:
        """PROCESSING -> PENDING: the worker stopped under the job, which will run again."""
        return await self._update(
            video_id,
            {"status": VideoStatus.PENDING.value, "progress": None, **UNPUBLISHED},
            expect=(VideoStatus.PROCESSING,),
        )

    async def delete(self, video_id: ObjectId, scope: dict[str, Any]) -> bool:
        """Remove the document (if it matches `scope`: ownership, or a condition such as
        "still expired"); False when none did.

        In two steps, since a removed document can carry no event: first the `video.deleted`
        event is recorded on it (with `deleting_at`), then it is dispatched and the document
        removed. A process that dies in between leaves that to the workers' periodic pass
        (webhooks/dispatch.py), which finishes the delete.
        """
        if not await _wants_events(video_id):
            result = await Video.get_motor_collection().delete_one({"_id": video_id, **scope})
            if result.deleted_count == 0:
                return False
            await self._announce_gone(video_id)
            return True
        event = new_event(WebhookEventType.VIDEO_DELETED)
        raw = await Video.get_motor_collection().find_one_and_update(
            {"_id": video_id, **scope},
            {"$push": outbox_push(event), "$set": {"deleting_at": event.at}},
            return_document=ReturnDocument.AFTER,
        )
        if raw is None:
            return False
        await self.announce(Video.from_mongo(raw))
        await self.remove(video_id)
        return True

    async def remove(self, video_id: ObjectId) -> None:
        """The second step of `delete`."""
        await Video.get_motor_collection().delete_one({"_id": video_id})
        await self._announce_gone(video_id)

    async def _announce_gone(self, video_id: ObjectId) -> None:
        # Subscribers re-read on this, find nothing, and complete.
        await self.events.redis.publish(self.events.channel(video_id), DELETED)

    async def watch(
        self,
        hub: EventHub[VideoEvent],
        video_id: ObjectId,
        principal: Principal,
        queue: EventQueue | None = None,
    ) -> AsyncIterator[Video]:
        """The current state, then every newer one, ending after DONE or FAILED.

        Subscribes before reading MongoDB, so a change made between the two still arrives.
        A video the principal may not see is not found, like one that does not exist.
        With a `queue` that delivers states itself, those are not yielded again: only the
        first state, the final one and those it could not deliver are.
        """
        queue = EventQueue() if queue is None else queue
        async with hub.listen(self.events.channel(video_id), queue):
            video = await find_video(principal, video_id)
            if video is None:
                raise NotFoundError("No video with this id")
            yield video
            while not video.status.is_final:
                queue.waiting(video)
                newest = await _newest(queue)
                video = queue.seen(video)
                if newest is None:
                    fresh = await Video.get(video_id)
                    if fresh is None:  # deleted while watched: nothing more will come
                        return
                else:
                    fresh = newest
                if fresh.version > video.version:
                    video = fresh
                    yield video


class EventQueue(asyncio.Queue[VideoEvent | None]):
    """What `watch` waits on. A subclass may deliver newer states to its subscriber itself
    while `watch` waits (fanout.DirectQueue): a thousand subscribers of one video then cost
    one loop over them per event, not a thousand tasks woken to do the same thing."""

    def waiting(self, video: Video) -> None:
        """`watch` is about to wait; the subscriber has `video` (sent, not only yielded)."""

    def seen(self, video: Video) -> Video:
        """After the wait: the newest state the subscriber has, `video` or newer."""
        return video


async def _newest(queue: asyncio.Queue[VideoEvent | None]) -> Video | None:
    """Wait for events and return the newest queued; None when the state must be re-read.

    Each event carries the whole video, so a slow client skips straight to the latest one.
    """
    # No timeout here: the hub itself sends RESYNC to the listeners of a channel gone quiet.
    items = [await queue.get()]
    while not queue.empty():
        items.append(queue.get_nowait())
    videos = [item for item in items if isinstance(item, Video)]
    if len(videos) < len(items):  # a RESYNC or DELETED among them
        return None
    newest: Video = max(videos, key=lambda v: v.version)
    return newest


async def _wants_events(video_id: ObjectId) -> bool:
    """Whether the video's owner has a webhook endpoint. Owners without one (most) get no
    outbox writes at all, and so no second write racing theirs; an endpoint made meanwhile
    hears of the changes after it."""
    raw = await Video.get_motor_collection().find_one({"_id": video_id}, {"owner_id": 1})
    return raw is not None and await endpoints.any_for(str(raw.get("owner_id", "")))


def stored_progress(progress: float) -> float:
    """Progress as stored while PROCESSING: within 0..0.99 (1.0 is DONE's), 3 decimals."""
    return round(min(max(progress, 0.0), 0.99), 3)
