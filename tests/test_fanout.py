"""Subscribers of one video share each state's GraphQL execution, and still each get exactly
what they asked for, with URLs for the host they connected to."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from redis.asyncio import Redis
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from clipo_gql import fanout, graphql_view, types
from clipo_gql.events import EventPublisher
from clipo_gql.models import Video, VideoSource
from clipo_gql.videos import VideoService
from clipo_gql.ws_protocol import FrameWebSocketProtocol
from tests.conftest import Server
from tests.wsclient import subscribe

pytestmark = pytest.mark.timeout(60)

WITH_URL = "subscription($id: ID!) { videoStatus(id: $id) { status progress streamUrl } }"
WITH_NAME = "subscription($id: ID!) { videoStatus(id: $id) { status filename } }"


async def test_each_state_runs_once_per_query_and_host(
    server: Server, redis: Redis, monkeypatch: pytest.MonkeyPatch
):
    video = Video(filename="clip.mp4", source=VideoSource.UPLOAD)
    await video.insert()
    assert video.id is not None
    service = VideoService(EventPublisher(redis, server.settings.redis_prefix))

    executions: list[tuple[int, str]] = []
    plain = StrawberryGraphQLCoreExecutionContext.execute_operation

    def counted(self: Any, serially: bool | None = None) -> Any:
        if isinstance(self.root_value, types.Video):
            executions.append((id(self.root_value), self.operation.loc.source.body))
        return plain(self, serially)

    monkeypatch.setattr(StrawberryGraphQLCoreExecutionContext, "execute_operation", counted)

    # Each shared result is also serialised once, whatever the number of its subscribers.
    encoded_payloads: list[str] = []
    shared_messages: list[str] = []
    real_dumps, real_encode = fanout._dumps, fanout.encode_shared

    def dumps(value: object) -> str:
        text = real_dumps(value)
        if isinstance(value, dict) and "data" in value:
            encoded_payloads.append(text)
        return text

    def encode(message: Any) -> str | None:
        text = real_encode(message)
        if text is not None:
            assert text == json.dumps(message, separators=(",", ":"))
            shared_messages.append(text)
        return text

    # The states between the first and the final one are framed by fanout itself.
    direct = _record_frames(monkeypatch)

    monkeypatch.setattr(fanout, "_dumps", dumps)
    monkeypatch.setattr(graphql_view, "encode_shared", encode)

    other_host = server.ws_url.replace("127.0.0.1", "localhost")
    subscribers = [
        *[(server.ws_url, WITH_URL)] * 4,
        *[(other_host, WITH_URL)] * 2,
        *[(server.ws_url, WITH_NAME)] * 2,
    ]
    seen: list[list[dict[str, Any]]] = [[] for _ in subscribers]
    arrived = asyncio.Condition()

    async def follow(n: int, url: str, query: str) -> None:
        async for payload in subscribe(url, query, {"id": str(video.id)}):
            assert not payload.get("errors"), payload
            seen[n].append(payload["data"]["videoStatus"])
            async with arrived:
                arrived.notify_all()

    async def all_have(count: int) -> None:
        async with arrived:
            await arrived.wait_for(lambda: all(len(states) >= count for states in seen))

    tasks = [asyncio.create_task(follow(n, *s)) for n, s in enumerate(subscribers)]
    try:
        await asyncio.wait_for(all_have(1), 10)
        await service.start_processing(video.id)
        await asyncio.wait_for(all_have(2), 10)
        await service.finish(video.id, {})
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    finally:
        for task in tasks:
            task.cancel()

    for states in seen:
        assert [s["status"] for s in states] == ["PENDING", "PROCESSING", "DONE"]
    port = server.url.rsplit(":", 1)[1]
    for (url, query), states in zip(subscribers, seen, strict=True):
        done = states[-1]
        if query == WITH_NAME:
            assert done == {"status": "DONE", "filename": "clip.mp4"}
        else:
            host = "localhost" if "localhost" in url else "127.0.0.1"
            assert done == {
                "status": "DONE",
                "progress": 1.0,
                "streamUrl": f"http://{host}:{port}/stream/{video.id}",
            }
    # 3 states x 3 distinct (query, host): 9 executions for 24 deliveries; PENDING and DONE
    # through Strawberry, PROCESSING sent by fanout to all 8.
    assert len(executions) == 9, executions
    assert len(set(executions)) == 9
    assert len(encoded_payloads) == 9
    assert len(shared_messages) == 16
    assert len(direct) == 8
    assert {json.loads(m)["payload"]["data"]["videoStatus"]["status"] for m in direct} == {
        "PROCESSING"
    }


PROGRESS = "subscription($id: ID!) { videoStatus(id: $id) { status progress } }"


def _record_frames(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The text of every frame fanout writes from now on (each checked to be the JSON
    `json.dumps(message, separators=(",", ":"))` writes, as Strawberry's messages are)."""
    written: list[str] = []
    real = FrameWebSocketProtocol.send_frame

    def send_frame(self: FrameWebSocketProtocol, frame: bytes) -> bool:
        sent = real(self, frame)
        if sent:
            assert frame[0] == 0x81  # one final text frame
            length = frame[1] if frame[1] < 126 else int.from_bytes(frame[2:4], "big")
            text = frame[-length:].decode()
            assert text == json.dumps(json.loads(text), separators=(",", ":"))
            written.append(text)
        return sent

    monkeypatch.setattr(FrameWebSocketProtocol, "send_frame", send_frame)
    return written


