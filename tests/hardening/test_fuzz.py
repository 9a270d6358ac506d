"""Case 17: property-based fuzzing of the GraphQL operations' arguments on the real server.

Hypothesis drives a synchronous httpx client from a worker thread (`asyncio.to_thread`) while
the server runs on the test's event loop: Hypothesis cannot run async test functions, and one
server serves every example. The properties: never a 5xx, always a JSON GraphQL answer, every
error coded with one of the documented codes and never an unexpected (INTERNAL) one, nothing
internal in a message, and `submitVideo` never creates a video nor connects to loopback.

The tests at the end pin the bugs this fuzz found (now fixed): ill-typed variables answered
INTERNAL, a lone surrogate in a URL, raw Python messages and an exponential walk in the depth
limiter, subscriptions over HTTP, and plain-text refusals of malformed bodies.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import hypothesis
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from redis.asyncio import Redis

from clipo_gql.settings import Settings
from tests.conftest import Server, incoming_files, video_files

MiB = 1024 * 1024
DOCUMENTED_CODES = {
    "BAD_USER_INPUT",
    "NOT_FOUND",
    "UNSUPPORTED_MEDIA",
    "PAYLOAD_TOO_LARGE",
    "FORBIDDEN_URL",
    "INVALID_STATE",
    "RATE_LIMITED",
    "INTERNAL",
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "QUOTA_EXCEEDED",
}
# Names that would only reach a client through an unmasked exception.
EXCEPTION_NAMES = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
} | {"InvalidId", "PyMongoError", "RedisError", "ValidationError", "ClipoError", "GraphQLError"}
LEAK_MARKERS = ("Traceback", 'File "', "site-packages", "clipo_gql", "/work/", "/tmp/")

FUZZ = hypothesis.settings(
    max_examples=150,
    deadline=None,
    # No `.hypothesis/` folder in the checkout; a failure prints its reproduction anyway.
    database=None,
    # Large generated strings are deliberate.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

VIDEO = "query($id: ID!) { video(id: $id) { id status } }"
VIDEOS = """query($first: Int, $after: String, $status: VideoStatus) {
  videos(first: $first, after: $after, status: $status) {
    totalCount edges { cursor node { id } } pageInfo { hasNextPage endCursor }
  }
}"""
SUBMIT = "mutation($url: String!) { submitVideo(url: $url) { id status } }"
RETRY = "mutation($id: ID!) { retryVideo(id: $id) { id status } }"
DELETE = "mutation($id: ID!) { deleteVideo(id: $id) }"
COUNT = "{ videos(first: 0) { totalCount } }"
STATUSES = ["PENDING", "PROCESSING", "DONE", "FAILED"]


# -- a loopback listener that must never hear from the server --------------------------------


@dataclass
class Trap:
    port: int
    connections: list[str] = field(default_factory=list)


@pytest.fixture
async def trap() -> AsyncIterator[Trap]:
    found = Trap(port=0)

    async def caught(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        found.connections.append(str(writer.get_extra_info("peername")))
        writer.close()

    v4 = await asyncio.start_server(caught, "127.0.0.1", 0)
    found.port = v4.sockets[0].getsockname()[1]
    servers = [v4]
    try:
        servers.append(await asyncio.start_server(caught, "::1", found.port))
    except OSError:
        pass  # no IPv6 loopback here: [::1] URLs then cannot connect anywhere either
    # The trap must notice a connection, or its silence would prove nothing.
    _, writer = await asyncio.open_connection("127.0.0.1", found.port)
    writer.close()
    await writer.wait_closed()
    for _ in range(100):
        if found.connections:
            break
        await asyncio.sleep(0.01)
    assert found.connections, "the trap does not notice connections"
    found.connections.clear()
    yield found
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
def settings(settings: Settings, trap: Trap) -> Settings:
    # The trap's port is allowed, so only the private-address rule (URL_FETCH_ALLOW_PRIVATE
    # left false) stands between a loopback URL and the trap.
    assert settings.url_fetch_allow_private is False
    ports = f"{settings.url_fetch_allowed_ports},{trap.port}"
    return settings.model_copy(update={"url_fetch_allowed_ports": ports})


# -- requests and the properties every answer must have --------------------------------------


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    errors: list[dict[str, Any]]

    @property
    def codes(self) -> list[str]:
        return [e["extensions"]["code"] for e in self.errors]


def post(client: httpx.Client, query: str, variables: Any = None) -> Answer | None:
    """POST a GraphQL request; check the properties every answer has; None for a 413."""
    payload: dict[str, Any] = {"query": query}
    if variables is not None:
        payload["variables"] = variables
    # ASCII escapes keep any string, a lone surrogate included, valid JSON on the wire.
    content = json.dumps(payload, ensure_ascii=True)
    response = client.post(
        "/graphql", content=content, headers={"content-type": "application/json"}
    )
    text = response.text
    assert response.headers["content-type"] == "application/json", (response.status_code, text)
    body = response.json()
    assert isinstance(body, dict), text
    for marker in [*LEAK_MARKERS, *EXCEPTION_NAMES]:
        if marker in text and marker not in content:
            raise AssertionError(f"{marker!r} leaked: {text[:500]}")
    if len(content) > MiB:
        assert response.status_code == 413, text
        assert [e["extensions"]["code"] for e in body["errors"]] == ["PAYLOAD_TOO_LARGE"], text
        return None
    if response.status_code == 400:
        # Refused before GraphQL ran (e.g. a subscription over HTTP): errors only.
        assert set(body) == {"errors"}, text
        assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"], text
        return None
    assert response.status_code == 200, text
    assert set(body) <= {"data", "errors"}, text
    assert "data" in body, text
    errors: list[dict[str, Any]] = body.get("errors", [])
    for error in errors:
        code = error["extensions"]["code"]
        assert code in DOCUMENTED_CODES, error
        assert isinstance(error["message"], str), error
        assert error["message"], error
        assert code != "INTERNAL", f"unexpected error for {content[:300]}: {text[:300]}"
    return Answer(response.status_code, body, errors)


def total_videos(client: httpx.Client) -> int:
    answer = post(client, COUNT)
    assert answer is not None
    assert answer.errors == [], answer.body
    count: int = answer.body["data"]["videos"]["totalCount"]
    return count


async def fuzz(server: Server, run: Callable[[httpx.Client], None]) -> None:
    """Run a Hypothesis test (taking the client) in a thread; the server answers meanwhile."""

    def in_thread() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            run(client)

    await asyncio.to_thread(in_thread)


# -- strategies -------------------------------------------------------------------------------

HEX = "0123456789abcdefABCDEF"
hex_ids = st.text(HEX, min_size=24, max_size=24)
id_like = st.text(HEX + "xgXG \t\x00./%-\\", max_size=30)
# Repeating one character reaches hundreds of KiB without Hypothesis generating each one.
long_strings = st.builds(lambda c, n: c * n, st.characters(), st.integers(1, 120_000))
strings = st.one_of(st.text(), st.text(max_size=5), long_strings)
id_strings = st.one_of(
    hex_ids,
    id_like,
    strings,
    st.sampled_from(
        [
            "../../etc/passwd",
            "0123456789abcdef01234567\x00",
            "\x000123456789abcdef0123456",
            "0123456789abcdef0123456７",  # a full-width digit: 24 characters, not hex
            "０１２３４５６７８９ａｂｃｄｅｆ０１２３４５６７",
            "",
        ]
    ),
)
ints32 = st.integers(-(2**31), 2**31 - 1)
huge_ints = st.one_of(
    st.integers(min_value=2**31),
    st.integers(max_value=-(2**31) - 1),
    st.sampled_from([2**63, -(2**63), 10**30, 2**53 + 1]),
)
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def typed(well: st.SearchStrategy[Any], ill: st.SearchStrategy[Any]) -> Any:
    """(value, well_typed) pairs: mostly values of the variable's type, some of any other."""
    return st.one_of(
        well.map(lambda v: (v, True)), well.map(lambda v: (v, True)), ill.map(lambda v: (v, False))
    )


