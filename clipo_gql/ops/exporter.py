"""`GET /metrics`: the API's, and a worker's own on WORKER_METRICS_PORT."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
from collections.abc import Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clipo_gql.auth.credentials import Authenticator
from clipo_gql.connections import ConfigError
from clipo_gql.errors import ForbiddenError, UnauthenticatedError
from clipo_gql.limits import error_response
from clipo_gql.ops.metrics import QUEUE_DEPTH, WORKERS
from clipo_gql.ops.monitor import queue_status
from clipo_gql.settings import Settings

log = logging.getLogger(__name__)


async def check_access(settings: Settings, auth: Authenticator, authorization: str | None) -> None:
    """With AUTH_MODE=required: `Bearer $METRICS_TOKEN` (what a Prometheus server is given) or
    an admin's credential. Metrics name no owner, but they show how busy the service is."""
    if not settings.auth_required:
        return
    token = settings.metrics_token
    if token is not None and authorization:
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode(), token.get_secret_value().encode()
        ):
            return
    principal = await auth.authenticate(authorization)
    if not principal.admin:
        raise ForbiddenError("Metrics are for admins or `Authorization: Bearer $METRICS_TOKEN`")


async def refresh_shared(redis: Redis, settings: Settings) -> None:
    """The gauges no single process counts (the queue, the live workers), read now."""
    try:
        status = await queue_status(redis, settings)
    except (RedisError, OSError) as exc:
        log.warning("metrics: could not read the queue from Redis: %s", exc)
        return
    QUEUE_DEPTH.set(status.queued)
    WORKERS.set(len(status.workers))


async def scrape(
    settings: Settings, auth: Authenticator, redis: Redis, request: Request
) -> Response:
    try:
        await check_access(settings, auth, request.headers.get("authorization"))
    except (UnauthenticatedError, ForbiddenError) as exc:
        return error_response(exc)
    await refresh_shared(redis, settings)
    # Rendering takes a few ms at most; in a thread it could interleave with updates anyway.
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def metrics_route(path: str = "/metrics") -> Route:
    """The API's route: its clients come from the app's state."""
    from clipo_gql.state import app_state

    async def endpoint(request: Request) -> Response:
        app = app_state(request)
        return await scrape(app.settings, app.auth, app.redis, request)

    return Route(path, endpoint, methods=["GET"])


class _QuietServer(uvicorn.Server):
    """uvicorn inside a worker: the worker (arq) owns the signals, not this server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WorkerMetrics:
    """A worker's `/metrics` on WORKER_METRICS_PORT, served from the worker's own event loop."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        assert settings.worker_metrics_port is not None
        self.address = (settings.worker_metrics_host, settings.worker_metrics_port)
        auth = Authenticator(settings)

        async def endpoint(request: Request) -> Response:
            return await scrape(settings, auth, redis, request)

        app = Starlette(routes=[Route("/metrics", endpoint, methods=["GET"])])
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self.server = _QuietServer(config)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        # Bound here, not by uvicorn: uvicorn answers a port in use with sys.exit().
        sock = socket.socket(socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(self.address)
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"WORKER_METRICS_PORT: cannot listen on {self.address[0]}:{self.address[1]}"
                f" ({exc.strerror}); choose a free port or unset it"
            ) from exc
        sock.set_inheritable(True)
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))
        log.info("worker metrics on http://%s:%d/metrics", *self.address)

    async def stop(self) -> None:
        if self.task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
