"""What the API process holds while it runs (built in the lifespan), and the GraphQL context."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from arq.connections import ArqRedis
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket

from clipo_gql import types
from clipo_gql.auth.credentials import Authenticator
from clipo_gql.auth.media_links import MediaLinks
from clipo_gql.auth.principal import Principal
from clipo_gql.auth.quotas import ConnectionCounter, Quotas
from clipo_gql.done_videos import DoneVideos
from clipo_gql.errors import UnauthenticatedError
from clipo_gql.events import EventHub
from clipo_gql.models import Video
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
    auth: Authenticator
    links: MediaLinks
    quotas: Quotas
    sockets: ConnectionCounter
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
    # Set before any operation runs: by the view for HTTP, at `connection_init` for websockets.
    authenticated: Principal | None = None
    connection_params: dict[str, Any] | None = None

    @cached_property  # read for every event a subscription sends
    def base_url(self) -> str:
        return base_url(self.request, self.app.settings)

    @property
    def principal(self) -> Principal:
        principal = self.authenticated
        if principal is None:  # pragma: no cover - the view always authenticates first
            raise UnauthenticatedError("Authentication required")
        if principal.expired:
            # A websocket outlives its token: running subscriptions may finish, new ones
            # need a fresh token (a new connection).
            raise UnauthenticatedError("The token has expired; connect again with a fresh one")
        return principal

    def video(self, doc: Video) -> types.Video:
        return types.Video.from_document(doc, self.base_url, self.app.links)

    @property
    def client_address(self) -> str | None:
        return self.request.client.host if self.request.client else None
