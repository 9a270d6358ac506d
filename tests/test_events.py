"""The subscription is fed by Redis: changes made by another process's connection arrive."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from clipo_gql.events import EventHub, EventPublisher, video_channel
from clipo_gql.models import Video, VideoSource, VideoStatus
from clipo_gql.settings import Settings
from clipo_gql.videos import VideoService, decode_event
from tests.conftest import Server
from tests.wsclient import subscribe

WATCH = "subscription($id: ID!) { videoStatus(id: $id) { status progress error } }"


async def other_process_service(settings: Settings) -> tuple[VideoService, Redis]:
    """A VideoService on its own Redis connection, as a worker process would have."""
    redis = Redis.from_url(settings.effective_redis_url)
    return VideoService(EventPublisher(redis, settings.redis_prefix)), redis


async def test_changes_published_elsewhere_reach_the_subscriber(server: Server):
    video = Video(filename="a.mp4", source=VideoSource.UPLOAD)
    await video.insert()
    assert video.id is not None
    service, redis = await other_process_service(server.settings)
    seen: list[dict[str, Any]] = []

    async def collect() -> None:
        async for payload in subscribe(server.ws_url, WATCH, {"id": str(video.id)}):
            seen.append(payload["data"]["videoStatus"])

    watcher = asyncio.create_task(collect())
    async with asyncio.timeout(10):
        while not seen:  # noqa: ASYNC110 - the websocket client has no event to wait on
            await asyncio.sleep(0.01)
    assert seen == [{"status": "PENDING", "progress": None, "error": None}]

    await service.start_processing(video.id)
    await service.set_progress(video.id, 0.5)
    await service.set_progress(video.id, 0.4)  # lower: dropped, never published
    await service.fail(video.id, "The file has no video stream")
    await service.set_progress(video.id, 0.9)  # after the end: refused by the status guard
    await asyncio.wait_for(watcher, 10)
    await redis.aclose()

    published = [
        {"status": "PENDING", "progress": None, "error": None},
        {"status": "PROCESSING", "progress": 0.0, "error": None},
        {"status": "PROCESSING", "progress": 0.5, "error": None},
        {"status": "FAILED", "progress": 0.5, "error": "The file has no video stream"},
    ]
    # A subscriber that falls behind skips to the newest state (by design): what it saw is
    # the published states in order, some intermediate ones possibly skipped, ending FAILED.
    assert seen[0] == published[0]
    assert seen[-1] == published[-1]
    assert all(state in published for state in seen), seen
    assert [published.index(state) for state in seen] == sorted(
        published.index(state) for state in seen
    )
    stored = await Video.get(video.id)
    assert stored is not None
    assert stored.status is VideoStatus.FAILED
    assert stored.version == 3


async def test_hub_confirms_subscription_before_returning(settings: Settings, redis: Redis):
    """An event published right after listen() returns is delivered: no window to lose it."""
    hub = EventHub(redis, settings.redis_prefix, str)
    await hub.start()
    channel = video_channel(settings.redis_prefix, "x")
    try:
        for i in range(20):
            async with hub.listen(channel) as queue:
                await redis.publish(channel, f"event {i}")
                assert await asyncio.wait_for(queue.get(), 2) == f"event {i}"
        # every listener gone: the hub let go of the channel
        assert await redis.pubsub_numsub(channel) == [(channel.encode(), 0)]
    finally:
        await hub.close()


async def test_hub_fans_out_one_connection_and_one_decoding_to_many_listeners(
    settings: Settings, redis: Redis
):
    decoded: list[str] = []

    def decode(data: str) -> dict[str, Any]:
        decoded.append(data)
        return {"said": data}

    hub = EventHub(redis, settings.redis_prefix, decode)
    await hub.start()
    channel = video_channel(settings.redis_prefix, "y")
    try:
        async with hub.listen(channel) as first, hub.listen(channel) as second:
            assert await redis.pubsub_numsub(channel) == [(channel.encode(), 1)]
            await redis.publish(channel, "hello")
            got = await asyncio.wait_for(first.get(), 2)
            assert got == {"said": "hello"}
            assert await asyncio.wait_for(second.get(), 2) is got
            assert decoded == ["hello"]
    finally:
        await hub.close()


async def test_a_quiet_channel_makes_its_listeners_reread(settings: Settings, redis: Redis):
    # The safety net for events lost where the hub cannot see it: silence means re-read.
    hub = EventHub(redis, settings.redis_prefix, str, quiet_resync_seconds=0.3)
    await hub.start()
    channel = video_channel(settings.redis_prefix, "q")
    try:
        async with hub.listen(channel) as queue:
            await redis.publish(channel, "news")
            assert await asyncio.wait_for(queue.get(), 2) == "news"
            assert await asyncio.wait_for(queue.get(), 2) is None  # RESYNC after the silence
            assert queue.empty()
    finally:
        await hub.close()


async def test_an_undecodable_message_makes_listeners_reread_and_the_hub_goes_on(
    settings: Settings, redis: Redis, caplog: pytest.LogCaptureFixture
):
    # Anyone who can reach Redis can publish on our channels: junk must not stop the hub.
    hub = EventHub(redis, settings.redis_prefix, decode_event)
    await hub.start()
    channel = video_channel(settings.redis_prefix, "w")
    video = Video(filename="a.mp4", source=VideoSource.UPLOAD)
    try:
        async with hub.listen(channel) as queue:
            await redis.publish(channel, "{not json")
            assert await asyncio.wait_for(queue.get(), 2) is None  # RESYNC: read MongoDB
            await redis.publish(channel, video.model_dump_json())
            after = await asyncio.wait_for(queue.get(), 2)
            assert isinstance(after, Video)
            assert after.filename == "a.mp4"
    finally:
        await hub.close()
    assert "undecodable message" in caplog.text


async def test_hub_tells_listeners_to_resync_after_losing_redis(settings: Settings, redis: Redis):
    name = f"{settings.redis_prefix}-hub".replace(":", "-")
    own = Redis.from_url(settings.effective_redis_url, client_name=name)
    hub = EventHub(own, settings.redis_prefix, str)
    await hub.start()
    channel = video_channel(settings.redis_prefix, "z")
    try:
        async with hub.listen(channel) as queue:
            # Drop the hub's pub/sub connection as a Redis restart would.
            for client in await redis.client_list(_type="pubsub"):
                if client["name"] == name:
                    await redis.client_kill_filter(_id=client["id"])
            assert await asyncio.wait_for(queue.get(), 5) is None  # RESYNC
            # ...and it is subscribed again afterwards
            for _ in range(100):
                if await redis.pubsub_numsub(channel) == [(channel.encode(), 1)]:
                    break
                await asyncio.sleep(0.05)
            await redis.publish(channel, "after")
            assert await asyncio.wait_for(queue.get(), 5) == "after"
    finally:
        await hub.close()
        await own.aclose()
