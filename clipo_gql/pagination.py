"""The `videos` connection: newest first, keyset cursors (stable while videos are added)."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pymongo
from bson import ObjectId

from clipo_gql.errors import BadUserInputError
from clipo_gql.models import Video, VideoStatus
from clipo_gql.storage import parse_id

MAX_PAGE = 100


def encode_cursor(video: Video) -> str:
    millis = int(video.created_at.timestamp() * 1000)
    return base64.urlsafe_b64encode(f"{millis}:{video.id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, ObjectId]:
    try:
        millis, _, raw_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        created = datetime.fromtimestamp(int(millis) / 1000, UTC)
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError, OSError):
        created, raw_id = None, ""
    video_id = parse_id(raw_id)
    if created is None or video_id is None:
        raise BadUserInputError("Invalid cursor: pass a cursor from a previous page")
    return created, video_id


class Page(NamedTuple):
    videos: list[Video]
    has_next: bool
    matching: dict[str, Any]  # the filter without the cursor: what `count` counts


async def page(
    first: int, after: str | None, status: VideoStatus | None, scope: dict[str, Any]
) -> Page:
    """A page of the videos in `scope` (ownership.py), whether more follow, and the filter of
    them all. A cursor only positions the page: it never widens the scope."""
    if not 0 <= first <= MAX_PAGE:
        raise BadUserInputError(f"`first` must be between 0 and {MAX_PAGE}")
    base: dict[str, Any] = dict(scope)
    if status is not None:
        base["status"] = status.value
    query = dict(base)
    if after:
        created, video_id = decode_cursor(after)
        # The range on created_at bounds the index scan at the cursor, on either index;
        # `$or` alone (older, or as old with a smaller id) would leave MongoDB a whole-index
        # scan or a merge of two. Ids only break ties between equal timestamps.
        query["created_at"] = {"$lte": created}
        query["$or"] = [{"created_at": {"$lt": created}}, {"_id": {"$lt": video_id}}]
    collection = Video.get_motor_collection()
    cursor = (
        collection.find(query)
        .sort([("created_at", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)])
        .limit(first + 1)
    )
    rows = [Video.from_mongo(raw) async for raw in cursor]
    return Page(rows[:first], len(rows) > first, base)


async def count(matching: dict[str, Any]) -> int:
    """Run only when a query selects totalCount: counting is the dearest part of a page."""
    total: int = await Video.get_motor_collection().count_documents(matching)
    return total
