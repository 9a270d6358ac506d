"""Sending media files: ranges, conditional requests, large chunks, safe download names; or,
behind nginx, handing the sending to it with `X-Accel-Redirect`."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

import anyio
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable, Response
from starlette.types import Receive, Scope, Send

from clipo_gql.uploads import safe_filename

if TYPE_CHECKING:
    from clipo_gql.storage import Located
    from clipo_gql.storage.s3 import ObjectStore

FILE_MISSING = "The file of this video is missing"
# Fewer, larger reads: each chunk costs a thread hop and an ASGI send.
CHUNK_BYTES = 1024 * 1024


class MediaFileResponse(FileResponse):
    """Starlette's FileResponse (single and multipart ranges, If-Range, HEAD, pathsend when the
    server offers it) plus 304 for If-None-Match, and a malformed Range ignored (RFC 9110 lets
    a server serve the whole file) rather than answered with 400."""

    chunk_size = CHUNK_BYTES

    def __init__(
        self,
        path: str | os.PathLike[str],
        stat_result: os.stat_result,
        *,
        media_type: str,
        download_name: str | None = None,
        disposition: Literal["inline", "attachment"] = "inline",
    ) -> None:
        headers = {"cache-control": "no-cache"}
        if download_name is not None:
            headers["content-disposition"] = content_disposition(disposition, download_name)
        super().__init__(path, media_type=media_type, stat_result=stat_result, headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if_none_match = Headers(scope=scope).get("if-none-match")
        if if_none_match and etag_matches(if_none_match, self.headers["etag"]):
            keep = ("etag", "last-modified", "cache-control", "accept-ranges")
            headers = {k: self.headers[k] for k in keep if k in self.headers}
            await Response(status_code=304, headers=headers)(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    # A player's Range requests, thumbnails and metadata fit in one chunk: read such a body in
    # one thread hop (open, pread, close) instead of Starlette's four (open, seek, read,
    # close), which were a sixth of the CPU of serving 1 MiB ranges (bench row 4). Reading
    # before the headers go out also lets a file deleted meanwhile be answered 404.

    async def _handle_simple(self, send: Send, send_header_only: bool, send_pathsend: bool) -> None:
        size = int(self.headers["content-length"])  # from the stat passed in
        if send_header_only or send_pathsend or size > self.chunk_size:
            await super()._handle_simple(send, send_header_only, send_pathsend)
        else:
            await self._send_small(send, self.status_code, self.raw_headers, 0, size)

    async def _handle_single_range(
        self, send: Send, start: int, end: int, file_size: int, send_header_only: bool
    ) -> None:
        if send_header_only or end - start > self.chunk_size:
            await super()._handle_single_range(send, start, end, file_size, send_header_only)
            return
        headers = MutableHeaders(raw=list(self.raw_headers))
        headers["content-range"] = f"bytes {start}-{end - 1}/{file_size}"
        headers["content-length"] = str(end - start)
        await self._send_small(send, 206, headers.raw, start, end - start)

    async def _send_small(
        self, send: Send, status: int, headers: list[tuple[bytes, bytes]], offset: int, size: int
    ) -> None:
        try:
            body = await anyio.to_thread.run_sync(_read_at, self.path, offset, size)
        except FileNotFoundError:
            await _send_missing(send)
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []  # the whole file, 200


class ObjectResponse(Response):
    """An object of the store sent through this process (STORAGE_REDIRECT=false): the same
    rules as a file's, one range at most (several are answered with the whole object, as RFC
    9110 allows), read from the store a chunk at a time."""

    def __init__(
        self,
        store: ObjectStore,
        found: Located,
        *,
        media_type: str,
        download_name: str | None = None,
        disposition: Literal["inline", "attachment"] = "inline",
    ) -> None:
        assert found.key is not None
        super().__init__(media_type=media_type)
        self.store, self.key, self.size = store, found.key, found.size
        self.headers["accept-ranges"] = "bytes"
        self.headers["cache-control"] = "no-cache"
        if found.etag:
            tag = found.etag if found.etag.startswith(('"', "W/")) else f'"{found.etag}"'
            self.headers["etag"] = tag
        if download_name is not None:
            self.headers["content-disposition"] = content_disposition(disposition, download_name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Headers(scope=scope)
        etag = self.headers.get("etag")
        if_none_match = request.get("if-none-match")
        if etag and if_none_match and etag_matches(if_none_match, etag):
            keep = ("etag", "cache-control", "accept-ranges")
            headers = {k: self.headers[k] for k in keep if k in self.headers}
            await Response(status_code=304, headers=headers)(scope, receive, send)
            return
        start, end, status = 0, self.size, 200
        http_range, if_range = request.get("range"), request.get("if-range")
        if http_range and (if_range is None or if_range == etag):
            try:
                ranges = FileResponse._parse_range_header(http_range, self.size)
            except MalformedRangeHeader:
                ranges = []
            except RangeNotSatisfiable:
                await Response(status_code=416, headers={"content-range": f"bytes */{self.size}"})(
                    scope, receive, send
                )
                return
            if len(ranges) == 1:
                (start, end), status = ranges[0], 206
                self.headers["content-range"] = f"bytes {start}-{end - 1}/{self.size}"
        self.headers["content-length"] = str(end - start)
        raw_headers = self.raw_headers
        start_message = {"type": "http.response.start", "status": status, "headers": raw_headers}
        if scope["method"] == "HEAD" or start == end:
            await send(start_message)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        async with contextlib.aclosing(self.store.stream(self.key, start, end)) as chunks:
            try:
                first = await anext(chunks)
            except (FileNotFoundError, StopAsyncIteration):
                await _send_missing(send)  # removed since it was found
                return
            await send(start_message)
            await send({"type": "http.response.body", "body": first, "more_body": True})
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class AccelRedirectResponse(Response):
    """An empty answer that tells nginx to send a file itself (X-Accel-Redirect): nginx keeps
    only Content-Type, Content-Disposition, Cache-Control, Expires, Accept-Ranges and
    Set-Cookie of it, and does Range, If-Range, If-None-Match, ETag, Last-Modified and HEAD
    on its own, from the file (deploy/nginx.conf passes CORS and X-Request-Id on by hand)."""

    def __init__(
        self, uri: str, *, media_type: str, download_name: str | None, shared_seconds: int = 0
    ) -> None:
        headers = {"x-accel-redirect": uri, "cache-control": "no-cache"}
        if shared_seconds > 0:
            # nginx's own header (it never reaches the client): deploy/nginx.conf keeps the
            # answer this long for the same URL; nothing else makes one kept.
            headers["x-accel-expires"] = str(shared_seconds)
        if download_name is not None:
            headers["content-disposition"] = content_disposition("attachment", download_name)
        super().__init__(b"", media_type=media_type, headers=headers)


def accel_uri(prefix: str, root: Path, path: Path) -> str:
    """`/_media/` + `path` under `root` (`videos/<id>/video.mp4`), percent-encoded: nginx
    decodes the URI it is redirected to, so a `%`, `?` or space in a name is not syntax.
    String operations rather than PurePath's: this runs for every media request (row 4)."""
    base, full = str(root) + os.sep, str(path)
    relative = full[len(base) :]
    if not full.startswith(base) or ".." in relative.split(os.sep):
        raise ValueError(f"not a path under MEDIA_DIR: {path}")
    return prefix + quote(relative, safe="/")


def _read_at(path: str | os.PathLike[str], offset: int, size: int) -> bytes:
    with open(path, "rb") as file:
        return os.pread(file.fileno(), size, offset)


async def _send_missing(send: Send) -> None:
    body = json.dumps({"error": FILE_MISSING}, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    tags = (tag.strip().removeprefix("W/") for tag in header.split(","))
    return etag in tags


def content_disposition(disposition: str, name: str) -> str:
    """Both forms (RFC 6266): an ASCII `filename` for old clients, the exact `filename*`."""
    fallback = "".join(c if _plain(c) else "_" for c in name)
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _plain(char: str) -> bool:
    return char.isascii() and char.isprintable() and char not in '"\\'


def download_name(original: str, suffix: str) -> str:
    """`holiday.mov` -> `holiday.mp4` (suffix `.mp4`), or `holiday.metadata.json`."""
    stem = PurePath(safe_filename(original)).stem or "video"
    return safe_filename(f"{stem}{suffix}")
