"""Request body caps enforced at the ASGI level, before any parser sees the bytes."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipo_gql.errors import ClipoError, PayloadTooLargeError
from clipo_gql.http_negotiation import GraphQLErrorResponse
from clipo_gql.units import human_size

MiB = 1024 * 1024
# Room for the multipart framing and the `operations`/`map` fields around the file itself.
MULTIPART_OVERHEAD = MiB
# tus/protocol.py and tus/routes.py name these too; repeated here so that this module, loaded
# by the app before anything else, imports nothing of the upload code.
TUS_PATH = "/uploads"
TUS_CONTENT_TYPE = "application/offset+octet-stream"
TUS_VERSION = "1.0.0"


def error_response(error: ClipoError, *, status_code: int | None = None) -> GraphQLErrorResponse:
    """The answer to an error that ends a request before GraphQL runs, shaped like GraphQL's,
    in the media type the request's `Accept` picks (see `http_negotiation`)."""
    return GraphQLErrorResponse(error, status_code=status_code)


class BodySizeLimit:
    """413 for bodies over the cap: refused from Content-Length up front, else counted as read.

    An upload may be as large as MAX_UPLOAD_BYTES; any other body (GraphQL JSON) is small,
    and Strawberry reads it whole into memory, so it gets a small cap of its own.
    """

    def __init__(self, app: ASGIApp, *, upload_bytes: int, other_bytes: int) -> None:
        self.app = app
        self.upload_bytes = upload_bytes
        self.other_bytes = other_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        content_type = headers.get("content-type", "").lower()
        multipart = content_type.startswith("multipart/")
        # A tus chunk (tus/) may be as large as an upload; the upload's own Upload-Length
        # caps the total across chunks, counted by tus.uploads as the bytes arrive.
        tus = content_type.startswith(TUS_CONTENT_TYPE) and scope["path"].startswith(TUS_PATH)
        if multipart:
            limit = self.upload_bytes + MULTIPART_OVERHEAD
        elif tus:
            limit = self.upload_bytes
        else:
            limit = self.other_bytes
        what = "upload" if multipart or tus else "request body"
        too_large = PayloadTooLargeError(
            f"The {what} is larger than the "
            f"{human_size(self.upload_bytes if multipart or tus else limit)} limit"
        )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            if tus:  # tus clients read `{"error": ...}` and want Tus-Resumable on every answer
                answer = JSONResponse(
                    {"error": too_large.message},
                    status_code=413,
                    headers={"Tus-Resumable": TUS_VERSION},
                )
                await answer(scope, receive, send)
            else:
                await error_response(too_large)(scope, receive, send)
            return

        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large
            return message

        await self.app(scope, counted, send)
