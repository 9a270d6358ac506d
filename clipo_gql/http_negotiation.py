"""GraphQL over HTTP: which media type a `/graphql` answer is in, and its status code.

Follows the GraphQL over HTTP working draft (graphql/graphql-over-http, `spec/GraphQLOverHTTP.md`,
sections "Accept", "Body" and "Status Codes"), as checked by the `graphql-http` 1.23 audit
(tests/test_graphql_http_audit.py). Every `/graphql` answer goes through here: GraphQL results
(`ClipoGraphQL.create_response`) and the refusals sent before GraphQL runs (`error_response`).

- `application/json` is the default (no `Accept`, `*/*`, `application/*`) and keeps the legacy
  rules: every GraphQL result is `200`, `data: null` included. Its header stays exactly
  `application/json`, as it has always been.
- `application/graphql-response+json` when `Accept` prefers it: `200` for a result with a
  `data` entry (field errors or not), `400` without `data` for request errors (the document
  does not parse or validate, our query limits, variables that do not coerce), `405` for a
  mutation over GET; its header says `; charset=utf-8`.
- `406` when `Accept` names only types we cannot produce (the draft's recommended choice).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send
from strawberry.http import GraphQLHTTPResponse

from clipo_gql.errors import ClipoError

JSON = "application/json"
GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
# What we produce; the default first: it wins when only a wildcard names either.
PRODUCED = (JSON, GRAPHQL_RESPONSE_JSON)
UTF8 = ("utf-8", "utf8")
ALLOWED_METHODS = "GET, POST"


@dataclass(frozen=True)
class MediaRange:
    type: str
    subtype: str
    q: float
    charset: str | None
    position: int

    def matches(self, media_type: str) -> bool:
        type_, subtype = media_type.split("/")
        if self.charset is not None and self.charset not in UTF8:
            return False  # we only write UTF-8
        if self.type == "*":
            return True
        return self.type == type_ and self.subtype in ("*", subtype)

    @property
    def specificity(self) -> int:
        return 0 if self.type == "*" else 1 if self.subtype == "*" else 2


def parse_accept(accept: str) -> list[MediaRange]:
    """The media ranges of an `Accept` value (RFC 9110 §12.5.1); malformed ones are skipped."""
    ranges = []
    for position, item in enumerate(accept.split(",")):
        name, *params = (part.strip() for part in item.split(";"))
        type_, slash, subtype = name.lower().partition("/")
        if not slash or not type_ or not subtype or (type_ == "*" and subtype != "*"):
            continue
        q, charset = 1.0, None
        for param in params:
            key, _, value = param.partition("=")
            key, value = key.strip().lower(), value.strip().strip('"').lower()
            if key == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 1.0  # a sloppy client still gets an answer
            elif key == "charset":
                charset = value
        ranges.append(MediaRange(type_, subtype, q, charset, position))
    return ranges


def choose(accept: str | None) -> str | None:
    """The media type to answer in, or None when `Accept` allows none we produce.

    Each type takes the quality of the most specific range that matches it (so
    `application/json;q=0, */*` refuses JSON). The highest quality wins; on a tie a type the
    client named beats one only a wildcard covers, then the one listed first, then JSON.
    """
    if accept is None or not accept.strip():
        return JSON
    ranges = parse_accept(accept)
    if not ranges:
        return JSON  # nothing we can read: as if no Accept was sent
    best: tuple[float, int, int, int] | None = None
    chosen: str | None = None
    for preference, media_type in enumerate(PRODUCED):
        matching = [r for r in ranges if r.matches(media_type)]
        if not matching:
            continue
        top = max(matching, key=lambda r: (r.specificity, -r.position))
        if top.q <= 0:
            continue
        named = int(top.specificity == 2)
        rank = (top.q, named, -top.position, -preference)
        if best is None or rank > best:
            best, chosen = rank, media_type
    return chosen


def media_type_of(headers: Mapping[str, str]) -> str:
    """The media type of an answer sent whatever `Accept` says (a refusal, the 406 itself)."""
    return choose(headers.get("accept")) or JSON


def content_type(media_type: str) -> str:
    return JSON if media_type == JSON else f"{media_type}; charset=utf-8"


def is_request_error(body: GraphQLHTTPResponse) -> bool:
    """No `data` to give: the request failed before execution. Field errors always carry a
    `path` (GraphQL spec §7.1.2); parse, validation and variable errors never do."""
    errors: list[Any] = body.get("errors") or []
    return body.get("data") is None and bool(errors) and not any("path" in e for e in errors)


def result_answer(media_type: str, body: GraphQLHTTPResponse) -> tuple[int, GraphQLHTTPResponse]:
    """The status and body of a GraphQL result in `media_type`."""
    if media_type == GRAPHQL_RESPONSE_JSON and is_request_error(body):
        # The draft: a response without a `data` entry is 4xx, and a request error has none.
        body = body.copy()
        del body["data"]
        return 400, body
    return 200, body


def refusal_status(media_type: str, error: ClipoError, status: int) -> int:
    """The status of a request refused before GraphQL runs."""
    if media_type == GRAPHQL_RESPONSE_JSON and error.graphql_response_status is not None:
        return error.graphql_response_status
    return status


class GraphQLErrorResponse(JSONResponse):
    """A refusal in GraphQL's error shape, in the media type the request's `Accept` picks:
    negotiated when sent, so every sender (middleware included) gets the same rule."""

    def __init__(self, error: ClipoError, *, status_code: int | None = None) -> None:
        extensions = {"code": error.code, **error.extensions}
        super().__init__(
            {"errors": [{"message": error.message, "extensions": extensions}]},
            status_code=status_code or error.http_status,
            headers=error.headers,
        )
        self.error = error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        media_type = media_type_of(Headers(scope=scope))
        self.status_code = refusal_status(media_type, self.error, self.status_code)
        self.headers["content-type"] = content_type(media_type)
        if self.status_code == 405:
            self.headers["allow"] = ALLOWED_METHODS  # RFC 9110 §15.5.6: a 405 says what is
        await super().__call__(scope, receive, send)
