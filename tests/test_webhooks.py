"""Webhooks (webhooks/, api-next.md § E), organised by the Standard Webhooks specification
(v1.0.0): the envelope, the signature, delivery and retries; then our own rules: the SSRF
policy at creation and at delivery, ownership, the outbox and the log.

The receivers are real HTTP servers on loopback (tests/webhook_receiver.py), so these tests
allow private addresses (URL_FETCH_ALLOW_PRIVATE) except where the SSRF rules are the point.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from bson import ObjectId, json_util
from pydantic import SecretStr
from redis.asyncio import Redis
from standardwebhooks.webhooks import Webhook

from clipo_gql.auth.principal import Principal
from clipo_gql.auth.tokens import mint
from clipo_gql.connections import create_redis
from clipo_gql.models import (
    Video,
    VideoSource,
    WebhookDelivery,
    WebhookEventType,
    now,
)
from clipo_gql.settings import Settings
from clipo_gql.ssrf import AddressPolicy
from clipo_gql.webhooks import endpoints
from clipo_gql.webhooks.dispatch import expire_log
from clipo_gql.webhooks.events import new_event
from clipo_gql.webhooks.jobs import enqueue_delivery
from tests.clips import Clips
from tests.conftest import Server, run_server
from tests.hardening.test_crash_recovery import spawn_worker
from tests.test_ops import scrape, value
from tests.webhook_receiver import ALLOWED_PORTS, HANG, Answer, receiving

pytestmark = pytest.mark.timeout(120)

CREATE = """mutation($url: String!, $events: [WebhookEventType!]) {
  createWebhookEndpoint(url: $url, events: $events) { secret endpoint { id url events createdAt } }
}"""
DELIVERIES = """query($id: ID!) { webhookDeliveries(endpointId: $id) {
  id eventId eventType status attempts lastStatusCode lastError nextAttemptAt createdAt } }"""
ENDPOINTS = "{ webhookEndpoints { id url events } }"
DELETE_ENDPOINT = "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) }"
REDELIVER = "mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { id status attempts } }"
DELETE_VIDEO = "mutation($id: ID!) { deleteVideo(id: $id) }"
FAST_RETRIES = {
    "webhook_retry_schedule": "0.2,0.2,0.2",
    "url_fetch_allow_private": True,
    "url_fetch_allowed_ports": ALLOWED_PORTS,
}


def hooks_settings(settings: Settings, **extra: Any) -> Settings:
    return settings.model_copy(update={**FAST_RETRIES, **extra})


@pytest.fixture
async def server(settings: Settings, redis: Redis) -> AsyncIterator[Server]:
    async for running in run_server(hooks_settings(settings)):
        yield running


async def create_endpoint(
    server: Server, url: str, events: list[str] | None = None, **headers: str
) -> dict[str, Any]:
    response = await server.http.post(
        "/graphql",
        json={"query": CREATE, "variables": {"url": url, "events": events}},
        headers=headers,
    )
    body = response.json()
    assert "errors" not in body, body
    created: dict[str, Any] = body["data"]["createWebhookEndpoint"]
    return created


async def deliveries(server: Server, endpoint_id: str, **headers: str) -> list[dict[str, Any]]:
    response = await server.http.post(
        "/graphql", json={"query": DELIVERIES, "variables": {"id": endpoint_id}}, headers=headers
    )
    body = response.json()
    assert "errors" not in body, body
    found: list[dict[str, Any]] = body["data"]["webhookDeliveries"]
    return found


async def settled(
    server: Server, endpoint_id: str, count: int = 1, **headers: str
) -> list[dict[str, Any]]:
    """The endpoint's deliveries once `count` of them are no longer PENDING."""
    for _ in range(400):
        found = await deliveries(server, endpoint_id, **headers)
        if sum(d["status"] != "PENDING" for d in found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"deliveries never settled: {found}")


async def uploaded(server: Server, clips: Clips, **headers: str) -> str:
    with clips.h264_aac.open("rb") as fh:
        response = await server.http.post(
            "/graphql",
            data={
                "operations": '{"query": "mutation($file: Upload!) { uploadVideo(file: $file) '
                '{ id } }", "variables": {"file": null}}',
                "map": '{"0": ["variables.file"]}',
            },
            files={"0": ("clip.mp4", fh, "video/mp4")},
            headers={"apollo-require-preflight": "true", **headers},
        )
    body = response.json()
    assert "errors" not in body, body
    video_id: str = body["data"]["uploadVideo"]["id"]
    return video_id