# ID accepts strings and integers; anything else is ill-typed for it.
ids = typed(st.one_of(id_strings, ints32, st.integers(10**23, 10**24 - 1)), junk)


def well_formed_id(value: Any) -> bool:
    return re.fullmatch(r"[0-9a-fA-F]{24}", str(value)) is not None


# -- the fuzz ---------------------------------------------------------------------------------


async def test_video_by_any_id(server: Server):
    @FUZZ
    @given(ids)
    def run(client: httpx.Client, case: tuple[Any, bool]) -> None:
        value, well_typed = case
        answer = post(client, VIDEO, {"id": value})
        if answer is None or not well_typed:
            return
        if well_formed_id(value):
            assert answer.body == {"data": {"video": None}}  # no video exists
        else:
            assert answer.body["data"] == {"video": None}
            assert answer.codes == ["BAD_USER_INPUT"]

    await fuzz(server, run)


async def test_videos_page_with_any_arguments(server: Server):
    firsts = typed(
        st.one_of(st.none(), st.integers(-3, 103), ints32), st.one_of(junk, huge_ints, strings)
    )
    afters = typed(st.one_of(st.none(), strings), st.one_of(st.booleans(), ints32))
    statuses = typed(st.one_of(st.none(), st.sampled_from(STATUSES)), st.one_of(strings, ints32))

    @FUZZ
    @given(firsts, afters, statuses)
    def run(client: httpx.Client, first: Any, after: Any, status: Any) -> None:
        variables = {"first": first[0], "after": after[0], "status": status[0]}
        well_typed = first[1] and after[1] and status[1]
        answer = post(client, VIDEOS, variables)
        if answer is None or not well_typed:
            return
        count = first[0]
        if count is not None and not 0 <= count <= 100:
            assert answer.body["data"] is None
            assert answer.codes == ["BAD_USER_INPUT"]
            assert answer.errors[0]["message"] == "`first` must be between 0 and 100"
        elif after[0]:
            # A random string is almost never a valid cursor, but it may be one.
            assert answer.codes in ([], ["BAD_USER_INPUT"]), answer.body
        else:
            assert answer.body == {
                "data": {
                    "videos": {
                        "totalCount": 0,
                        "edges": [],
                        "pageInfo": {"hasNextPage": False, "endCursor": None},
                    }
                }
            }

    await fuzz(server, run)


