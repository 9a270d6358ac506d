"""The tus endpoints: `POST /uploads` (creation, creation-with-upload), `HEAD`, `PATCH` and
`DELETE /uploads/{uploadId}` (termination), `OPTIONS` on both (discovery).

Every answer carries `Tus-Resumable`; every error a JSON body `{"error": "..."}` a person can
read. An upload the caller may not see answers exactly like one that does not exist (404).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clipo_gql import actions
from clipo_gql.auth.ownership import find_video
from clipo_gql.auth.principal import Principal
from clipo_gql.auth.quotas import limit_key
from clipo_gql.errors import (
    BadUserInputError,
    ClipoError,
    GoneError,
    NotFoundError,
    OffsetMismatchError,
    PayloadTooLargeError,
    PreconditionFailedError,
    UnsupportedMediaError,
)
from clipo_gql.models import Video, VideoStatus, now
from clipo_gql.ops.metrics import TUS_PATCH_DURATION, TUS_UPLOADS
from clipo_gql.state import AppState, app_state, base_url
from clipo_gql.storage import parse_id
from clipo_gql.tus import protocol
from clipo_gql.tus.lock import upload_lock
from clipo_gql.tus.protocol import OFFSET_CONTENT_TYPE, Checksum
from clipo_gql.tus.uploads import create_upload, receive, remove_upload, too_large

PATH = protocol.PATH
Endpoint = Callable[[Request], Awaitable[Response]]
NOT_FOUND = "No upload with this id"


def _response(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        status_code=status, headers={"Tus-Resumable": protocol.VERSION, **(headers or {})}
    )


def _error(request: Request, exc: ClipoError, extra: dict[str, str] | None = None) -> Response:
    headers = {"Tus-Resumable": protocol.VERSION, **exc.headers, **(extra or {})}
    if isinstance(exc, PreconditionFailedError):
        headers["Tus-Version"] = protocol.VERSION
    return JSONResponse({"error": exc.message}, status_code=exc.http_status, headers=headers)


class _Answered(Exception):
    """An error whose answer carries more headers (the Location of a created upload)."""

    def __init__(self, error: ClipoError, headers: dict[str, str]) -> None:
        super().__init__(error.message)
        self.error = error
        self.headers = headers


def _tus(endpoint: Endpoint) -> Endpoint:
    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except _Answered as answered:
            return _error(request, answered.error, answered.headers)
        except ClipoError as exc:
            return _error(request, exc)
        except ClientDisconnect:
            # Nobody reads this; what arrived is stored (uploads.receive).
            return _response(400)

    return wrapped


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _has_body(request: Request) -> bool:
    declared = request.headers.get("content-length")
    if declared is not None:
        return declared.strip() not in ("", "0")
    return "chunked" in request.headers.get("transfer-encoding", "").lower()


async def _principal(app: AppState, request: Request) -> Principal:
    return await app.auth.authenticate(request.headers.get("authorization"))


async def _find(app: AppState, request: Request) -> tuple[Principal, Video]:
    """The caller and their upload; 404 for an unknown id or another owner's, 410 expired."""
    principal = await _principal(app, request)
    video_id = parse_id(request.path_params["upload_id"])
    video = None if video_id is None else await find_video(principal, video_id)
    if video is None or video.upload_length is None:
        raise NotFoundError(NOT_FOUND)
    expires = video.upload_expires_at
    if video.status is VideoStatus.UPLOADING and expires is not None and expires <= now():
        raise GoneError("This upload expired: it received no bytes for too long")
    return principal, video


def _state_headers(video: Video) -> dict[str, str]:
    headers = {"Upload-Offset": str(video.upload_offset or 0)}
    if video.status is VideoStatus.UPLOADING and video.upload_expires_at is not None:
        headers["Upload-Expires"] = protocol.http_date(video.upload_expires_at)
    return headers


def _upload_url(request: Request, app: AppState, video_id: object) -> str:
    return f"{base_url(request, app.settings)}{PATH}/{video_id}"


def _check_offset(video: Video, offset: int) -> None:
    if (video.upload_offset or 0) != offset:
        raise OffsetMismatchError(
            f"The upload is at offset {video.upload_offset or 0}, not {offset}: ask with HEAD"
        )


def _check_declared(request: Request, video: Video, offset: int) -> None:
    assert video.upload_length is not None
    declared = protocol.non_negative(request.headers, "Content-Length")
    if declared is not None and offset + declared > video.upload_length:
        raise PayloadTooLargeError(
            f"The chunk would take the upload past its length ({video.upload_length} bytes)"
        )


# -- endpoints --------------------------------------------------------------------------------


async def options(request: Request) -> Response:
    """Discovery (§ OPTIONS): no version or credential needed."""
    return Response(
        status_code=204,
        headers=protocol.discovery_headers(app_state(request).settings.max_upload_bytes),
    )


