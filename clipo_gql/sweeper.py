"""Removing files that no live process or stored video owns, from a shared MEDIA_DIR.

A process killed at the wrong moment leaves files nobody will come back for:
- an API process killed mid-upload: the partial upload in its folder under `incoming/`
  (`Storage.claim_uploads`: the folder's lock dies with its process, so a folder whose lock
  can be taken is abandoned, at once and for certain);
- an API process killed between moving an upload into `videos/<id>/` and storing the video,
  or a worker killed after a delete while its job was still writing: a video folder with no
  document. Ids are ObjectIds, so a folder's age is in its name: only folders older than
  `ORPHAN_GRACE_SECONDS` are candidates, which keeps an upload that is being stored right now
  out of reach. With no document in the database at all, nothing is removed: that is a lost
  database, which `clipo-gql reindex` recovers from.
- with an object store (STORAGE_URL), a worker killed mid-job: its scratch copy of the video
  under MEDIA_DIR/videos/. Nothing there is needed once the job is over, and no job runs
  longer than JOB_TIMEOUT_SECONDS: a folder with nothing written for longer than that (plus
  the grace) is removed, whichever process's it was.
Workers sweep in their periodic pass (tasks.housekeeping).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from clipo_gql.models import Video
from clipo_gql.storage import Storage, parse_id

log = logging.getLogger(__name__)

BATCH = 500


@dataclass
class Swept:
    uploads: int = 0  # abandoned upload folders (and loose files) removed
    videos: int = 0  # video folders without a document removed
    scratch: int = 0  # object-store mode: scratch folders of jobs long over removed

    def __bool__(self) -> bool:
        return bool(self.uploads or self.videos or self.scratch)


async def sweep(storage: Storage, grace_seconds: float, job_seconds: float = 0) -> Swept:
    swept = Swept()
    swept.uploads = await asyncio.to_thread(_sweep_uploads, storage, grace_seconds)
    swept.videos = await _sweep_videos(storage, grace_seconds)
    if storage.remote is not None:
        swept.scratch = await asyncio.to_thread(
            _sweep_scratch, storage, job_seconds + grace_seconds
        )
    if swept:
        log.warning(
            "removed %d abandoned uploads, %d folders of videos that were never stored and"
            " %d scratch folders of jobs long over",
            swept.uploads, swept.videos, swept.scratch,
        )  # fmt: skip
    return swept


def _sweep_scratch(storage: Storage, idle_seconds: float) -> int:
    cutoff = time.time() - idle_seconds
    removed = 0
    try:
        folders = [p for p in storage.videos.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return 0
    for folder in folders:
        try:
            newest = max(
                (p.stat().st_mtime for p in folder.rglob("*")), default=folder.stat().st_mtime
            )
        except FileNotFoundError:
            continue  # its job ended meanwhile
        if newest < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _sweep_uploads(storage: Storage, grace_seconds: float) -> int:
    removed = 0
    for folder, alive in storage.upload_claims():
        if not alive:
            shutil.rmtree(folder, ignore_errors=True)
            folder.with_suffix(".lock").unlink(missing_ok=True)
            removed += 1
    incoming = storage.incoming
    # Loose files: what processes that wrote straight into incoming/ left (older versions).
    cutoff = time.time() - grace_seconds
    for path in incoming.iterdir():
        try:
            if path.is_file() and path.suffix != ".lock" and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


async def _sweep_videos(storage: Storage, grace_seconds: float) -> int:
    cutoff = datetime.now(UTC) - timedelta(seconds=grace_seconds)
    names = await storage.video_ids()
    old = [oid for oid in map(parse_id, names) if oid is not None and oid.generation_time < cutoff]
    if old and await Video.get_motor_collection().find_one({}, {"_id": 1}) is None:
        # No document at all, but old folders: the database was lost or replaced, not a
        # thousand uploads crashed. Removing them would destroy what `reindex` restores.
        log.warning(
            "MongoDB holds no videos but %s holds %d old video folders: not removing them;"
            " run `clipo-gql reindex` (with the workers stopped) to restore them",
            storage.remote.url if storage.remote else storage.videos, len(old),
        )  # fmt: skip
        return 0
    removed = 0
    for start in range(0, len(old), BATCH):
        batch = old[start : start + BATCH]
        collection = Video.get_motor_collection()
        stored = {raw["_id"] async for raw in collection.find({"_id": {"$in": batch}}, {"_id": 1})}
        for oid in batch:
            if oid not in stored:
                await storage.remove_video(oid)
                removed += 1
    return removed
