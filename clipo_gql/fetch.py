"""Downloading a submitted URL without letting it reach inside our network (security.md, SSRF).

Every URL, the submitted one and each redirect target, is checked by the SSRF policy
(ssrf.py: `check_url`, then `resolve`), and the body is fetched through its pinned
connection, which can only reach the addresses that were checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from io import BufferedWriter
from pathlib import Path
from urllib.parse import unquote, unquote_to_bytes, urljoin, urlsplit

import httpcore

from clipo_gql.errors import (
    ForbiddenUrlError,
    PayloadTooLargeError,
    ProcessingError,
    UnsupportedMediaError,
)
from clipo_gql.ops.metrics import URL_DOWNLOAD_BYTES
from clipo_gql.settings import Settings
from clipo_gql.ssrf import (
    AddressPolicy,
    CheckedUrl,
    check_url,
    connect_reason,
    header,
    pinned_pool,
    resolve,
    status_text,
)
from clipo_gql.units import human_size
from clipo_gql.uploads import HEAD_BYTES, safe_filename, sniff_video

__all__ = ["Downloaded", "download", "filename_from_url"]

ProgressCallback = Callable[[int, int | None], Awaitable[None]]

USER_AGENT = "clipo-gql/0.1"
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_PROGRESS_INTERVAL = 0.25
# One thread hop per socket read (up to 64 KiB from httpcore) would cost more than the write.
_WRITE_BYTES = 1 << 20


_CONTENT_DISPOSITION_PARAM_RE = re.compile(
    r";\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(\"(?:[^\"\\]|\\.)*\"|[^;]*)"
)
_MEDIA_TYPE_RE = re.compile(r"[a-z0-9!#$&^_.+-]{1,64}/[a-z0-9!#$&^_.+-]{1,64}")


# -- download -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Downloaded:
    filename: str
    """From Content-Disposition, else the URL's last path segment; safe; "video" at worst."""
    size: int
    content_type: str | None
    """The media type the server declared (`video/mp4`), without parameters."""


async def download(
    url: str,
    dest: Path,
    settings: Settings,
    on_progress: ProgressCallback | None = None,
    policy: AddressPolicy | None = None,
    quota_left: int | None = None,
) -> Downloaded:
    """Fetch `url` into `dest` (its folder must exist), following checked redirects.

    The body goes to a temporary file beside `dest`, renamed on success; on any failure,
    cancellation included, nothing is left on disk. `on_progress(received, total)` is called
    at most ~4 times a second, and once at the end; `total` is the declared Content-Length.

    The body may be MAX_UPLOAD_BYTES, or `quota_left` (what its owner's storage quota still
    allows) when that is less.

    Raises ForbiddenUrlError (a URL or redirect refused by the rules), ProcessingError
    (network, HTTP status, timeouts), PayloadTooLargeError, UnsupportedMediaError.
    """
    if policy is None:
        policy = AddressPolicy.from_settings(settings)
    spool = _Spool(dest.with_name(f".{uuid.uuid4().hex}.download"))
    deadline = asyncio.timeout(settings.url_fetch_timeout_seconds)
    try:
        try:
            async with deadline:
                fetch = _Fetch(settings, policy, spool, on_progress, _cap(settings, quota_left))
                result = await fetch.run(url)
                await spool.close()
        except TimeoutError:
            if deadline.expired():
                limit = _duration(settings.url_fetch_timeout_seconds)
                raise ProcessingError(
                    f"The download did not finish within the {limit} limit"
                ) from None
            raise
        # A rename in the same folder: one fast syscall, and no thread that could complete
        # it after a cancellation reported failure.
        os.replace(spool.path, dest)
    except BaseException:
        spool.discard()
        raise
    return result


def _cap(settings: Settings, quota_left: int | None) -> tuple[int, str]:
    """The most bytes a download may have, and the error that says so."""
    cap = settings.max_upload_bytes
    if quota_left is not None and quota_left < cap:
        return quota_left, (
            f"The file at the URL is larger than the {human_size(quota_left)} your storage "
            "quota has left; delete videos to make room"
        )
    return cap, f"The file at the URL is larger than the {human_size(cap)} limit"