def url_strategy(trap_port: int) -> st.SearchStrategy[str]:
    loopback = [
        "127.0.0.1", "127.1", "127.0.1", "2130706433", "0x7f000001", "0x7F.1", "0177.0.0.1",
        "0177.1", "127.000.000.001", "127.255.255.254", "[::1]", "[0:0:0:0:0:0:0:1]",
        "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::]",
        "localhost", "LOCALHOST", "localhost.", "LocalHost.", "[::1%25lo]", "127.0.0.1.",
    ]  # fmt: skip
    other = [
        "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
        "0", "[::]", "[fd00::1]", "[fe80::1]", "[fd00:ec2::254]", "255.255.255.255", "224.0.0.1",
        "[ff02::1]", "256.0.0.1", "1.2.3.4.5", "[::1", "nothing-here.invalid",
    ]  # fmt: skip
    hosts = st.one_of(
        st.sampled_from(loopback + other),
        st.from_regex(r"[a-z0-9-]{1,20}\.invalid", fullmatch=True),
        st.text(max_size=12),
    )
    ports = st.sampled_from(["", f":{trap_port}", ":80", ":8080", ":0", ":65536", ":-1", ":x", ":"])
    return st.builds(
        lambda scheme, auth, host, port, path: f"{scheme}{auth}{host}{port}{path}",
        st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "file://", "//", "gopher://",
                         "javascript:", "http:/", "http:\\\\", " http://", "http://\t"]),
        st.sampled_from(["", "user:secret@", "@", "a@b@"]),
        hosts,
        ports,
        st.one_of(st.just(""), st.text(max_size=40).map(lambda p: "/" + p)),
    )  # fmt: skip


async def test_submit_video_refuses_and_never_fetches(server: Server, trap: Trap, redis: Redis):
    urls = typed(st.one_of(url_strategy(trap.port), strings), st.one_of(junk, ints32, huge_ints))

    @hypothesis.settings(FUZZ, max_examples=250)
    @given(urls)
    def run(client: httpx.Client, case: tuple[Any, bool]) -> None:
        url, well_typed = case
        answer = post(client, SUBMIT, {"url": url})
        if answer is None or not well_typed:
            return
        assert answer.body["data"] is None, answer.body
        assert answer.codes == ["FORBIDDEN_URL"], (url, answer.body)

    def run_and_count(client: httpx.Client) -> None:
        run(client)
        assert total_videos(client) == 0, "a refused URL created a video"

    await fuzz(server, run_and_count)
    assert await redis.zcard(server.settings.queue_name) == 0, "a job was queued"
    # Any fetch would come from the worker, which polls every 50 ms; give it some.
    await asyncio.sleep(0.5)
    assert trap.connections == [], "the server connected to loopback"
    assert video_files(server.settings) == []
    assert incoming_files(server.settings) == []