async def _follow_progress(
    server: Server, redis: Redis, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """Three subscribers through PENDING, four progress steps and DONE; what each saw, and
    the messages fanout framed itself."""
    video = Video(filename="clip.mp4", source=VideoSource.UPLOAD)
    await video.insert()
    assert video.id is not None
    service = VideoService(EventPublisher(redis, server.settings.redis_prefix))
    direct = _record_frames(monkeypatch)
    seen: list[list[dict[str, Any]]] = [[] for _ in range(3)]
    arrived = asyncio.Condition()

    async def follow(n: int) -> None:
        variables = {"id": str(video.id)}
        async for payload in subscribe(server.ws_url, PROGRESS, variables, protocol=protocol):
            assert not payload.get("errors"), payload
            seen[n].append(payload["data"]["videoStatus"])
            async with arrived:
                arrived.notify_all()

    async def all_at(progress: float | None, status: str) -> None:
        def there() -> bool:
            return all(s and s[-1] == {"status": status, "progress": progress} for s in seen)

        async with arrived:
            await arrived.wait_for(there)

    tasks = [asyncio.create_task(follow(n)) for n in range(3)]
    try:
        await asyncio.wait_for(all_at(None, "PENDING"), 10)
        await service.start_processing(video.id)
        await asyncio.wait_for(all_at(0.0, "PROCESSING"), 10)
        for step in (0.25, 0.5, 0.75):
            await service.set_progress(video.id, step)
            await asyncio.wait_for(all_at(step, "PROCESSING"), 10)
        await service.finish(video.id, {})
        await asyncio.wait_for(asyncio.gather(*tasks), 10)  # each completes after DONE
    finally:
        for task in tasks:
            task.cancel()
    return seen, direct


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_states_between_first_and_final_are_sent_by_fanout(
    server: Server, redis: Redis, monkeypatch: pytest.MonkeyPatch, protocol: str
):
    seen, direct = await _follow_progress(server, redis, protocol, monkeypatch)
    expected = [
        {"status": "PENDING", "progress": None},
        *({"status": "PROCESSING", "progress": p} for p in (0.0, 0.25, 0.5, 0.75)),
        {"status": "DONE", "progress": 1.0},
    ]
    assert seen == [expected] * 3
    assert len(direct) == 12  # the four PROCESSING states, to each of the three
    kind = "next" if protocol == "graphql-transport-ws" else "data"
    for text in direct:
        message = json.loads(text)
        assert text == json.dumps(message, separators=(",", ":"))
        assert (message["id"], message["type"]) == ("1", kind)


async def test_a_socket_that_cannot_take_a_frame_now_gets_its_states_the_usual_way(
    server: Server, redis: Redis, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(FrameWebSocketProtocol, "send_frame", lambda self, frame: False)
    seen, _ = await _follow_progress(server, redis, "graphql-transport-ws", monkeypatch)
    for states in seen:
        assert [s["progress"] for s in states] == [None, 0.0, 0.25, 0.5, 0.75, 1.0]
        assert states[-1]["status"] == "DONE"
