"""Streaming parser for GraphQL multipart requests: file parts go straight to disk.

Starlette's `request.form()` spools each file into a python-multipart temp file that the app
then copies: every byte is written twice, at a quarter of the disk's speed (performance.md).
Here each file part is written once, into `incoming_dir` under a name we generate, while its
size is counted against the cap, and every limit is enforced before more bytes are accepted
(security.md, "HTTP / GraphQL surface").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from io import BufferedWriter
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

import aiofiles.os
from aiofiles.threadpool.binary import AsyncBufferedIOBase
from bson import ObjectId
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from clipo_gql.errors import BadUserInputError, PayloadTooLargeError
from clipo_gql.storage import ORIGINAL, Storage
from clipo_gql.units import human_size

if TYPE_CHECKING:
    from obstore import AsyncWritableFile
    from python_multipart.multipart import MultipartCallbacks
    from starlette.requests import Request

    from clipo_gql.storage.s3 import ObjectStore

log = logging.getLogger(__name__)

__all__ = [
    "HEAD_BYTES",
    "WRITE_BYTES",
    "MultipartLimits",
    "ReceivedFile",
    "receive_multipart",
    "safe_filename",
    "sniff_video",
]

HEAD_BYTES = 400  # room for the second sync byte of MPEG-TS (188) and M2TS (4 + 192)
# One thread hop per socket read (64-256 KiB) would cost more than the write itself.
WRITE_BYTES = 1 << 20
# A client trickling tiny chunks would otherwise make us hold ~200 bytes of views per byte.
_WRITE_PIECES = 256
# RFC 2046 allows an epilogue after the closing boundary; nobody sends a large one, and
# without a cap a client could keep us reading (and discarding) forever. Counted from the
# chunk after the one holding the closing boundary (chunks are bounded by the server's reads).
_MAX_EPILOGUE_BYTES = 16_384
_MAX_FILENAME_CHARS = 200
_MAX_EXTENSION_CHARS = 16
_NAME_IN_MESSAGE_CHARS = 64

# RFC 2046 bchars, not ending in a space. python-multipart refuses boundaries over 256 bytes.
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,255}[0-9A-Za-z'()+_,\-./:=?]")
_QUOTED_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"?')
_EXT_FILENAME_RE = re.compile(r";[ \t]*filename\*[ \t]*=[ \t]*([^;\s]*)", re.IGNORECASE)
# Controls, format characters (a bidi override can make an ".exe" name display as ".mp4";
# zero-width characters), lone surrogates (not encodable), line/paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Removals of refused uploads' objects, running after their request ended.
_removals: set[asyncio.Task[None]] = set()


@dataclass
class ReceivedFile:
    path: Path
    """Where the bytes are: `<incoming_dir>/<uuid4 hex>.part`, a name we generated (unused
    when `video_id` is set)."""
    filename: str
    """The part's file name as the client sent it: untrusted, may be "" (see `safe_filename`)."""
    content_type: str | None
    size: int
    head: bytes
    """The first `HEAD_BYTES` bytes, for `sniff_video`."""
    video_id: ObjectId | None = None
    """With an object store: the bytes went straight into it as this (new) video's original."""
    kept: bool = False
    """Adopted as a video's original (`Storage.adopt`): not to be removed after the request."""


@dataclass(frozen=True)
class MultipartLimits:
    max_file_bytes: int
    max_files: int = 10
    max_fields: int = 16
    max_field_bytes: int = 1_048_576
    max_header_bytes: int = 16_384


async def receive_multipart(
    request: Request, incoming_dir: Path, limits: MultipartLimits, store: ObjectStore | None = None
) -> tuple[dict[str, str], dict[str, ReceivedFile]]:
    """Read a multipart/form-data body: fields by name (UTF-8), files by part name.

    Returns once the whole body has been read and every file is closed. On any failure
    (a limit, a malformed body, `ClientDisconnect`, cancellation) every file this call
    wrote is removed before the exception propagates.

    With `store`, each file part streams into it instead (a multipart upload as the bytes
    arrive, memory bounded by a few parts) as the original of a video id chosen here.
    """
    boundary = _boundary(request.headers.get("content-type"))
    receiver = _Receiver(incoming_dir, limits, store)
    try:
        await aiofiles.os.makedirs(incoming_dir, mode=0o700, exist_ok=True)
        return await receiver.receive(request, boundary)
    except BaseException:
        receiver.discard()
        raise


