"""Counts and times every HTTP request by the route that answered it."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipo_gql.ops.metrics import HTTP_DURATION, HTTP_REQUESTS

# Any token is a valid method for the HTTP parser: the label keeps to the ones that mean something.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label(scope: Scope) -> str:
    """The matched route's template (`/media/{video_id}/video.mp4`), never the raw path: a
    label per id or per probe of random paths would grow without bound."""
    route = scope.get("route")
    if route is None:
        return "unmatched"
    path: str = getattr(route, "path", "")
    return path or "static"  # the frontend's Mount("/") has an empty path


class HttpMetrics:
    """Pure ASGI, outermost: it sees the status Starlette's error handlers chose too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app raises before starting a response

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = route_label(scope)
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            HTTP_REQUESTS.labels(route, method, str(status)).inc()
            HTTP_DURATION.labels(route).observe(time.perf_counter() - started)