@dataclass
class _Fetch:
    settings: Settings
    policy: AddressPolicy
    spool: _Spool
    on_progress: ProgressCallback | None
    cap: tuple[int, str]

    async def run(self, url: str) -> Downloaded:
        checked = check_url(url, self.settings)
        addresses = await resolve(checked, self.settings, self.policy)
        redirects = 0
        while True:
            with _network_errors(checked, self.settings):
                async with (
                    pinned_pool(addresses) as pool,
                    pool.stream(
                        "GET",
                        checked.request_url,
                        headers=[
                            (b"Host", checked.netloc.encode()),
                            (b"User-Agent", USER_AGENT.encode()),
                            (b"Accept", b"*/*"),
                            (b"Accept-Encoding", b"identity"),
                            (b"Connection", b"close"),
                        ],
                        extensions={"timeout": self._timeouts()},
                    ) as response,
                ):
                    location = _redirect_location(response)
                    if location is None:
                        return await self._receive(checked, response)
            if redirects >= self.settings.url_fetch_max_redirects:
                raise ProcessingError(
                    f"The URL redirected more than {self.settings.url_fetch_max_redirects} times"
                )
            redirects += 1
            try:
                checked = check_url(urljoin(checked.url, location), self.settings)
                addresses = await resolve(checked, self.settings, self.policy)
            except ForbiddenUrlError as exc:
                raise ForbiddenUrlError(
                    f"The URL redirects to a location that is not allowed. {exc.message}"
                ) from None

    def _timeouts(self) -> dict[str, float]:
        connect = self.settings.url_fetch_connect_timeout_seconds
        read = self.settings.url_fetch_read_timeout_seconds
        return {"connect": connect, "read": read, "write": read, "pool": connect}

    async def _receive(self, checked: CheckedUrl, response: httpcore.Response) -> Downloaded:
        status = response.status
        if not 200 <= status < 300:
            raise ProcessingError(f"The server answered {status_text(status)}")
        cap, message = self.cap
        too_large = PayloadTooLargeError(message)
        declared = _content_length(response)
        if declared is not None and declared > cap:
            raise too_large
        content_type = _media_type(header(response, b"content-type"))

        loop = asyncio.get_running_loop()
        last_report = loop.time()
        received = 0
        head = bytearray()
        sniffed = False
        pending: list[bytes] = []
        pending_bytes = 0
        async for chunk in response.aiter_stream():
            received += len(chunk)
            if received > cap:
                raise too_large
            if not sniffed:
                head += chunk[: HEAD_BYTES - len(head)]
                # As soon as the head is in: no point fetching gigabytes of a web page.
                if len(head) >= HEAD_BYTES:
                    _require_video(head, content_type)
                    sniffed = True
            pending.append(chunk)
            pending_bytes += len(chunk)
            if pending_bytes >= _WRITE_BYTES:
                URL_DOWNLOAD_BYTES.inc(pending_bytes)
                await self.spool.write(pending)
                pending, pending_bytes = [], 0
            if self.on_progress is not None and loop.time() - last_report >= _PROGRESS_INTERVAL:
                last_report = loop.time()
                await self.on_progress(received, declared)
        if not sniffed:
            _require_video(head, content_type)
        URL_DOWNLOAD_BYTES.inc(pending_bytes)
        await self.spool.write(pending)
        if self.on_progress is not None:
            await self.on_progress(received, declared)
        return Downloaded(
            filename=_filename(response, checked), size=received, content_type=content_type
        )


def _require_video(head: bytearray, content_type: str | None) -> None:
    if sniff_video(bytes(head)):
        return
    if content_type and not content_type.startswith("video/"):
        raise UnsupportedMediaError(
            f"The URL did not return a video file (the server sent {content_type})"
        )
    raise UnsupportedMediaError(
        "The URL did not return a video file (its content is not a video format we accept)"
    )


@contextlib.contextmanager
def _network_errors(checked: CheckedUrl, settings: Settings) -> Iterator[None]:
    """httpcore's exceptions as messages for `Video.error`."""
    host = checked.host
    try:
        yield
    except httpcore.ConnectTimeout:
        raise ProcessingError(f"Could not connect to {host}: the connection timed out") from None
    except httpcore.ConnectError as exc:
        raise ProcessingError(f"Could not connect to {host}: {connect_reason(exc)}") from None
    except (httpcore.ReadTimeout, httpcore.WriteTimeout):
        idle = _duration(settings.url_fetch_read_timeout_seconds)
        raise ProcessingError(
            f"The download timed out: the server at {host} sent nothing for {idle}"
        ) from None
    except httpcore.RemoteProtocolError:
        raise ProcessingError(
            f"The server at {host} sent an invalid or incomplete HTTP response"
        ) from None
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException):
        raise ProcessingError(f"The connection to {host} failed") from None


