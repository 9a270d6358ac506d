"""Log output for every process: text (the default) or, with LOG_FORMAT=json, one JSON object
a line for a log collector (Loki, CloudWatch, Elasticsearch) to index without parsing.

Each JSON line has the time, level, logger and message, and the video id and request id of
the work it came from: `video_id` is set around a job (tasks.py), `request_id` by
`RequestIdMiddleware` for each HTTP request or websocket (taken from a sane `X-Request-ID`,
so a proxy's id carries through, else made up, and sent back in the response).
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipo_gql.access_log import log_config as text_uvicorn_config
from clipo_gql.settings import Settings

video_id: ContextVar[str | None] = ContextVar("clipo_video_id", default=None)
request_id: ContextVar[str | None] = ContextVar("clipo_request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What a client's X-Request-ID may be to be logged as is: no spaces, quotes or newlines.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (video := video_id.get()) is not None:
            line["video_id"] = video
        if (request := request_id.get()) is not None:
            line["request_id"] = request
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup(settings: Settings) -> None:
    """The root logger's one handler (stderr), in the configured format."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def uvicorn_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's logging (its access log without signed tokens), in the configured format."""
    config = text_uvicorn_config()
    if settings.log_format == "json":
        for formatter in config["formatters"].values():
            formatter.clear()
            formatter["()"] = JsonFormatter
    return config


class RequestIdMiddleware:
    """Sets `request_id` for everything one request or websocket logs, and returns it in
    `X-Request-ID`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id")
        current = given if given and SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(current)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])  # optional in ASGI
                MutableHeaders(scope=message).append("x-request-id", current)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
