"""Sending media files: ranges, conditional requests, large chunks, safe download names."""

from __future__ import annotations

import os
from pathlib import PurePath
from typing import Literal
from urllib.parse import quote

from starlette.datastructures import Headers
from starlette.responses import FileResponse, MalformedRangeHeader, Response
from starlette.types import Receive, Scope, Send

from clipo_gql.uploads import safe_filename

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
        *,
        media_type: str,
        download_name: str | None = None,
        disposition: Literal["inline", "attachment"] = "inline",
    ) -> None:
        headers = {"cache-control": "no-cache"}
        if download_name is not None:
            headers["content-disposition"] = content_disposition(disposition, download_name)
        super().__init__(path, media_type=media_type, stat_result=os.stat(path), headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if_none_match = Headers(scope=scope).get("if-none-match")
        if if_none_match and _etag_matches(if_none_match, self.headers["etag"]):
            keep = ("etag", "last-modified", "cache-control", "accept-ranges")
            headers = {k: self.headers[k] for k in keep if k in self.headers}
            await Response(status_code=304, headers=headers)(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []  # the whole file, 200


def _etag_matches(header: str, etag: str) -> bool:
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