async def test_retry_and_delete_any_id(server: Server):
    @FUZZ
    @given(ids, st.booleans())
    def run(client: httpx.Client, case: tuple[Any, bool], retry: bool) -> None:
        value, well_typed = case
        answer = post(client, RETRY if retry else DELETE, {"id": value})
        if answer is None or not well_typed:
            return
        if not well_formed_id(value):
            assert answer.codes == ["BAD_USER_INPUT"]
            assert answer.errors[0]["message"].startswith("Malformed video id")
        elif retry:
            assert answer.codes == ["NOT_FOUND"]
        else:
            assert answer.body == {"data": {"deleteVideo": False}}

    await fuzz(server, run)


OWNED_PAGE = "query($owner: String) { videos(first: 5, owner: $owner) { totalCount } }"
CREATE_KEY = "mutation($label: String!, $admin: Boolean) { createApiKey(label: $label, admin: $admin) { key apiKey { label ownerId admin } } }"  # noqa: E501
REVOKE_KEY = "mutation($id: ID!) { revokeApiKey(id: $id) }"


async def test_owner_label_and_key_arguments(server: Server):
    """With auth off the caller is `anonymous`, no admin: `owner` may name only itself, admin
    keys are refused, and a label must have 1 to 100 characters once stripped."""
    owners = typed(st.one_of(st.none(), st.just("anonymous"), strings), st.one_of(ints32, junk))
    labels = typed(strings, st.one_of(st.none(), ints32, junk))
    admins = typed(st.one_of(st.none(), st.booleans()), st.one_of(strings, ints32))

    @FUZZ
    @given(owners, labels, admins, ids)
    def run(client: httpx.Client, owner: Any, label: Any, admin: Any, key_id: Any) -> None:
        listed = post(client, OWNED_PAGE, {"owner": owner[0]})
        if listed is not None and owner[1]:
            if owner[0] in (None, "anonymous"):
                assert listed.codes == [], listed.body
            else:
                assert listed.codes == ["FORBIDDEN"], listed.body
        made = post(client, CREATE_KEY, {"label": label[0], "admin": admin[0]})
        if made is not None and label[1] and admin[1]:
            text = label[0].strip()
            if not text or len(text) > 100 or not text.isprintable():
                assert made.codes == ["BAD_USER_INPUT"], made.body
            elif admin[0]:
                assert made.codes == ["FORBIDDEN"], made.body
            else:
                assert made.codes == [], made.body
                created = made.body["data"]["createApiKey"]
                assert created["apiKey"] == {"label": text, "ownerId": "anonymous", "admin": False}
                assert created["key"].startswith("clipo_")
        revoked = post(client, REVOKE_KEY, {"id": key_id[0]})
        if revoked is not None and key_id[1]:
            assert revoked.body == {"data": {"revokeApiKey": False}}, revoked.body

    await fuzz(server, run)


CORPUS = [
    '{ video(id: "0123456789abcdef01234567") { id filename status thumbnailUrl } }',
    "{ videos(first: 5, status: DONE) { totalCount edges { cursor node { id } } } }",
    '{ videos(after: "MTow") { pageInfo { hasNextPage endCursor } } }',
    'mutation { submitVideo(url: "http://localhost/clip.mp4") { id } }',
    'mutation { retryVideo(id: "0123456789abcdef01234567") { id status } }',
    'mutation { deleteVideo(id: "0123456789abcdef01234567") }',
    "query Q($n: Int = 3) { videos(first: $n) { totalCount } }",
    'fragment F on Video { id status } { video(id: "0123456789abcdef01234567") { ...F } }',
    "{ __schema { types { name fields { name } } } }",
    '{ a: videos { totalCount } b: video(id: "0123456789abcdef01234567") { id } }',
]


def mutate(doc: str, at: int, cut: int, insert: str) -> str:
    at %= len(doc) + 1
    return doc[:at] + insert + doc[at + cut :]


