"""Plain GET routes: media files and health."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

from bson import ObjectId
from pymongo.errors import ConnectionFailure
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from clipo_gql.auth.media_links import Kind, Verdict
from clipo_gql.auth.ownership import may_see
from clipo_gql.auth.principal import Principal
from clipo_gql.connections import ping_mongo
from clipo_gql.errors import DATABASE_UNAVAILABLE, STORAGE_UNAVAILABLE, UnauthenticatedError
from clipo_gql.models import Output, VideoStatus
from clipo_gql.responses import (
    FILE_MISSING,
    AccelRedirectResponse,
    MediaFileResponse,
    ObjectResponse,
    accel_uri,
    content_disposition,
    download_name,
)
from clipo_gql.state import app_state
from clipo_gql.storage import Located, Storage, parse_id

READY_TIMEOUT_SECONDS = 2.0
# A media request that carried a valid signed token: it may fetch that one file.
SIGNED = Principal(owner_id="", via="off")
# How long nginx may answer another request for the same URL with an allowed X-Accel-Redirect
# (deploy/nginx.conf): a player's burst of Range requests, or many viewers of one video, then
# cost one check a second. Only answers the URL alone earned are shared (auth off, or a signed
# token, never past its expiry); a file deleted meanwhile is gone, and nginx answers 404.
SHARED_SECONDS = 1


def _keepable(seconds_left: float) -> int:
    """The X-Accel-Expires that never outlives a link with `seconds_left`: nginx keeps an
    answer until the end of the n-th whole second after this one, up to n + 1 s from now."""
    return max(0, int(seconds_left) - 1)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


Pick = Callable[[Storage, ObjectId], Path]


async def _allowed(request: Request, video_id: ObjectId, kind: Kind) -> Principal | Response:
    """With auth on: a valid `token` for this video and route, or the `Authorization` of a
    principal (whose ownership is checked once the video is found). Else 401 or 403."""
    app = app_state(request)
    token = request.query_params.get("token")
    if token is not None and app.settings.auth_required:
        verdict = app.links.verify(token, video_id, kind)
        if verdict is Verdict.OK:
            return SIGNED
        reason = "has expired" if verdict is Verdict.EXPIRED else "is not valid for this file"
        return error(403, f"This link {reason}; ask the API for the video again")
    try:
        return await app.auth.authenticate(request.headers.get("authorization"))
    except UnauthenticatedError as exc:
        return JSONResponse({"error": exc.message}, status_code=401, headers=exc.headers)


NOT_READY = {
    Output.MP4: "its video is not ready yet",
    Output.HLS: "its HLS renditions are not ready yet",
    Output.STORYBOARD: "its storyboard is not ready yet",
}
NOT_MADE = {
    Output.MP4: FILE_MISSING,
    Output.HLS: "This video has no HLS renditions (they were turned off when it was processed)",
    Output.STORYBOARD: "This video has no storyboard (it was turned off when it was processed)",
}


class Served(NamedTuple):
    located: Located
    filename: str  # the video's original name
    # With auth on, what the playlists' URIs carry: the request's own token, or a new one.
    token: str | None
    # How long the answer holds for anyone asking for this URL (0: only for this request).
    shared_seconds: int = 0


async def output_file(
    request: Request, raw_id: str, pick: Pick, kind: Kind, output: Output = Output.MP4
) -> Served | Response:
    """A file of a video's published `output`, else the 401, 403, 404 or 409 response that
    explains why not. Every media route asks this: ownership, tokens and readiness are
    decided here only."""
    video_id = parse_id(raw_id)
    if video_id is None:
        return error(404, "No video with this id")
    app = app_state(request)
    allowed = await _allowed(request, video_id, kind)
    if isinstance(allowed, Response):
        return allowed
    for _ in range(2):
        try:
            found = await app.done.find(video_id)
        except ConnectionFailure:
            return JSONResponse(
                {"error": DATABASE_UNAVAILABLE}, status_code=503, headers={"Retry-After": "5"}
            )
        if found is None or not (allowed is SIGNED or may_see(allowed, found.owner_id)):
            # Another owner's video answers exactly like one that does not exist.
            return error(404, "No video with this id")
        if not found.has(output):
            if found.status is VideoStatus.DONE:
                return error(404, NOT_MADE[output])
            return error(409, f"The video is {found.status.value}: {NOT_READY[output]}")
        try:
            located = await app.storage.locate(video_id, pick(app.storage, video_id))
        except OSError:
            return JSONResponse(
                {"error": STORAGE_UNAVAILABLE}, status_code=503, headers={"Retry-After": "5"}
            )
        if located is None:
            # Deleted since it was remembered as DONE (perhaps by another process): ask again.
            app.done.forget(video_id)
            continue
        token, shared = None, SHARED_SECONDS
        if app.settings.auth_required:
            token = request.query_params.get("token") if allowed is SIGNED else None
            shared = min(shared, _keepable(app.links.seconds_left(token))) if token else 0
            token = token or app.links.token(video_id, kind)
        return Served(located, found.filename, token, shared)
    # Published but its file is gone: removed by hand, or a broken volume.
    return error(404, FILE_MISSING)


async def thumbnail(request: Request) -> Response:
    name: str = request.path_params["name"]
    if not name.endswith(".jpg"):
        return error(404, "No such thumbnail")
    found = await output_file(request, name.removesuffix(".jpg"), Storage.thumbnail, Kind.THUMBNAIL)
    if isinstance(found, Response):
        return found
    return send_file(request, found, "image/jpeg")


def send_file(
    request: Request, found: Served, media_type: str, attachment: str | None = None
) -> Response:
    """The bytes of a file `output_file` allowed, inline or as the attachment `attachment`.
    The one place that decides who sends them: this process, or nginx (X-Accel-Redirect)
    when ACCEL_REDIRECT_PREFIX is set."""
    app = app_state(request)
    prefix = app.settings.accel_redirect_prefix
    located, remote = found.located, app.storage.remote
    disposition: Literal["inline", "attachment"] = "inline" if attachment is None else "attachment"
    response: Response
    if located.key is not None:
        assert remote is not None
        if app.settings.storage_redirect:
            asked = {"response-content-type": media_type}
            if attachment is not None:
                asked["response-content-disposition"] = content_disposition(disposition, attachment)
            # The URL is short-lived: no cache may keep the redirect to it.
            headers = {"cache-control": "no-store"}
            response = RedirectResponse(remote.presigned(located.key, asked), 302, headers)
            return response
        response = ObjectResponse(
            remote, located, media_type=media_type, download_name=attachment,
            disposition=disposition,
        )  # fmt: skip
    elif prefix is not None:
        assert located.path is not None
        uri = accel_uri(prefix, app.storage.root, located.path)
        response = AccelRedirectResponse(
            uri, media_type=media_type, download_name=attachment,
            shared_seconds=found.shared_seconds,
        )  # fmt: skip
    else:
        assert located.path is not None
        assert located.stat is not None
        response = MediaFileResponse(
            located.path, located.stat, media_type=media_type, download_name=attachment,
            disposition=disposition,
        )  # fmt: skip
    return private(request, response)


def private(request: Request, response: Response) -> Response:
    # With auth on, a file is someone's: no shared cache (a CDN, a proxy) may keep it.
    if app_state(request).settings.auth_required:
        response.headers["Cache-Control"] = "private, no-cache"
    return response


def _serve(
    pick: Pick, kind: Kind, media_type: str, attachment_suffix: str | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint sending one file of a DONE video, inline or as a named attachment."""

    async def endpoint(request: Request) -> Response:
        found = await output_file(request, request.path_params["id"], pick, kind)
        if isinstance(found, Response):
            return found
        if attachment_suffix is None:
            return send_file(request, found, media_type)
        return send_file(
            request, found, media_type, download_name(found.filename, attachment_suffix)
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
    Route(
        "/stream/{id}", _serve(Storage.processed, Kind.STREAM, "video/mp4"), methods=["GET", "HEAD"]
    ),
    Route(
        "/download/{id}",
        _serve(Storage.processed, Kind.DOWNLOAD, "video/mp4", ".mp4"),
        methods=["GET", "HEAD"],
    ),
    Route(
        "/download/{id}/metadata",
        _serve(Storage.metadata, Kind.METADATA_DOWNLOAD, "application/json", ".metadata.json"),
        methods=["GET", "HEAD"],
    ),
    Route(
        "/metadata/{id}",
        _serve(Storage.metadata, Kind.METADATA, "application/json"),
        methods=["GET", "HEAD"],
    ),
    Route("/healthz", healthz, methods=["GET", "HEAD"]),
    Route("/readyz", readyz, methods=["GET", "HEAD"]),
]