def verified(secret: str, request: Any) -> dict[str, Any]:
    """What the `standardwebhooks` library makes of a request: the receiving side's check."""
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


# -- the envelope and the signature (spec: "Webhook metadata", "Signature scheme") -----------


async def test_events_are_signed_as_standard_webhooks(server: Server, clips: Clips):
    async with receiving() as receiver:
        created = await create_endpoint(server, receiver.url)
        secret = created["secret"]
        assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{32}", secret)
        assert created["endpoint"]["events"] == [t.name for t in WebhookEventType]
        listed = (await server.gql(ENDPOINTS))["data"]["webhookEndpoints"]
        assert listed == [{k: created["endpoint"][k] for k in ("id", "url", "events")}]
        assert secret not in str(listed)  # shown once, at creation

        video_id = await uploaded(server, clips)
        created_event, ready = await receiver.wait_for(2)
        for request in (created_event, ready):
            assert request.method == "POST"
            assert request.path == "/hook"
            assert request.headers["content-type"] == "application/json"
            assert request.headers["webhook-signature"].startswith("v1,")
        first, second = verified(secret, created_event), verified(secret, ready)
        assert first["type"] == "video.created"
        assert second["type"] == "video.ready"
        assert first["data"]["video"]["id"] == second["data"]["video"]["id"] == video_id
        assert first["data"]["video"]["status"] == "PENDING"
        video = second["data"]["video"]
        assert video["status"] == "DONE"
        assert video["durationText"] == "00:00:02"
        assert video["streamUrl"] == f"{server.url}/stream/{video_id}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", second["timestamp"])
        assert created_event.headers["webhook-id"] != ready.headers["webhook-id"]

        # A body changed in transit, or signed with another secret, is refused by the library.
        tampered = type(ready)(ready.method, ready.path, ready.headers, ready.body + b" ")
        with pytest.raises(Exception, match="signature"):
            verified(secret, tampered)

        found = await settled(server, created["endpoint"]["id"], 2)
        assert [d["eventType"] for d in found] == ["VIDEO_READY", "VIDEO_CREATED"]
        assert all(d["status"] == "DELIVERED" and d["attempts"] == 1 for d in found)
        assert all(d["lastStatusCode"] == 200 and d["nextAttemptAt"] is None for d in found)
        assert found[0]["eventId"] == ready.headers["webhook-id"]


async def test_an_endpoint_gets_only_the_types_it_asked_for(server: Server, clips: Clips):
    async with receiving() as receiver:
        created = await create_endpoint(server, receiver.url, ["VIDEO_DELETED"])
        video_id = await uploaded(server, clips)
        for _ in range(200):  # until DONE
            got = await server.gql("query($id: ID!) { video(id: $id) { status } }", id=video_id)
            if got["data"]["video"]["status"] == "DONE":
                break
            await asyncio.sleep(0.05)
        assert (await server.gql(DELETE_VIDEO, id=video_id))["data"]["deleteVideo"] is True
        (deleted,) = await receiver.wait_for(1)
        payload = verified(created["secret"], deleted)
        assert payload["type"] == "video.deleted"
        assert payload["data"]["video"]["id"] == video_id
        assert payload["data"]["video"]["status"] == "DONE"
        await asyncio.sleep(0.3)
        assert len(receiver.received) == 1


# -- delivery and retries (spec: "Delivery behaviour", "Retry schedule") -------------------


async def test_a_flaky_receiver_gets_the_same_event_until_it_answers_2xx(
    server: Server, clips: Clips
):
    answers = iter([500, 503])
    async with receiving(lambda _: next(answers, 204)) as receiver:
        created = await create_endpoint(server, receiver.url, ["VIDEO_CREATED"])
        await uploaded(server, clips)
        requests = await receiver.wait_for(3)
        assert len({r.headers["webhook-id"] for r in requests}) == 1
        assert len({r.body for r in requests}) == 1
        for request in requests:
            verified(created["secret"], request)
        (delivery,) = await settled(server, created["endpoint"]["id"])
        assert delivery["status"] == "DELIVERED"
        assert delivery["attempts"] == 3
        assert delivery["lastStatusCode"] == 204
        assert delivery["lastError"] is None