documents = st.one_of(
    st.text(max_size=300),
    st.builds(mutate, st.sampled_from(CORPUS), st.integers(0, 200), st.integers(0, 20),
              st.text(max_size=12)),
    st.builds(mutate, st.sampled_from(CORPUS), st.integers(0, 200), st.integers(0, 3),
              st.sampled_from(["{", "}", "(", ")", '"', "\\", "$", "...", "@skip", "#", "\x00",
                               '"""', ":", "!", "[", "]", "mutation", "subscription"])),
    st.integers(0, 3000).map(lambda n: "{" + "a{" * n + "b" + "}" * n + "}"),
    st.integers(0, 3000).map(lambda n: "{ video(id: " + "[" * n + "]" * n + ") { id } }"),
    st.integers(0, 100).map(lambda n: "{ " + "".join(f"a{i}: __typename " for i in range(n)) + "}"),
    st.integers(0, 3000).map(lambda n: "{ " + "__typename " * n + "}"),
    st.text(max_size=50).map(lambda s: '{ video(id: "' + s + '") { id } }'),
    st.text(max_size=50).map(lambda s: '{ video(id: """' + s + '""") { id } }'),
)  # fmt: skip


async def test_malformed_documents(server: Server):
    @hypothesis.settings(FUZZ, max_examples=250)
    @given(documents)
    def run(client: httpx.Client, document: str) -> None:
        answer = post(client, document)
        if answer is None:
            return
        if answer.body["data"] is None:
            assert answer.errors, answer.body

    def run_and_count(client: httpx.Client) -> None:
        run(client)
        assert total_videos(client) == 0

    await fuzz(server, run_and_count)
    health = await server.http.get("/healthz")
    assert health.status_code == 200


# -- server bugs the fuzz found, kept fixed -----------------------------------------------------


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (VIDEOS, {"first": 2**31}),
        (VIDEOS, {"first": "ten"}),
        (VIDEOS, {"first": True}),
        (VIDEOS, {"status": "NOPE"}),
        (VIDEO, {"id": None}),
        (VIDEO, {"id": 1.5}),
        (VIDEO, {"id": ["0123456789abcdef01234567"]}),
        (SUBMIT, {"url": None}),
        (SUBMIT, {"url": 80}),
    ],
    ids=["int-overflow", "int-string", "int-bool", "enum-unknown", "id-null", "id-float",
         "id-list", "string-null", "string-int"],
)  # fmt: skip
async def test_ill_typed_variables_are_bad_user_input(
    server: Server, query: str, variables: dict[str, Any]
):
    response = await server.http.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200
    errors = response.json()["errors"]
    assert [e["extensions"]["code"] for e in errors] == ["BAD_USER_INPUT"], errors


@pytest.mark.parametrize("url", ["http://a.invalid/\ud800", "http://a.invalid/x?q=\udfff"])
async def test_a_url_with_a_lone_surrogate_is_forbidden_url(server: Server, url: str):
    content = json.dumps({"query": SUBMIT, "variables": {"url": url}})  # \ud800 escaped
    response = await server.http.post(
        "/graphql", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    body = response.json()
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN_URL"], body
    assert (await server.gql(COUNT))["data"]["videos"]["totalCount"] == 0


@pytest.mark.parametrize(
    "document",
    [
        "{}",
        "query Q {}",
        "mutation {}",
        '{ video(id: "0123456789abcdef01234567") {} }',
        "{ ...Undefined }",
        "{ videos { ...Nope } }",
    ],
)
async def test_documents_that_crash_the_depth_limiter_get_a_coded_error(
    server: Server, document: str
):
    body = await server.gql(document)
    assert body["data"] is None
    assert body["errors"], body
    for error in body["errors"]:
        assert error.get("extensions", {}).get("code") == "BAD_USER_INPUT", error
        assert "max()" not in error["message"], error
        assert not error["message"].startswith("'"), "a KeyError's message"


async def test_fragment_fan_out_does_not_stall_the_server(server: Server):
    # 2**24 walks of the last fragment for a limiter that does not measure fragments once:
    # hours. The bounds below are generous on purpose: they only tell hours from moments.
    levels = 24
    fragments = " ".join(
        f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)
    )
    document = f"{{ ...F0 }} {fragments} fragment F{levels} on Query {{ __typename }}"
    assert len(document) < 1200

    def health_latency() -> float:
        # From a thread: a coroutine on the server's own loop could not run while it stalls.
        time.sleep(0.2)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            started = time.monotonic()
            assert client.get("/healthz").status_code == 200
            return time.monotonic() - started

    health = asyncio.create_task(asyncio.to_thread(health_latency))
    started = time.monotonic()
    body = await server.gql(document)
    took = time.monotonic() - started
    health_took = await health
    assert body["data"] == {"__typename": "Query"} or body.get("errors"), body
    assert health_took < 10, health_took
    assert took < 10, took