def sniff_video(head: bytes) -> bool:
    """Whether `head` starts like a container our ffmpeg demuxer allow-list reads.

    A cheap early refusal of obvious non-videos; ffprobe with the allow-list decides.
    """
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return True  # ISO-BMFF / QuickTime (old QuickTime files start with other atoms)
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return True  # Matroska / WebM (EBML)
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return True
    if head.startswith((b"FLV", b"OggS", b"\x06\x0e\x2b\x34\x02\x05\x01\x01")):
        return True  # FLV, Ogg, MXF header partition pack key
    # MPEG-TS: 188-byte packets starting with the 0x47 sync byte; BDAV/AVCHD (.m2ts, .mts)
    # prefix each packet with a 4-byte timestamp (192 bytes). Both go to the mpegts demuxer.
    return _sync_bytes(head, 0, 188) or _sync_bytes(head, 4, 192)


def safe_filename(name: str, default: str = "video") -> str:
    """The user's file name reduced to something safe to store and show.

    Basename only (any `/` or `\\` path dropped), control and bidi/format characters removed,
    NFC, at most 200 characters keeping the extension; `default` when nothing usable is left.
    """
    text = unicodedata.normalize("NFC", name)
    text = "".join(c for c in text if unicodedata.category(c) not in _UNSAFE_CATEGORIES)
    text = re.split(r"[/\\]", text)[-1].strip()
    if len(text) > _MAX_FILENAME_CHARS:
        stem, dot, extension = text.rpartition(".")
        if dot and stem and len(extension) < _MAX_EXTENSION_CHARS:
            keep = _MAX_FILENAME_CHARS - len(extension) - 1
            text = f"{stem[:keep].rstrip()}.{extension}"
        else:
            text = text[:_MAX_FILENAME_CHARS].rstrip()
    if text in ("", ".", ".."):
        return default
    return text


def _sync_bytes(head: bytes, offset: int, packet: int) -> bool:
    if len(head) <= offset or head[offset] != 0x47:
        return False
    return len(head) <= offset + packet or head[offset + packet] == 0x47


def _boundary(content_type: str | None) -> bytes:
    media_type, params = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        raise BadUserInputError("Expected a multipart/form-data request with a multipart boundary")
    boundary = params.get(b"boundary")
    if boundary is None or _BOUNDARY_RE.fullmatch(boundary.decode("latin-1")) is None:
        raise BadUserInputError("The multipart boundary is missing or invalid")
    return boundary


def _decode_param(value: bytes) -> str:
    # Header bytes reach us as latin-1; browsers put raw UTF-8 in names and file names.
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _extended_filename(disposition: bytes) -> str | None:
    """The RFC 5987 `filename*=charset'lang'pct-encoded` value, which python-multipart drops."""
    # Blank out quoted strings first so a `filename*=` inside a quoted filename is not taken.
    text = _QUOTED_STRING_RE.sub('""', disposition.decode("latin-1"))
    match = _EXT_FILENAME_RE.search(text)
    if match is None:
        return None
    pieces = match.group(1).split("'", 2)
    if len(pieces) != 3 or pieces[0].lower() not in ("utf-8", "iso-8859-1"):
        return None
    return unquote_to_bytes(pieces[2]).decode(pieces[0], errors="replace")


def _shown(name: str) -> str:
    return repr(name[:_NAME_IN_MESSAGE_CHARS])


def _create(path: Path) -> BufferedWriter:
    # "x": the name is ours and new; never follow or reuse something already there.
    return open(path, "xb")


def _close_quietly(raw: BufferedWriter) -> None:
    # BufferedWriter.close() takes the same lock as a write still running in the executor,
    # so it waits for that write instead of closing the descriptor under it.
    with contextlib.suppress(OSError, ValueError):
        raw.close()


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _removed(task: asyncio.Task[None]) -> None:
    _removals.discard(task)
    if not task.cancelled() and task.exception() is not None:
        # The store did not answer: the workers' sweeper removes the object later.
        log.warning("could not remove a refused upload: %s", task.exception())


def _discard_when_created(opening: asyncio.Future[BufferedWriter], path: Path) -> None:
    if not opening.cancelled() and opening.exception() is None:
        _close_quietly(opening.result())
    _remove_quietly(path)


@dataclass(eq=False)
class _Sink:
    """One file part on its way to disk."""

    name: str
    filename: str
    content_type: str | None
    path: Path
    size: int = 0
    head: bytearray = field(default_factory=bytearray)
    # Views of the received chunks (immutable bytes), not copies: copying into a fresh 1 MiB
    # buffer cost both the memcpy and, for each new buffer, page faults on its mmap'd memory.
    pending: list[memoryview] = field(default_factory=list)
    pending_bytes: int = 0
    complete: bool = False
    opening: asyncio.Future[BufferedWriter] | None = None
    file: AsyncBufferedIOBase | None = None
    # With an object store: the video the part becomes the original of, and its upload.
    video_id: ObjectId | None = None
    remote: AsyncWritableFile | None = None
    closed: bool = False