async def test_a_dead_receiver_is_failed_after_the_schedule(server: Server, clips: Clips):
    async with receiving(lambda _: 503) as receiver:
        created = await create_endpoint(server, receiver.url, ["VIDEO_CREATED"])
        await uploaded(server, clips)
        (delivery,) = await settled(server, created["endpoint"]["id"])
        assert delivery["status"] == "FAILED"
        assert delivery["attempts"] == 4 == len(receiver.received)  # 1 + 3 retries
        assert delivery["lastStatusCode"] == 503
        assert delivery["lastError"] == "The endpoint answered 503 Service Unavailable"
        assert delivery["nextAttemptAt"] is None


async def test_a_receiver_that_is_not_there(server: Server, clips: Clips):
    async with receiving() as receiver:
        url = receiver.url
    created = await create_endpoint(server, url, ["VIDEO_CREATED"])
    await uploaded(server, clips)
    (delivery,) = await settled(server, created["endpoint"]["id"])
    assert delivery["status"] == "FAILED"
    assert delivery["lastStatusCode"] is None
    assert delivery["lastError"] == "Could not connect: the connection was refused"


async def test_a_receiver_that_hangs_times_out_and_delays_nobody_else(
    settings: Settings, redis: Redis, clips: Clips
):
    # Two hanging endpoints per worker slot would stall a worker without per-endpoint slots.
    hurried = hooks_settings(
        settings, webhook_timeout_seconds=3.0, webhook_concurrency=2,
        webhook_endpoint_concurrency=1,
    )  # fmt: skip
    async for server in run_server(hurried):
        async with receiving(lambda _: HANG) as stuck, receiving() as fine:
            slow = await create_endpoint(server, stuck.url, ["VIDEO_CREATED"])
            for _ in range(2):
                await uploaded(server, clips)
            await stuck.wait_for(1)
            quick = await create_endpoint(server, fine.url, ["VIDEO_CREATED"])
            await uploaded(server, clips)
            await fine.wait_for(1)
            # Delivered while the stuck endpoint's first attempt still waits for its answer
            # (no attempt of it is recorded yet): nothing queued behind it.
            hung = await deliveries(server, slow["endpoint"]["id"])
            assert [d["attempts"] for d in hung] == [0, 0, 0]
            (delivery,) = await settled(server, quick["endpoint"]["id"])
            assert delivery["status"] == "DELIVERED"
            for _ in range(200):
                hung = await deliveries(server, slow["endpoint"]["id"])
                if any(d["attempts"] for d in hung):
                    break
                await asyncio.sleep(0.05)
            tried = [d for d in hung if d["attempts"]]
            assert tried
            assert {d["lastError"] for d in tried} == {"No answer within 3 s"}
            assert {d["status"] for d in hung} == {"PENDING"}  # to be tried again


async def test_redirects_are_not_followed(server: Server, clips: Clips):
    def behave(request: Any) -> Answer | int:
        if request.path == "/hook":
            return Answer(302, {"Location": "/elsewhere"})
        return 200

    async with receiving(behave) as receiver:
        created = await create_endpoint(server, receiver.url, ["VIDEO_CREATED"])
        await uploaded(server, clips)
        (delivery,) = await settled(server, created["endpoint"]["id"])
        assert delivery["status"] == "FAILED"
        assert delivery["lastStatusCode"] == 302
        assert "redirects are not followed" in delivery["lastError"]
        assert {r.path for r in receiver.received} == {"/hook"}


async def test_redeliver_sends_the_same_event_again(server: Server, clips: Clips):
    async with receiving() as receiver:
        created = await create_endpoint(server, receiver.url, ["VIDEO_CREATED"])
        await uploaded(server, clips)
        (delivery,) = await settled(server, created["endpoint"]["id"])
        again = (await server.gql(REDELIVER, id=delivery["id"]))["data"]["redeliverWebhook"]
        assert again == {"id": delivery["id"], "status": "PENDING", "attempts": 1}
        first, second = await receiver.wait_for(2)
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        assert first.body == second.body
        for _ in range(100):
            (delivery,) = await deliveries(server, created["endpoint"]["id"])
            if delivery["attempts"] == 2:
                break
            await asyncio.sleep(0.05)
        assert delivery["status"] == "DELIVERED"
        assert delivery["attempts"] == 2


