"""A video's record on disk: what its document holds that its files cannot tell.

`record.json` in the video's folder is a snapshot of the document's lasting fields (id,
owner, name, source, creation time, status, error, ...). It is written when a video is
accepted, before its document is inserted, so no document exists without one; and again at
each final state (DONE, FAILED) and on a retry. With `metadata.json` (the probe's fields, a
public file whose shape stays as it is) it is what `clipo-gql reindex` (reindex.py) rebuilds
a lost document from. It is internal: `format` says which shape it has.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from bson import ObjectId
from pydantic import ValidationError

from clipo_gql.models import Video, VideoStatus
from clipo_gql.storage import Storage

log = logging.getLogger(__name__)

FORMAT = 1
FIELDS = frozenset(
    {
        "id",
        "filename",
        "owner_id",
        "limit_key",
        "source",
        "source_url",
        "created_at",
        "size_bytes",
        "status",
        "progress",
        "error",
        "remuxed",
        "published",
        "renditions",
    }
)
# What ffprobe found (None until the probe): in the record too, so that a DONE video is
# rebuilt from its record alone.
PROBED = frozenset(
    {
        "duration",
        "width",
        "height",
        "video_codec",
        "audio_codec",
        "frame_rate",
        "bit_rate",
        "format_name",
    }
)


# Document fields and their names in metadata.json (processing.metadata_document): what
# `reindex` takes from it. The name and size are the downloaded file's for a URL submission.
FROM_METADATA = {
    "filename": "filename",
    "size_bytes": "sizeBytes",
    "duration": "duration",
    "width": "width",
    "height": "height",
    "video_codec": "videoCodec",
    "audio_codec": "audioCodec",
    "frame_rate": "frameRate",
    "bit_rate": "bitRate",
    "format_name": "formatName",
}


def fields_from_metadata(document: dict[str, Any]) -> dict[str, Any]:
    """The document fields a metadata JSON holds: the inverse of `metadata_document`."""
    return {field: document.get(key) for field, key in FROM_METADATA.items() if key in document}


class RecordError(ValueError):
    """A record (or the metadata beside it) that cannot become a video; says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __repr__(self) -> str:
        return f"RecordError({self.reason!r})"


def record_of(video: Video) -> dict[str, Any]:
    return {"format": FORMAT, **video.model_dump(mode="json", include=set(FIELDS | PROBED))}


async def write_new(storage: Storage, video: Video) -> None:
    """The record of a video being accepted; raises when it cannot be written (the caller then
    stores nothing). Creates the folder: a URL submission has no file yet."""
    assert video.id is not None
    await storage.write_record(video.id, record_of(video), create=True)


async def update(storage: Storage, video: Video) -> None:
    """The record after a change of state: VideoService's `keep_record`, with each final
    state and retry. Best effort: MongoDB holds the truth, the record only matters once the
    database is lost. Never creates the folder: a video deleted meanwhile must not get one
    back."""
    assert video.id is not None
    try:
        await storage.write_record(video.id, record_of(video), create=False)
    except FileNotFoundError:
        pass  # deleted meanwhile
    except OSError as exc:
        log.warning("could not update the record of video %s: %s", video.id, exc)


def read(path: str | Path, video_id: ObjectId) -> dict[str, Any]:
    """A record's content, checked to be a record of this video."""
    try:
        with open(path, "rb") as file:
            raw = json.loads(file.read())
    except OSError as exc:
        raise RecordError(f"record.json cannot be read ({exc.strerror})") from exc
    except ValueError as exc:
        raise RecordError("record.json is not valid JSON") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise RecordError("record.json is not a record this version knows")
    if raw.get("id") != str(video_id):
        raise RecordError("record.json is another video's (its id differs)")
    return raw


def rebuild(record: dict[str, Any], status: VideoStatus, metadata: object | None = None) -> Video:
    """The document of a recorded video in `status`; a DONE one takes the probe's fields (and
    the downloaded file's name and size) from its metadata JSON."""
    fields = {key: value for key, value in record.items() if key in FIELDS | PROBED}
    fields["status"] = status.value
    if status is not VideoStatus.FAILED:  # which keeps how far it got, and why it failed
        fields["progress"] = 1.0 if status is VideoStatus.DONE else None
        fields["error"] = None
    if status is not VideoStatus.DONE:  # its outputs are made again, or were removed
        fields["remuxed"] = None
        fields.update(published=[], renditions=[])
    if status is VideoStatus.PENDING:  # to be probed again
        fields.update(dict.fromkeys(PROBED))
    probed: dict[str, Any] = {}
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise RecordError("metadata.json is not a JSON object")
        probed = fields_from_metadata(metadata)
        fields.update(probed)
    try:
        video: Video = Video.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        what = "metadata.json" if first["loc"] and first["loc"][0] in probed else "record.json"
        raise RecordError(f"{what}: {where}: {first['msg']}") from exc
    return video
