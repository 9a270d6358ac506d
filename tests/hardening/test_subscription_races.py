"""Case 15: a subscriber gets the final state exactly once, however its subscription and the
change interleave (the subscription listens before it reads MongoDB)."""

from __future__ import annotations

import asyncio

import pytest
from bson import ObjectId
from redis.asyncio import Redis

from clipo_gql import videos as videos_module
from clipo_gql.auth.principal import Principal
from clipo_gql.events import EventPublisher
from clipo_gql.models import Video, VideoSource
from clipo_gql.videos import VideoService
from tests.clips import Clips
from tests.conftest import Server
from tests.test_api import upload_id, watch

pytestmark = pytest.mark.timeout(60)


async def test_subscribing_after_done_gets_done_at_once_then_completion(
    server: Server, clips: Clips
):
    video_id = await upload_id(server, clips.h264_aac)
    await asyncio.wait_for(watch(server, video_id), 60)
    late = await asyncio.wait_for(watch(server, video_id), 5)
    assert [s["status"] for s in late] == ["DONE"]


@pytest.mark.parametrize("change", ["before-the-read", "after-the-read"])
async def test_a_change_between_subscribe_and_the_first_read_arrives_once(
    server: Server, redis: Redis, monkeypatch: pytest.MonkeyPatch, change: str
):
    video = Video(filename="clip.mp4", source=VideoSource.UPLOAD)
    await video.insert()
    assert video.id is not None
    service = VideoService(EventPublisher(redis, server.settings.redis_prefix))
    real_find = videos_module.find_video  # type: ignore[attr-defined]
    raced = False

    async def racing_find(principal: Principal, video_id: ObjectId) -> Video | None:
        # The first read of the subscription: the video fails around it, once.
        nonlocal raced
        if raced or video_id != video.id:
            return await real_find(principal, video_id)
        raced = True
        if change == "before-the-read":
            await service.fail(video_id, "it broke")
            return await real_find(principal, video_id)
        stale = await real_find(principal, video_id)
        await service.fail(video_id, "it broke")
        return stale

    monkeypatch.setattr(videos_module, "find_video", racing_find)
    states = await asyncio.wait_for(watch(server, str(video.id)), 10)
    assert raced
    statuses = [s["status"] for s in states]
    expected = ["FAILED"] if change == "before-the-read" else ["PENDING", "FAILED"]
    assert statuses == expected
    assert states[-1]["error"] == "it broke"
