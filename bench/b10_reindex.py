"""Row 10: `clipo-gql reindex` of 10,000 DONE videos, against reading and parsing their
10,000 metadata files (the least any rebuild from the files has to do).

The fixture is made once: one real clip probed by ffprobe gives a real metadata.json (made
by the pipeline's own `metadata_document`) and record.json; each of the 10,000 folders gets
a copy with its own id, and hard links to one tiny original, MP4 and thumbnail (reindex only
looks at which files a folder has). Each repeat rebuilds into an empty database: the
in-process stand-in (what `dev` reindexes into at every start), or with MONGODB_URL set a
fresh database on that server, dropped afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path

from bson import ObjectId

from bench.common import Context, Result, alternate, make_clip

COUNT, SMOKE_COUNT = 10_000, 50


async def build_fixture(ctx: Context, count: int) -> Path:
    from clipo_gql.media import Media
    from clipo_gql.models import Video, VideoSource, VideoStatus, now
    from clipo_gql.processing import metadata_document, video_fields
    from clipo_gql.records import record_of
    from clipo_gql.settings import Settings

    media = ctx.workdir / "b9-media"
    videos = media / "videos"
    videos.mkdir(parents=True)
    clip = make_clip(ctx.workdir / "b9-clip.mp4", seconds=2, size="320x240")
    probe = await Media(Settings(media_dir=media)).probe(clip)
    blank = ctx.workdir / "b9-blank"
    blank.write_bytes(b"\0" * 1024)
    for n in range(count):
        video = Video.model_construct(
            id=ObjectId(), filename=f"clip-{n:05}.mp4", owner_id=f"owner-{n % 50}",
            limit_key=f"owner-{n % 50}", source=VideoSource.UPLOAD, source_url=None,
            status=VideoStatus.DONE, progress=1.0, error=None, created_at=now(),
            size_bytes=clip.stat().st_size, remuxed=True, **video_fields(probe),
        )  # fmt: skip
        folder = videos / str(video.id)
        folder.mkdir()
        for name in ("original", "video.mp4", "thumbnail.jpg"):
            os.link(blank, folder / name)
        (folder / "metadata.json").write_text(
            json.dumps(metadata_document(video, probe), indent=2, ensure_ascii=False)
        )
        (folder / "record.json").write_text(json.dumps(record_of(video), indent=2))
    return media


def read_metadata(media: Path) -> int:
    videos = media / "videos"
    parsed = 0
    for name in os.listdir(videos):
        json.loads((videos / name / "metadata.json").read_bytes())
        parsed += 1
    return parsed


async def reindex_once(media: Path, count: int) -> float:
    from clipo_gql.connections import init_mongo
    from clipo_gql.reindex import reindex
    from clipo_gql.settings import Settings
    from clipo_gql.storage import Storage

    settings = Settings(
        media_dir=media,
        mongodb_url=os.environ.get("MONGODB_URL") or None,
        mongodb_database=f"clipo_bench_{uuid.uuid4().hex[:12]}",
    )
    mongo = await init_mongo(settings, allow_stand_in=True)
    try:
        started = time.perf_counter()
        summary = await reindex(Storage(media), None)
        seconds = time.perf_counter() - started
        assert summary.done == count, summary.lines()
        return seconds
    finally:
        if settings.mongodb_url:
            await mongo.drop_database(settings.mongodb_database)
        mongo.close()


async def run(ctx: Context) -> list[Result]:
    count = SMOKE_COUNT if ctx.smoke else COUNT
    # The stand-in's warning at each connect says nothing about this row.
    logging.getLogger("clipo_gql.connections").setLevel(logging.ERROR)
    media = await build_fixture(ctx, count)

    async def ours() -> float:
        return await reindex_once(media, count)

    async def baseline() -> float:
        started = time.perf_counter()
        assert read_metadata(media) == count
        return time.perf_counter() - started

    ours_s, baseline_s = await alternate(ctx.repeats, ours, baseline)
    store = (
        "MongoDB at MONGODB_URL" if os.environ.get("MONGODB_URL")
        else "the in-process mongomock stand-in, as `dev` at start"
    )  # fmt: skip
    return [
        Result(
            number=10, name=f"reindex of {count:,} DONE videos", unit="s",
            ours=ours_s, baseline=baseline_s,
            baseline_name=f"read and json-parse their {count:,} metadata files",
            higher_is_better=False, target=2.0,
            notes=[f"into an empty database each time: {store}; page cache warm for both"],
        )
    ]  # fmt: skip
