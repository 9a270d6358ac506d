"""The Starlette application: lifespan (every client is created here), middleware, routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from functools import partial

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from clipo_gql import graphiql, records, reindex
from clipo_gql.auth.credentials import Authenticator, check_config
from clipo_gql.auth.media_links import MediaLinks
from clipo_gql.auth.quotas import ConnectionCounter, Quotas
from clipo_gql.connections import create_redis, init_mongo
from clipo_gql.events import EventHub, EventPublisher
from clipo_gql.graphql_view import PREFLIGHT_HEADERS, ClipoGraphQL
from clipo_gql.hls import routes as hls_routes
from clipo_gql.limits import BodySizeLimit, MiB
from clipo_gql.logs import RequestIdMiddleware
from clipo_gql.ops.exporter import metrics_route
from clipo_gql.ops.http_metrics import HttpMetrics
from clipo_gql.routes import routes
from clipo_gql.schema import build_schema
from clipo_gql.settings import Settings
from clipo_gql.state import AppState
from clipo_gql.storage import open_storage
from clipo_gql.tasks import run_embedded_worker
from clipo_gql.tus import protocol as tus_protocol
from clipo_gql.tus import routes as tus_routes
from clipo_gql.videos import VideoService, decode_event
from clipo_gql.webhooks.dispatch import Dispatcher

log = logging.getLogger(__name__)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 answers, as short JSON like every other error of ours."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def create_app(settings: Settings | None = None, *, embedded: bool = False) -> Starlette:
    """The API. `embedded` (the `dev` command, tests) adds an in-process worker and allows the
    in-process MongoDB stand-in when MONGODB_URL is unset."""
    settings = settings or Settings()
    check_config(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[dict[str, AppState]]:
        mongo = await init_mongo(settings, allow_stand_in=embedded)
        redis = await create_redis(settings)
        storage = open_storage(settings)
        storage.prepare()
        storage.claim_uploads()
        if embedded and not settings.mongodb_url:
            # The stand-in starts empty: rebuild it from MEDIA_DIR before the worker starts
            # (its sweeper removes folders that have no document).
            await reindex.at_start(storage, redis)
        hub = EventHub(redis, settings.redis_prefix, decode_event)
        await hub.start()
        worker = asyncio.create_task(run_embedded_worker(settings)) if embedded else None
        links = MediaLinks(settings)
        state = AppState(
            settings=settings,
            redis=redis,
            mongo=mongo,
            storage=storage,
            videos=VideoService(
                EventPublisher(redis, settings.redis_prefix),
                partial(records.update, storage),
                dispatch=Dispatcher(settings, redis, links),
            ),
            hub=hub,
            auth=Authenticator(settings),
            links=links,
            quotas=Quotas(settings, redis),
            sockets=ConnectionCounter(settings),
        )
        try:
            yield {"clipo": state}
        finally:
            if worker is not None:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
            await hub.close()
            await redis.aclose()
            mongo.close()
            storage.release_uploads()
            storage.close()

    # python-multipart logs a warning per malformed body: any client could flood the log.
    logging.getLogger("python_multipart.multipart").setLevel(logging.ERROR)
    graphql = ClipoGraphQL(build_schema(settings), settings)
    middleware = [
        # Outermost: it counts what the inner layers refuse too.
        *([Middleware(HttpMetrics)] if settings.metrics_enabled else []),
        Middleware(RequestIdMiddleware),
        Middleware(BodySizeLimit, upload_bytes=settings.max_upload_bytes, other_bytes=MiB),
    ]
    if settings.origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.origins),
                allow_methods=sorted({"GET", "POST", "HEAD", "OPTIONS", *tus_protocol.METHODS}),
                allow_headers=[
                    "authorization",
                    "content-type",
                    "range",
                    *PREFLIGHT_HEADERS,
                    *(h.lower() for h in tus_protocol.REQUEST_HEADERS),
                ],
                expose_headers=[
                    "content-range",
                    "content-length",
                    "accept-ranges",
                    "etag",
                    "x-request-id",
                    *(h.lower() for h in tus_protocol.RESPONSE_HEADERS),
                ],
            )
        )
    app_routes: list[BaseRoute] = [
        Route("/graphql", graphql),  # the view answers other methods (405, negotiated)
        WebSocketRoute("/graphql", graphql),
        *graphiql.routes(settings),
        *routes,
        *hls_routes.routes,
        *tus_routes.routes,
        *([metrics_route()] if settings.metrics_enabled else []),
    ]
    if settings.frontend_dir is not None:
        # Last, so it only answers paths no API route claims; StaticFiles refuses `..` escapes.
        app_routes.append(
            Mount("/", StaticFiles(directory=settings.frontend_dir, html=True), name="frontend")
        )
    return Starlette(
        exception_handlers={HTTPException: http_error},
        routes=app_routes,
        middleware=middleware,
        lifespan=lifespan,
    )