async def test_a_deleted_endpoint_gets_nothing_more(server: Server, clips: Clips):
    async with receiving() as receiver:
        created = await create_endpoint(server, receiver.url, ["VIDEO_CREATED"])
        endpoint_id = created["endpoint"]["id"]
        await uploaded(server, clips)
        await receiver.wait_for(1)
        deleted = await server.gql(DELETE_ENDPOINT, id=endpoint_id)
        assert deleted["data"]["deleteWebhookEndpoint"] is True
        assert (await server.gql(DELETE_ENDPOINT, id=endpoint_id))["data"] == {
            "deleteWebhookEndpoint": False
        }
        assert await WebhookDelivery.find({"endpoint_id": ObjectId(endpoint_id)}).count() == 0
        await uploaded(server, clips)
        await asyncio.sleep(0.5)
        assert len(receiver.received) == 1
        gone = await server.gql(DELIVERIES, id=endpoint_id)
        assert gone["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_a_worker_killed_mid_delivery_delivers_again(settings: Settings, redis: Redis):
    """At least once: the attempt a SIGKILLed worker was making runs again elsewhere."""
    hooks = hooks_settings(settings)
    answers = iter([HANG])
    async with receiving(lambda _: next(answers, 200)) as receiver:
        async for _server in run_server(hooks, worker=False):
            endpoint = await endpoints.create(
                hooks, Principal(owner_id="anonymous", admin=False), receiver.url, None,
                "http://clipo.test",
            )  # fmt: skip
            assert endpoint.id is not None
            delivery = WebhookDelivery(
                endpoint_id=endpoint.id, owner_id="anonymous", event_id=f"msg_{ObjectId()}",
                event_type=WebhookEventType.VIDEO_READY, body='{"type":"video.ready"}',
                expires_at=now() + timedelta(days=1),
            )  # fmt: skip
            await delivery.insert()
            database = WebhookDelivery.get_motor_collection().database
            seed = json_util.dumps(
                {
                    name: await database[name].find().to_list(None)
                    for name in ("webhook_endpoints", "webhook_deliveries")
                }
            )
            env = {
                "CLIPO_TEST_SEED_DOCUMENTS": seed,
                "URL_FETCH_ALLOW_PRIVATE": "true",
                "URL_FETCH_ALLOWED_PORTS": ALLOWED_PORTS,
                "WEBHOOK_RETRY_SCHEDULE": hooks.webhook_retry_schedule,
            }
            queue = await create_redis(hooks)
            try:
                await enqueue_delivery(queue, hooks, delivery.id, 0)
            finally:
                await queue.aclose()
            first = spawn_worker(hooks, "", **env)
            try:
                (hanging,) = await receiver.wait_for(1)
            finally:
                first.kill()
                first.wait()
            second = spawn_worker(hooks, "", **env)
            try:
                _, again = await receiver.wait_for(2, within=60)
                assert again.headers["webhook-id"] == hanging.headers["webhook-id"]
                assert again.headers["webhook-id"] == delivery.event_id
                assert verified(endpoint.secret, again) == {"type": "video.ready"}
                if hooks.mongodb_url:  # a database both processes share: the attempt is stored
                    for _ in range(200):
                        stored = await WebhookDelivery.get(delivery.id)
                        if stored is not None and stored.status == "DELIVERED":
                            break
                        await asyncio.sleep(0.05)
                    assert stored is not None
                    assert stored.status == "DELIVERED"
                    assert stored.attempts == 1
            finally:
                second.terminate()
                second.wait(20)


# -- the SSRF policy: at creation, and again at every delivery -----------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080/hook", "points to a loopback address"),
        ("http://169.254.169.254/latest", "the cloud metadata address"),
        ("http://10.1.2.3/hook", "a private address"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://example.com:22/hook", "Port 22 is not allowed"),
        ("ftp://example.com/hook", "Only http and https"),
        ("http://user:pw@example.com/hook", "user name or password"),
    ],
)
async def test_endpoint_urls_follow_the_submit_video_rules(
    settings: Settings, redis: Redis, url: str, reason: str
):
    async for server in run_server(settings):
        got = await server.gql(CREATE, url=url)
        assert got["data"] is None
        assert got["errors"][0]["extensions"]["code"] == "FORBIDDEN_URL"
        assert reason in got["errors"][0]["message"]
        assert (await server.gql(ENDPOINTS))["data"]["webhookEndpoints"] == []


