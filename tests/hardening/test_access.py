"""Access control as two tenants (alice, bob) and an admin see it, over every operation and
route, both websocket protocols, forged tokens and links, and limits (auth/).

Another owner's video must look exactly like an id that does not exist.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from bson import ObjectId
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr
from redis.asyncio import Redis
from websockets.typing import Subprotocol

from clipo_gql.access_log import redact
from clipo_gql.auth.credentials import check_config
from clipo_gql.auth.media_links import Kind, MediaLinks
from clipo_gql.auth.tokens import JwtVerifier, mint
from clipo_gql.connections import ConfigError
from clipo_gql.errors import UnauthenticatedError
from clipo_gql.settings import Settings
from tests.clips import Clips
from tests.conftest import Server, run_server, video_files
from tests.wsclient import LEGACY_WS, TRANSPORT_WS

SECRET = "test-jwt-secret-" + "s" * 32
PAGE = (
    "query($owner: String) { videos(first: 10, owner: $owner) "
    "{ totalCount edges { node { id ownerId } } } }"
)
VIDEO = (
    "query($id: ID!) { video(id: $id) { id ownerId status streamUrl thumbnailUrl downloadUrl "
    "metadataUrl metadataDownloadUrl } }"
)
WATCH = "subscription($id: ID!) { videoStatus(id: $id) { id status } }"
ROUTES = {
    Kind.STREAM: "/stream/{}",
    Kind.DOWNLOAD: "/download/{}",
    Kind.METADATA: "/metadata/{}",
    Kind.METADATA_DOWNLOAD: "/download/{}/metadata",
    Kind.THUMBNAIL: "/thumbnails/{}.jpg",
}
UPLOAD_OPERATIONS = (
    '{"query": "mutation($file: Upload!) { uploadVideo(file: $file) { id ownerId } }", '
    '"variables": {"file": null}}'
)

pytestmark = pytest.mark.timeout(120)
# The in-process worker looks for jobs once at start and then not for an hour: what is
# uploaded stays unfinished, as the limits on unfinished videos need.
IDLE_WORKER = {"worker_poll_delay_seconds": 3600.0}


def auth_settings(settings: Settings, **extra: Any) -> Settings:
    return settings.model_copy(
        update={
            "auth_mode": "required",
            "auth_jwt_secret": SecretStr(SECRET),
            "media_url_secret": SecretStr("test-media-secret-" + "m" * 32),
            **extra,
        }
    )


@pytest.fixture
async def api(settings: Settings, redis: Redis) -> AsyncIterator[Server]:
    async for running in run_server(auth_settings(settings)):
        yield running


def bearer(server: Server, subject: str, *, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(server.settings, subject, admin=admin)}"}


ALICE, BOB = "alice", "bob"


async def gql(server: Server, query: str, who: dict[str, str] | None, **variables: Any) -> Any:
    response = await server.http.post(
        "/graphql", json={"query": query, "variables": variables}, headers=who or {}
    )
    return response


async def data(server: Server, query: str, who: dict[str, str], **variables: Any) -> Any:
    response = await gql(server, query, who, **variables)
    assert response.status_code == 200, response.text
    return response.json()


async def upload(server: Server, path: Path, who: dict[str, str]) -> httpx.Response:
    return await server.http.post(
        "/graphql",
        data={"operations": UPLOAD_OPERATIONS, "map": '{"0": ["variables.file"]}'},
        files={"0": (path.name, path.read_bytes(), "video/mp4")},  # noqa: ASYNC240 - small clip
        headers={"apollo-require-preflight": "true", **who},
    )


async def done_video(server: Server, clip: Path, who: dict[str, str]) -> dict[str, Any]:
    response = await upload(server, clip, who)
    body = response.json()
    assert "errors" not in body, body
    video_id = body["data"]["uploadVideo"]["id"]
    for _ in range(600):
        video = (await data(server, VIDEO, who, id=video_id))["data"]["video"]
        if video["status"] == "DONE":
            return dict(video)
        await asyncio.sleep(0.05)
    raise AssertionError("never DONE")


async def ws_first(
    server: Server, protocol: str, payload: dict[str, Any] | None, video_id: str, **connect: Any
) -> tuple[str, Any]:
    """What the server answers first after connection_init + subscribe: (kind, payload or
    close code)."""
    async with websockets.connect(
        server.ws_url, subprotocols=[Subprotocol(protocol)], **connect
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload or {}}))
        try:
            reply = json.loads(await ws.recv())
        except websockets.exceptions.ConnectionClosed as closed:
            return "closed", closed.rcvd.code if closed.rcvd else None
        if reply["type"] != "connection_ack":
            return reply["type"], reply.get("payload")
        start = "subscribe" if protocol == TRANSPORT_WS else "start"
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": start,
                    "payload": {"query": WATCH, "variables": {"id": video_id}},
                }
            )
        )
        while True:
            message = json.loads(await ws.recv())
            if message["type"] not in ("ka", "ping", "pong"):
                return message["type"], message.get("payload")


# --- identities ----------------------------------------------------------------------------


async def test_every_operation_needs_a_credential(api: Server):
    for query in (
        "{ me { ownerId } }",
        PAGE,
        'mutation { deleteVideo(id: "6b0269d6ac40a7b6d6c5976d") }',
        "{ webhookEndpoints { id } }",
        'mutation { createWebhookEndpoint(url: "https://example.com/") { secret } }',
        'mutation { redeliverWebhook(deliveryId: "6b0269d6ac40a7b6d6c5976d") { id } }',
    ):
        response = await gql(api, query, None)
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    # A multipart upload is refused before its body is stored.
    refused = await api.http.post(
        "/graphql",
        data={"operations": UPLOAD_OPERATIONS, "map": '{"0": ["variables.file"]}'},
        files={"0": ("a.mp4", b"\x00" * 100_000, "video/mp4")},
        headers={"apollo-require-preflight": "true"},
    )
    assert refused.status_code == 401
    assert video_files(api.settings) == []
    # Open without one: health, readiness, the GraphiQL page itself.
    assert (await api.http.get("/healthz")).status_code == 200
    assert (await api.http.get("/readyz")).status_code == 200
    page = await api.http.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()


async def test_me_says_who_the_caller_is(api: Server):
    assert (await data(api, "{ me { ownerId admin } }", bearer(api, ALICE)))["data"] == {
        "me": {"ownerId": ALICE, "admin": False}
    }
    admin = bearer(api, "root", admin=True)
    assert (await data(api, "{ me { ownerId admin } }", admin))["data"]["me"]["admin"] is True


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        ("none", "not valid"),
        ("expired", "expired"),
        ("wrong-issuer", "not valid"),
        ("wrong-audience", "not valid"),
        ("no-sub", "not valid"),
        ("no-exp", "not valid"),
        ("other-secret", "not valid"),
        ("garbage", "not valid"),
    ],
)
async def test_forged_jwts_are_refused(settings: Settings, redis: Redis, forge: str, reason: str):
    configured = auth_settings(
        settings, auth_jwt_issuer="https://id.example", auth_jwt_audience="clipo"
    )
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": ALICE,
        "exp": now + 600,
        "iss": "https://id.example",
        "aud": "clipo",
    }
    key, algorithm = SECRET, "HS256"
    if forge == "expired":
        claims["exp"] = now - 120
    elif forge == "wrong-issuer":
        claims["iss"] = "https://evil.example"
    elif forge == "wrong-audience":
        claims["aud"] = "someone-else"
    elif forge == "no-sub":
        del claims["sub"]
    elif forge == "no-exp":
        del claims["exp"]
    elif forge == "other-secret":
        key = "another-secret-" + "z" * 32
    if forge == "none":
        token = jwt.encode(claims, "", algorithm="none")
    elif forge == "garbage":
        token = "not.a.jwt"
    else:
        token = jwt.encode(claims, key, algorithm=algorithm)
    with pytest.raises(UnauthenticatedError, match=reason):
        await JwtVerifier(configured).verify(token)
    # The good one verifies.
    good = jwt.encode(
        {**claims, "sub": ALICE, "exp": now + 600, "iss": "https://id.example", "aud": "clipo"},
        SECRET,
        algorithm="HS256",
    )
    assert (await JwtVerifier(configured).verify(good)).owner_id == ALICE


async def test_hs256_signed_with_the_public_key_is_refused(settings: Settings):
    """Algorithm confusion (CVE-2022-29217's class): the RSA public key as an HMAC secret."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    configured = settings.model_copy(
        update={"auth_mode": "required", "auth_jwt_public_key": pem.decode()}
    )
    claims = {"sub": ALICE, "exp": int(time.time()) + 600}
    verifier = JwtVerifier(configured)
    assert (await verifier.verify(jwt.encode(claims, private, algorithm="RS256"))).owner_id == ALICE
    # PyJWT itself refuses a PEM as an HMAC key; build the forgery by hand.
    import base64
    import hashlib
    import hmac

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signature = b64(hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    with pytest.raises(UnauthenticatedError):
        await verifier.verify(f"{head}.{body}.{signature}")


def test_required_mode_refuses_to_start_without_keys(settings: Settings):
    with pytest.raises(ConfigError, match="AUTH_JWT_SECRET"):
        check_config(settings.model_copy(update={"auth_mode": "required"}))
    with pytest.raises(ConfigError, match="MEDIA_URL_SECRET"):
        check_config(
            settings.model_copy(
                update={"auth_mode": "required", "auth_jwt_secret": SecretStr(SECRET)}
            )
        )


# --- two tenants -----------------------------------------------------------------------------


async def test_another_owners_video_looks_like_no_video(api: Server, clips: Clips):
    alice, bob = bearer(api, ALICE), bearer(api, BOB)
    admin = bearer(api, "root", admin=True)
    video = await done_video(api, clips.h264_aac, alice)
    video_id = video["id"]
    assert video["ownerId"] == ALICE
    unknown = str(ObjectId())

    for target in (video_id, unknown):  # bob's view of alice's video == of no video
        assert (await data(api, VIDEO, bob, id=target))["data"] == {"video": None}
        retried = await data(
            api, "mutation($id: ID!) { retryVideo(id: $id) { id } }", bob, id=target
        )
        assert retried["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        assert retried["errors"][0]["message"] == "No video with this id"
        deleted = await data(api, "mutation($id: ID!) { deleteVideo(id: $id) }", bob, id=target)
        assert deleted == {"data": {"deleteVideo": False}}
        for protocol in (TRANSPORT_WS, LEGACY_WS):
            kind, payload = await ws_first(api, protocol, bob, target)
            assert kind in ("error", "data", "next"), (kind, payload)
            errors = payload if isinstance(payload, list) else payload.get("errors", [payload])
            assert errors[0]["extensions"]["code"] == "NOT_FOUND", payload
        for route in ROUTES.values():
            answer = await api.http.get(route.format(target), headers=bob)
            assert answer.status_code == 404, (route, answer.text)
            assert answer.json() == {"error": "No video with this id"}

    # Lists: each their own; an admin all, and may narrow to one owner; others may not.
    await done_video(api, clips.h264_noaudio, bob)
    listed = {
        who: (await data(api, PAGE, headers))["data"]["videos"]
        for who, headers in (("alice", alice), ("bob", bob), ("admin", admin))
    }
    assert [e["node"]["ownerId"] for e in listed["alice"]["edges"]] == [ALICE]
    assert [e["node"]["ownerId"] for e in listed["bob"]["edges"]] == [BOB]
    assert listed["admin"]["totalCount"] == 2
    narrowed = (await data(api, PAGE, admin, owner=ALICE))["data"]["videos"]
    assert [e["node"]["id"] for e in narrowed["edges"]] == [video_id]
    own = (await data(api, PAGE, bob, owner=BOB))["data"]["videos"]
    assert own["totalCount"] == 1
    forbidden = await data(api, PAGE, bob, owner=ALICE)
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    # The owner and an admin see and act.
    kind, payload = await ws_first(api, TRANSPORT_WS, alice, video_id)
    assert payload["data"]["videoStatus"]["status"] == "DONE"
    for route in ROUTES.values():
        assert (await api.http.get(route.format(video_id), headers=alice)).status_code == 200
        assert (await api.http.get(route.format(video_id), headers=admin)).status_code == 200
    assert (await data(api, VIDEO, admin, id=video_id))["data"]["video"]["ownerId"] == ALICE
    deleted = await data(api, "mutation($id: ID!) { deleteVideo(id: $id) }", admin, id=video_id)
    assert deleted == {"data": {"deleteVideo": True}}


async def test_a_cursor_never_widens_the_listing(api: Server, clips: Clips):
    alice, bob = bearer(api, ALICE), bearer(api, BOB)
    for _ in range(3):
        assert "errors" not in (await upload(api, clips.h264_aac, alice)).json()
    page = (await data(api, "{ videos(first: 1) { pageInfo { endCursor } } }", alice))["data"]
    cursor = page["videos"]["pageInfo"]["endCursor"]
    query = (
        "query($after: String) { videos(first: 10, after: $after) "
        "{ totalCount edges { node { id } } } }"
    )
    seen = (await data(api, query, bob, after=cursor))["data"]["videos"]
    assert seen == {"totalCount": 0, "edges": []}


# --- websockets ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_websockets_need_a_credential(api: Server, clips: Clips, protocol: str):
    alice = bearer(api, ALICE)
    video = await done_video(api, clips.h264_aac, alice)
    for payload in (None, {"authorization": "Bearer not-a-token"}):
        kind, detail = await ws_first(api, protocol, payload, video["id"])
        if protocol == TRANSPORT_WS:
            assert (kind, detail) == ("closed", 4403)
        else:
            assert kind == "connection_error", (kind, detail)
    # In the payload (either spelling) or in the upgrade request's header.
    for payload, headers in (
        ({"authorization": alice["Authorization"]}, None),
        ({"Authorization": alice["Authorization"]}, None),
        (None, alice),
    ):
        kind, detail = await ws_first(
            api, protocol, payload, video["id"], additional_headers=headers
        )
        assert kind in ("next", "data"), (kind, detail)
        assert detail["data"]["videoStatus"]["status"] == "DONE"


async def test_an_expired_token_ends_no_running_subscription_but_starts_none(
    api: Server, clips: Clips
):
    alice = bearer(api, ALICE)
    video = await done_video(api, clips.h264_aac, alice)
    short = mint(api.settings, ALICE, ttl_seconds=1)
    async with websockets.connect(api.ws_url, subprotocols=[Subprotocol(TRANSPORT_WS)]) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {short}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await asyncio.sleep(1.2)
        start = {"query": WATCH, "variables": {"id": video["id"]}}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": start}))
        message = json.loads(await ws.recv())
        errors = (
            message["payload"]
            if isinstance(message["payload"], list)
            else message["payload"]["errors"]
        )
        assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED", message


# --- signed media URLs -------------------------------------------------------------------------


async def test_signed_urls_open_one_route_of_one_video_until_they_expire(api: Server, clips: Clips):
    alice = bearer(api, ALICE)
    first = await done_video(api, clips.h264_aac, alice)
    second = await done_video(api, clips.h264_noaudio, alice)
    stream = httpx.URL(first["streamUrl"])
    token = stream.params["token"]
    base = api.http.base_url

    answer = await api.http.get(f"{stream.path}?token={token}")  # no Authorization at all
    assert answer.status_code == 200
    assert answer.headers["cache-control"].startswith("private")
    for field in ("thumbnailUrl", "downloadUrl", "metadataUrl", "metadataDownloadUrl"):
        url = httpx.URL(first[field])
        assert (await api.http.get(url.raw_path.decode())).status_code == 200, field
    assert str(base) in first["streamUrl"]

    links = MediaLinks(api.settings)
    forged = {
        "tampered": token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        "expiry moved": f"{int(token.split('.')[0]) + 3600}.{token.split('.')[1]}",
        "expired": links.token(first["id"], Kind.STREAM, expiry=int(time.time()) - 1),
        "another video's": httpx.URL(second["streamUrl"]).params["token"],
        "another route's": httpx.URL(first["downloadUrl"]).params["token"],
        "garbage": "x",
    }
    for what, bad in forged.items():
        refused = await api.http.get(f"{stream.path}?token={bad}")
        assert refused.status_code == 403, what
        expected = "has expired" if what == "expired" else "is not valid"
        assert expected in refused.json()["error"], what
    assert (await api.http.get(stream.path)).status_code == 401
    # A token never opens another owner's... anything: it names its video.
    bob = bearer(api, BOB)
    assert (await api.http.get(stream.path, headers=bob)).status_code == 404


def test_tokens_stay_out_of_the_access_log():
    line = redact("/stream/6b0269d6ac40a7b6d6c5976d?token=1764000000.abcDEF_-&x=1")
    assert line == "/stream/6b0269d6ac40a7b6d6c5976d?token=[redacted]&x=1"


# --- API keys ----------------------------------------------------------------------------------

CREATE_KEY = (
    "mutation($label: String!, $admin: Boolean) { createApiKey(label: $label, admin: $admin) "
    "{ key apiKey { id label ownerId admin lastUsedAt } } }"
)


async def test_api_keys_act_as_their_owner_until_revoked(api: Server):
    alice, bob = bearer(api, ALICE), bearer(api, BOB)
    made = (await data(api, CREATE_KEY, alice, label="ci"))["data"]["createApiKey"]
    key = made["key"]
    assert key.startswith("clipo_")
    assert len(key) > 50
    assert made["apiKey"]["ownerId"] == ALICE
    with_key = {"Authorization": f"Bearer {key}"}
    assert (await data(api, "{ me { ownerId admin } }", with_key))["data"]["me"] == {
        "ownerId": ALICE, "admin": False,
    }  # fmt: skip
    listed = (await data(api, "{ apiKeys { id label lastUsedAt } }", alice))["data"]["apiKeys"]
    assert [k["label"] for k in listed] == ["ci"]
    assert listed[0]["lastUsedAt"] is not None
    assert (await data(api, "{ apiKeys { id } }", bob))["data"]["apiKeys"] == []

    # Not bob's to revoke; admin keys only for admins.
    key_id = made["apiKey"]["id"]
    revoke = "mutation($id: ID!) { revokeApiKey(id: $id) }"
    assert (await data(api, revoke, bob, id=key_id))["data"] == {"revokeApiKey": False}
    refused = await data(api, CREATE_KEY, alice, label="root", admin=True)
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    root = bearer(api, "root", admin=True)
    admin_key = (await data(api, CREATE_KEY, root, label="ops", admin=True))["data"]
    assert admin_key["createApiKey"]["apiKey"]["admin"] is True

    assert (await data(api, revoke, alice, id=key_id))["data"] == {"revokeApiKey": True}
    gone = await gql(api, "{ me { ownerId } }", with_key)
    assert gone.status_code == 401
    assert "not valid" in gone.json()["errors"][0]["message"]
    wrong = key[:-4] + "AAAA"
    assert (
        await gql(api, "{ me { ownerId } }", {"Authorization": f"Bearer {wrong}"})
    ).status_code == 401


# --- limits ------------------------------------------------------------------------------------


async def test_the_rate_limit_is_shared_by_api_processes(
    settings: Settings, redis: Redis, clips: Clips
):
    # Private URLs allowed: the URL submission below passes its check and meets the limit.
    limited = auth_settings(
        settings, rate_limit_videos="3/minute", url_fetch_allow_private=True, **IDLE_WORKER
    )
    async for one in run_server(limited):
        async for two in run_server(limited):
            alice = bearer(one, ALICE)
            answers = [await upload((one, two)[i % 2], clips.h264_aac, alice) for i in range(3)]
            assert all("errors" not in a.json() for a in answers)
            # The fourth, on either process: refused before its body is stored.
            refused = await upload(two, clips.h264_aac, alice)
            assert refused.status_code == 429
            retry_after = int(refused.headers["retry-after"])
            assert 1 <= retry_after <= 60
            error = refused.json()["errors"][0]
            assert error["extensions"] == {"code": "RATE_LIMITED", "retryAfter": retry_after}
            # Through GraphQL (a URL submission) the same limit, as a GraphQL error.
            submitted = await data(
                one, 'mutation { submitVideo(url: "http://127.0.0.1:8080/a.mp4") { id } }', alice
            )
            assert submitted["errors"][0]["extensions"]["code"] == "RATE_LIMITED", submitted
            # Another owner has a window of their own.
            assert "errors" not in (await upload(one, clips.h264_aac, bearer(one, BOB))).json()


async def test_unfinished_videos_quota_and_disk_are_limited(
    settings: Settings, redis: Redis, clips: Clips
):
    size = clips.h264_aac.stat().st_size
    limited = auth_settings(settings, max_active_videos=2, quota_bytes=size * 3, **IDLE_WORKER)
    async for one in run_server(limited):
        alice = bearer(one, ALICE)
        for _ in range(2):
            assert "errors" not in (await upload(one, clips.h264_aac, alice)).json()
        third = (await upload(one, clips.h264_aac, alice)).json()
        assert third["errors"][0]["extensions"]["code"] == "QUOTA_EXCEEDED"
        assert "waiting or processing" in third["errors"][0]["message"]
    # Each server its own database and media folder: `dev` on the stand-in rebuilds its
    # database from the folder at start, so a shared one would bring the videos back.
    bytes_only = auth_settings(
        settings,
        quota_bytes=size + 10,
        mongodb_database=settings.mongodb_database + "b",
        media_dir=settings.media_dir.with_name("media-b"),
    )
    async for one in run_server(bytes_only):
        bob = bearer(one, BOB)
        assert "errors" not in (await upload(one, clips.h264_aac, bob)).json()
        over = (await upload(one, clips.h264_aac, bob)).json()
        assert over["errors"][0]["extensions"]["code"] == "QUOTA_EXCEEDED"
        assert "quota" in over["errors"][0]["message"]
    full = auth_settings(
        settings,
        min_free_disk_bytes=2**62,
        mongodb_database=settings.mongodb_database + "c",
        media_dir=settings.media_dir.with_name("media-c"),
    )
    async for one in run_server(full):
        before = video_files(one.settings)
        refused = await upload(one, clips.h264_aac, bearer(one, ALICE))
        assert refused.status_code == 507
        assert "disk space" in refused.json()["errors"][0]["message"]
        assert video_files(one.settings) == before


async def test_websockets_per_client_are_limited(settings: Settings, redis: Redis):
    protocols = [Subprotocol(TRANSPORT_WS)]

    async def init(ws: Any, payload: dict[str, str]) -> str:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        try:
            return str(json.loads(await ws.recv())["type"])
        except websockets.exceptions.ConnectionClosed as closed:
            return f"closed {closed.rcvd.code if closed.rcvd else None}"

    # Per address, at the handshake (auth off, or before a socket has authenticated).
    async for one in run_server(settings.model_copy(update={"ws_max_connections_per_client": 2})):
        async with websockets.connect(one.ws_url, subprotocols=protocols) as a:
            async with websockets.connect(one.ws_url, subprotocols=protocols) as b:
                async with websockets.connect(one.ws_url, subprotocols=protocols) as c:
                    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                        await c.recv()
                    assert closed.value.rcvd is not None
                    assert closed.value.rcvd.code == 1013
                    assert "Too many connections" in closed.value.rcvd.reason
                assert await init(a, {}) == "connection_ack"
                assert await init(b, {}) == "connection_ack"
        # Closed sockets are counted out again.
        async with websockets.connect(one.ws_url, subprotocols=protocols) as again:
            assert await init(again, {}) == "connection_ack"

    # Per owner, at connection_init: refused like a bad credential.
    limited = auth_settings(settings, ws_max_connections_per_client=2)
    async for one in run_server(limited):
        alice = {"authorization": bearer(one, ALICE)["Authorization"]}
        bob = {"authorization": bearer(one, BOB)["Authorization"]}
        async with websockets.connect(one.ws_url, subprotocols=protocols) as a:
            async with websockets.connect(one.ws_url, subprotocols=protocols) as b:
                assert await init(a, alice) == "connection_ack"
                assert await init(b, alice) == "connection_ack"
                async with websockets.connect(one.ws_url, subprotocols=protocols) as c:
                    assert await init(c, alice) == "closed 4403"
                async with websockets.connect(one.ws_url, subprotocols=protocols) as d:
                    assert await init(d, bob) == "connection_ack"
