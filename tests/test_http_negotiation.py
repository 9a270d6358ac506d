"""GraphQL over HTTP negotiation, by the draft's sections: Accept (which media type), then
Status Codes for each kind of failure, for both media types, through the real server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from clipo_gql.auth.tokens import mint
from clipo_gql.http_negotiation import GRAPHQL_RESPONSE_JSON, JSON, choose, content_type
from clipo_gql.settings import Settings
from tests.conftest import Server, run_server

GQL = GRAPHQL_RESPONSE_JSON
GQL_CONTENT_TYPE = "application/graphql-response+json; charset=utf-8"

# -- Accept -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, JSON),
        ("", JSON),
        ("*/*", JSON),
        ("application/*", JSON),
        ("application/json", JSON),
        (GQL, GQL),
        ("APPLICATION/GRAPHQL-RESPONSE+JSON", GQL),
        # preferred by q
        (f"{GQL}, application/json;q=0.9", GQL),
        (f"{GQL};q=0.9, application/json", JSON),
        (f"application/json;q=0.5, {GQL};q=0.8", GQL),
        # equal q: the one listed first ("the highest priority media type listed")
        (f"{GQL}; charset=utf-8, application/json; charset=utf-8", GQL),  # the draft's advice
        (f"application/json, {GQL}", JSON),
        # a named type beats one a wildcard covers at the same q
        (f"*/*, {GQL}", GQL),
        (f"text/html, application/xhtml+xml, */*;q=0.8, {GQL};q=0.8", GQL),
        # a browser's navigation: only the wildcard names either
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", JSON),
        # the most specific range sets a type's q: q=0 refuses it
        ("application/json;q=0, */*", GQL),
        (f"{GQL};q=0, application/*", JSON),
        # we only write UTF-8
        ("application/json; charset=latin1", None),
        (f"application/json; charset=latin1, {GQL}", GQL),
        ("application/json; charset=UTF8", JSON),
        # malformed q is read as 1; malformed ranges are skipped
        ("application/json;q=abc", JSON),
        ("nonsense, */json", JSON),
        # none acceptable
        ("text/html", None),
        ("application/xml, text/plain;q=0.5", None),
        ("application/json;q=0", None),
        ("multipart/mixed", None),
    ],
)
def test_accept_picks_the_media_type(accept: str | None, chosen: str | None):
    assert choose(accept) == chosen


def test_content_type_of_each_media_type():
    assert content_type(JSON) == "application/json"  # as it has always been
    assert content_type(GQL) == GQL_CONTENT_TYPE


# -- Status Codes, through the server ---------------------------------------------------------


@pytest.fixture
async def api(settings: Settings, redis: Redis) -> AsyncIterator[Server]:
    # A depth limit our schema can exceed (`videos.edges.node.id` is 3 deep).
    shallow = settings.model_copy(update={"graphql_max_depth": 2})
    async for running in run_server(shallow, worker=False):
        yield running


async def post(server: Server, accept: str | None, body: Any) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if accept is not None:
        headers["accept"] = accept
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await server.http.post("/graphql", content=content, headers=headers)


PARSE = {"query": "{"}
VALIDATION = {"query": "{ noSuchField }"}
WRONG_VARIABLE = {
    "query": "query($first: Int) { videos(first: $first) { totalCount } }",
    "variables": {"first": "ten"},
}
MISSING_VARIABLE = {"query": "query($id: ID!) { video(id: $id) { id } }"}
TOKENS = {"query": "{ " + " ".join(["__typename"] * 2500) + " }"}
ALIASES = {"query": "{ " + " ".join(f"a{i}: __typename" for i in range(100)) + " }"}
DEPTH = {"query": "{ videos { edges { node { id } } } }"}
FIELD_ERROR = {"query": '{ video(id: "not-an-id") { id } }'}
UNKNOWN_OPERATION = {"query": "query A { __typename }", "operationName": "B"}

# Request errors: no `data`; 400 with graphql-response+json, 200 + `data: null` with JSON.
REQUEST_ERRORS = {
    "parse": PARSE,
    "validation": VALIDATION,
    "variable of the wrong type": WRONG_VARIABLE,
    "variable missing": MISSING_VARIABLE,
    "token limit": TOKENS,
    "alias limit": ALIASES,
    "depth limit": DEPTH,
}
# Not well-formed GraphQL-over-HTTP requests: 400 for either media type.
MALFORMED = {
    "not json": b"{nope",
    "no query": {"variables": {}},
    "query not a string": {"query": 5},
    "variables not a map": {"query": "{ __typename }", "variables": [1]},
    "unknown operation": UNKNOWN_OPERATION,
}


async def test_request_errors_are_400_without_data(api: Server):
    for name, body in REQUEST_ERRORS.items():
        response = await post(api, GQL, body)
        assert response.status_code == 400, (name, response.text)
        assert response.headers["content-type"] == GQL_CONTENT_TYPE, name
        answer = response.json()
        assert "data" not in answer, (name, answer)
        assert [e["extensions"]["code"] for e in answer["errors"]] == ["BAD_USER_INPUT"], name


async def test_request_errors_stay_200_with_null_data_for_json(api: Server):
    for accept in (None, "application/json", "*/*"):
        for name, body in REQUEST_ERRORS.items():
            response = await post(api, accept, body)
            assert response.status_code == 200, (accept, name, response.text)
            assert response.headers["content-type"] == "application/json", (accept, name)
            answer = response.json()
            assert answer["data"] is None, (accept, name)
            assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_malformed_requests_are_400_in_the_negotiated_type(api: Server):
    for accept, expected in ((GQL, GQL_CONTENT_TYPE), ("application/json", "application/json")):
        for name, body in MALFORMED.items():
            response = await post(api, accept, body)
            assert response.status_code == 400, (accept, name, response.text)
            assert response.headers["content-type"] == expected, (accept, name)
            assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_field_errors_are_200_with_data(api: Server):
    response = await post(api, GQL, FIELD_ERROR)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == GQL_CONTENT_TYPE
    answer = response.json()
    assert answer["data"] == {"video": None}
    assert answer["errors"][0]["path"] == ["video"]
    assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_result_is_200_in_the_chosen_type(api: Server):
    query = {"query": "{ videos { totalCount } }"}
    for accept, expected in (
        (GQL, GQL_CONTENT_TYPE),
        (f"{GQL}, application/json;q=0.9", GQL_CONTENT_TYPE),
        (f"{GQL};q=0.5, application/json", "application/json"),
        (None, "application/json"),
    ):
        response = await post(api, accept, query)
        assert response.status_code == 200, (accept, response.text)
        assert response.headers["content-type"] == expected, accept
        assert response.json() == {"data": {"videos": {"totalCount": 0}}}


async def test_mutations_over_get_are_405_for_the_draft_type_and_400_for_json(api: Server):
    params = {"query": 'mutation { deleteVideo(id: "x") }'}
    strict = await api.http.get("/graphql", params=params, headers={"accept": GQL})
    assert strict.status_code == 405, strict.text
    assert strict.headers["content-type"] == GQL_CONTENT_TYPE
    assert strict.headers["allow"] == "GET, POST"
    legacy = await api.http.get("/graphql", params=params, headers={"accept": "application/json"})
    assert legacy.status_code == 400, legacy.text
    assert legacy.headers["content-type"] == "application/json"
    assert strict.json() == legacy.json()


async def test_other_methods_are_405_with_allow(api: Server):
    for accept, expected in ((GQL, GQL_CONTENT_TYPE), (None, "application/json")):
        for method in ("PUT", "DELETE", "PATCH", "HEAD"):
            headers = {"accept": accept} if accept else {}
            response = await api.http.request(method, "/graphql", headers=headers)
            assert response.status_code == 405, (method, accept)
            assert response.headers["allow"] == "GET, POST", method
            assert response.headers["content-type"] == expected, (method, accept)


async def test_accept_of_nothing_we_produce_is_406(api: Server):
    query = {"query": "{ __typename }"}
    for accept in ("text/html", "application/xml", "application/json;q=0", "multipart/mixed"):
        response = await post(api, accept, query)
        assert response.status_code == 406, (accept, response.text)
        # The client takes none of ours: the server's choice, JSON, for the explanation.
        assert response.headers["content-type"] == "application/json"
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    # Never before the GraphiQL page, which a browser asks for with text/html.
    page = await api.http.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()


async def test_refusals_before_graphql_runs_are_negotiated(api: Server):
    # The body-size middleware (413) and the multipart CSRF rule (400), with the draft's type.
    big = {"query": "{ __typename }", "padding": "x" * (2 * 1024 * 1024)}
    too_large = await post(api, GQL, big)
    assert too_large.status_code == 413
    assert too_large.headers["content-type"] == GQL_CONTENT_TYPE
    assert too_large.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    no_preflight = await api.http.post(
        "/graphql",
        data={"operations": '{"query": "{ __typename }"}', "map": "{}"},
        files={"0": ("a.mp4", b"x", "video/mp4")},
        headers={"accept": GQL},
    )
    assert no_preflight.status_code == 400
    assert no_preflight.headers["content-type"] == GQL_CONTENT_TYPE
    too_large_json = await post(api, None, big)
    assert too_large_json.status_code == 413
    assert too_large_json.headers["content-type"] == "application/json"


async def test_unauthenticated_is_401_in_the_negotiated_type(settings: Settings, redis: Redis):
    secured = settings.model_copy(
        update={
            "auth_mode": "required",
            "auth_jwt_secret": SecretStr("test-jwt-secret-" + "s" * 32),
            "media_url_secret": SecretStr("test-media-secret-" + "m" * 32),
        }
    )
    query = {"query": "{ me { ownerId } }"}
    async for api in run_server(secured, worker=False):
        for accept, expected in ((GQL, GQL_CONTENT_TYPE), (None, "application/json")):
            for who in ({}, {"authorization": "Bearer not-a-token"}):
                headers = {**who, **({"accept": accept} if accept else {})}
                response = await api.http.post("/graphql", json=query, headers=headers)
                assert response.status_code == 401, (accept, who, response.text)
                assert response.headers["content-type"] == expected, accept
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        token = {"authorization": f"Bearer {mint(secured, 'alice')}", "accept": GQL}
        allowed = await api.http.post("/graphql", json=query, headers=token)
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["content-type"] == GQL_CONTENT_TYPE
        assert allowed.json() == {"data": {"me": {"ownerId": "alice"}}}