@dataclass(eq=False)
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_bytes: int = 0
    name: str = ""
    value: bytearray | None = None  # set for a field
    sink: _Sink | None = None  # set for a file


class _Receiver:
    """python-multipart callbacks (synchronous, limits checked there) plus the async file I/O.

    The callbacks only record: file data accumulates in each `_Sink.pending`, and after every
    `parser.write(chunk)` `_drain` does the disk work the chunk made due.
    """

    def __init__(
        self, incoming_dir: Path, limits: MultipartLimits, store: ObjectStore | None
    ) -> None:
        self._dir = incoming_dir
        self._limits = limits
        self._store = store
        self._fields: dict[str, str] = {}
        self._files: dict[str, ReceivedFile] = {}
        self._names: set[str] = set()
        self._file_count = 0
        self._field_count = 0
        self._sinks: list[_Sink] = []  # every file we may have created, for discard()
        self._unfinished: list[_Sink] = []
        self._part = _Part()
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._ended = False

    async def receive(
        self, request: Request, boundary: bytes
    ) -> tuple[dict[str, str], dict[str, ReceivedFile]]:
        callbacks: MultipartCallbacks = {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }
        # The parser's own per-line header limit, so one line cannot exceed the per-part one.
        parser = MultipartParser(boundary, callbacks, max_header_size=self._limits.max_header_bytes)
        epilogue = 0
        async with contextlib.aclosing(request.stream()) as stream:
            async for chunk in stream:
                if self._ended:
                    epilogue += len(chunk)
                    if epilogue > _MAX_EPILOGUE_BYTES:
                        raise BadUserInputError("Unexpected data after the multipart body")
                    continue
                try:
                    parser.write(chunk)
                except MultipartParseError as exc:
                    raise self._malformed(exc) from exc
                await self._drain()
        parser.finalize()  # checks nothing (python-multipart 0.0.x), hence _ended
        if not self._ended:
            raise BadUserInputError("The multipart body ended before its closing boundary")
        return self._fields, self._files

    def discard(self) -> None:
        """Close and remove every file this request created (or is still creating).

        Synchronous on purpose: it runs while a cancellation propagates, where an await
        could be cancelled again (anyio cancel scopes) and leave files behind.
        """
        for sink in self._sinks:
            if sink.video_id is not None:
                self._discard_remote(sink)
                continue
            opening = sink.opening
            if opening is not None and not opening.done():
                # The executor thread is still creating the file: remove it once it has.
                opening.add_done_callback(functools.partial(_discard_when_created, path=sink.path))
            elif opening is not None:
                _discard_when_created(opening, sink.path)
            sink.pending.clear()
        self._sinks.clear()
        self._unfinished.clear()

    def _discard_remote(self, sink: _Sink) -> None:
        # An upload never closed never becomes an object (its parts wait for the bucket's
        # AbortIncompleteMultipartUpload rule, README); a closed one is removed.
        if sink.closed and self._store is not None and sink.video_id is not None:
            task = asyncio.get_running_loop().create_task(
                self._store.delete([Storage.key(sink.video_id, ORIGINAL)])
            )
            _removals.add(task)
            task.add_done_callback(_removed)
        sink.pending.clear()

    def _malformed(self, exc: MultipartParseError) -> BadUserInputError:
        if "header size" in str(exc):
            return self._headers_too_large()
        if "header count" in str(exc):
            return BadUserInputError("A multipart part has too many headers")
        return BadUserInputError(f"Malformed multipart body: {exc}")

    def _headers_too_large(self) -> BadUserInputError:
        limit = human_size(self._limits.max_header_bytes)
        return BadUserInputError(f"The headers of a multipart part are larger than {limit}")

    # -- disk work, after each chunk ------------------------------------------------------

    async def _drain(self) -> None:
        for sink in tuple(self._unfinished):
            if (
                sink.complete
                or sink.pending_bytes >= WRITE_BYTES
                or len(sink.pending) >= _WRITE_PIECES
            ):
                await self._write(sink)
            if sink.complete:
                await self._finish(sink)

    async def _write(self, sink: _Sink) -> None:
        if sink.video_id is not None:
            assert self._store is not None
            if sink.remote is None:
                sink.remote = self._store.writer(Storage.key(sink.video_id, ORIGINAL))
            if sink.pending:
                views, sink.pending, sink.pending_bytes = sink.pending, [], 0
                # One call into the client per batch: it copies into its part buffer anyway.
                await sink.remote.write(b"".join(views))
            return
        file = sink.file
        if file is None:
            loop = asyncio.get_running_loop()
            sink.opening = loop.run_in_executor(None, _create, sink.path)
            # Shielded so a cancellation here cannot lose the file object the thread is
            # creating anyway: discard() waits for it through `opening`.
            raw = await asyncio.shield(sink.opening)
            file = sink.file = AsyncBufferedIOBase(raw, loop=loop, executor=None)
        if sink.pending:
            views, sink.pending, sink.pending_bytes = sink.pending, [], 0
            # One thread hop for all of them; BufferedWriter passes chunks of its buffer size
            # or more straight to write(2). Awaited rather than overlapped with parsing the
            # next chunks: that measured no faster (the GIL hand-off ate the gain).
            await file.writelines(views)

    async def _finish(self, sink: _Sink) -> None:
        if sink.remote is not None:
            await sink.remote.close()
            sink.closed = True
        else:
            assert sink.file is not None
            await sink.file.close()
        self._unfinished.remove(sink)
        self._files[sink.name] = ReceivedFile(
            path=sink.path,
            filename=sink.filename,
            content_type=sink.content_type,
            size=sink.size,
            head=bytes(sink.head),
            video_id=sink.video_id,
        )

    # -- parser callbacks -------------------------------------------------------------------

    def _on_part_begin(self) -> None:
        self._part = _Part()
        self._header_name.clear()
        self._header_value.clear()

    def _count_header_bytes(self, count: int) -> None:
        self._part.header_bytes += count
        if self._part.header_bytes > self._limits.max_header_bytes:
            raise self._headers_too_large()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header_bytes(end - start)
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header_bytes(end - start)
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = bytes(self._header_name).lower()
        if name in self._part.headers and name in (b"content-disposition", b"content-type"):
            raise BadUserInputError(f"A multipart part has two {name.decode()} headers")
        self._part.headers[name] = bytes(self._header_value).strip(b" \t")
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        part = self._part
        disposition = part.headers.get(b"content-disposition")
        if disposition is None:
            raise BadUserInputError("A multipart part has no Content-Disposition header")
        kind, params = parse_options_header(disposition)
        if kind != b"form-data":
            raise BadUserInputError("A multipart part is not Content-Disposition: form-data")
        raw_name = params.get(b"name")
        if not raw_name:
            raise BadUserInputError("A multipart part has no name")
        part.name = _decode_param(raw_name)
        if part.name in self._names:
            raise BadUserInputError(f"The multipart part {_shown(part.name)} appears twice")
        self._names.add(part.name)

        extended = _extended_filename(disposition)
        plain = params.get(b"filename")
        if extended is None and plain is None:
            self._field_count += 1
            if self._field_count > self._limits.max_fields:
                raise BadUserInputError(
                    f"Too many form fields: at most {self._limits.max_fields} are accepted"
                )
            part.value = bytearray()
            return

        self._file_count += 1
        if self._file_count > self._limits.max_files:
            raise BadUserInputError(
                f"Too many files: at most {self._limits.max_files} are accepted per request"
            )
        content_type = part.headers.get(b"content-type", b"").decode("latin-1") or None
        # RFC 6266: filename* wins over filename when a client sends both.
        filename = extended if extended is not None else _decode_param(plain or b"")
        part.sink = _Sink(
            name=part.name,
            filename=filename,
            content_type=content_type,
            path=self._dir / f"{uuid.uuid4().hex}.part",
            video_id=ObjectId() if self._store is not None else None,
        )
        self._sinks.append(part.sink)
        self._unfinished.append(part.sink)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        sink = part.sink
        if sink is not None:
            sink.size += end - start
            if sink.size > self._limits.max_file_bytes:
                limit = human_size(self._limits.max_file_bytes)
                raise PayloadTooLargeError(f"The file is larger than the {limit} upload limit")
            # The views outlive this call: only safe over immutable bytes.
            chunk = memoryview(data if isinstance(data, bytes) else bytes(data))[start:end]
            if len(sink.head) < HEAD_BYTES:
                sink.head += chunk[: HEAD_BYTES - len(sink.head)]
            sink.pending.append(chunk)
            sink.pending_bytes += end - start
        elif part.value is not None:
            if len(part.value) + end - start > self._limits.max_field_bytes:
                limit = human_size(self._limits.max_field_bytes)
                raise BadUserInputError(
                    f"The form field {_shown(part.name)} is larger than {limit}"
                )
            part.value += memoryview(data)[start:end]
        else:
            raise BadUserInputError("Malformed multipart body: part data before its headers")

    def _on_part_end(self) -> None:
        part = self._part
        if part.sink is not None:
            part.sink.complete = True
        elif part.value is not None:
            try:
                self._fields[part.name] = part.value.decode("utf-8")
            except UnicodeDecodeError:
                raise BadUserInputError(
                    f"The form field {_shown(part.name)} is not valid UTF-8"
                ) from None
        else:
            raise BadUserInputError("Malformed multipart body: a part without headers")

    def _on_end(self) -> None:
        self._ended = True