async def test_a_name_that_moved_inside_our_network_is_refused_at_delivery(
    settings: Settings, redis: Redis, clips: Clips
):
    async def public(host: str, port: int) -> list[Any]:
        from ipaddress import ip_address

        return [ip_address("93.184.216.34")]

    moved = {"webhook_retry_schedule": "0.1", "url_fetch_allowed_ports": ALLOWED_PORTS}
    async for server in run_server(settings.model_copy(update=moved)):
        async with receiving() as receiver:
            # Created while `localhost` resolved to a public address; now it is 127.0.0.1.
            endpoint = await endpoints.create(
                server.settings, Principal(owner_id="anonymous", admin=False),
                f"http://localhost:{receiver.port}/hook", [WebhookEventType.VIDEO_CREATED],
                server.url, AddressPolicy(resolver=public),
            )  # fmt: skip
            await uploaded(server, clips)
            (delivery,) = await settled(server, str(endpoint.id))
            assert delivery["status"] == "FAILED"
            assert delivery["attempts"] == 2
            assert delivery["lastError"] == (
                "localhost resolves to a loopback address (127.0.0.1), which is not allowed"
            )
            assert receiver.received == []


# -- ownership ----------------------------------------------------------------------------


async def test_events_go_only_to_the_owners_endpoints(
    settings: Settings, redis: Redis, clips: Clips
):
    secured = hooks_settings(
        settings, auth_mode="required", auth_jwt_secret=SecretStr("s" * 40),
        media_url_secret=SecretStr("m" * 40),
    )  # fmt: skip
    async for server in run_server(secured):
        alice = {"Authorization": f"Bearer {mint(secured, 'alice')}"}
        bob = {"Authorization": f"Bearer {mint(secured, 'bob')}"}
        async with receiving() as alices, receiving() as bobs:
            mine = await create_endpoint(server, alices.url, ["VIDEO_READY"], **alice)
            theirs = await create_endpoint(server, bobs.url, ["VIDEO_READY"], **bob)
            video_id = await uploaded(server, clips, **alice)
            (ready,) = await alices.wait_for(1)
            video = verified(mine["secret"], ready)["data"]["video"]
            assert video["id"] == video_id
            assert video["ownerId"] == "alice"
            assert re.search(r"[?&]token=", video["streamUrl"])  # signed, as auth is on
            stream = await server.http.get(video["streamUrl"].removeprefix(server.url))
            assert stream.status_code == 200
            await asyncio.sleep(0.5)
            assert bobs.received == []

            # Bob cannot see, read the log of, delete or redeliver Alice's.
            listed = await server.http.post("/graphql", json={"query": ENDPOINTS}, headers=bob)
            assert [e["id"] for e in listed.json()["data"]["webhookEndpoints"]] == [
                theirs["endpoint"]["id"]
            ]
            endpoint_id = mine["endpoint"]["id"]
            log = await server.http.post(
                "/graphql", json={"query": DELIVERIES, "variables": {"id": endpoint_id}},
                headers=bob,
            )  # fmt: skip
            assert log.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
            (delivery,) = await deliveries(server, endpoint_id, **alice)
            again = await server.http.post(
                "/graphql", json={"query": REDELIVER, "variables": {"id": delivery["id"]}},
                headers=bob,
            )  # fmt: skip
            assert again.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
            gone = await server.http.post(
                "/graphql", json={"query": DELETE_ENDPOINT, "variables": {"id": endpoint_id}},
                headers=bob,
            )  # fmt: skip
            assert gone.json()["data"]["deleteWebhookEndpoint"] is False
            unauthenticated = await server.http.post("/graphql", json={"query": ENDPOINTS})
            assert unauthenticated.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_endpoints_per_owner_are_limited(settings: Settings, redis: Redis):
    async for server in run_server(hooks_settings(settings, webhook_max_endpoints=2)):
        for _ in range(2):
            await create_endpoint(server, "http://127.0.0.1:47099/hook")
        got = await server.gql(CREATE, url="http://127.0.0.1:47099/hook")
        assert got["errors"][0]["extensions"]["code"] == "QUOTA_EXCEEDED"


