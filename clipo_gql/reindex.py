"""`clipo-gql reindex`: rebuild the video documents from what MEDIA_DIR holds.

Each folder under `videos/` is, in this order:
- kept: it has a document, which is left as it is;
- DONE: its record (records.py), its three outputs and a readable metadata.json;
- FAILED: its record says so (the error with it; `retryVideo` runs it again);
- PENDING, and queued: its record and the original (or a URL to download again);
- a leftover: anything else, reported with why and never removed.
Running it again changes nothing. Workers must not run meanwhile: their sweeper removes the
folders of old ids that have no document (yet). `dev` on the stand-in runs it at start,
before its worker starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from arq.connections import ArqRedis
from bson import ObjectId
from pymongo.errors import BulkWriteError

from clipo_gql import records
from clipo_gql.connections import create_redis, init_mongo
from clipo_gql.models import Output, Video, VideoSource, VideoStatus
from clipo_gql.settings import Settings
from clipo_gql.storage import (
    HLS,
    LATER_OUTPUTS,
    METADATA,
    ORIGINAL,
    OUTPUTS,
    RECORD,
    Storage,
    open_storage,
    parse_id,
)
from clipo_gql.tasks import enqueue_processing

log = logging.getLogger(__name__)
A = TypeVar("A")
B = TypeVar("B")

# Folders per MongoDB round trip (one `$in` look-up and one insert_many each).
BATCH = 1000
DUPLICATE_KEY = 11000


@dataclass(frozen=True)
class Leftover:
    path: Path
    reason: str


@dataclass
class Summary:
    kept: int = 0  # had a document
    done: int = 0
    failed: int = 0
    pending: int = 0
    queued: int = 0  # of the pending: jobs that were not in the queue already
    leftovers: list[Leftover] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def restored(self) -> int:
        return self.done + self.failed + self.pending

    @property
    def folders(self) -> int:
        return self.kept + self.restored + len(self.leftovers)

    def lines(self) -> list[str]:
        lines = [
            f"{self.folders} folders in {self.seconds:.2f} s: {self.restored} videos restored"
            f" ({self.done} DONE, {self.failed} FAILED, {self.pending} PENDING of which"
            f" {self.queued} queued), {self.kept} kept (they had a document),"
            f" {len(self.leftovers)} left alone",
        ]
        lines += [f"  left alone: {left.path}: {left.reason}" for left in self.leftovers]
        return lines


async def reindex(storage: Storage, redis: ArqRedis | None) -> Summary:
    """Insert the documents MEDIA_DIR's folders call for; queue the PENDING ones on `redis`
    (None: leave that to the workers' start-up pass, `tasks.requeue_missing`)."""
    started = time.perf_counter()
    summary = Summary()
    names = await storage.video_ids()
    ids: list[ObjectId] = []
    for name in names:
        oid = parse_id(name)
        if oid is None or str(oid) != name:
            summary.leftovers.append(Leftover(storage.videos / name, "not a video id"))
        else:
            ids.append(oid)
    collection = Video.get_motor_collection()
    # A lost database (and dev's stand-in at every start) is empty: nothing to look up. (On
    # the stand-in, each `$in` look-up is a scan of the collection.) Documents stored
    # meanwhile are still kept: the insert tolerates their ids.
    empty = await collection.find_one({}, {"_id": 1}) is None

    async def prepare(batch: list[ObjectId]) -> tuple[int, list[Video | Leftover]]:
        stored: set[ObjectId] = set()
        if not empty:
            query = {"_id": {"$in": batch}}
            stored = {raw["_id"] async for raw in collection.find(query, {"_id": 1})}
        missing = [oid for oid in batch if oid not in stored]
        if storage.remote is None:
            return len(stored), await asyncio.to_thread(_read_all, storage.videos, missing)
        return len(stored), await _read_remote(storage, missing)

    batches = [ids[start : start + BATCH] for start in range(0, len(ids), BATCH)]
    async for kept, found in _ahead(prepare, batches):
        summary.kept += kept
        summary.leftovers += [item for item in found if isinstance(item, Leftover)]
        videos = [item for item in found if isinstance(item, Video)]
        inserted = await _insert(videos)
        summary.kept += len(videos) - len(inserted)
        for video in inserted:
            if video.status is VideoStatus.DONE:
                summary.done += 1
            elif video.status is VideoStatus.FAILED:
                summary.failed += 1
            else:
                summary.pending += 1
                if redis is not None:
                    assert video.id is not None
                    summary.queued += await enqueue_processing(redis, video.id)
    summary.leftovers.sort(key=lambda left: left.path)
    summary.seconds = time.perf_counter() - started
    return summary


async def _ahead(step: Callable[[A], Coroutine[Any, Any, B]], items: list[A]) -> AsyncIterator[B]:
    """`step` of each item in turn, the next one already running while the caller works on
    this one's result: reading a batch's files takes about as long as inserting the batch
    before it, and the database works in another process (or motor's thread)."""
    if not items:
        return
    running = asyncio.create_task(step(items[0]))
    try:
        for n in range(len(items)):
            result = await running
            if n + 1 < len(items):
                running = asyncio.create_task(step(items[n + 1]))
            yield result
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def _insert(videos: list[Video]) -> list[Video]:
    """Insert them all, tolerating ids stored meanwhile; the ones this call inserted."""
    if not videos:
        return []
    # What Beanie's insert_many stores (its encoder gives the same dict), at a fifth of the cost.
    raw = [video.model_dump(by_alias=True) for video in videos]
    try:
        await Video.get_motor_collection().insert_many(raw, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise
        duplicates = {error["index"] for error in errors}
        return [video for n, video in enumerate(videos) if n not in duplicates]
    return videos


def _read_all(videos: Path, ids: Iterable[ObjectId]) -> list[Video | Leftover]:
    # One thread call per batch: a thread hop per folder cost more than reading its files.
    # Plain string paths: pathlib's joins were a third of the time of reading the files.
    root = str(videos)
    return [_read(f"{root}/{oid}", oid) for oid in ids]


async def _read_remote(storage: Storage, ids: list[ObjectId]) -> list[Video | Leftover]:
    """The same judgement over the object store: each folder's names, with its record and
    metadata fetched into a temporary folder (the other files stay where they are)."""
    remote = storage.remote
    assert remote is not None
    storage.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=storage.root, prefix=".reindex-") as tmp:
        for oid in ids:
            folder = Path(tmp) / str(oid)
            folder.mkdir()
            names = {key.split("/")[2] for key in await remote.keys(storage.key(oid))}
            for name in names:
                if name in (RECORD, METADATA):
                    with contextlib.suppress(FileNotFoundError):
                        await remote.download(storage.key(oid, name), folder / name)
                elif name == HLS:
                    (folder / name).mkdir()
                else:
                    (folder / name).touch()
        found = await asyncio.to_thread(_read_all, Path(tmp), ids)
    label = f"{remote.url}/videos"
    return [
        Leftover(Path(label) / item.path.name, item.reason) if isinstance(item, Leftover) else item
        for item in found
    ]


def _read(folder: str, video_id: ObjectId) -> Video | Leftover:
    """What one folder without a document holds: the video to store, or why it is left alone."""
    try:
        names = set(os.listdir(folder))
    except NotADirectoryError:
        return Leftover(Path(folder), "not a folder")
    except OSError as exc:
        return Leftover(Path(folder), f"cannot be read ({exc.strerror})")
    if RECORD not in names:
        what = "a processed video" if METADATA in names else "files"
        return Leftover(Path(folder), f"{what} without record.json: whose it is is unknown")
    try:
        record = records.read(f"{folder}/{RECORD}", video_id)
        if all(name in names for name in OUTPUTS):
            done = record.get("status") == VideoStatus.DONE.value
            if done and records.PROBED <= record.keys() and _whole_object(f"{folder}/{METADATA}"):
                # Written at DONE, the record holds the probe's fields too: metadata.json
                # (ten times its size, ffprobe's whole output) need not be parsed.
                return _present(records.rebuild(record, VideoStatus.DONE), names)
            metadata = _metadata(f"{folder}/{METADATA}")
            return _present(records.rebuild(record, VideoStatus.DONE, metadata), names)
        if record.get("status") == VideoStatus.FAILED.value:
            return records.rebuild(record, VideoStatus.FAILED)
        if ORIGINAL in names or record.get("source") == VideoSource.URL.value:
            return records.rebuild(record, VideoStatus.PENDING)
    except records.RecordError as exc:
        return Leftover(Path(folder), exc.reason)
    return Leftover(Path(folder), "an upload whose original is missing, and no outputs")


def _present(video: Video, names: set[str]) -> Video:
    """A DONE video's later outputs as far as the folder still has them."""
    files = {Output.HLS: (HLS,), Output.STORYBOARD: LATER_OUTPUTS}
    video.published = [
        out for out in video.published if all(name in names for name in files.get(out, ()))
    ]
    if Output.HLS not in video.published:
        video.renditions = []
    return video


def _whole_object(path: str) -> bool:
    """Whether a JSON file ends as an object does, read from its last bytes only. Written
    atomically, metadata.json is whole unless something else damaged it; a file that fails
    this is parsed, to say exactly what is wrong with it."""
    try:
        with open(path, "rb") as file:
            file.seek(max(0, os.fstat(file.fileno()).st_size - 16))
            return file.read().rstrip().endswith(b"}")
    except OSError:
        return False


def _metadata(path: str) -> object:
    try:
        with open(path, "rb") as file:
            return json.loads(file.read())
    except OSError as exc:
        raise records.RecordError(f"metadata.json cannot be read ({exc.strerror})") from exc
    except ValueError as exc:
        raise records.RecordError("metadata.json is not valid JSON") from exc


def live_api_processes(storage: Storage) -> int:
    """API processes using this MEDIA_DIR: those holding their upload folder's lock. One may
    be storing a video right now: its record is written, its document not yet, and reindex
    inserting that document would make its insert fail."""
    return sum(alive for _, alive in storage.upload_claims())


async def run(settings: Settings) -> Summary:
    """The `clipo-gql reindex` command's work, against MONGODB_URL and REDIS_URL."""
    storage = open_storage(settings)
    mongo = await init_mongo(settings, allow_stand_in=False)
    try:
        redis = await create_redis(settings)
        try:
            return await reindex(storage, redis)
        finally:
            await redis.aclose()
    finally:
        mongo.close()


async def at_start(storage: Storage, redis: ArqRedis) -> None:
    """`dev` on the stand-in, before its worker (and so its sweeper) starts."""
    summary = await reindex(storage, redis)
    if summary.folders:
        log.info("clipo-gql dev: rebuilt the stand-in from %s", storage.videos)
        for line in summary.lines():
            log.info("reindex: %s", line.strip())
