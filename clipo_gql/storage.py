"""Where a video's files live.

Every path is built from an id we generated, never from user input.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

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


class Storage:
    def __init__(self, media_dir: Path) -> None:
        self.root = media_dir
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

    def adopt(self, received: Path, video_id: ObjectId) -> Path:
        """Move a received upload into the video's folder: a rename, never a copy."""
        target = self.original(video_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(received, target)
        return target

    async def remove_video(self, video_id: ObjectId) -> None:
        await asyncio.to_thread(shutil.rmtree, self.video_dir(video_id), True)

    def remove_outputs(self, video_id: ObjectId) -> None:
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
        text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
        await asyncio.to_thread(_write_atomically, path, text)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{uuid.uuid4().hex}.part")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