# -- the outbox: no change without its event, even across a crash --------------------------


async def test_events_a_crash_left_in_the_outbox_are_dispatched_by_the_periodic_pass(
    settings: Settings, redis: Redis
):
    async for server in run_server(hooks_settings(settings, requeue_interval_seconds=0.2,
                                                  webhook_dispatch_grace_seconds=0)):  # fmt: skip
        async with receiving() as receiver:
            created = await create_endpoint(server, receiver.url)
            # As a process leaves them when it dies between its update and the dispatch:
            # a video whose FAILED event is in its outbox, one half deleted.
            failed = new_event(WebhookEventType.VIDEO_FAILED)
            failed.at -= timedelta(seconds=5)
            stranded = Video(
                filename="a.mp4", source=VideoSource.UPLOAD, status="FAILED",
                webhook_outbox=[failed],
            )  # fmt: skip
            await stranded.insert()
            deleted = new_event(WebhookEventType.VIDEO_DELETED)
            half_deleted = Video(
                filename="b.mp4", source=VideoSource.UPLOAD, webhook_outbox=[deleted],
                deleting_at=now() - timedelta(seconds=5),
            )  # fmt: skip
            await half_deleted.insert()
            requests = await receiver.wait_for(2)
            types = sorted(verified(created["secret"], r)["type"] for r in requests)
            assert types == ["video.deleted", "video.failed"]
            assert {r.headers["webhook-id"] for r in requests} == {failed.id, deleted.id}
            for _ in range(100):
                left = await Video.find({"webhook_outbox.0": {"$exists": True}}).count()
                if left == 0 and await Video.get(half_deleted.id) is None:
                    break
                await asyncio.sleep(0.05)
            assert left == 0
            assert await Video.get(half_deleted.id) is None
            await asyncio.sleep(0.5)  # more passes: dispatched once
            assert len(receiver.received) == 2


async def test_the_delivery_log_expires(server: Server):
    def entry(expires_in: float) -> WebhookDelivery:
        return WebhookDelivery(
            endpoint_id=ObjectId(), owner_id="anonymous", event_id=f"msg_{ObjectId()}",
            event_type=WebhookEventType.VIDEO_READY, body="{}",
            expires_at=now() + timedelta(seconds=expires_in),
        )  # fmt: skip

    old, recent = entry(-1), entry(3600)
    for delivery in (old, recent):
        await delivery.insert()
    indexes = await WebhookDelivery.get_motor_collection().index_information()
    (expiry,) = [i for i in indexes.values() if list(i["key"]) == [("expires_at", 1)]]
    # MongoDB (and the stand-in) expire by the TTL index; FerretDB 1.24 has none, so the
    # workers' pass removes them (indexes.py).
    if "expireAfterSeconds" in expiry:
        assert expiry["expireAfterSeconds"] == 0
    await expire_log()
    assert [d.id for d in await WebhookDelivery.find_all().to_list()] == [recent.id]


# -- metrics ------------------------------------------------------------------------------


async def test_metrics_count_deliveries_by_outcome_and_attempt(server: Server, clips: Clips):
    before = await scrape(server.http)
    answers = iter([500])
    async with receiving(lambda _: next(answers, 200)) as receiver:
        created = await create_endpoint(server, receiver.url, ["VIDEO_CREATED"])
        await uploaded(server, clips)
        await settled(server, created["endpoint"]["id"])
    after = await scrape(server.http)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("clipo_webhook_events_total", type="video.created") == 1
    assert grew("clipo_webhook_deliveries_total", outcome="retried", attempt="1") == 1
    assert grew("clipo_webhook_deliveries_total", outcome="delivered", attempt="2") == 1
    assert grew("clipo_webhook_delivery_latency_seconds_count") == 1
    assert grew("clipo_webhook_delivery_latency_seconds_sum") >= 0.2  # the retry's delay
    # No label names an endpoint, an owner or an id.
    for name, labels in after:
        if name.startswith("clipo_webhook"):
            assert {k for k, _ in labels} <= {"type", "outcome", "attempt", "le"}, name
