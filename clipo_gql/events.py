"""Video events on Redis pub/sub: channel names, publishing, and one shared subscriber.

Every stored change of a video is published as the whole video (JSON), so a subscriber never
has to read MongoDB per event. An API process keeps ONE pub/sub connection (`EventHub`) and
fans messages out to its websocket subscribers: a thousand watchers cost one Redis connection,
and one decoding of each message (they all receive the same object).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Final, Generic, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from clipo_gql.errors import ServiceUnavailableError
from clipo_gql.models import Video

log = logging.getLogger(__name__)

# Put in a listener's queue when the hub lost its connection: events may have been missed,
# so the listener re-reads the stored state.
RESYNC: Final = None
SUBSCRIBE_TIMEOUT = 5.0
# A channel that heard nothing for this long makes its listeners re-read: a safety net for
# events lost in ways the hub cannot see. One timer for the hub, not one per listener and
# event (those were a tenth of the CPU of a fan-out to 1,000 subscribers, bench row 6).
QUIET_RESYNC_SECONDS = 15.0
T = TypeVar("T")


def video_channel(prefix: str, video_id: object) -> str:
    return f"{prefix}:video:{video_id}"


class EventPublisher:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def channel(self, video_id: object) -> str:
        return video_channel(self.prefix, video_id)

    async def publish(self, video: Video) -> None:
        """Best effort: MongoDB already holds the change, and subscribers re-read it when their
        connection comes back, so a Redis outage must not fail the job that made the change."""
        try:
            await self.redis.publish(self.channel(video.id), video.model_dump_json())
        except (RedisError, OSError) as exc:
            log.warning("could not publish the change of video %s: %s", video.id, exc)


class EventHub(Generic[T]):
    """One pub/sub connection shared by every listener in this process.

    Each message is decoded once, by `decode`, and the same object goes to every listener of
    its channel: listeners must treat it as read-only.
    """

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        decode: Callable[[str], T],
        quiet_resync_seconds: float = QUIET_RESYNC_SECONDS,
    ) -> None:
        self._redis = redis
        self._control = f"{prefix}:hub"
        self._decode = decode
        self._quiet = quiet_resync_seconds
        self._listeners: dict[str, set[asyncio.Queue[T | None]]] = {}
        self._heard: dict[str, float] = {}  # channel -> when it last had a message (or news)
        self._confirmed: dict[str, asyncio.Event] = {}
        self._pubsub: PubSub | None = None
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="clipo-event-hub"),
            asyncio.create_task(self._resync_quiet(), name="clipo-event-hub-quiet"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    @contextlib.asynccontextmanager
    async def listen(
        self, channel: str, queue: asyncio.Queue[T | None] | None = None
    ) -> AsyncIterator[asyncio.Queue[T | None]]:
        """A queue of the decoded messages on `channel`, once Redis confirmed the subscription.

        Confirmed means: any event published after this returns reaches the queue, so a caller
        may read the stored state next and lose nothing in between. The hub only calls the
        queue's `put_nowait`, in one loop over a channel's listeners: a caller's own queue
        may deliver there (fanout.DirectQueue).
        """
        queue = asyncio.Queue() if queue is None else queue
        if channel not in self._listeners:
            self._heard[channel] = time.monotonic()
        listeners = self._listeners.setdefault(channel, set())
        listeners.add(queue)
        try:
            confirmed = self._confirmed.get(channel)
            if confirmed is None or not confirmed.is_set():
                await self._subscribe(channel)
            yield queue
        finally:
            listeners.discard(queue)
            if not listeners:
                del self._listeners[channel]
                self._heard.pop(channel, None)
                self._confirmed.pop(channel, None)
                if self._pubsub is not None and self._connected.is_set():
                    with contextlib.suppress(RedisError, OSError):
                        await self._pubsub.unsubscribe(channel)

    async def _subscribe(self, channel: str) -> None:
        confirmed = self._confirmed.setdefault(channel, asyncio.Event())
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await self._connected.wait()
                assert self._pubsub is not None
                await self._pubsub.subscribe(channel)
                await confirmed.wait()
        except (TimeoutError, RedisError, OSError) as exc:
            raise ServiceUnavailableError("Live updates are unavailable (Redis)") from exc

    async def _run(self) -> None:
        delay = 0.1
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._control, *self._listeners)
                self._pubsub = pubsub
                self._connected.set()
                delay = 0.1
                async for message in pubsub.listen():
                    self._dispatch(message)
            except (RedisError, OSError) as exc:
                log.warning("event hub lost Redis (%s); reconnecting", exc)
            finally:
                self._connected.clear()
                self._pubsub = None
                for event in self._confirmed.values():
                    event.clear()
                # Whatever was published while we were away is lost: make listeners re-read.
                for queues in self._listeners.values():
                    for queue in queues:
                        queue.put_nowait(RESYNC)
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _resync_quiet(self) -> None:
        while True:
            await asyncio.sleep(self._quiet / 2)
            now = time.monotonic()
            for channel, heard in list(self._heard.items()):
                if now - heard >= self._quiet:
                    self._heard[channel] = now
                    for queue in self._listeners.get(channel, ()):
                        queue.put_nowait(RESYNC)

    def _dispatch(self, message: dict[str, object]) -> None:
        channel = _text(message["channel"])
        kind = message["type"]
        if kind == "subscribe":
            self._confirmed.setdefault(channel, asyncio.Event()).set()
        elif kind == "message" and (listeners := self._listeners.get(channel)):
            self._heard[channel] = time.monotonic()
            try:
                event: T | None = self._decode(_text(message["data"]))
            except ValueError as exc:
                # Not ours to crash on (anyone with Redis access can publish): listeners re-read.
                log.warning("undecodable message on %s: %s", channel, exc)
                event = RESYNC
            for queue in listeners:
                queue.put_nowait(event)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