# -- responses ------------------------------------------------------------------------------


def _redirect_location(response: httpcore.Response) -> str | None:
    if response.status not in _REDIRECT_STATUSES:
        return None
    location = header(response, b"location")
    return location.strip() if location else None


def _content_length(response: httpcore.Response) -> int | None:
    # h11 has already refused malformed or conflicting values.
    value = header(response, b"content-length")
    return int(value) if value is not None and value.strip().isdigit() else None


def _media_type(value: str | None) -> str | None:
    if value is None:
        return None
    media_type = value.split(";", 1)[0].strip().lower()
    return media_type if _MEDIA_TYPE_RE.fullmatch(media_type) else None


def filename_from_url(url: str) -> str:
    """The URL's last path segment, percent-decoded and made safe; "video" if unusable."""
    return _first_safe_name([_last_segment(urlsplit(url).path)])


def _filename(response: httpcore.Response, checked: CheckedUrl) -> str:
    disposition = header(response, b"content-disposition")
    candidates = list(_disposition_filenames(disposition)) if disposition else []
    candidates.append(_last_segment(checked.path_and_query.split("?", 1)[0]))
    return _first_safe_name(candidates)


def _last_segment(path: str) -> str:
    return unquote(path.rsplit("/", 1)[-1], errors="replace")


def _first_safe_name(candidates: Iterable[str]) -> str:
    for candidate in candidates:
        name = safe_filename(candidate, default="")
        if name:
            return name
    return "video"


def _disposition_filenames(disposition: str) -> Iterator[str]:
    """RFC 6266 file names, best first: `filename*` (RFC 8187), then `filename`."""
    params: dict[str, str] = {}
    for match in _CONTENT_DISPOSITION_PARAM_RE.finditer(disposition):
        value = match.group(2).strip()
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.setdefault(match.group(1).lower(), value)
    extended = params.get("filename*")
    if extended is not None:
        pieces = extended.split("'", 2)
        if len(pieces) == 3 and pieces[0].lower() in ("utf-8", "iso-8859-1"):
            yield unquote_to_bytes(pieces[2]).decode(pieces[0], errors="replace")
    if "filename" in params:
        yield params["filename"]


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return "1 minute" if minutes == 1 else f"{minutes} minutes"
    return "1 second" if seconds == 1 else f"{seconds:g} seconds"


# -- the temporary file ---------------------------------------------------------------------


def _create(path: Path) -> BufferedWriter:
    # "x": the name is ours and new; never follow or reuse something already there.
    return open(path, "xb")


def _discard_when_created(opening: asyncio.Future[BufferedWriter], path: Path) -> None:
    if not opening.cancelled() and opening.exception() is None:
        with contextlib.suppress(OSError, ValueError):
            # Waits for a write still running in the executor (BufferedWriter's lock).
            opening.result().close()
    with contextlib.suppress(OSError):
        path.unlink()


class _Spool:
    """The download's temporary file, written from the default executor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._opening: asyncio.Future[BufferedWriter] | None = None

    async def _file(self) -> BufferedWriter:
        if self._opening is None:
            loop = asyncio.get_running_loop()
            self._opening = loop.run_in_executor(None, _create, self.path)
        # Shielded so a cancellation cannot lose the file the thread creates anyway:
        # discard() finds it through `_opening`.
        return await asyncio.shield(self._opening)

    async def write(self, chunks: list[bytes]) -> None:
        file = await self._file()
        if chunks:
            await asyncio.get_running_loop().run_in_executor(None, file.writelines, chunks)

    async def close(self) -> None:
        file = await self._file()
        await asyncio.get_running_loop().run_in_executor(None, file.close)

    def discard(self) -> None:
        """Close and remove the file. Synchronous: it runs while a cancellation propagates."""
        opening = self._opening
        if opening is None:
            return
        if opening.done():
            _discard_when_created(opening, self.path)
        else:
            opening.add_done_callback(functools.partial(_discard_when_created, path=self.path))
