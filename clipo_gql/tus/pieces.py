"""Where a resumable upload's bytes wait for the last one, behind one interface
(`UploadBytes`) that `tus/uploads.py` writes through.

- On a disk (`LocalBytes`): one file in the video's folder, appended to, fsynced before each
  stored offset, cut back to the stored offset when a request starts.
- In an object store (`RemoteBytes`), where nothing can be appended to: each stretch between
  two stored offsets is its own object, `upload.tus/<start offset>`, uploaded as it arrives
  and visible once closed; an offset is stored only after the piece ending there is closed,
  so the pieces at or past the stored offset are a crashed request's, removed when the next
  one starts. The last byte joins them into the original (streamed, a part at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
from io import BufferedRandom
from typing import TYPE_CHECKING, Any, Protocol

from bson import ObjectId

from clipo_gql.storage import ORIGINAL, UPLOAD_PARTIAL, Storage

if TYPE_CHECKING:
    from obstore import AsyncWritableFile

    from clipo_gql.storage.s3 import ObjectStore

# Linux's sync_file_range(2), which os does not wrap; elsewhere the fsync does it all.
_SYNC_FILE_RANGE_WRITE = 2
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _sync_file_range: Any = _libc.sync_file_range
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
except (OSError, AttributeError):
    _sync_file_range = None


class UploadBytes(Protocol):
    # Bytes to gather before an offset is stored mid-request (each store costs a piece).
    sync_every_bytes: int

    async def head(self, upto: int) -> bytes: ...
    async def write(self, batch: list[bytes]) -> None: ...
    async def sync(self) -> None: ...
    async def truncate(self, offset: int) -> None: ...
    async def close(self) -> None: ...


async def create(storage: Storage, video_id: ObjectId) -> None:
    if storage.remote is None:
        await asyncio.to_thread(_create_empty, storage.upload_partial(video_id))


async def open_at(storage: Storage, video_id: ObjectId, offset: int) -> UploadBytes:
    """The upload's bytes, ready to take more at the stored `offset` (FileNotFoundError: no
    such upload)."""
    if storage.remote is None:
        file = await asyncio.to_thread(_open_at, storage.upload_partial(video_id), offset)
        return LocalBytes(file)
    pieces = RemoteBytes(storage.remote, video_id, offset)
    await pieces.cut(offset)
    return pieces


async def finish(storage: Storage, video_id: ObjectId) -> None:
    """The complete upload becomes the original (FileNotFoundError: another request did it)."""
    if storage.remote is None:
        await asyncio.to_thread(storage.finish_upload, video_id)
        return
    remote = storage.remote
    pieces = await _pieces(remote, video_id)
    if not pieces:
        raise FileNotFoundError(f"no pieces of upload {video_id}")
    writer = remote.writer(Storage.key(video_id, ORIGINAL))
    for _, key in pieces:
        async for chunk in remote.stream(key):  # whole: no HEAD per piece for its size
            await writer.write(chunk)
    await writer.close()
    await remote.delete(key for _, key in pieces)


class LocalBytes:
    sync_every_bytes = 0

    def __init__(self, file: BufferedRandom) -> None:
        self.file = file

    async def head(self, upto: int) -> bytes:
        return await asyncio.to_thread(os.pread, self.file.fileno(), upto, 0)

    async def write(self, batch: list[bytes]) -> None:
        await asyncio.to_thread(_write_back, self.file, batch)

    async def sync(self) -> None:
        await asyncio.to_thread(_sync, self.file)

    async def truncate(self, offset: int) -> None:
        await asyncio.to_thread(_truncate, self.file, offset)

    async def close(self) -> None:
        await asyncio.to_thread(_close, self.file)


class RemoteBytes:
    # A piece per stored offset: not one per quarter second of a slow client.
    sync_every_bytes = 8 * 1024 * 1024

    def __init__(self, remote: ObjectStore, video_id: ObjectId, offset: int) -> None:
        self.remote = remote
        self.video_id = video_id
        self.offset = offset  # where the piece being written starts
        self.written = 0  # its bytes so far
        self.writer: AsyncWritableFile | None = None

    async def cut(self, offset: int) -> None:
        pieces = await _pieces(self.remote, self.video_id)
        if offset > 0 and not any(start < offset for start, _ in pieces):
            raise FileNotFoundError(f"upload {self.video_id} has no bytes before {offset}")
        await self.remote.delete(key for start, key in pieces if start >= offset)

    async def head(self, upto: int) -> bytes:
        head = bytearray()
        for start, key in await _pieces(self.remote, self.video_id):
            if start >= upto:
                break
            async for chunk in self.remote.stream(key, 0, upto - start):
                head += chunk
        return bytes(head[:upto])

    async def write(self, batch: list[bytes]) -> None:
        if self.writer is None:
            self.writer = self.remote.writer(_piece_key(self.video_id, self.offset))
        data = b"".join(batch)
        await self.writer.write(data)
        self.written += len(data)

    async def sync(self) -> None:
        if self.writer is not None:
            await self.writer.close()
            self.writer = None
            self.offset += self.written
            self.written = 0

    async def truncate(self, offset: int) -> None:
        self.writer = None  # never closed: never an object
        self.offset, self.written = offset, 0
        await self.cut(offset)

    async def close(self) -> None:
        # What was written since the last stored offset is not kept: an unclosed piece is
        # never an object, as a file is cut back to the stored offset by the next request.
        self.writer = None


def _piece_key(video_id: ObjectId, start: int) -> str:
    return Storage.key(video_id, f"{UPLOAD_PARTIAL}/{start:016d}")


async def _pieces(remote: ObjectStore, video_id: ObjectId) -> list[tuple[int, str]]:
    keys = await remote.keys(Storage.key(video_id, f"{UPLOAD_PARTIAL}/"))
    found = []
    for key in keys:
        with contextlib.suppress(ValueError):
            found.append((int(key.rsplit("/", 1)[-1]), key))
    return sorted(found)


def _create_empty(path: os.PathLike[str]) -> None:
    with open(path, "xb"):
        pass


def _open_at(path: os.PathLike[str], offset: int) -> BufferedRandom:
    file = open(path, "r+b")
    try:
        # Bytes past the stored offset were written by a request that did not finish: cut.
        file.truncate(offset)
        file.seek(offset)
    except BaseException:
        file.close()
        raise
    return file


def _write_back(file: BufferedRandom, batch: list[bytes]) -> None:
    """Write `batch` and start its write-back to disk without waiting for it, so the fsync
    that every stored offset needs finds little left to do: waiting for a whole PATCH's
    bytes there halved tus's throughput against multipart (bench row 15)."""
    start = file.tell()
    file.writelines(batch)
    file.flush()
    if _sync_file_range is not None:
        _sync_file_range(file.fileno(), start, file.tell() - start, _SYNC_FILE_RANGE_WRITE)


def _sync(file: BufferedRandom) -> None:
    file.flush()
    os.fsync(file.fileno())


def _truncate(file: BufferedRandom, offset: int) -> None:
    file.flush()
    file.truncate(offset)
    file.seek(offset)


def _close(file: BufferedRandom) -> None:
    with contextlib.suppress(OSError, ValueError):
        file.close()
