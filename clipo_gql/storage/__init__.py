"""Where a video's files live: the one place every path that reads or writes media calls.

Two stores. Unset STORAGE_URL: MEDIA_DIR (a local or shared disk) holds everything, and a
video's folder is where the worker writes its outputs. `s3://...`: an S3-compatible store
(s3.py) holds everything, and MEDIA_DIR is each process's own scratch: a worker fetches the
original into it, processes there, then publishes the outputs (`publish`) and removes the
scratch. The published metadata.json is a video's commit point in the store: it goes up
last, after every other output, and only then does the document turn DONE; `remove_outputs`
clears what a crashed attempt left before the next one.

Every path and key is built from an id we generated, never from user input.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, Any, NamedTuple

from bson import ObjectId
from bson.errors import InvalidId

if TYPE_CHECKING:
    from clipo_gql.settings import Settings
    from clipo_gql.storage.s3 import ObjectInfo, ObjectStore
    from clipo_gql.uploads import ReceivedFile

ORIGINAL = "original"
PROCESSED = "video.mp4"
# Left in a video's folder by a worker killed mid-write: removed before the next attempt.
PARTIAL_PATTERNS = ("*.part", "*.download")
THUMBNAIL = "thumbnail.jpg"
METADATA = "metadata.json"
OUTPUTS = (PROCESSED, THUMBNAIL, METADATA)
# Published after those, when configured (hls/): a folder with the ladder, and the storyboard.
HLS = "hls"
STORYBOARD_VTT = "storyboard.vtt"
STORYBOARD_SPRITE = "storyboard.jpg"
LATER_OUTPUTS = (STORYBOARD_VTT, STORYBOARD_SPRITE)
# What the document holds that the files cannot tell (records.py): `clipo-gql reindex` reads it.
RECORD = "record.json"
# A resumable upload's bytes while they arrive (tus/): renamed to ORIGINAL after the last one.
UPLOAD_PARTIAL = "upload.tus"


def parse_id(value: str) -> ObjectId | None:
    """An ObjectId from its 24-hex-digit form, or None for anything else (traversal included)."""
    if len(value) != 24:
        return None
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        return None


CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".jpg": "image/jpeg",
    ".json": "application/json",
    ".m3u8": "application/vnd.apple.mpegurl",
    ".m4s": "video/iso.segment",
    ".vtt": "text/vtt; charset=utf-8",
}


class Located(NamedTuple):
    """A published file: on the local disk (`path`) or in the object store (`key`)."""

    path: Path | None
    stat: os.stat_result | None  # with `path`
    key: str | None
    size: int
    etag: str | None

    @classmethod
    def of_object(cls, key: str, info: ObjectInfo) -> Located:
        return cls(None, None, key, info.size, info.etag)


def open_storage(settings: Settings) -> Storage:
    """The storage STORAGE_URL names (its client made here: in the lifespan or worker start)."""
    if settings.storage_url is None:
        return Storage(settings.media_dir)
    from clipo_gql.storage.s3 import ObjectStore

    return Storage(settings.media_dir, ObjectStore(settings))


class Storage:
    def __init__(self, media_dir: Path, remote: ObjectStore | None = None) -> None:
        self.root = media_dir
        # None: MEDIA_DIR is the store. Else MEDIA_DIR/videos is scratch and `remote` the store.
        self.remote = remote
        self.incoming = media_dir / "incoming"
        self.videos = media_dir / "videos"
        # Where this process writes uploads in flight: its own folder once `claim_uploads` ran.
        self.uploads = self.incoming
        self._claim: int | None = None

    def prepare(self) -> None:
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.videos.mkdir(parents=True, exist_ok=True)

    def claim_uploads(self) -> None:
        """Give this process a folder of its own under `incoming/`, held by an flock.

        Several API processes share MEDIA_DIR. One that is killed mid-upload leaves the
        partial file behind, and nobody else may remove files in `incoming/` that a live
        process is still writing. The kernel drops the lock when its holder dies, however it
        dies, so `sweeper.py` removes exactly the folders whose lock it can take.
        """
        instance = uuid.uuid4().hex
        fd = os.open(self.incoming / f"{instance}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._claim = fd
        self.uploads = self.incoming / instance
        self.uploads.mkdir(mode=0o700)

    def upload_claims(self) -> Iterator[tuple[Path, bool]]:
        """Each API process's upload folder (by its lock file) and whether its process is
        alive. A dead one's lock is held by this call while the caller looks at it, so no
        process can start reusing it meanwhile. (Our own claim counts as alive: flock is per
        open file.)"""
        for lock in self.incoming.glob("*.lock"):
            try:
                fd = os.open(lock, os.O_RDWR)
            except FileNotFoundError:
                continue  # released meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield self.incoming / lock.stem, True
            else:
                yield self.incoming / lock.stem, False
            finally:
                os.close(fd)

    def release_uploads(self) -> None:
        if self._claim is None:
            return
        shutil.rmtree(self.uploads, ignore_errors=True)
        (self.incoming / f"{self.uploads.name}.lock").unlink(missing_ok=True)
        os.close(self._claim)
        self._claim = None
        self.uploads = self.incoming

    def close(self) -> None:
        """Let the object store's client go while the process still runs: finalized during
        interpreter shutdown instead, obstore's runtime threads sometimes abort the process
        (SIGABRT after a clean stop; seen in 1 exit of 7 after a multipart upload)."""
        if self.remote is not None:
            self.remote.close()
            gc.collect()

    @staticmethod
    def key(video_id: ObjectId, name: str = "") -> str:
        """A file's key in the object store: its path under MEDIA_DIR."""
        return f"videos/{video_id}/{name}"

    def relative(self, video_id: ObjectId, path: Path) -> str:
        return path.relative_to(self.video_dir(video_id)).as_posix()

    async def locate(self, video_id: ObjectId, path: Path) -> Located | None:
        """A published file (named by its local path) where the store has it, else None."""
        if self.remote is None:
            try:
                # In the loop, not a thread: a stat is microseconds, a thread hop ten times
                # that, on every media request (bench rows 4 and 14).
                found = path.stat()  # noqa: ASYNC240
            except (FileNotFoundError, NotADirectoryError):
                return None
            if not S_ISREG(found.st_mode):
                return None
            return Located(path, found, None, found.st_size, None)
        key = self.key(video_id, self.relative(video_id, path))
        info = await self.remote.info(key)
        return None if info is None else Located.of_object(key, info)

    async def read(self, found: Located) -> bytes:
        if found.path is not None:
            return await asyncio.to_thread(found.path.read_bytes)
        assert self.remote is not None
        assert found.key is not None
        return await self.remote.read(found.key)

    async def video_ids(self) -> list[str]:
        """The names of the store's video folders (ids, unless someone put others there)."""
        if self.remote is not None:
            return sorted(await self.remote.folders("videos/"))
        try:
            return sorted(await asyncio.to_thread(os.listdir, self.videos))
        except FileNotFoundError:
            return []

    async def fetch_original(self, video_id: ObjectId) -> bool:
        """The original in the video's (scratch) folder; False when the store has none."""
        target = self.original(video_id)
        if target.is_file():
            return True
        if self.remote is None:
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            await self.remote.download(self.key(video_id, ORIGINAL), target)
        except FileNotFoundError:
            return False
        return True

    async def publish(self, video_id: ObjectId, names: Iterable[str]) -> None:
        """Upload these files (or folders, recursively) of the scratch folder to the store,
        in order, the last one only after all the others are up."""
        remote = self.remote
        if remote is None:
            return
        folder = self.video_dir(video_id)
        # A ladder's segments in parallel, bounded: one at a time would be latency-bound.
        gate = asyncio.Semaphore(8)

        async def put(file: Path) -> None:
            async with gate:
                key = self.key(video_id, self.relative(video_id, file))
                await remote.put_file(key, file, CONTENT_TYPES.get(file.suffix))

        for name in names:
            path = folder / name
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            try:
                async with asyncio.TaskGroup() as group:
                    for file in files:
                        group.create_task(put(file))
            except ExceptionGroup as failed:
                raise failed.exceptions[0] from None  # an OSError, as a disk's would be

    async def drop_scratch(self, video_id: ObjectId) -> None:
        """With an object store, the worker's copy of a video once its job ended."""
        if self.remote is not None:
            await asyncio.to_thread(shutil.rmtree, self.video_dir(video_id), True)

    async def write_record(self, video_id: ObjectId, data: Any, *, create: bool) -> None:
        """record.json. `create` False: only where the video's folder still exists (a video
        deleted meanwhile must not get one back; with S3 the sweeper removes such a one)."""
        if self.remote is None:
            if create:
                self.video_dir(video_id).mkdir(parents=True, exist_ok=True)
            await self.write_json(self.record(video_id), data)
            return
        await self.remote.put_bytes(self.key(video_id, RECORD), _json_text(data).encode())

    def video_dir(self, video_id: ObjectId) -> Path:
        return self.videos / str(video_id)

    def original(self, video_id: ObjectId) -> Path:
        return self.video_dir(video_id) / ORIGINAL

    def processed(self, video_id: ObjectId) -> Path:
        return self.video_dir(video_id) / PROCESSED

    def thumbnail(self, video_id: ObjectId) -> Path:
        return self.video_dir(video_id) / THUMBNAIL

    def metadata(self, video_id: ObjectId) -> Path:
        return self.video_dir(video_id) / METADATA

    def hls(self, video_id: ObjectId) -> Path:
        return self.video_dir(video_id) / HLS

    def storyboard_vtt(self, video_id: ObjectId) -> Path:
        return self.video_dir(video_id) / STORYBOARD_VTT

    def storyboard_sprite(self, video_id: ObjectId) -> Path:
        return self.video_dir(video_id) / STORYBOARD_SPRITE

    def record(self, video_id: ObjectId) -> Path:
        return self.video_dir(video_id) / RECORD

    def upload_partial(self, video_id: ObjectId) -> Path:
        """A resumable upload's bytes so far, in the video's folder: any API process sharing
        MEDIA_DIR may append to it, and deleting the video removes it with the rest."""
        return self.video_dir(video_id) / UPLOAD_PARTIAL

    def finish_upload(self, video_id: ObjectId) -> Path:
        """The complete resumable upload becomes the original: a rename, atomic, so of two
        requests racing here exactly one moves it (the other gets FileNotFoundError)."""
        target = self.original(video_id)
        os.replace(self.upload_partial(video_id), target)
        return target

    def adopt(self, received: ReceivedFile, video_id: ObjectId) -> None:
        """Make a received upload the video's original: a rename, never a copy (with an
        object store it was uploaded as that already)."""
        if received.video_id is None:
            target = self.original(video_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(received.path, target)
        elif received.video_id != video_id:
            raise ValueError("an upload received into the store belongs to its own video id")
        received.kept = True

    async def discard(self, received: ReceivedFile) -> None:
        """A received upload no video adopted."""
        if received.video_id is None:
            await asyncio.to_thread(received.path.unlink, True)
        elif not received.kept and self.remote is not None:
            await self.remote.delete([self.key(received.video_id, ORIGINAL)])

    async def remove_video(self, video_id: ObjectId) -> None:
        await asyncio.to_thread(shutil.rmtree, self.video_dir(video_id), True)
        if self.remote is not None:
            await self.remote.delete_prefix(self.key(video_id))

    async def remove_outputs(self, video_id: ObjectId) -> None:
        """Every output of an earlier attempt, here and in the store; the original and the
        record stay."""
        await asyncio.to_thread(self._remove_local_outputs, video_id)
        if self.remote is not None:
            keep = {self.key(video_id, name) for name in (ORIGINAL, RECORD)}
            keys = await self.remote.keys(self.key(video_id))
            upload = self.key(video_id, UPLOAD_PARTIAL)
            await self.remote.delete(
                key for key in keys if key not in keep and not key.startswith(upload)
            )

    def _remove_local_outputs(self, video_id: ObjectId) -> None:
        folder = self.video_dir(video_id)
        for name in (*OUTPUTS, *LATER_OUTPUTS):
            (folder / name).unlink(missing_ok=True)
        shutil.rmtree(folder / HLS, ignore_errors=True)
        for pattern in PARTIAL_PATTERNS:
            for partial in folder.glob(pattern):
                if partial.is_dir():  # the ladder's folder in the making
                    shutil.rmtree(partial, ignore_errors=True)
                else:
                    partial.unlink(missing_ok=True)

    async def write_json(self, path: Path, data: Any) -> None:
        """Write atomically: a reader sees the old file or the whole new one.

        One thread call rather than aiofiles: a job cancelled while aiofiles was opening the
        file left it open (its thread finished the open after the await was gone). A thread
        runs to the end, closing and renaming, or removing its temporary file.
        """
        await asyncio.to_thread(_write_atomically, path, _json_text(data))


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{uuid.uuid4().hex}.part")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
