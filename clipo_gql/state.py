"""What the API process holds while it runs (built in the lifespan), and the GraphQL context."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from arq.connections import ArqRedis
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket

from clipo_gql.done_videos import DoneVideos
from clipo_gql.events import EventHub
from clipo_gql.settings import Settings
from clipo_gql.storage import Storage
from clipo_gql.videos import VideoEvent, VideoService


@dataclass
class AppState:
    settings: Settings
    redis: ArqRedis
    mongo: Any
    storage: Storage
    videos: VideoService
    hub: EventHub[VideoEvent]
    done: DoneVideos = field(default_factory=DoneVideos)


def app_state(conn: HTTPConnection) -> AppState:
    state: AppState = conn.state.clipo
    return state


def base_url(conn: HTTPConnection, settings: Settings) -> str:
    """Where clients reach us: PUBLIC_BASE_URL, else the request's own origin."""
    if settings.public_base_url:
        return settings.public_base_url
    url = conn.base_url
    scheme = {"ws": "http", "wss": "https"}.get(url.scheme, url.scheme)
    return str(url.replace(scheme=scheme)).rstrip("/")


@dataclass
class Context:
    request: HTTPConnection
    response: Response | WebSocket | None
    app: AppState

    @cached_property  # read for every event a subscription sends
    def base_url(self) -> str:
        return base_url(self.request, self.app.settings)
