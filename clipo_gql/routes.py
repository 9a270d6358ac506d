"""Plain GET routes: media files and health."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bson import ObjectId
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clipo_gql.connections import ping_mongo
from clipo_gql.models import Video, VideoStatus
from clipo_gql.responses import MediaFileResponse, download_name
from clipo_gql.state import AppState, app_state
from clipo_gql.storage import Storage, parse_id

READY_TIMEOUT_SECONDS = 2.0


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _done_video(request: Request, raw_id: str) -> tuple[AppState, Video] | Response:
    """The video when it is DONE, else the 404/409 response that explains why not."""
    video_id = parse_id(raw_id)
    video = await Video.get(video_id) if video_id is not None else None
    if video is None:
        return _error(404, "No video with this id")
    if video.status is not VideoStatus.DONE:
        return _error(409, f"The video is {video.status.value}, not DONE")
    return app_state(request), video


def _file(path: Path, **options: Any) -> Response:
    if not path.is_file():  # DONE but its file is gone: removed by hand, or a broken volume
        return _error(404, "The file of this video is missing")
    return MediaFileResponse(path, **options)


async def thumbnail(request: Request) -> Response:
    name: str = request.path_params["name"]
    if not name.endswith(".jpg"):
        return _error(404, "No such thumbnail")
    found = await _done_video(request, name.removesuffix(".jpg"))
    if isinstance(found, Response):
        return found
    app, video = found
    return _file(app.storage.thumbnail(_id(video)), media_type="image/jpeg")


def _serve(
    pick: Callable[[Storage, ObjectId], Path], media_type: str, attachment_suffix: str | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint sending one file of a DONE video, inline or as a named attachment."""

    async def endpoint(request: Request) -> Response:
        found = await _done_video(request, request.path_params["id"])
        if isinstance(found, Response):
            return found
        app, video = found
        path = pick(app.storage, _id(video))
        if attachment_suffix is None:
            return _file(path, media_type=media_type)
        name = download_name(video.filename, attachment_suffix)
        return _file(path, media_type=media_type, download_name=name, disposition="attachment")

    return endpoint


def _id(video: Video) -> ObjectId:
    assert video.id is not None
    return video.id


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    app = app_state(request)
    checks: dict[str, Callable[[], Awaitable[Any]]] = {
        "mongodb": ping_mongo,
        "redis": app.redis.ping,
    }
    down = []
    for name, check in checks.items():
        # Called inside the try: a client can fail before it returns anything to await.
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                await check()
        except Exception:
            down.append(name)
    if down:
        return JSONResponse({"status": "unavailable", "down": down}, status_code=503)
    return JSONResponse({"status": "ok"})


routes = [
    Route("/thumbnails/{name}", thumbnail, methods=["GET", "HEAD"]),
    Route("/stream/{id}", _serve(Storage.processed, "video/mp4"), methods=["GET", "HEAD"]),
    Route(
        "/download/{id}", _serve(Storage.processed, "video/mp4", ".mp4"), methods=["GET", "HEAD"]
    ),
    Route(
        "/download/{id}/metadata",
        _serve(Storage.metadata, "application/json", ".metadata.json"),
        methods=["GET", "HEAD"],
    ),
    Route("/metadata/{id}", _serve(Storage.metadata, "application/json"), methods=["GET", "HEAD"]),
    Route("/healthz", healthz, methods=["GET", "HEAD"]),
    Route("/readyz", readyz, methods=["GET", "HEAD"]),
]