@_tus
async def create(request: Request) -> Response:
    """§ Creation, and § Creation With Upload when the request has a body."""
    app = app_state(request)
    headers = request.headers
    protocol.check_version(headers)
    if "upload-defer-length" in headers:
        raise BadUserInputError(
            "Upload-Defer-Length is not supported: send the file's size as Upload-Length"
        )
    if "upload-concat" in headers:
        raise BadUserInputError("The concatenation extension is not supported")
    length = protocol.non_negative(headers, "Upload-Length")
    if length is None:
        raise BadUserInputError("Send the file's size in bytes as `Upload-Length`")
    if length > app.settings.max_upload_bytes:
        raise too_large(app.settings.max_upload_bytes)
    metadata = protocol.parse_metadata(headers.get("upload-metadata"))
    body = _has_body(request)
    checksum = None
    if body:
        if _content_type(request) != OFFSET_CONTENT_TYPE:
            raise UnsupportedMediaError(
                f"A creation request's body must be sent as `Content-Type: {OFFSET_CONTENT_TYPE}`"
            )
        checksum = protocol.parse_checksum(headers.get("upload-checksum"))
        declared = protocol.non_negative(headers, "Content-Length")
        if declared is not None and declared > length:
            raise PayloadTooLargeError("The body is longer than `Upload-Length`")
    principal = await _principal(app, request)
    client = request.client.host if request.client else None
    caller = actions.Caller(principal, limit_key(app.settings, principal, client))
    video = await create_upload(app, caller, metadata.get("filename") or "", length)
    created = {"Location": _upload_url(request, app, video.id), "Clipo-Video-Id": str(video.id)}
    if body:
        try:
            video = await _write_at(app, video, request, checksum, 0)
        except (UnsupportedMediaError, ClientDisconnect):
            raise
        except ClipoError as exc:
            raise _Answered(exc, created) from exc
    expires = video.upload_expires_at or now()
    return _response(
        201,
        {
            **created,
            "Upload-Expires": protocol.http_date(expires),
            **({"Upload-Offset": str(video.upload_offset or 0)} if body else {}),
        },
    )


@_tus
async def head(request: Request) -> Response:
    """§ HEAD: where the upload is; never cached."""
    protocol.check_version(request.headers)
    _, video = await _find(app_state(request), request)
    return _response(
        200,
        {
            **_state_headers(video),
            "Upload-Length": str(video.upload_length),
            "Cache-Control": "no-store",
        },
    )


@_tus
async def patch(request: Request) -> Response:
    """§ PATCH: the body at `Upload-Offset`; 204 with the new offset."""
    started = time.perf_counter()
    status = "5xx"
    try:
        response = await _patch(request)
        status = f"{response.status_code // 100}xx"
        return response
    except (ClipoError, _Answered) as exc:
        code = exc.error.http_status if isinstance(exc, _Answered) else exc.http_status
        status = f"{code // 100}xx"
        raise
    finally:
        TUS_PATCH_DURATION.labels(status).observe(time.perf_counter() - started)


async def _patch(request: Request) -> Response:
    app = app_state(request)
    headers = request.headers
    protocol.check_version(headers)
    if _content_type(request) != OFFSET_CONTENT_TYPE:
        raise UnsupportedMediaError(
            f"A PATCH must be sent as `Content-Type: {OFFSET_CONTENT_TYPE}`"
        )
    offset = protocol.non_negative(headers, "Upload-Offset")
    if offset is None:
        raise BadUserInputError("Send the offset the chunk starts at as `Upload-Offset`")
    checksum = protocol.parse_checksum(headers.get("upload-checksum"))
    _, video = await _find(app, request)
    _check_offset(video, offset)
    if video.status is not VideoStatus.UPLOADING and not _has_body(request):
        return _response(204, _state_headers(video))  # complete already: nothing to add
    _check_declared(request, video, offset)
    # The stored offset and status may move while we wait for the lock: `_write_at` checks
    # them again under it.
    video = await _write_at(app, video, request, checksum, offset)
    return _response(204, _state_headers(video))


async def _write_at(
    app: AppState, video: Video, request: Request, checksum: Checksum | None, offset: int
) -> Video:
    assert video.id is not None
    settings = app.settings
    async with upload_lock(
        app.redis, settings.redis_prefix, video.id, settings.upload_lock_lease_seconds
    ):
        fresh = await Video.get(video.id)
        if fresh is None or fresh.upload_length is None:
            raise NotFoundError(NOT_FOUND)
        _check_offset(fresh, offset)
        if fresh.status is not VideoStatus.UPLOADING:
            raise OffsetMismatchError("This upload is complete already")
        return await receive(app, fresh, request, checksum)


@_tus
async def delete(request: Request) -> Response:
    """§ Termination: the upload and its video are removed; its URL is unknown from then."""
    app = app_state(request)
    protocol.check_version(request.headers)
    principal, video = await _find(app, request)
    assert video.id is not None
    if video.status is VideoStatus.UPLOADING:
        await remove_upload(app, video.id)
    else:
        await actions.delete(app, principal, video.id)
    TUS_UPLOADS.labels("terminated").inc()
    return _response(204)


_BY_METHOD: dict[str, Endpoint] = {"PATCH": patch, "DELETE": delete, "HEAD": head}


async def upload(request: Request) -> Response:
    """`/uploads/{uploadId}`; a POST with `X-HTTP-Method-Override` acts as that method (for
    clients behind proxies that pass only GET and POST, as the protocol asks servers to)."""
    method = request.method
    if method == "POST":
        override = request.headers.get("x-http-method-override", "").strip().upper()
        endpoint = _BY_METHOD.get(override)
        if endpoint is None:
            return _error(request, BadUserInputError("POST here needs X-HTTP-Method-Override"))
        return await endpoint(request)
    if method == "OPTIONS":
        return await options(request)
    return await _BY_METHOD[method](request)


async def collection(request: Request) -> Response:
    if request.method == "OPTIONS":
        return await options(request)
    return await create(request)


routes = [
    Route(PATH, collection, methods=["POST", "OPTIONS"]),
    Route(PATH + "/{upload_id}", upload, methods=["HEAD", "PATCH", "DELETE", "POST", "OPTIONS"]),
]
