"""Plain GET routes: media files and health."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from stat import S_ISREG
from typing import Any

from bson import ObjectId
from pymongo.errors import ConnectionFailure
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clipo_gql.connections import ping_mongo
from clipo_gql.errors import DATABASE_UNAVAILABLE
from clipo_gql.models import VideoStatus
from clipo_gql.responses import FILE_MISSING, MediaFileResponse, download_name
from clipo_gql.state import app_state
from clipo_gql.storage import Storage, parse_id

READY_TIMEOUT_SECONDS = 2.0


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


Pick = Callable[[Storage, ObjectId], Path]


async def _done_file(
    request: Request, raw_id: str, pick: Pick
) -> tuple[Path, os.stat_result, str] | Response:
    """The file of a DONE video (path, stat, the video's original name), else the 404/409
    response that explains why not."""
    video_id = parse_id(raw_id)
    if video_id is None:
        return _error(404, "No video with this id")
    app = app_state(request)
    for _ in range(2):
        try:
            found = await app.done.find(video_id)
        except ConnectionFailure:
            return JSONResponse(
                {"error": DATABASE_UNAVAILABLE}, status_code=503, headers={"Retry-After": "5"}
            )
        if found is None:
            return _error(404, "No video with this id")
        if found.status is not VideoStatus.DONE:
            return _error(409, f"The video is {found.status.value}, not DONE")
        path = pick(app.storage, video_id)
        try:
            stat_result = path.stat()
        except FileNotFoundError:
            # Deleted since it was remembered as DONE (perhaps by another process): ask again.
            app.done.forget(video_id)
            continue
        if S_ISREG(stat_result.st_mode):
            return path, stat_result, found.filename
        break
    # DONE but its file is gone: removed by hand, or a broken volume.
    return _error(404, FILE_MISSING)


async def thumbnail(request: Request) -> Response:
    name: str = request.path_params["name"]
    if not name.endswith(".jpg"):
        return _error(404, "No such thumbnail")
    found = await _done_file(request, name.removesuffix(".jpg"), Storage.thumbnail)
    if isinstance(found, Response):
        return found
    path, stat_result, _ = found
    return MediaFileResponse(path, stat_result, media_type="image/jpeg")


def _serve(
    pick: Pick, media_type: str, attachment_suffix: str | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint sending one file of a DONE video, inline or as a named attachment."""

    async def endpoint(request: Request) -> Response:
        found = await _done_file(request, request.path_params["id"], pick)
        if isinstance(found, Response):
            return found
        path, stat_result, filename = found
        if attachment_suffix is None:
            return MediaFileResponse(path, stat_result, media_type=media_type)
        name = download_name(filename, attachment_suffix)
        return MediaFileResponse(
            path, stat_result, media_type=media_type, download_name=name, disposition="attachment"
        )

    return endpoint


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