async def test_a_subscription_over_http_is_bad_user_input(server: Server):
    query = 'subscription { videoStatus(id: "0123456789abcdef01234567") { id status } }'
    response = await server.http.post("/graphql", json={"query": query})
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert [e["extensions"]["code"] for e in errors] == ["BAD_USER_INPUT"], errors
    assert "websocket" in errors[0]["message"]


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"",
        b"[1, 2]",
        b'{"query": 5}',
        b'{"query": "{ __typename }", "variables": [1]}',
        b'{"query": "query A { __typename }", "operationName": "B"}',
        b'{"nope": 1}',
        b'{"query": ""}',
    ],
    ids=["not-json", "empty", "batch", "query-not-string", "variables-not-object",
         "unknown-operation", "no-query", "empty-query"],
)  # fmt: skip
async def test_a_malformed_request_body_gets_a_json_error(server: Server, content: bytes):
    response = await server.http.post(
        "/graphql", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json", response.text
    errors = response.json()["errors"]
    assert [e["extensions"]["code"] for e in errors] == ["BAD_USER_INPUT"]


CREATE_ENDPOINT = "mutation($url: String!, $events: [WebhookEventType!]) { createWebhookEndpoint(url: $url, events: $events) { secret endpoint { id } } }"  # noqa: E501
ENDPOINTS = "{ webhookEndpoints { id } }"
DELETE_ENDPOINT = "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) }"
DELIVERIES = (
    "query($id: ID!, $first: Int) { webhookDeliveries(endpointId: $id, first: $first) { id } }"
)
REDELIVER = "mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { id } }"
EVENT_TYPES = ["VIDEO_CREATED", "VIDEO_READY", "VIDEO_FAILED", "VIDEO_DELETED"]


async def test_webhook_endpoints_refuse_and_never_connect(server: Server, trap: Trap):
    """The `submitVideo` URL rules, at creation: nothing is stored, nothing is contacted."""
    urls = typed(st.one_of(url_strategy(trap.port), strings), st.one_of(junk, ints32, huge_ints))
    events = typed(
        st.one_of(st.none(), st.lists(st.sampled_from(EVENT_TYPES), max_size=6)),
        st.one_of(strings, ints32, st.lists(strings, min_size=1, max_size=2)),
    )

    @hypothesis.settings(FUZZ, max_examples=200)
    @given(urls, events)
    def run(client: httpx.Client, url: tuple[Any, bool], kinds: tuple[Any, bool]) -> None:
        answer = post(client, CREATE_ENDPOINT, {"url": url[0], "events": kinds[0]})
        if answer is None or not (url[1] and kinds[1]):
            return
        assert answer.body["data"] is None, answer.body
        assert answer.codes == ["FORBIDDEN_URL"], (url, answer.body)

    def run_and_count(client: httpx.Client) -> None:
        run(client)
        listed = post(client, ENDPOINTS)
        assert listed is not None
        assert listed.body == {"data": {"webhookEndpoints": []}}, "a refused URL was stored"

    await fuzz(server, run_and_count)
    await asyncio.sleep(0.3)
    assert trap.connections == [], "the server connected to loopback"


async def test_webhook_ids_and_pages(server: Server):
    firsts = typed(st.one_of(st.none(), ints32), st.one_of(strings, huge_ints, junk))

    @FUZZ
    @given(ids, firsts, st.sampled_from([DELETE_ENDPOINT, DELIVERIES, REDELIVER]))
    def run(client: httpx.Client, case: tuple[Any, bool], first: tuple[Any, bool], query: str):
        variables = {"id": case[0], **({"first": first[0]} if query == DELIVERIES else {})}
        answer = post(client, query, variables)
        if answer is None or not case[1] or (query == DELIVERIES and not first[1]):
            return
        if not well_formed_id(case[0]):
            assert answer.codes == ["BAD_USER_INPUT"], answer.body
            assert answer.errors[0]["message"].startswith("Malformed"), answer.body
        elif query == DELETE_ENDPOINT:
            assert answer.body == {"data": {"deleteWebhookEndpoint": False}}, answer.body
        elif query == DELIVERIES and first[0] is not None and not 0 <= first[0] <= 100:
            assert answer.codes == ["BAD_USER_INPUT"], answer.body
        else:
            assert answer.codes == ["NOT_FOUND"], answer.body

    await fuzz(server, run)
