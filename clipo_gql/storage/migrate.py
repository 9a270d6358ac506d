"""`clipo-gql storage migrate --to s3://bucket/prefix`: copy a local library (MEDIA_DIR) into
an object store, so a deployment moves without processing anything again.

Keys are the paths under MEDIA_DIR (`videos/<id>/...`), as the object-store mode reads them.
Resumable: an object already there with the file's size is skipped, so a second run after an
interruption copies only what is missing. Every object is checked for its size afterwards.
Files in the making (`*.part`, `*.download`, a resumable upload's `upload.tus`) are left out:
finish or expire those uploads first, or their videos will have no original in the store.
"""

from __future__ import annotations

import asyncio
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from clipo_gql.settings import Settings
from clipo_gql.storage import CONTENT_TYPES, PARTIAL_PATTERNS, UPLOAD_PARTIAL
from clipo_gql.storage.s3 import ObjectStore

PARALLEL = 8


@dataclass
class Migrated:
    copied: int = 0
    skipped: int = 0
    bytes_copied: int = 0
    left_out: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [
            f"{self.copied} files copied ({self.bytes_copied} bytes), {self.skipped} already"
            f" there, {len(self.left_out)} left out, {len(self.mismatched)} size mismatches"
        ]
        lines += [f"  left out (in the making): {name}" for name in self.left_out]
        lines += [f"  size differs in the store: {name}" for name in self.mismatched]
        return lines


def _files(media_dir: Path) -> list[tuple[str, Path, int]]:
    videos = media_dir / "videos"
    return sorted(
        (path.relative_to(media_dir).as_posix(), path, path.stat().st_size)
        for path in videos.rglob("*")
        if path.is_file()
    )


def _in_the_making(key: str) -> bool:
    parts = key.split("/")
    name = parts[-1]
    return UPLOAD_PARTIAL in parts or any(fnmatch.fnmatch(name, p) for p in PARTIAL_PATTERNS)


async def migrate(settings: Settings, target: str) -> Migrated:
    store = ObjectStore(settings.model_copy(update={"storage_url": target}))
    summary = Migrated()
    files = await asyncio.to_thread(_files, settings.media_dir)
    gate = asyncio.Semaphore(PARALLEL)

    async def copy(key: str, path: Path, size: int) -> None:
        async with gate:
            there = await store.info(key)
            if there is not None and there.size == size:
                summary.skipped += 1
                return
            await store.put_file(key, path, CONTENT_TYPES.get(path.suffix))
            summary.copied += 1
            summary.bytes_copied += size
            there = await store.info(key)
            if there is None or there.size != size:
                summary.mismatched.append(key)

    wanted = []
    for key, path, size in files:
        if _in_the_making(key):
            summary.left_out.append(key)
        else:
            wanted.append(copy(key, path, size))
    await asyncio.gather(*wanted)
    summary.mismatched.sort()
    return summary
