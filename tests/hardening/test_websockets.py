"""Case 9: websocket clients that misbehave, against a real server and real sockets.

The graphql-transport-ws rules (close codes 4408, 4401, 4400, 4409, 4429), the Origin check on
the handshake for both subprotocols, the per-connection subscription limit, and a server that
keeps serving everyone else after all of that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from bson import ObjectId
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from clipo_gql.events import EventPublisher, video_channel
from clipo_gql.models import Video, VideoSource, VideoStatus
from clipo_gql.settings import Settings
from clipo_gql.videos import VideoService
from tests.conftest import Server, run_server
from tests.wsclient import LEGACY_WS, TRANSPORT_WS, subscribe

BOTH = pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
STATUS = "subscription($id: ID!) { videoStatus(id: $id) { id status error } }"
# Long enough for a loaded CI machine, short enough that a hang fails fast.
WAIT = 10.0


@contextlib.asynccontextmanager
async def serving(settings: Settings, **update: Any) -> AsyncIterator[Server]:
    """`run_server` with some settings changed, stopped even when the test body fails."""
    servers = run_server(settings.model_copy(update=update))
    running = await anext(servers)
    try:
        yield running
    finally:
        # Resuming past its `yield` is what stops uvicorn; `aclose` would skip that code.
        await anext(servers, None)


@contextlib.asynccontextmanager
async def socket(
    server: Server, protocol: str = TRANSPORT_WS, origin: str | None = None
) -> AsyncIterator[ClientConnection]:
    headers = {"Origin": origin} if origin else None
    async with websockets.connect(
        server.ws_url, subprotocols=[Subprotocol(protocol)], additional_headers=headers
    ) as ws:
        yield ws


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    return message


async def init(ws: ClientConnection) -> None:
    await send(ws, {"type": "connection_init", "payload": {}})
    assert (await receive(ws))["type"] == "connection_ack"


def start_message(protocol: str, op_id: str, video_id: str) -> dict[str, Any]:
    kind = "subscribe" if protocol == TRANSPORT_WS else "start"
    payload = {"query": STATUS, "variables": {"id": video_id}}
    return {"id": op_id, "type": kind, "payload": payload}


async def closed(ws: ClientConnection) -> tuple[int | None, str | None]:
    """The code and reason the server closed `ws` with (it must do so within WAIT)."""
    await asyncio.wait_for(ws.wait_closed(), WAIT)
    return ws.close_code, ws.close_reason


async def stored_video(status: VideoStatus = VideoStatus.PENDING) -> str:
    """A video document with no job behind it: its state changes only when a test says so."""
    video = Video(filename="clip.mp4", source=VideoSource.UPLOAD, status=status)
    if status is VideoStatus.FAILED:
        video.error = "made by the test"
    await video.insert()
    return str(video.id)


async def still_serves(server: Server) -> None:
    """Health, a query, and a fresh subscription all answer."""
    health = await server.http.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    body = await server.gql("{ videos(first: 1) { totalCount } }")
    assert "errors" not in body, body
    assert isinstance(body["data"]["videos"]["totalCount"], int)
    video_id = await stored_video(VideoStatus.FAILED)
    payloads = [p async for p in subscribe(server.ws_url, STATUS, {"id": video_id})]
    final = {"id": video_id, "status": "FAILED", "error": "made by the test"}
    assert payloads == [{"data": {"videoStatus": final}}]


async def numsub(redis: Redis, channel: str) -> int:
    counts = await redis.pubsub_numsub(channel)
    return int(counts[0][1])


# -- connection_init rules ------------------------------------------------------------------


async def test_a_client_that_never_sends_connection_init_is_closed_with_4408(
    settings: Settings, redis: Redis
):
    async with serving(settings, ws_connection_init_timeout_seconds=0.5) as server:
        opened = time.monotonic()
        async with socket(server) as silent, socket(server) as polite:
            await init(polite)
            code, reason = await closed(silent)
            waited = time.monotonic() - opened
            assert (code, reason) == (4408, "Connection initialisation timeout")
            # Closed by the timer, not at once and not only when some other limit hit.
            assert 0.4 <= waited < 5, waited
            # The client that did send connection_init outlives the timeout.
            await asyncio.sleep(0.3)
            await send(polite, {"type": "ping"})
            assert await receive(polite) == {"type": "pong"}
        await still_serves(server)


async def test_a_legacy_client_that_never_sends_connection_init_is_closed(
    settings: Settings, redis: Redis
):
    async with (
        serving(settings, ws_connection_init_timeout_seconds=0.5) as server,
        socket(server, LEGACY_WS) as silent,
    ):
        # Twice the timeout and then some; a server that enforced it would have closed by now.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(silent.wait_closed(), 2.0)
        assert silent.close_code == 4408, "the silent legacy socket is still open"
        await still_serves(server)


@BOTH
async def test_subscribing_before_connection_init_is_closed_with_4401(
    server: Server, protocol: str
):
    video_id = await stored_video()
    async with socket(server, protocol) as ws:
        await send(ws, start_message(protocol, "1", video_id))
        assert await closed(ws) == (4401, "Unauthorized")
    # connection_init sent but the subscribe raced ahead of it: still refused the same way
    async with socket(server, protocol) as ws:
        await send(ws, start_message(protocol, "1", video_id))
        await send(ws, {"type": "connection_init", "payload": {}})
        assert await closed(ws) == (4401, "Unauthorized")
    await still_serves(server)


@pytest.mark.parametrize(
    ("frames", "code", "reason"),
    [
        (["not json"], 4400, "WebSocket message must be valid JSON"),
        ([b"\x00\x01binary"], 4400, "WebSocket message type must be text"),
        (['{"type": "bogus"}'], 4400, "Unknown message type: bogus"),
        (['{"no": "type"}'], 4400, "Failed to parse message"),
        (['{"type": "connection_init", "payload": "x"}'], 4400, "Invalid connection init payload"),
        (['{"type": "connection_init"}'] * 2, 4429, "Too many initialisation requests"),
    ],
    ids=["not-json", "binary", "unknown-type", "no-type", "init-payload-not-object", "init-twice"],
)
async def test_protocol_violations_close_with_their_code(
    server: Server, frames: list[str | bytes], code: int, reason: str
):
    async with socket(server) as ws:
        for frame in frames:
            await ws.send(frame)
        assert await closed(ws) == (code, reason)


async def test_a_reused_operation_id_closes_the_socket_with_4409(server: Server):
    video_id = await stored_video()
    async with socket(server) as ws:
        await init(ws)
        await send(ws, start_message(TRANSPORT_WS, "1", video_id))
        assert (await receive(ws))["type"] == "next"
        await send(ws, start_message(TRANSPORT_WS, "1", video_id))
        assert await closed(ws) == (4409, "Subscriber for 1 already exists")
    await still_serves(server)


async def test_broken_documents_fail_their_operation_only(server: Server):
    video_id = await stored_video()
    async with socket(server) as ws:
        await init(ws)
        # Refused before execution: an `error` message (our error codes are applied), and the
        # socket stays open; Strawberry would close with 4400 on a syntax error were the error
        # not rewritten by ErrorCodes.
        for op_id, query in (("1", "subscription {"), ("2", "subscription { nope }")):
            await send(ws, {"id": op_id, "type": "subscribe", "payload": {"query": query}})
            refused = await receive(ws)
            assert (refused["id"], refused["type"]) == (op_id, "error")
            assert [e["extensions"]["code"] for e in refused["payload"]] == ["BAD_USER_INPUT"]
        unknown = refused["payload"][0]["message"]
        assert unknown == "Cannot query field 'nope' on type 'Subscription'."
        # Refused by the resolver: a result with the error, then complete.
        await send(ws, start_message(TRANSPORT_WS, "3", "not-an-id"))
        failed = await receive(ws)
        assert failed["payload"]["data"] is None
        assert [e["extensions"]["code"] for e in failed["payload"]["errors"]] == ["BAD_USER_INPUT"]
        assert await receive(ws) == {"id": "3", "type": "complete"}
        # None of them holds its id: "1" is free again.
        await send(ws, start_message(TRANSPORT_WS, "1", video_id))
        accepted = await receive(ws)
        assert (accepted["id"], accepted["type"]) == ("1", "next")
        assert accepted["payload"]["data"]["videoStatus"]["status"] == "PENDING"
    await still_serves(server)


# -- Origin ---------------------------------------------------------------------------------


@BOTH
async def test_a_foreign_origin_is_refused_at_the_handshake(server: Server, protocol: str):
    for origin in ("https://evil.example", "null", server.url.replace("127.0.0.1", "localhost")):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with socket(server, protocol, origin=origin):
                pass
        assert refused.value.response.status_code == 403, origin
    await still_serves(server)


@BOTH
async def test_an_origin_in_allowed_origins_is_accepted(
    settings: Settings, redis: Redis, protocol: str
):
    async with serving(settings, allowed_origins="https://app.example") as server:
        video_id = await stored_video(VideoStatus.FAILED)
        for origin in ("https://app.example", "HTTPS://APP.EXAMPLE:443", server.url):
            payloads = [
                p
                async for p in subscribe(
                    server.ws_url, STATUS, {"id": video_id}, protocol=protocol, origin=origin
                )
            ]
            assert [p["data"]["videoStatus"]["status"] for p in payloads] == ["FAILED"], origin
        # Look-alikes of the allowed origin: another scheme, port, host, or a suffix trick.
        for origin in (
            "http://app.example",
            "https://app.example:8443",
            "https://app.example.evil.example",
            "https://evil.example",
        ):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with socket(server, protocol, origin=origin):
                    pass
            assert refused.value.response.status_code == 403, origin


# -- the subscription limit -----------------------------------------------------------------


@BOTH
async def test_the_subscription_limit_refuses_the_extra_one_and_keeps_the_others(
    settings: Settings, redis: Redis, protocol: str
):
    data = "next" if protocol == TRANSPORT_WS else "data"
    async with serving(settings, ws_max_subscriptions=3) as server:
        video_id = await stored_video()
        async with socket(server, protocol) as ws:
            await init(ws)
            for op_id in ("1", "2", "3"):
                await send(ws, start_message(protocol, op_id, video_id))
            first = [await receive(ws) for _ in range(3)]
            assert sorted(m["id"] for m in first) == ["1", "2", "3"]
            assert {m["type"] for m in first} == {data}
            assert {m["payload"]["data"]["videoStatus"]["status"] for m in first} == {"PENDING"}

            await send(ws, start_message(protocol, "4", video_id))
            refusal = await receive(ws)
            # Refused by an `error` for that operation only, not by closing the socket; the
            # payload is Strawberry's own error, without our `extensions.code`.
            if protocol == TRANSPORT_WS:
                assert refusal == {
                    "id": "4",
                    "type": "error",
                    "payload": [{"message": "Subscription limit reached"}],
                }
            else:
                assert refusal == {
                    "id": "4",
                    "type": "error",
                    "payload": {"message": "Subscription limit reached"},
                }
            assert ws.close_code is None

            # The three accepted ones still get the video's next state, then complete.
            service = VideoService(EventPublisher(redis, settings.redis_prefix))
            assert await service.fail(ObjectId(video_id), "stopped by the test")
            seen: dict[str, list[str]] = {"1": [], "2": [], "3": []}
            while any(kinds[-1:] != ["complete"] for kinds in seen.values()):
                message = await receive(ws)
                assert message["id"] in seen, message
                seen[message["id"]].append(message["type"])
                if message["type"] == data:
                    state = message["payload"]["data"]["videoStatus"]
                    assert (state["status"], state["error"]) == ("FAILED", "stopped by the test")
            assert all(kinds == [data, "complete"] for kinds in seen.values()), seen

            # Finished operations free their slots: a new one is accepted on the same socket.
            other = await stored_video()
            await send(ws, start_message(protocol, "5", other))
            accepted = await receive(ws)
            assert (accepted["id"], accepted["type"]) == ("5", data)
        await still_serves(server)


# -- the server after all this --------------------------------------------------------------


async def test_dropped_subscribers_are_released_and_the_server_keeps_serving(
    server: Server, redis: Redis
):
    video_id = await stored_video()
    channel = video_channel(server.settings.redis_prefix, video_id)
    sockets: list[ClientConnection] = []
    try:
        for n in range(10):
            ws = await websockets.connect(server.ws_url, subprotocols=[Subprotocol(TRANSPORT_WS)])
            sockets.append(ws)
            await init(ws)
            await send(ws, start_message(TRANSPORT_WS, str(n), video_id))
            assert (await receive(ws))["type"] == "next"
        assert await numsub(redis, channel) == 1, "one Redis subscription shared by all"
    finally:
        for ws in sockets:
            # No close frame: the way a phone losing its network goes away.
            ws.transport.abort()
    # Polled: nothing tells a client when the server has noticed the dropped sockets.
    for _ in range(int(WAIT / 0.05)):
        if not await numsub(redis, channel):
            break
        await asyncio.sleep(0.05)
    assert await numsub(redis, channel) == 0, "the server still listens for gone clients"
    await still_serves(server)
